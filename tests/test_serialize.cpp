// The tensor file format: save_tensors / load_tensors round trip every dtype and the documented
// layout, and every way loading or saving can fail (named file, no half-written file left behind).
#include <doctest/doctest.h>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/error.h"
#include "engine/serialize.h"
#include "engine/tensor.h"
#include "tests/test_util.h"

using namespace volt;

namespace {

using test::contains;
using test::error_of;

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("volt_test_serialize_") {}
};

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

std::string read_all(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_all(const std::string& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string raw_bytes(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw_data()), t.nbytes());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
TEST_CASE("save_tensors / load_tensors round trip every dtype") {
  TempDir dir;
  const std::string path = dir.path + "/all.vt";

  Tensor f32 = test::rand_tensor({2, 3, 4}, 1);
  Tensor f16 = test::rand_tensor({5}, 2).to(DType::F16);
  Tensor bf16 = test::rand_tensor({3, 2}, 3).to(DType::BF16);
  Tensor i64 = Tensor::from_labels({-5, 0, int64_t(1) << 40});
  Tensor i32 = Tensor::empty({2, 2}, DType::I32);
  for (int i = 0; i < 4; ++i) i32.data<int32_t>()[i] = -100000 + 77777 * i;
  Tensor u8 = Tensor::empty({7}, DType::U8);
  for (int i = 0; i < 7; ++i) u8.data<uint8_t>()[i] = uint8_t(i * 40);
  Tensor scalar = Tensor::scalar(-3.5f);
  Tensor empty = Tensor::empty({0, 3});
  Tensor base = test::rand_tensor({6, 2}, 4);
  Tensor view = base.narrow(2, 3);  // a view with an offset: only its rows are written

  const NamedTensors in = {{"f32", f32},     {"f16", f16},       {"layer.bf16", bf16}, {"i64", i64},
                           {"i32", i32},     {"u8", u8},         {"scalar", scalar},   {"empty", empty},
                           {"view", view},   {"", Tensor::ones({1})}};
  save_tensors(path, in);
  CHECK(dir.files() == std::set<std::string>{"all.vt"});  // no temporary left behind

  const NamedTensors out = load_tensors(path);
  REQUIRE(out.size() == in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    INFO("tensor " << in[i].first);
    CHECK(out[i].first == in[i].first);
    CHECK(out[i].second.dtype() == in[i].second.dtype());
    CHECK(out[i].second.shape() == in[i].second.shape());
    CHECK(raw_bytes(out[i].second) == raw_bytes(in[i].second));
  }
  const std::vector<float> base_values = base.to_vector();
  CHECK(out[8].second.to_vector() == std::vector<float>(base_values.begin() + 4, base_values.begin() + 10));

  // The layout is the documented one: magic, version 1, count, ..., crc32 of the rest.
  const std::string bytes = read_all(path);
  CHECK(bytes.compare(0, 8, "VOLTTENS") == 0);
  uint32_t version, count, crc;
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&count, bytes.data() + 12, 4);
  std::memcpy(&crc, bytes.data() + bytes.size() - 4, 4);
  CHECK(version == 1);
  CHECK(count == in.size());
  CHECK(crc == crc32(bytes.data(), bytes.size() - 4));
  CHECK(crc32("123456789", 9) == 0xCBF43926u);  // the CRC-32 (IEEE) check value

  // Overwriting replaces the contents; an empty list is a valid file.
  save_tensors(path, {{"only", Tensor::full({2}, 4.f)}});
  const NamedTensors again = load_tensors(path);
  REQUIRE(again.size() == 1);
  CHECK(again[0].first == "only");
  CHECK(again[0].second.to_vector() == std::vector<float>{4.f, 4.f});
  save_tensors(path, {});
  CHECK(load_tensors(path).empty());
}

