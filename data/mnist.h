// MNIST and Fashion-MNIST from their IDX files (raw, or gzip-compressed as distributed), loaded
// once into memory as uint8 images [1, 28, 28] and labels 0..9.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dataset.h"

namespace volt {

enum class MNISTVariant { MNIST, FashionMNIST };

// Reads <root>/train-images-idx3-ubyte + train-labels-idx1-ubyte (train) or the t10k-... pair
// (test); each file may also be gzip'ed (<name>.gz). The raw file is preferred when both exist.
// Both variants use the same file names and format.
class MNISTDataset : public Dataset {
 public:
  MNISTDataset(const std::string& root, bool train, MNISTVariant variant = MNISTVariant::MNIST);

  // The path a split's images or labels are read from (raw preferred, else .gz), "" when absent.
  static std::string find_file(const std::string& root, bool train, bool labels);
  static bool present(const std::string& root, bool train);

  int64_t size() const override { return int64_t(labels_.size()); }
  Shape image_shape() const override { return {1, 28, 28}; }
  int64_t num_classes() const override { return 10; }
  std::string name() const override;
  int64_t get(int64_t index, uint8_t* dst) const override;

  MNISTVariant variant() const { return variant_; }
  const std::vector<uint8_t>& labels() const { return labels_; }
  const std::vector<uint8_t>& images() const { return images_; }  // [N, 28, 28]
  const std::string& images_path() const { return images_path_; }
  const std::string& labels_path() const { return labels_path_; }
  static const std::vector<std::string>& class_names(MNISTVariant variant);

 private:
  bool train_;
  MNISTVariant variant_;
  std::string images_path_, labels_path_;
  std::vector<uint8_t> images_, labels_;
};

}  // namespace volt
