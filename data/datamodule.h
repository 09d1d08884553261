// DataModule: Lightning's split of data handling from the model. prepare_data() fetches once
// (local rank 0 of each node, when asked to download), setup(stage) builds the datasets on every
// process, and train/val/test_loader() hand out batches. CIFAR10DataModule and MNISTDataModule
// reproduce the tutorial: a seeded random_split of the training files into train and validation
// (45,000/5,000 and 55,000/5,000), the test set separate, and Normalize(0.5, 0.5) after scaling
// to [0, 1]; optional augmentation (random crop with padding 4, horizontal flip, cutout). The same
// recipe serves CIFAR-100, Fashion-MNIST, an image folder and a seeded synthetic set.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "dataset.h"
#include "loader.h"
#include "mnist.h"

namespace volt {

struct DataModuleOptions {
  std::string data_dir;      // "" = $VOLT_DATA_DIR/<dataset>, else ./datasets/<dataset>
  int64_t batch_size = 128;
  int num_workers = 2;
  bool download = false;     // prepare_data() fetches missing files
  std::string download_url;  // base URL override ("" = the official mirror)
  uint64_t seed = 42;        // split and shuffle
  // Random crop (padding 4) on training batches, and a horizontal flip except for MNIST's digits
  // (a mirrored digit is not that digit).
  bool augment = false;
  int64_t cutout = 0;        // > 0: cutout square side on training batches
  int64_t rank = 0, world_size = 1, local_rank = 0;
  std::function<void()> barrier;  // called after prepare_data on every process (distributed runs)
  // On a GPU (set_device): keep each split on the device when it fits (see DataOnDevice in loader.h).
  DataOnDevice data_on_device = DataOnDevice::Auto;
};

class DataModule {
 public:
  explicit DataModule(const DataModuleOptions& o) : o_(o) {}
  virtual ~DataModule() = default;
  virtual std::string name() const = 0;
  virtual void prepare_data() {}
  // stage: "fit" (train + val), "validate", "test", or "" (all). A part built by an earlier call is
  // kept, so calling it again per stage (as the Trainer does) reads nothing twice.
  virtual void setup(const std::string& stage) = 0;
  std::unique_ptr<DataLoader> train_loader() const;
  std::unique_ptr<DataLoader> val_loader() const;
  std::unique_ptr<DataLoader> test_loader() const;
  virtual Shape image_shape() const = 0;
  virtual int64_t num_classes() const = 0;
  // A data-parallel run's layout (the Trainer sets it before prepare_data and the loaders): each
  // loader hands this rank its shard; prepare_data downloads on local rank 0 while the other
  // processes wait at `barrier`.
  void set_distributed(int64_t rank, int64_t world_size, int64_t local_rank, std::function<void()> barrier);
  // Where the loaders deliver batches (the Trainer sets its device): on a CUDA device they are
  // GPU-resident or copied from pinned memory (options().data_on_device decides).
  void set_device(Device device) { device_ = device; }
  // What the training and the validation/test batches go through (augment, cutout, normalisation).
  const TransformOptions& train_transform() const { return train_transform_; }
  const TransformOptions& eval_transform() const { return eval_transform_; }
  Device device() const { return device_; }
  // The batches' image type: float32 (default), or float16 / bfloat16 for a mixed-precision model
  // whose first op takes them (autocast's convolution does): half the bytes to copy and no cast.
  void set_image_dtype(DType t);
  DType image_dtype() const { return image_dtype_; }
  const std::string& data_dir() const { return dir_; }
  const DataModuleOptions& options() const { return o_; }
  std::shared_ptr<const Dataset> train_dataset() const { return train_; }
  std::shared_ptr<const Dataset> val_dataset() const { return val_; }
  std::shared_ptr<const Dataset> test_dataset() const { return test_; }

