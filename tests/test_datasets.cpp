// Dataset readers: CIFAR-10 and MNIST on the real files (skipped when absent), CIFAR-10/100 and
// (Fashion-)MNIST IDX on small files written here, with every kind of bad input, and the synthetic
// dataset (image folders: test_image_folder.cpp).
#include <doctest/doctest.h>

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "data/cifar.h"
#include "data/mnist.h"
#include "data/synthetic.h"
#include "engine/error.h"
#include "kernels/philox.h"
#include "tests/dataset_files.h"
#include "tests/test_util.h"

using namespace volt;
namespace fs = std::filesystem;

namespace {

using test::contains;
using test::error_of;
using test::Bytes;
using test::cifar_records;
using test::first_labels;
using test::pixel;
using test::pixel_at;
using test::write_file;
using TempDir = test::DatasetDir;
void write_gzip(const std::string& path, const Bytes& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

// Runs f with stderr sent to a file; returns what was printed.
std::string capture_stderr(const std::function<void()>& f) {
  TempDir d;
  const std::string file = d / "stderr.txt";
  std::fflush(stderr);
  const int saved = ::dup(2);
  FILE* sink = std::fopen(file.c_str(), "w");
  REQUIRE(sink != nullptr);
  ::dup2(::fileno(sink), 2);
  try {
    f();
  } catch (...) {
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    std::fclose(sink);
    throw;
  }
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::fclose(sink);
  std::ifstream in(file);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void put_be32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}

Bytes idx_images(uint32_t n, uint32_t rows = 28, uint32_t cols = 28, uint32_t magic = 2051) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, n);
  put_be32(b, rows);
  put_be32(b, cols);
  for (uint32_t i = 0; i < n * rows * cols; ++i) b.push_back(pixel(i / (rows * cols), i % (rows * cols)));
  return b;
}

Bytes idx_labels(const Bytes& labels, uint32_t magic = 2049) {
  Bytes b;
  put_be32(b, magic);
  put_be32(b, uint32_t(labels.size()));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

std::vector<int64_t> histogram(const Dataset& ds) {
  std::vector<int64_t> h(size_t(ds.num_classes()), 0);
  Bytes img(size_t(ds.image_bytes()));
  for (int64_t i = 0; i < ds.size(); ++i) ++h[size_t(ds.get(i, img.data()))];
  return h;
}

std::string real_dir(const std::string& sub) {
  const std::string d = test::datasets_dir();
  if (d.empty() || !fs::is_directory(d + "/" + sub)) test::skip("no real " + sub + " data (set VOLT_DATA_DIR)");
  return d + "/" + sub;
}

}  // namespace

// ---- real files ----
// Expected pixels below were read from the real files with python3 (gzip.open(...).read() for the
// IDX files, open(...,'rb').read() for CIFAR; pixel (c,y,x) of record i at i*3073+1+c*1024+y*32+x).

TEST_CASE("CIFAR-10 test_batch.bin: 10000 images, 1000 per class, known labels and pixels") {
  const std::string dir = real_dir("cifar-10");
  if (!fs::exists(dir + "/test_batch.bin")) test::skip("no CIFAR-10 test_batch.bin");
  const CIFAR10Dataset ds(dir, false);
  CHECK(ds.size() == 10000);
  CHECK(ds.name() == "CIFAR-10 test");
  CHECK(ds.image_shape() == Shape{3, 32, 32});
  CHECK(ds.num_classes() == 10);
  CHECK(histogram(ds) == std::vector<int64_t>(10, 1000));
  CHECK(first_labels(ds, 4) == std::vector<int64_t>{3, 8, 8, 0});
  CHECK(ds.warning().empty());
  CHECK(pixel_at(ds, 0, 0, 0, 0) == 158);
  CHECK(pixel_at(ds, 0, 1, 0, 0) == 112);
  CHECK(pixel_at(ds, 0, 2, 0, 0) == 49);
  CHECK(pixel_at(ds, 0, 0, 16, 16) == 101);
  CHECK(pixel_at(ds, 0, 2, 31, 31) == 110);
  CHECK(pixel_at(ds, 9999, 1, 10, 20) == 95);
  int64_t sum = 0;  // python: sum(data[1:3073])
  for (int64_t p = 0; p < 3072; ++p) sum += ds.images()[size_t(p)];
  CHECK(sum == 332962);
}

