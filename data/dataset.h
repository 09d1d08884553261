// Dataset: indexed labelled images, stored once as uint8 and converted to float by the transform.
// Every dataset (CIFAR, MNIST, image folder, synthetic) implements this; loaders read through it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../engine/tensor.h"

namespace volt {

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Shape image_shape() const = 0;  // [C, H, W]
  virtual int64_t num_classes() const = 0;
  virtual std::string name() const = 0;   // for logs and errors, e.g. "CIFAR-10 train"
  // Copies image `index`'s C*H*W channel-planar uint8 pixels to dst and returns its label.
  // Thread-safe (loader workers call it concurrently). Throws volt::Error on a bad index.
  virtual int64_t get(int64_t index, uint8_t* dst) const = 0;
  int64_t image_bytes() const { return shape_numel(image_shape()); }
};

// A view of `indices` of another dataset (the result of random_split).
class Subset : public Dataset {
 public:
  Subset(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices, std::string name = "");
  int64_t size() const override { return int64_t(indices_.size()); }
  Shape image_shape() const override { return base_->image_shape(); }
  int64_t num_classes() const override { return base_->num_classes(); }
  std::string name() const override { return name_; }
  int64_t get(int64_t index, uint8_t* dst) const override;
  const std::vector<int64_t>& indices() const { return indices_; }

 private:
  std::shared_ptr<const Dataset> base_;
  std::vector<int64_t> indices_;
  std::string name_;
};

// Splits [0, n) into parts of the given lengths after a seeded permutation (torch.utils.data.random_split).
std::vector<std::vector<int64_t>> random_split_indices(int64_t n, const std::vector<int64_t>& lengths, uint64_t seed);

}  // namespace volt