 protected:
  // Splits `full` into train and validation with `val_size` validation items (seeded).
  void split(std::shared_ptr<const Dataset> full, int64_t val_size);
  std::unique_ptr<DataLoader> make_loader(const std::shared_ptr<const Dataset>& d, bool training, const char* what) const;
  std::string resolve_dir(const std::string& dataset_folder) const;
  // Normalize(0.5, 0.5) over `channels`; training adds cutout and the augment option's random crop
  // (padding 4), and its horizontal flip when `flip`.
  void set_transforms(int64_t channels, bool flip);

  DataModuleOptions o_;
  Device device_ = Device::cpu();
  DType image_dtype_ = DType::F32;
  std::string dir_;
  TransformOptions eval_transform_, train_transform_;
  std::shared_ptr<const Dataset> train_, val_, test_;
};

class CIFAR10DataModule : public DataModule {
 public:
  explicit CIFAR10DataModule(const DataModuleOptions& o);
  std::string name() const override { return "CIFAR-10"; }
  void prepare_data() override;
  void setup(const std::string& stage) override;
  Shape image_shape() const override { return {3, 32, 32}; }
  int64_t num_classes() const override { return 10; }
};

// CIFAR-100 binary (fine labels): 45,000/5,000 split, folder "cifar-100".
class CIFAR100DataModule : public DataModule {
 public:
  explicit CIFAR100DataModule(const DataModuleOptions& o);
  std::string name() const override { return "CIFAR-100"; }
  void prepare_data() override;
  void setup(const std::string& stage) override;
  Shape image_shape() const override { return {3, 32, 32}; }
  int64_t num_classes() const override { return 100; }
};

// MNIST (folder "mnist") or Fashion-MNIST (folder "fashion-mnist"): 55,000/5,000 split.
class MNISTDataModule : public DataModule {
 public:
  explicit MNISTDataModule(const DataModuleOptions& o, MNISTVariant variant = MNISTVariant::MNIST);
  std::string name() const override;
  void prepare_data() override;
  void setup(const std::string& stage) override;
  Shape image_shape() const override { return {1, 28, 28}; }
  int64_t num_classes() const override { return 10; }

 private:
  MNISTVariant variant_;
};

class FashionMNISTDataModule : public MNISTDataModule {
 public:
  explicit FashionMNISTDataModule(const DataModuleOptions& o) : MNISTDataModule(o, MNISTVariant::FashionMNIST) {}
};

// An image folder with torchvision's layout: <data_dir>/train/<class>/*.png|jpg|bmp and
// <data_dir>/test/<class>/..., plus <data_dir>/val/<class>/... if present (otherwise 10% of train,
// seeded). Train, val and test must have the same classes and image size. No download.
class ImageFolderDataModule : public DataModule {
 public:
  explicit ImageFolderDataModule(const DataModuleOptions& o, int64_t channels = 3);
  std::string name() const override { return "ImageFolder"; }
  void setup(const std::string& stage) override;
  // Known after setup() (throws volt::Error before).
  Shape image_shape() const override;
  int64_t num_classes() const override;

 private:
  int64_t channels_;
  Shape shape_;
  int64_t classes_ = 0;
  // The first folder setup() read, by whichever stage: every later one must have its classes and size.
  std::shared_ptr<const class ImageFolderDataset> ref_;
};

// Seeded synthetic images (data/synthetic.h) split like CIFAR-10's by default: 45,000 train,
// 5,000 validation and 10,000 test images of 3x32x32 in 10 classes. Nothing on disk.
struct SyntheticDataSizes {
  int64_t train = 45000, val = 5000, test = 10000;
  int64_t channels = 3, height = 32, width = 32, num_classes = 10;
};

class SyntheticDataModule : public DataModule {
 public:
  SyntheticDataModule(const DataModuleOptions& o, const SyntheticDataSizes& sizes = {});
  std::string name() const override { return "synthetic"; }
  void setup(const std::string& stage) override;
  Shape image_shape() const override { return {z_.channels, z_.height, z_.width}; }
  int64_t num_classes() const override { return z_.num_classes; }

 private:
  SyntheticDataSizes z_;
};

}  // namespace volt