TEST_CASE("CIFAR-10 train with only data_batch_1.bin: 10000 images, known counts, warns naming the missing batches") {
  const std::string dir = real_dir("cifar-10");
  if (!fs::exists(dir + "/data_batch_1.bin") || fs::exists(dir + "/data_batch_2.bin"))
    test::skip("needs CIFAR-10 data_batch_1.bin without the other batches");
  std::unique_ptr<CIFAR10Dataset> ds;
  const std::string err = capture_stderr([&] { ds = std::make_unique<CIFAR10Dataset>(dir, true); });
  REQUIRE(ds);
  CHECK(ds->size() == 10000);
  CHECK(histogram(*ds) == std::vector<int64_t>{1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981});
  CHECK(first_labels(*ds, 4) == std::vector<int64_t>{6, 9, 9, 4});
  const std::string want =
      "CIFAR-10: data_batch_2.bin..data_batch_5.bin missing in " + dir + "; training on 10000 of 50000 images";
  CHECK(ds->warning() == want);
  CHECK(contains(err, want));
  CHECK(pixel_at(*ds, 0, 0, 0, 0) == 59);
  CHECK(pixel_at(*ds, 0, 1, 5, 7) == 77);
  CHECK(pixel_at(*ds, 9999, 2, 31, 31) == 131);
  CHECK(CIFAR10Dataset::present(dir, false));
  CHECK_FALSE(CIFAR10Dataset::present(dir, true));
}

TEST_CASE("MNIST test set: 10000 images, known label histogram and pixels") {
  const std::string dir = real_dir("mnist");
  if (!MNISTDataset::present(dir, false)) test::skip("no MNIST t10k files");
  const MNISTDataset ds(dir, false);
  CHECK(ds.size() == 10000);
  CHECK(ds.name() == "MNIST test");
  CHECK(ds.image_shape() == Shape{1, 28, 28});
  CHECK(histogram(ds) == std::vector<int64_t>{980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009});
  CHECK(first_labels(ds, 5) == std::vector<int64_t>{7, 2, 1, 0, 4});
  CHECK(pixel_at(ds, 0, 0, 7, 7) == 185);
  CHECK(pixel_at(ds, 0, 0, 10, 10) == 0);
  CHECK(pixel_at(ds, 0, 0, 20, 16) == 35);
  CHECK(pixel_at(ds, 9999, 0, 14, 14) == 18);
  CHECK(pixel_at(ds, 9999, 0, 10, 13) == 253);
  int64_t sum = 0;  // python: sum(images[16:16+784])
  for (int64_t p = 0; p < 784; ++p) sum += ds.images()[size_t(p)];
  CHECK(sum == 18454);
}

TEST_CASE("MNIST train set: 60000 images, known labels and pixels") {
  const std::string dir = real_dir("mnist");
  if (!MNISTDataset::present(dir, true)) test::skip("no MNIST train files");
  const MNISTDataset ds(dir, true);
  CHECK(ds.size() == 60000);
  CHECK(first_labels(ds, 5) == std::vector<int64_t>{5, 0, 4, 1, 9});
  CHECK(ds.labels()[59999] == 8);
  CHECK(pixel_at(ds, 0, 0, 14, 14) == 240);
  CHECK(pixel_at(ds, 0, 0, 6, 12) == 170);
  CHECK(pixel_at(ds, 0, 0, 10, 9) == 14);
  CHECK(pixel_at(ds, 59999, 0, 14, 14) == 97);
  CHECK(pixel_at(ds, 59999, 0, 7, 17) == 254);
  int64_t sum = 0;  // python: sum(images[16+59999*784:])
  for (int64_t p = 59999 * 784; p < 60000 * 784; ++p) sum += ds.images()[size_t(p)];
  CHECK(sum == 20920);
}

// ---- CIFAR on small files ----

