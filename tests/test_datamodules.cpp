// The data modules beyond CIFAR-10/MNIST (those are in test_loader.cpp): synthetic, image folder,
// Fashion-MNIST and CIFAR-100, on small data written here: splits, shapes, loaders and errors.
#include <doctest/doctest.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "data/datamodule.h"
#include "engine/ops.h"
#include "tests/test_util.h"

using namespace volt;
namespace fs = std::filesystem;
using test::contains;
using test::error_of;

namespace {

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("volt_test_datamodules_") {}
};

// A w x h PNG with `comp` channels whose pixels depend on seed.
void write_png(const std::string& path, int w, int h, int comp, int seed) {
  fs::create_directories(fs::path(path).parent_path());
  std::vector<uint8_t> px(size_t(w * h * comp));
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t((size_t(seed) * 37 + i * 11) % 256);
  REQUIRE(stbi_write_png(path.c_str(), w, h, comp, px.data(), w * comp));
}

// classes x per_class PNGs under dir/<class>/.
void write_class_folders(const std::string& dir, const std::vector<std::string>& classes, int per_class, int w = 12,
                         int h = 10) {
  int seed = 0;
  for (const auto& c : classes)
    for (int i = 0; i < per_class; ++i) write_png(dir + "/" + c + "/img" + std::to_string(i) + ".png", w, h, 3, seed++);
}

void put_be32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}

// Raw IDX image and label files of n 28x28 images with labels i % 10.
void write_idx(const std::string& dir, const std::string& prefix, uint32_t n) {
  std::vector<uint8_t> img, lab;
  put_be32(img, 2051);
  put_be32(img, n);
  put_be32(img, 28);
  put_be32(img, 28);
  for (uint32_t i = 0; i < n * 28 * 28; ++i) img.push_back(uint8_t(i % 251));
  put_be32(lab, 2049);
  put_be32(lab, n);
  for (uint32_t i = 0; i < n; ++i) lab.push_back(uint8_t(i % 10));
  fs::create_directories(dir);
  std::ofstream(dir + "/" + prefix + "-images-idx3-ubyte", std::ios::binary)
      .write(reinterpret_cast<const char*>(img.data()), std::streamsize(img.size()));
  std::ofstream(dir + "/" + prefix + "-labels-idx1-ubyte", std::ios::binary)
      .write(reinterpret_cast<const char*>(lab.data()), std::streamsize(lab.size()));
}

std::set<int64_t> indices_of(const Dataset& d) {
  const auto* s = dynamic_cast<const Subset*>(&d);
  REQUIRE(s != nullptr);
  return {s->indices().begin(), s->indices().end()};
}

}  // namespace

TEST_CASE("SyntheticDataModule: CIFAR-10's sizes by default, disjoint splits, test images after them") {
  DataModuleOptions o;
  o.batch_size = 8;
  o.num_workers = 0;
  CHECK(SyntheticDataModule(o).image_shape() == Shape{3, 32, 32});
  SyntheticDataSizes z;
  CHECK(z.train == 45000);
  CHECK(z.val == 5000);
  CHECK(z.test == 10000);
  z.train = 30;
  z.val = 6;
  z.test = 10;
  z.channels = 1;
  z.height = z.width = 16;
  z.num_classes = 4;
  SyntheticDataModule dm(o, z);
  dm.setup("fit");
  CHECK(dm.train_dataset()->size() == 30);
  CHECK(dm.val_dataset()->size() == 6);
  CHECK(dm.test_dataset() == nullptr);
  const auto train = indices_of(*dm.train_dataset()), val = indices_of(*dm.val_dataset());
  std::set<int64_t> both = train;
  both.insert(val.begin(), val.end());
  CHECK(both.size() == 36);
  CHECK(*both.rbegin() == 35);
  const auto* kept = dm.train_dataset().get();
  dm.setup("");  // builds the test set, keeps train and val
  CHECK(dm.train_dataset().get() == kept);
  CHECK(indices_of(*dm.test_dataset()) == std::set<int64_t>{36, 37, 38, 39, 40, 41, 42, 43, 44, 45});
  auto loader = dm.train_loader();
  Batch b;
  REQUIRE(loader->next(b));
  CHECK(b.images.shape() == Shape{8, 1, 16, 16});
  CHECK(dm.num_classes() == 4);
  CHECK(contains(error_of([&] { SyntheticDataModule(o, SyntheticDataSizes{0, 1, 1}); }), "must be > 0"));

  // 16-bit batches: the float32 batch's values, rounded as a cast rounds them.
  for (DType t : {DType::F16, DType::BF16}) {
    dm.set_image_dtype(t);
    Batch h;
    REQUIRE(dm.train_loader()->next(h));
    CHECK(h.images.dtype() == t);
    CHECK(h.labels.to_int_vector() == b.labels.to_int_vector());
    CHECK(h.images.to_vector() == cast(b.images, t).to_vector());
  }
  CHECK(contains(error_of([&] { dm.set_image_dtype(DType::U8); }), "float32, float16 or bfloat16"));
}

