// DataModule: Lightning's split of data handling from the model. prepare_data() fetches once
// (local rank 0 of each node, when asked to download), setup(stage) builds the datasets on every
// process, and train/val/test_loader() hand out batches. CIFAR10DataModule and MNISTDataModule
// reproduce the tutorial: a seeded random_split of the training files into train and validation
// (45,000/5,000 and 55,000/5,000), the test set separate, and Normalize(0.5, 0.5) after scaling
// to [0, 1]; optional augmentation (random crop with padding 4, horizontal flip, cutout).
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "data/dataset.h"
#include "data/loader.h"

namespace volt {

struct DataModuleOptions {
  std::string data_dir;      // "" = $VOLT_DATA_DIR/<dataset>, else ./datasets/<dataset>
  int64_t batch_size = 128;
  int num_workers = 2;
  bool download = false;     // prepare_data() fetches missing files
  std::string download_url;  // base URL override ("" = the official mirror)
  uint64_t seed = 42;        // split and shuffle
  bool augment = false;      // random crop (padding 4) + horizontal flip on training batches
  int64_t cutout = 0;        // > 0: cutout square side on training batches
  int64_t rank = 0, world_size = 1, local_rank = 0;
  std::function<void()> barrier;  // called after prepare_data on every process (distributed runs)
};

class DataModule {
 public:
  explicit DataModule(const DataModuleOptions& o) : o_(o) {}
  virtual ~DataModule() = default;
  virtual std::string name() const = 0;
  virtual void prepare_data() {}
  // stage: "fit" (train + val), "validate", "test", or "" (all).
  virtual void setup(const std::string& stage) = 0;
  std::unique_ptr<DataLoader> train_loader() const;
  std::unique_ptr<DataLoader> val_loader() const;
  std::unique_ptr<DataLoader> test_loader() const;
  virtual Shape image_shape() const = 0;
  virtual int64_t num_classes() const = 0;
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

  DataModuleOptions o_;
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

class MNISTDataModule : public DataModule {
 public:
  explicit MNISTDataModule(const DataModuleOptions& o);
  std::string name() const override { return "MNIST"; }
  void prepare_data() override;
  void setup(const std::string& stage) override;
  Shape image_shape() const override { return {1, 28, 28}; }
  int64_t num_classes() const override { return 10; }
};

}  // namespace volt