TEST_CASE("CIFAR-10 small batches: planar records, sub-folder layout, warning lists the missing batches") {
  TempDir d;
  const std::string dir = d / "cifar-10-batches-bin";
  write_file(dir + "/data_batch_1.bin", cifar_records({{1}, {9}, {0}}));
  write_file(dir + "/data_batch_3.bin", cifar_records({{4}, {5}}));
  write_file(dir + "/test_batch.bin", cifar_records({{7}}));
  CHECK(CIFAR10Dataset::resolve_dir(d.path) == dir);

  std::unique_ptr<CIFAR10Dataset> train;
  const std::string err = capture_stderr([&] { train = std::make_unique<CIFAR10Dataset>(d.path, true, false); });
  REQUIRE(train);
  CHECK(train->size() == 5);
  CHECK(first_labels(*train, 5) == std::vector<int64_t>{1, 9, 0, 4, 5});
  const std::string want = "CIFAR-10: data_batch_2.bin, data_batch_4.bin, data_batch_5.bin missing in " + dir +
                           "; training on 5 images from 2 of 5 batches";
  CHECK(train->warning() == want);
  CHECK(contains(err, want));
  // image 3 is record 0 of data_batch_3.bin; pixel (c, y, x) is byte c*1024 + y*32 + x of the record
  CHECK(pixel_at(*train, 3, 0, 0, 0) == pixel(0, 0));
  CHECK(pixel_at(*train, 3, 2, 5, 9) == pixel(0, 2 * 1024 + 5 * 32 + 9));
  CHECK(pixel_at(*train, 1, 1, 31, 30) == pixel(1, 1024 + 31 * 32 + 30));

  const CIFAR10Dataset test(d.path, false, false);
  CHECK(test.size() == 1);
  CHECK(first_labels(test, 1) == std::vector<int64_t>{7});
  Bytes img(3072);
  CHECK(contains(error_of([&] { test.get(1, img.data()); }), "index 1 is out of range"));
  CHECK(contains(error_of([&] { test.get(-1, img.data()); }), "CIFAR-10 test"));
  // the official size is required by default
  const std::string e = error_of([&] { CIFAR10Dataset(d.path, false); });
  CHECK(contains(e, dir + "/test_batch.bin"));
  CHECK(contains(e, "holds 1 records"));
  CHECK(contains(e, "10000"));
}

TEST_CASE("CIFAR-10/100: a complete sub-folder is read rather than a partial copy in root") {
  // What --download makes beside a batch or two left in root: the complete copy must win.
  TempDir d;
  write_file(d / "data_batch_1.bin", cifar_records({{1}}));
  write_file(d / "test_batch.bin", cifar_records({{2}}));
  const std::string sub = d / "cifar-10-batches-bin";
  for (int i = 1; i <= 5; ++i) write_file(sub + "/data_batch_" + std::to_string(i) + ".bin", cifar_records({{3}, {4}}));
  write_file(sub + "/test_batch.bin", cifar_records({{5}}));
  CHECK(CIFAR10Dataset::resolve_dir(d.path) == sub);
  const CIFAR10Dataset train(d.path, true, false);
  CHECK(train.dir() == sub);
  CHECK(train.size() == 10);
  CHECK(train.warning().empty());
  // Complete in root too: root, as before. Neither complete: the partial root, as before.
  for (int i = 2; i <= 5; ++i) write_file(d / ("data_batch_" + std::to_string(i) + ".bin"), cifar_records({{6}}));
  CHECK(CIFAR10Dataset::resolve_dir(d.path) == d.path);
  fs::remove(sub + "/test_batch.bin");
  fs::remove(d / "test_batch.bin");
  CHECK(CIFAR10Dataset::resolve_dir(d.path) == d.path);

  TempDir c;
  write_file(c / "test.bin", cifar_records({{1, 1}}));
  const std::string sub100 = c / "cifar-100-binary";
  write_file(sub100 + "/train.bin", cifar_records({{2, 2}, {3, 3}}));
  write_file(sub100 + "/test.bin", cifar_records({{4, 4}}));
  CHECK(CIFAR100Dataset::resolve_dir(c.path) == sub100);
  const CIFAR100Dataset test(c.path, false, true, false);
  CHECK(test.dir() == sub100);
  CHECK(first_labels(test, 1) == std::vector<int64_t>{4});
}

