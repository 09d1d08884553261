// A seeded synthetic classification dataset of any image shape, for smoke runs and benchmarks:
// image i is its class's fixed random pattern plus per-image noise, both from Philox streams, so
// any sample can be produced on demand and is the same on every run and backend. As a Dataset it
// yields uint8 images: the float pixel in [-1-noise, 1+noise] mapped linearly to 0..255 (clamped).
#pragma once
#include <cstdint>
#include <vector>

#include "dataset.h"
#include "../engine/tensor.h"

namespace volt {

struct SyntheticOptions {
  int64_t size = 1024;  // number of samples
  int64_t channels = 3, height = 32, width = 32;
  int64_t num_classes = 10;
  float noise = 0.5f;   // per-pixel noise amplitude relative to the class pattern's
  uint64_t seed = 0;
};

class SyntheticDataset : public Dataset {
 public:
  explicit SyntheticDataset(const SyntheticOptions& o);
  int64_t size() const override { return o_.size; }
  Shape image_shape() const override { return {o_.channels, o_.height, o_.width}; }
  int64_t num_classes() const override { return o_.num_classes; }
  std::string name() const override { return "synthetic"; }
  // uint8 pixels: round((v + 1 + noise) / (2 + 2*noise) * 255), clamped to 0..255, v the float pixel.
  int64_t get(int64_t index, uint8_t* dst) const override;

  int64_t label(int64_t index) const;
  // float images [B, C, H, W] and labels int64 [B] for the given sample indices.
  void batch(const std::vector<int64_t>& indices, Tensor& images, Tensor& labels) const;

 private:
  // Sample idx's float pixels (C*H*W) into out; returns its label.
  int64_t fill(int64_t idx, float* out) const;
  SyntheticOptions o_;
  std::vector<float> patterns_;  // [classes, C*H*W]
};

}  // namespace volt
