// The seed CNN (see seed_cnn.h); the flattened size is computed from the input size.
#include "layers/models/seed_cnn.h"

#include "engine/error.h"

namespace volt {

static int64_t after_block(int64_t size) { return (size - 4) / 2; }  // conv k5 s1 p0, then pool 2/2

SeedCNN::SeedCNN(const SeedCNNOptions& o) : opts_(o) {
  VOLT_CHECK(o.in_channels > 0 && o.num_classes > 0, "SeedCNN: in_channels and num_classes must be positive, got ",
             o.in_channels, " and ", o.num_classes);
  const int64_t h = after_block(after_block(o.height)), w = after_block(after_block(o.width));
  VOLT_CHECK(o.height >= 16 && o.width >= 16 && h >= 1 && w >= 1, "SeedCNN: input ", o.height, "x", o.width,
             " is too small (two conv5 + pool2 blocks need at least 16x16)");
  flat_ = 32 * h * w;
  block1 = register_module("block1", std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
                                         std::make_shared<Conv2d>(o.in_channels, 64, 5), std::make_shared<BatchNorm2d>(64),
                                         std::make_shared<ReLU>(), std::make_shared<MaxPool2d>(2, 2)}));
  block2 = register_module("block2", std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
                                         std::make_shared<Conv2d>(64, 32, 5), std::make_shared<BatchNorm2d>(32),
                                         std::make_shared<ReLU>(), std::make_shared<MaxPool2d>(2, 2)}));
  fc_layers = register_module("fc_layers", std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
                                               std::make_shared<Linear>(flat_, 64), std::make_shared<ReLU>(),
                                               std::make_shared<Dropout>(o.dropout), std::make_shared<Linear>(64, 32),
                                               std::make_shared<ReLU>(), std::make_shared<Dropout>(o.dropout),
                                               std::make_shared<Linear>(32, o.num_classes)}));
}

Tensor SeedCNN::forward(const Tensor& x) {
  VOLT_CHECK(x.defined() && x.dim() == 4 && x.size(1) == opts_.in_channels && x.size(2) == opts_.height &&
                 x.size(3) == opts_.width,
             "SeedCNN: expected input [N, ", opts_.in_channels, ", ", opts_.height, ", ", opts_.width, "], got ",
             x.defined() ? shape_str(x.shape()) : "undefined");
  Tensor h = (*block2)((*block1)(x));
  return (*fc_layers)(h.flatten(1));
}

}  // namespace volt
