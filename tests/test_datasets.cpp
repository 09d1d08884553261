// Dataset readers: CIFAR-10 and MNIST on the real files (skipped when absent), and CIFAR-10/100,
// (Fashion-)MNIST IDX and image folders on small files written here, with every kind of bad input.
#include <doctest/doctest.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
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
#include <thread>
#include <vector>

#include "data/cifar.h"
#include "data/image_folder.h"
#include "data/mnist.h"
#include "data/synthetic.h"
#include "engine/error.h"
#include "tests/test_util.h"

using namespace volt;
namespace fs = std::filesystem;

namespace {

using test::contains;
using test::error_of;
using Bytes = std::vector<uint8_t>;

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("volt_test_datasets_") {}
};

void write_file(const std::string& path, const Bytes& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  REQUIRE(out.good());
}

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

// A distinct, non-trivial byte for (image, position).
uint8_t pixel(int64_t image, int64_t pos) { return uint8_t((image * 37 + pos * 11 + pos / 7) % 251); }

// CIFAR records: `label_bytes` labels then 3072 pixel bytes, for each entry of labels.
Bytes cifar_records(const std::vector<std::vector<uint8_t>>& labels) {
  Bytes out;
  for (size_t i = 0; i < labels.size(); ++i) {
    out.insert(out.end(), labels[i].begin(), labels[i].end());
    for (int64_t p = 0; p < 3072; ++p) out.push_back(pixel(int64_t(i), p));
  }
  return out;
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

std::vector<int64_t> first_labels(const Dataset& ds, int64_t n) {
  std::vector<int64_t> out;
  Bytes img(size_t(ds.image_bytes()));
  for (int64_t i = 0; i < n; ++i) out.push_back(ds.get(i, img.data()));
  return out;
}

// Pixel (c, y, x) of image i via get().
int pixel_at(const Dataset& ds, int64_t i, int64_t c, int64_t y, int64_t x) {
  const Shape s = ds.image_shape();
  Bytes img(size_t(ds.image_bytes()));
  ds.get(i, img.data());
  return img[size_t((c * s[1] + y) * s[2] + x)];
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
  SUBCASE("extra bytes after the data") {
    Bytes b = idx_labels({1, 2, 3});
    b.push_back(0);
    write_file(lab, b);
    const std::string e = error_of(load);
    CHECK(contains(e, lab));
    CHECK(contains(e, "1 unexpected bytes"));
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

// ---- image folders ----

namespace {
// w x h image with `comp` interleaved channels; value depends on (seed, y, x, c).
Bytes hwc_image(int w, int h, int comp, int seed) {
  Bytes b(size_t(w * h * comp));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < comp; ++c) b[size_t((y * w + x) * comp + c)] = uint8_t((seed * 53 + y * 29 + x * 7 + c * 85) % 256);
  return b;
}

void write_png(const std::string& path, int w, int h, int comp, int seed) {
  fs::create_directories(fs::path(path).parent_path());
  REQUIRE(stbi_write_png(path.c_str(), w, h, comp, hwc_image(w, h, comp, seed).data(), w * comp));
}
}  // namespace

TEST_CASE("ImageFolder: sorted classes and files, PNG/BMP/JPEG decoded to channel-planar [C, H, W]") {
  TempDir d;
  const int w = 5, h = 3;
  write_png(d / "b_dog/z.png", w, h, 3, 1);
  write_png(d / "b_dog/A.PNG", w, h, 3, 2);
  fs::create_directories(d / "a_cat");
  REQUIRE(stbi_write_bmp((d / "a_cat/x.bmp").c_str(), w, h, 3, hwc_image(w, h, 3, 3).data()));
  REQUIRE(stbi_write_jpg((d / "a_cat/y.JPEG").c_str(), w, h, 3, hwc_image(w, h, 3, 4).data(), 100));
  write_file(d / "a_cat/notes.txt", {1, 2, 3});  // not an image: ignored
  write_file(d / "readme.md", {1});                // not a folder: ignored
  const ImageFolderDataset ds(d.path);
  CHECK(ds.class_names() == std::vector<std::string>{"a_cat", "b_dog"});
  CHECK(ds.size() == 4);
  CHECK(ds.num_classes() == 2);
  CHECK(ds.image_shape() == Shape{3, h, w});
  CHECK(ds.path(0) == d / "a_cat/x.bmp");
  CHECK(ds.path(1) == d / "a_cat/y.JPEG");
  CHECK(ds.path(2) == d / "b_dog/A.PNG");
  CHECK(ds.path(3) == d / "b_dog/z.png");
  CHECK(first_labels(ds, 4) == std::vector<int64_t>{0, 0, 1, 1});
  Bytes img(size_t(ds.image_bytes()));
  for (int64_t i : {0, 2, 3}) {  // lossless formats: exact, seeds 3, 2, 1
    const Bytes want = hwc_image(w, h, 3, i == 0 ? 3 : i == 2 ? 2 : 1);
    ds.get(i, img.data());
    int bad = 0;
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < w * h; ++p) bad += img[size_t(c * w * h + p)] != want[size_t(p * 3 + c)];
    CHECK_MESSAGE(bad == 0, "image ", i);
  }
  ds.get(1, img.data());  // JPEG at quality 100: close
  const Bytes want = hwc_image(w, h, 3, 4);
  int worst = 0;
  for (int c = 0; c < 3; ++c)
    for (int p = 0; p < w * h; ++p) worst = std::max(worst, std::abs(img[size_t(c * w * h + p)] - want[size_t(p * 3 + c)]));
  CHECK(worst <= 40);

  // grey: a 1-channel PNG read as 1 channel is exact, and as 3 channels is replicated
  TempDir g;
  write_png(g / "only/a.png", 4, 6, 1, 5);
  const ImageFolderDataset grey(g.path, 1);
  CHECK(grey.image_shape() == Shape{1, 6, 4});
  CHECK(pixel_at(grey, 0, 0, 5, 3) == hwc_image(4, 6, 1, 5)[5 * 4 + 3]);
  const ImageFolderDataset rgb(g.path, 3);
  CHECK(pixel_at(rgb, 0, 2, 5, 3) == hwc_image(4, 6, 1, 5)[5 * 4 + 3]);
  CHECK(contains(error_of([&] { ImageFolderDataset(g.path, 5); }), "channels must be 1, 2, 3 or 4"));
}

TEST_CASE("ImageFolder errors name the folder or file") {
  TempDir d;
  SUBCASE("missing directory") { CHECK(contains(error_of([&] { ImageFolderDataset(d / "none"); }), d / "none")); }
  SUBCASE("no class folders") {
    write_file(d / "stray.png", {1});
    const std::string e = error_of([&] { ImageFolderDataset(d.path); });
    CHECK(contains(e, "no class folders in " + d.path));
  }
  SUBCASE("empty class folder") {
    write_png(d / "a/1.png", 2, 2, 3, 0);
    fs::create_directories(d / "b");
    write_file(d / "b/readme.txt", {1});
    const std::string e = error_of([&] { ImageFolderDataset(d.path); });
    CHECK(contains(e, d / "b"));
    CHECK(contains(e, "holds no images"));
  }
  SUBCASE("unreadable image") {
    write_png(d / "a/1.png", 2, 2, 3, 0);
    write_file(d / "a/2.png", {'n', 'o', 't', ' ', 'a', ' ', 'p', 'n', 'g'});
    const std::string e = error_of([&] { ImageFolderDataset(d.path); });
    CHECK(contains(e, d / "a/2.png"));
    CHECK(contains(e, "cannot read image"));
  }
  SUBCASE("image whose header is fine but data is cut off fails in get()") {
    write_png(d / "a/1.png", 16, 16, 3, 0);
    Bytes b;
    {
      std::ifstream in(d / "a/1.png", std::ios::binary);
      b.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    b.resize(60);
    write_file(d / "a/1.png", b);
    const ImageFolderDataset ds(d.path);
    Bytes img(size_t(ds.image_bytes()));
    const std::string e = error_of([&] { ds.get(0, img.data()); });
    CHECK(contains(e, d / "a/1.png"));
    CHECK(contains(e, "cannot decode"));
  }
  SUBCASE("mixed image sizes: the first file that differs") {
    write_png(d / "a/1.png", 4, 4, 3, 0);
    write_png(d / "a/2.png", 4, 4, 3, 1);
    write_png(d / "b/1.png", 4, 5, 3, 2);
    write_png(d / "b/2.png", 3, 3, 3, 3);
    const std::string e = error_of([&] { ImageFolderDataset(d.path); });
    CHECK(contains(e, d / "b/1.png"));
    CHECK(contains(e, "4x5"));
    CHECK(contains(e, d / "a/1.png"));
    CHECK_FALSE(contains(e, d / "b/2.png"));
  }
}

// ---- synthetic, and concurrent reads ----

TEST_CASE("SyntheticDataset as a Dataset: uint8 images from the same pattern+noise as batch()") {
  SyntheticOptions o;
  o.size = 20;
  o.channels = 2;
  o.height = 5;
  o.width = 3;
  o.num_classes = 4;
  o.seed = 9;
  const SyntheticDataset ds(o);
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

TEST_CASE("get() is safe to call from several threads at once") {
  TempDir d;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 4; ++i) write_png(d / ("c" + std::to_string(c) + "/" + std::to_string(i) + ".png"), 8, 6, 3, c * 4 + i);
  TempDir cd;
  write_file(cd / "test_batch.bin", cifar_records({{1}, {2}, {3}, {4}, {5}}));
  const ImageFolderDataset folder(d.path, 3);
  const CIFAR10Dataset cifar(cd.path, false, false);
  SyntheticOptions so;
  so.size = 12;
  const SyntheticDataset synth(so);
  for (const Dataset* ds : std::vector<const Dataset*>{&folder, &cifar, &synth}) {
    std::vector<Bytes> want(size_t(ds->size()), Bytes(size_t(ds->image_bytes())));
    std::vector<int64_t> want_label(size_t(ds->size()));
    for (int64_t i = 0; i < ds->size(); ++i) want_label[size_t(i)] = ds->get(i, want[size_t(i)].data());
    std::vector<int> mismatches(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        Bytes img(size_t(ds->image_bytes()));
        for (int rep = 0; rep < 5; ++rep)
          for (int64_t i = 0; i < ds->size(); ++i) {
            const int64_t j = (i + t + rep) % ds->size();
            const int64_t l = ds->get(j, img.data());
            mismatches[size_t(t)] += l != want_label[size_t(j)] || img != want[size_t(j)];
          }
      });
    for (auto& th : threads) th.join();
    CHECK_MESSAGE(mismatches == std::vector<int>(4, 0), ds->name());
  }
}