TEST_CASE("CIFAR-10 errors name the folder or file and what is wrong") {
  TempDir d;
  SUBCASE("missing directory says how to get the data") {
    const std::string e = error_of([&] { CIFAR10Dataset(d / "nowhere", true); });
    CHECK(contains(e, d / "nowhere"));
    CHECK(contains(e, "does not exist"));
    CHECK(contains(e, "--download"));
    CHECK(contains(e, "cifar-10-batches-bin"));
  }
  SUBCASE("no training batch at all") {
    const std::string e = error_of([&] { CIFAR10Dataset(d.path, true); });
    CHECK(contains(e, "no training batch"));
    CHECK(contains(e, d.path));
  }
  SUBCASE("missing test_batch.bin") {
    write_file(d / "data_batch_1.bin", cifar_records({{1}}));
    const std::string e = error_of([&] { CIFAR10Dataset(d.path, false, false); });
    CHECK(contains(e, "test_batch.bin missing in " + d.path));
  }
  SUBCASE("size not a multiple of the record size: file, size, record size, partial record offset") {
    Bytes b = cifar_records({{1}, {2}});
    b.resize(b.size() - 100);  // 6046 bytes: record 1 is partial, starting at byte 3073
    write_file(d / "test_batch.bin", b);
    const std::string e = error_of([&] { CIFAR10Dataset(d.path, false, false); });
    CHECK(contains(e, d / "test_batch.bin"));
    CHECK(contains(e, "6046 bytes"));
    CHECK(contains(e, "3073-byte record"));
    CHECK(contains(e, "byte offset 3073"));
  }
  SUBCASE("empty file") {
    write_file(d / "data_batch_1.bin", {});
    const std::string e = error_of([&] { CIFAR10Dataset(d.path, true, false); });
    CHECK(contains(e, d / "data_batch_1.bin"));
    CHECK(contains(e, "empty"));
  }
  SUBCASE("label out of range: file, record, value") {
    write_file(d / "data_batch_2.bin", cifar_records({{3}, {9}, {10}}));
    const std::string e = error_of([&] { CIFAR10Dataset(d.path, true, false); });
    CHECK(contains(e, d / "data_batch_2.bin"));
    CHECK(contains(e, "record 2"));
    CHECK(contains(e, "label 10"));
  }
}

TEST_CASE("CIFAR-100: fine and coarse labels, records of 2 label bytes + 3072 pixels") {
  TempDir d;
  const std::string dir = d / "cifar-100-binary";
  write_file(dir + "/train.bin", cifar_records({{19, 99}, {0, 0}, {7, 42}}));
  write_file(dir + "/test.bin", cifar_records({{3, 17}}));
  CHECK(CIFAR100Dataset::present(d.path, true));
  const CIFAR100Dataset fine(d.path, true, true, false);
  CHECK(fine.size() == 3);
  CHECK(fine.num_classes() == 100);
  CHECK(fine.name() == "CIFAR-100 train");
  CHECK(first_labels(fine, 3) == std::vector<int64_t>{99, 0, 42});
  CHECK(pixel_at(fine, 2, 1, 3, 4) == pixel(2, 1024 + 3 * 32 + 4));
  const CIFAR100Dataset coarse(d.path, true, false, false);
  CHECK(coarse.num_classes() == 20);
  CHECK(first_labels(coarse, 3) == std::vector<int64_t>{19, 0, 7});
  CHECK(coarse.fine_labels() == Bytes{99, 0, 42});
  const CIFAR100Dataset test(dir, false, true, false);
  CHECK(first_labels(test, 1) == std::vector<int64_t>{17});

  CHECK(contains(error_of([&] { CIFAR100Dataset(d.path, false); }), "holds 1 records"));
  CHECK(contains(error_of([&] { CIFAR100Dataset(d / "none", true); }), "--download"));
  write_file(dir + "/train.bin", cifar_records({{1, 5}, {20, 5}}));
  std::string e = error_of([&] { CIFAR100Dataset(d.path, true, true, false); });
  CHECK(contains(e, dir + "/train.bin"));
  CHECK(contains(e, "record 1"));
  CHECK(contains(e, "coarse label 20"));
  write_file(dir + "/train.bin", cifar_records({{1, 5}, {2, 100}}));
  e = error_of([&] { CIFAR100Dataset(d.path, true, false, false); });
  CHECK(contains(e, "fine label 100"));
  Bytes b = cifar_records({{1, 5}});
  b.pop_back();
  write_file(dir + "/test.bin", b);
  e = error_of([&] { CIFAR100Dataset(d.path, false, true, false); });
  CHECK(contains(e, dir + "/test.bin"));
  CHECK(contains(e, "3074-byte record"));
  CHECK(contains(e, "byte offset 0"));
}