TEST_CASE("ImageFolderDataModule: train/test folders, val split off train or read from val/") {
  TempDir d;
  write_class_folders(d / "train", {"cat", "dog"}, 10);
  write_class_folders(d / "test", {"cat", "dog"}, 3);
  DataModuleOptions o;
  o.data_dir = d.path;
  o.batch_size = 4;
  o.num_workers = 0;
  {
    ImageFolderDataModule dm(o);
    CHECK(contains(error_of([&] { dm.image_shape(); }), "after setup()"));
    dm.setup("");
    CHECK(dm.image_shape() == Shape{3, 10, 12});
    CHECK(dm.num_classes() == 2);
    CHECK(dm.train_dataset()->size() == 18);  // 10% of 20 held out
    CHECK(dm.val_dataset()->size() == 2);
    CHECK(dm.test_dataset()->size() == 6);
    Batch b;
    REQUIRE(dm.test_loader()->next(b));
    CHECK(b.images.shape() == Shape{4, 3, 10, 12});
  }
  write_class_folders(d / "val", {"cat", "dog"}, 2);
  {
    ImageFolderDataModule dm(o, 1);
    dm.setup("fit");
    CHECK(dm.train_dataset()->size() == 20);
    CHECK(dm.val_dataset()->size() == 4);
    CHECK(dm.image_shape() == Shape{1, 10, 12});
  }
  // A test folder with other classes, or other image sizes, is refused by name.
  write_class_folders(d / "test", {"emu"}, 1);
  CHECK(contains(error_of([&] { ImageFolderDataModule(o).setup(""); }), "classes"));
  fs::remove_all(d / "test");
  write_class_folders(d / "test", {"cat", "dog"}, 1, 8, 8);
  CHECK(contains(error_of([&] { ImageFolderDataModule(o).setup(""); }), "[3, 8, 8]"));
  {  // the same checks when the stages are set up one by one, as the Trainer does, in either order
    ImageFolderDataModule fit_first(o);
    fit_first.setup("fit");
    CHECK(contains(error_of([&] { fit_first.setup("test"); }), "[3, 8, 8]"));
    CHECK(fit_first.image_shape() == Shape{3, 10, 12});
    ImageFolderDataModule test_first(o);
    test_first.setup("test");
    CHECK(contains(error_of([&] { test_first.setup("fit"); }), "[3, 10, 12]"));
    CHECK(test_first.image_shape() == Shape{3, 8, 8});
  }
  fs::remove_all(d / "test");
  write_class_folders(d / "test", {"dog"}, 1);
  {
    ImageFolderDataModule dm(o);
    dm.setup("fit");
    CHECK(contains(error_of([&] { dm.setup("test"); }), "classes"));
    CHECK(dm.num_classes() == 2);
  }
  fs::remove_all(d / "test");
  const std::string err = error_of([&] { ImageFolderDataModule(o).setup("test"); });
  CHECK(contains(err, d / "test"));
  CHECK(contains(err, "does not exist"));
  DataModuleOptions none;
  CHECK(contains(error_of([&] { ImageFolderDataModule dm(none); }), "--data-dir"));
}

