// A seeded synthetic classification dataset of any image shape, for smoke runs and benchmarks:
// image i is its class's fixed random pattern plus per-image noise, both from Philox streams, so
// any sample can be produced on demand and is the same on every run and backend.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace volt {

struct SyntheticOptions {
  int64_t size = 1024;  // number of samples
  int64_t channels = 3, height = 32, width = 32;
  int64_t num_classes = 10;
  float noise = 0.5f;   // per-pixel noise amplitude relative to the class pattern's
  uint64_t seed = 0;
};

class SyntheticDataset {
 public:
  explicit SyntheticDataset(const SyntheticOptions& o);
  int64_t size() const { return o_.size; }
  int64_t label(int64_t index) const;
  // images [B, C, H, W] and labels int64 [B] for the given sample indices.
  void batch(const std::vector<int64_t>& indices, Tensor& images, Tensor& labels) const;

 private:
  SyntheticOptions o_;
  std::vector<float> patterns_;  // [classes, C*H*W]
};

}  // namespace volt