// ---- IDX (MNIST, Fashion-MNIST) on small files ----

TEST_CASE("Fashion-MNIST IDX files, raw and gzip'ed, the raw file winning when both exist") {
  TempDir d;
  write_file(d / "train-images-idx3-ubyte", idx_images(3));
  write_file(d / "train-labels-idx1-ubyte", idx_labels({9, 0, 3}));
  write_gzip(d / "t10k-images-idx3-ubyte.gz", idx_images(2));
  write_gzip(d / "t10k-labels-idx1-ubyte.gz", idx_labels({5, 8}));
  const MNISTDataset train(d.path, true, MNISTVariant::FashionMNIST);
  CHECK(train.name() == "Fashion-MNIST train");
  CHECK(train.size() == 3);
  CHECK(train.image_shape() == Shape{1, 28, 28});
  CHECK(first_labels(train, 3) == std::vector<int64_t>{9, 0, 3});
  CHECK(pixel_at(train, 2, 0, 27, 5) == pixel(2, 27 * 28 + 5));
  CHECK(MNISTDataset::class_names(MNISTVariant::FashionMNIST)[9] == "Ankle boot");
  const MNISTDataset test(d.path, false, MNISTVariant::FashionMNIST);
  CHECK(test.images_path() == d / "t10k-images-idx3-ubyte.gz");
  CHECK(first_labels(test, 2) == std::vector<int64_t>{5, 8});
  CHECK(pixel_at(test, 1, 0, 13, 20) == pixel(1, 13 * 28 + 20));
  // a raw file beside the .gz is read instead of it
  write_file(d / "t10k-labels-idx1-ubyte", idx_labels({1, 2}));
  const MNISTDataset both(d.path, false);
  CHECK(both.labels_path() == d / "t10k-labels-idx1-ubyte");
  CHECK(first_labels(both, 2) == std::vector<int64_t>{1, 2});
  CHECK(both.name() == "MNIST test");
}

