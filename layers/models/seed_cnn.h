// The seed CNN from the tutorial Volt reproduces:
//   block1 = Conv2d(in->64, k5) -> BatchNorm2d(64) -> ReLU -> MaxPool2d(2, 2)
//   block2 = Conv2d(64->32, k5) -> BatchNorm2d(32) -> ReLU -> MaxPool2d(2, 2)
//   fc_layers = Linear(32*h*w->64) -> ReLU -> Dropout -> Linear(64->32) -> ReLU -> Dropout -> Linear(32->classes)
// Parameter names match PyTorch's ("block1.0.weight", "fc_layers.6.bias", ...).
#pragma once
#include <memory>

#include "../layers.h"
#include "../module.h"

namespace volt {

struct SeedCNNOptions {
  int64_t in_channels = 3;
  int64_t height = 32, width = 32;  // MNIST: 1 x 28 x 28
  int64_t num_classes = 10;
  double dropout = 0.2;
};

class SeedCNN : public Module {
 public:
  explicit SeedCNN(const SeedCNNOptions& opts = {});
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "SeedCNN"; }
  const SeedCNNOptions& options() const { return opts_; }
  int64_t flat_features() const { return flat_; }

  std::shared_ptr<Sequential> block1, block2, fc_layers;

 private:
  SeedCNNOptions opts_;
  int64_t flat_;
};

}  // namespace volt