TEST_CASE("load_tensors errors name the file") {
  TempDir dir;
  const std::string good = dir.path + "/good.vt";
  save_tensors(good, {{"w", test::rand_tensor({4, 5}, 7)}, {"b", Tensor::from_labels({1, 2, 3})}});
  const std::string bytes = read_all(good);
  REQUIRE(bytes.size() > 100);

  SUBCASE("missing file") {
    const std::string p = dir.path + "/does_not_exist.vt";
    const std::string msg = error_of([&] { load_tensors(p); });
    CHECK(contains(msg, p));
  }
  SUBCASE("truncated file") {
    const std::string p = dir.path + "/truncated.vt";
    for (size_t keep : {bytes.size() - 1, bytes.size() / 2, size_t(30), size_t(12), size_t(0)}) {
      write_all(p, bytes.substr(0, keep));
      const std::string msg = error_of([&] { load_tensors(p); });
      INFO("kept " << keep << " bytes: " << msg);
      CHECK(contains(msg, p));
    }
  }
  SUBCASE("a flipped byte fails the checksum") {
    const std::string p = dir.path + "/flipped.vt";
    for (size_t at : {size_t(13), size_t(40), bytes.size() - 20, bytes.size() - 2}) {
      std::string bad = bytes;
      bad[at] = char(bad[at] ^ 0x10);
      write_all(p, bad);
      const std::string msg = error_of([&] { load_tensors(p); });
      INFO("flipped byte " << at << ": " << msg);
      CHECK(contains(msg, p));
      CHECK(contains(msg, "checksum"));
    }
  }
  SUBCASE("wrong magic") {
    const std::string p = dir.path + "/magic.vt";
    std::string bad = bytes;
    bad[0] = 'X';
    write_all(p, bad);
    const std::string msg = error_of([&] { load_tensors(p); });
    CHECK(contains(msg, p));
    CHECK(contains(msg, "magic"));
    write_all(p, std::string("not a tensor file at all, just some text\n"));
    CHECK(contains(error_of([&] { load_tensors(p); }), p));
  }
  SUBCASE("a directory is not a tensor file") {
    CHECK(contains(error_of([&] { load_tensors(dir.path); }), dir.path));
  }
}

TEST_CASE("save_tensors failures leave no file under the real name") {
  TempDir dir;
  SUBCASE("into a directory that does not exist") {
    const std::string p = dir.path + "/no_such_dir/out.vt";
    const std::string msg = error_of([&] { save_tensors(p, {{"x", Tensor::ones({3})}}); });
    CHECK(contains(msg, p));
    CHECK_FALSE(file_exists(p));
    CHECK(dir.files().empty());
  }
  SUBCASE("when the final rename fails, the temporary is removed") {
    const std::string p = dir.path + "/taken";
    REQUIRE(::mkdir(p.c_str(), 0755) == 0);  // a directory sits at the target name
    const std::string msg = error_of([&] { save_tensors(p, {{"x", Tensor::ones({3})}}); });
    CHECK(contains(msg, p));
    CHECK(dir.files() == std::set<std::string>{"taken"});
  }
  SUBCASE("two threads saving one path at once: each write whole, no temporary left") {
    // The temporary was named by the process only, so the threads wrote into one file and one
    // rename found it gone.
    const std::string p = dir.path + "/shared.vt";
    std::vector<std::string> errors(2);
    std::vector<std::thread> threads;
    for (int k = 0; k < 2; ++k)
      threads.emplace_back([&, k] {
        try {
          for (int i = 0; i < 100; ++i) save_tensors(p, {{"w", Tensor::full({4096}, float(k + 1))}});
        } catch (const std::exception& e) {
          errors[size_t(k)] = e.what();
        }
      });
    for (auto& t : threads) t.join();
    CHECK(errors[0] == "");
    CHECK(errors[1] == "");
    const auto loaded = load_tensors(p);
    REQUIRE(loaded.size() == 1);
    const std::vector<float> v = loaded[0].second.to_vector();
    CHECK((v == std::vector<float>(4096, 1.f) || v == std::vector<float>(4096, 2.f)));
    CHECK(dir.files() == std::set<std::string>{"shared.vt"});
  }
  SUBCASE("an undefined tensor fails before anything is written; an existing file is untouched") {
    const std::string p = dir.path + "/keep.vt";
    save_tensors(p, {{"a", Tensor::full({2}, 1.f)}});
    const std::string before = read_all(p);
    CHECK_THROWS_AS(save_tensors(p, {{"a", Tensor::ones({2})}, {"undef", Tensor()}}), volt::Error);
    CHECK(read_all(p) == before);
    CHECK(dir.files() == std::set<std::string>{"keep.vt"});
  }
}