TEST_CASE("IDX errors name the file and what is wrong") {
  TempDir d;
  const std::string img = d / "train-images-idx3-ubyte", lab = d / "train-labels-idx1-ubyte";
  write_file(img, idx_images(3));
  write_file(lab, idx_labels({1, 2, 3}));
  auto load = [&] { MNISTDataset(d.path, true); };
  SUBCASE("missing directory") {
    const std::string e = error_of([&] { MNISTDataset(d / "none", true); });
    CHECK(contains(e, d / "none"));
    CHECK(contains(e, "--download"));
  }
  SUBCASE("missing file") {
    fs::remove(lab);
    CHECK(contains(error_of(load), "train-labels-idx1-ubyte (or .gz) missing in " + d.path));
  }
  SUBCASE("bad magic numbers") {
    write_file(img, idx_images(3, 28, 28, 2049));
    std::string e = error_of(load);
    CHECK(contains(e, img));
    CHECK(contains(e, "magic number 2049, expected 2051"));
    write_file(img, idx_images(3));
    write_file(lab, idx_labels({1, 2, 3}, 2051));
    e = error_of(load);
    CHECK(contains(e, lab));
    CHECK(contains(e, "magic number 2051, expected 2049"));
  }
  SUBCASE("wrong image dimensions") {
    write_file(img, idx_images(3, 28, 27));
    const std::string e = error_of(load);
    CHECK(contains(e, img));
    CHECK(contains(e, "28x27"));
  }
  SUBCASE("header shorter than 16 bytes") {
    write_file(img, {0, 0, 8, 3, 0});
    const std::string e = error_of(load);
    CHECK(contains(e, img));
    CHECK(contains(e, "16-byte IDX header"));
  }
  SUBCASE("truncated raw file: byte offset where the data ends") {
    Bytes b = idx_images(3);
    b.resize(16 + 2 * 784 + 100);
    write_file(img, b);
    const std::string e = error_of(load);
    CHECK(contains(e, img));
    CHECK(contains(e, "truncated"));
    CHECK(contains(e, "byte offset 1684"));
  }
  SUBCASE("truncated data inside a valid gzip stream") {
    fs::remove(lab);
    Bytes b = idx_labels({1, 2, 3});
    b.pop_back();
    write_gzip(lab + ".gz", b);
    const std::string e = error_of(load);
    CHECK(contains(e, lab + ".gz"));
    CHECK(contains(e, "byte offset 10"));
  }
  SUBCASE("cut-off and corrupt gzip files") {
    fs::remove(img);
    write_gzip(img + ".gz", idx_images(3));
    Bytes gz;
    {
      std::ifstream in(img + ".gz", std::ios::binary);
      gz.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    write_file(img + ".gz", Bytes(gz.begin(), gz.begin() + long(gz.size() / 2)));
    CHECK(contains(error_of(load), img + ".gz"));
    gz[gz.size() / 2] ^= 0xff;
    gz[gz.size() / 2 + 1] ^= 0x5a;
    write_file(img + ".gz", gz);
    CHECK(contains(error_of(load), img + ".gz"));
  }
  SUBCASE("a gzip file is inflated no further than its header promises (a small .gz cannot fill memory)") {
    fs::remove(lab);
    gzFile f = gzopen((lab + ".gz").c_str(), "wb9");
    REQUIRE(f != nullptr);
    const Bytes labels = idx_labels({1, 2, 3});
    REQUIRE(gzwrite(f, labels.data(), unsigned(labels.size())) == int(labels.size()));
    const Bytes zeros(size_t(1) << 20, 0);
    for (int mb = 0; mb < 64; ++mb) REQUIRE(gzwrite(f, zeros.data(), unsigned(zeros.size())) == int(zeros.size()));
    gzclose(f);
    const std::string e = error_of(load);
    CHECK(contains(e, lab + ".gz"));
    CHECK(contains(e, "has unexpected bytes after the 3 labels its header promises (from byte offset 11"));
  }
  SUBCASE("a .gz whose header claims a huge count (or is no IDX file) is refused before its data is inflated") {
    // Each file: a 16-byte header, then 2 MB of incompressible bytes, the .gz cut off at three
    // quarters. A reader that inflated past the header would report the cut gzip stream (or run out of
    // memory on a real bomb); one that checks the header first never reaches it.
    auto cut_gz = [&](const std::string& path, Bytes head) {
      head.resize(head.size() + (size_t(2) << 20));
      uint32_t x = 12345;
      for (size_t i = 16; i < head.size(); ++i) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        head[i] = uint8_t(x);
      }
      write_gzip(path, head);
      fs::resize_file(path, fs::file_size(path) * 3 / 4);
    };
    fs::remove(img);
    Bytes head;
    put_be32(head, 2051);
    put_be32(head, 0xffffffffu);
    put_be32(head, 28);
    put_be32(head, 28);
    cut_gz(img + ".gz", head);
    std::string e = error_of(load);
    CHECK(contains(e, img + ".gz's header promises 4294967295 images"));
    CHECK(contains(e, "more than the 120000"));
    CHECK(!contains(e, "gzip"));
    // The same for a labels file, and for a wrong magic number or wrong dimensions.
    write_file(img, idx_images(3));
    fs::remove(lab);
    cut_gz(lab + ".gz", {0, 0, 8, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0});
    e = error_of(load);
    CHECK(contains(e, lab + ".gz's header promises 4294967295 labels"));
    CHECK(!contains(e, "gzip"));
    write_file(lab, idx_labels({1, 2, 3}));
    fs::remove(img);
    head[3] = 0x04;  // magic 2052
    cut_gz(img + ".gz", head);
    e = error_of(load);
    CHECK(contains(e, "magic number 2052, expected 2051"));
    CHECK(!contains(e, "gzip"));
    head[3] = 0x03;
    head[15] = 29;  // 28x29 images
    cut_gz(img + ".gz", head);
    e = error_of(load);
    CHECK(contains(e, "28x29"));
    CHECK(!contains(e, "gzip"));
  }
  SUBCASE("a raw file whose header claims more than 120000 items is refused") {
    Bytes b = idx_labels({1, 2, 3});
    b[4] = 0, b[5] = 0x01, b[6] = 0xd4, b[7] = 0xc1;  // 120001
    write_file(lab, b);
    const std::string e = error_of(load);
    CHECK(contains(e, lab + "'s header promises 120001 labels"));
    CHECK(contains(e, "more than the 120000"));
  }
  SUBCASE("extra bytes after the data") {
    Bytes b = idx_labels({1, 2, 3});
    b.push_back(0);
    write_file(lab, b);
    const std::string e = error_of(load);
    CHECK(contains(e, lab));
    CHECK(contains(e, "1 unexpected bytes"));
  }
  SUBCASE("a raw file with a good header and a terabyte after it is refused without reading (or holding) it") {
    fs::resize_file(img, uintmax_t(1) << 40);  // sparse: nothing is written
    const std::string e = error_of(load);      // (reading it whole would ask for 1 TiB)
    CHECK(contains(e, img));
    CHECK(contains(e, std::to_string((uint64_t(1) << 40) - 16 - 3 * 784) + " unexpected bytes after the 3 images"));
  }
  SUBCASE("image and label counts differ") {
    write_file(lab, idx_labels({1, 2}));
    const std::string e = error_of(load);
    CHECK(contains(e, img));
    CHECK(contains(e, lab));
    CHECK(contains(e, "3 images"));
    CHECK(contains(e, "2 labels"));
  }
  SUBCASE("label out of range") {
    write_file(lab, idx_labels({1, 10, 3}));
    const std::string e = error_of(load);
    CHECK(contains(e, lab));
    CHECK(contains(e, "label 1"));
    CHECK(contains(e, "is 10"));
  }
}

