// CIFAR-10 and CIFAR-100 in their official binary formats (cifar-10-batches-bin, cifar-100-binary),
// loaded once into memory as channel-planar uint8 images [3, 32, 32] plus labels.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dataset.h"

namespace volt {

// CIFAR-10: train reads data_batch_1.bin..data_batch_5.bin, test reads test_batch.bin. Each record is
// 1 label byte + 3072 pixel bytes (R plane, then G, then B; 32x32). `root` holds the .bin files
// directly or in a cifar-10-batches-bin sub-folder (the layout of the official archive).
// A training set with some (not all) batches present loads what is there and warns on stderr.
class CIFAR10Dataset : public Dataset {
 public:
  // require_full: every file must hold the official 10000 records; false accepts any whole number
  // of records (small custom or test files).
  CIFAR10Dataset(const std::string& root, bool train, bool require_full = true);

  // The folder the .bin files are read from (root or root/cifar-10-batches-bin): the one that holds
  // all six files, else the one that holds any (root first); "" when neither holds any.
  static std::string resolve_dir(const std::string& root);
  // True when every file of the split is present (train: all five batches).
  static bool present(const std::string& root, bool train);

  int64_t size() const override { return int64_t(labels_.size()); }
  Shape image_shape() const override { return {3, 32, 32}; }
  int64_t num_classes() const override { return 10; }
  std::string name() const override { return train_ ? "CIFAR-10 train" : "CIFAR-10 test"; }
  int64_t get(int64_t index, uint8_t* dst) const override;

  const std::vector<uint8_t>& labels() const { return labels_; }
  const std::vector<uint8_t>& images() const { return images_; }  // [N, 3, 32, 32]
  const std::string& dir() const { return dir_; }
  // The warning printed for missing training batches ("" when all were there).
  const std::string& warning() const { return warning_; }
  static const std::vector<std::string>& class_names();

 private:
  std::string dir_, warning_;
  bool train_;
  std::vector<uint8_t> images_, labels_;
};

// CIFAR-100: train.bin (50000 records) or test.bin (10000); each record is a coarse label byte
// (20 superclasses), a fine label byte (100 classes) and 3072 pixel bytes as in CIFAR-10.
// `root` holds the files directly or in a cifar-100-binary sub-folder.
class CIFAR100Dataset : public Dataset {
 public:
  // fine_labels: the 100 fine classes (default) or, when false, the 20 coarse superclasses.
  CIFAR100Dataset(const std::string& root, bool train, bool fine_labels = true, bool require_full = true);

  // root or root/cifar-100-binary, chosen as for CIFAR-10 (the one with both files first).
  static std::string resolve_dir(const std::string& root);
  static bool present(const std::string& root, bool train);

  int64_t size() const override { return int64_t(fine_.size()); }
  Shape image_shape() const override { return {3, 32, 32}; }
  int64_t num_classes() const override { return fine_labels_ ? 100 : 20; }
  std::string name() const override;
  int64_t get(int64_t index, uint8_t* dst) const override;

  const std::vector<uint8_t>& fine_labels() const { return fine_; }
  const std::vector<uint8_t>& coarse_labels() const { return coarse_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  bool train_, fine_labels_;
  std::vector<uint8_t> images_, fine_, coarse_;
};

}  // namespace volt