TEST_CASE("FashionMNISTDataModule: its own folder name and class count, MNIST's split proportion") {
  TempDir d;
  write_idx(d / "fashion-mnist", "train", 120);
  write_idx(d / "fashion-mnist", "t10k", 20);
  DataModuleOptions o;
  o.data_dir = d / "fashion-mnist";
  o.num_workers = 0;
  FashionMNISTDataModule dm(o);
  CHECK(dm.name() == "Fashion-MNIST");
  dm.setup("");
  CHECK(dm.train_dataset()->size() == 110);  // 5,000 of 60,000 = 1/12 held out
  CHECK(dm.val_dataset()->size() == 10);
  CHECK(dm.test_dataset()->size() == 20);
  CHECK(dm.image_shape() == Shape{1, 28, 28});

  // Without --data-dir it looks under $VOLT_DATA_DIR/fashion-mnist.
  test::ScopedEnv env("VOLT_DATA_DIR", d.path);
  DataModuleOptions dflt;
  CHECK(FashionMNISTDataModule(dflt).data_dir() == d / "fashion-mnist");
  CHECK(CIFAR100DataModule(dflt).data_dir() == d / "cifar-100");
  CHECK(MNISTDataModule(dflt).data_dir() == d / "mnist");
}

TEST_CASE("augment: random crop for every data set, the horizontal flip for all but MNIST's digits") {
  TempDir d;
  write_idx(d / "mnist", "train", 120);
  write_idx(d / "mnist", "t10k", 20);
  DataModuleOptions o;
  o.data_dir = d / "mnist";
  o.num_workers = 0;
  o.batch_size = 16;
  o.augment = true;
  o.cutout = 6;
  MNISTDataModule mnist(o);
  CHECK(mnist.train_transform().crop_padding == 4);
  CHECK_FALSE(mnist.train_transform().horizontal_flip);
  CHECK(mnist.train_transform().cutout == 6);
  CHECK_FALSE(mnist.eval_transform().augments());  // validation and test batches are never augmented
  o.data_dir = d / "fashion-mnist";
  CHECK(FashionMNISTDataModule(o).train_transform().horizontal_flip);
  CHECK(FashionMNISTDataModule(o).train_transform().crop_padding == 4);
  o.data_dir = d / "cifar-10";
  CHECK(CIFAR10DataModule(o).train_transform().horizontal_flip);
  o.augment = false;
  o.cutout = 0;
  CHECK_FALSE(CIFAR10DataModule(o).train_transform().augments());
  o.data_dir = d / "mnist";
  MNISTDataModule plain(o);
  CHECK_FALSE(plain.train_transform().augments());
  // The batches themselves: the cropped first batch is not the plain one (it was, on MNIST).
  auto first_batch = [](MNISTDataModule& dm) {
    dm.setup("fit");
    Batch b;
    REQUIRE(dm.train_loader()->next(b));
    return b.images.to_vector();
  };
  o.augment = true;
  MNISTDataModule cropped(o);
  CHECK(first_batch(cropped) != first_batch(plain));
}

TEST_CASE("CIFAR100DataModule: a missing folder names the path and --download") {
  DataModuleOptions o;
  o.data_dir = "/nonexistent/volt/cifar-100";
  CIFAR100DataModule dm(o);
  CHECK(dm.num_classes() == 100);
  const std::string err = error_of([&] { dm.setup("fit"); });
  CHECK(contains(err, "/nonexistent/volt/cifar-100"));
  CHECK(contains(err, "--download"));
}