// A small synthetic set of 2x5x3 images (30 pixels each).
static SyntheticOptions small_synthetic(int64_t size, int64_t classes, uint64_t seed) {
  SyntheticOptions o;
  o.size = size;
  o.channels = 2;
  o.height = 5;
  o.width = 3;
  o.num_classes = classes;
  o.seed = seed;
  return o;
}

TEST_CASE("SyntheticDataset as a Dataset: uint8 images from the same pattern+noise as batch()") {
  const SyntheticDataset ds(small_synthetic(20, 4, 9));
  const Dataset& base = ds;
  CHECK(base.name() == "synthetic");
  CHECK(base.image_shape() == Shape{2, 5, 3});
  CHECK(base.num_classes() == 4);
  CHECK(base.size() == 20);
  Tensor images, labels;
  ds.batch({0, 7, 19}, images, labels);
  const std::vector<float> f = images.to_vector();
  Bytes img(30);
  int distinct = 0;
  for (int64_t k = 0; k < 3; ++k) {
    const int64_t idx = k == 0 ? 0 : k == 1 ? 7 : 19;
    CHECK(base.get(idx, img.data()) == labels.to_int_vector()[size_t(k)]);
    for (int j = 0; j < 30; ++j) {
      const long want = std::lround((f[size_t(k * 30 + j)] + 1.5f) * 255.f / 3.f);
      CHECK(int(img[size_t(j)]) == std::clamp(want, 0L, 255L));
      distinct += img[size_t(j)] != img[0];
    }
  }
  CHECK(distinct > 0);
  CHECK(contains(error_of([&] { base.get(20, img.data()); }), "out of range"));
}

TEST_CASE("SyntheticDataset: each pixel is its class pattern plus noise from element j of Philox stream 102") {
  // The definition, element by element (the dataset draws four pixels per Philox block; an image of
  // 30 pixels ends inside a block, and the next image starts a block of its own).
  SyntheticOptions o = small_synthetic(9, 3, 77);
  o.noise = 0.25f;
  const SyntheticDataset ds(o);
  Tensor images, labels;
  ds.batch({0, 1, 8}, images, labels);
  const std::vector<float> f = images.to_vector();
  const int64_t d = 30;
  for (int64_t k = 0; k < 3; ++k) {
    const uint64_t idx = k == 2 ? 8 : uint64_t(k);
    const int64_t c = int64_t(philox_u32(77, 101, 0, idx) % 3u);
    CHECK(labels.to_int_vector()[size_t(k)] == c);
    const uint64_t off = idx * uint64_t((d + 3) / 4);
    for (int64_t j = 0; j < d; ++j) {
      const float pattern = 2.f * philox_uniform(philox_u32(77, 100, 0, uint64_t(c * d + j))) - 1.f;
      const float want = pattern + 0.25f * (2.f * philox_uniform(philox_u32(77, 102, off, uint64_t(j))) - 1.f);
      CHECK(f[size_t(k * d + j)] == doctest::Approx(want).epsilon(1e-6));
    }
  }
}
