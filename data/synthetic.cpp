// Synthetic dataset (see synthetic.h).
#include "data/synthetic.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"
#include "kernels/philox.h"

namespace volt {

SyntheticDataset::SyntheticDataset(const SyntheticOptions& o) : o_(o) {
  VOLT_CHECK(o.size > 0 && o.channels > 0 && o.height > 0 && o.width > 0 && o.num_classes > 1,
             "SyntheticDataset: size, channels, height and width must be positive and num_classes > 1, got size ",
             o.size, ", shape ", o.channels, "x", o.height, "x", o.width, ", ", o.num_classes, " classes");
  const int64_t d = o.channels * o.height * o.width;
  patterns_.resize(size_t(o.num_classes * d));
  for (int64_t i = 0; i < o.num_classes * d; ++i)
    patterns_[size_t(i)] = 2.f * philox_uniform(philox_u32(o.seed, 100, 0, uint64_t(i))) - 1.f;
}

int64_t SyntheticDataset::label(int64_t index) const {
  return int64_t(philox_u32(o_.seed, 101, 0, uint64_t(index)) % uint32_t(o_.num_classes));
}

int64_t SyntheticDataset::fill(int64_t idx, float* out) const {
  VOLT_CHECK(idx >= 0 && idx < o_.size, "SyntheticDataset: index ", idx, " is out of range [0, ", o_.size, ")");
  const int64_t d = o_.channels * o_.height * o_.width;
  const int64_t c = label(idx);
  const float* pat = patterns_.data() + c * d;
  const uint64_t off = uint64_t(idx) * uint64_t((d + 3) / 4);
  // (a Philox block gives four pixels' noise: the values of philox_u32(seed, 102, off, j), a quarter
  // of the work; this is what makes a resident store of CIFAR-10's size on the device)
  for (int64_t j0 = 0; j0 < d; j0 += 4) {
    const Philox4 r = philox_block(o_.seed, 102, off + uint64_t(j0 / 4));
    for (int64_t j = j0; j < std::min(d, j0 + 4); ++j)
      out[j] = pat[j] + o_.noise * (2.f * philox_uniform(r.v[j - j0]) - 1.f);
  }
  return c;
}

void SyntheticDataset::batch(const std::vector<int64_t>& indices, Tensor& images, Tensor& labels) const {
  const int64_t b = int64_t(indices.size()), d = o_.channels * o_.height * o_.width;
  images = Tensor::empty({b, o_.channels, o_.height, o_.width});
  labels = Tensor::empty({b}, DType::I64);
  float* img = images.data<float>();
  int64_t* lab = labels.data<int64_t>();
  for (int64_t k = 0; k < b; ++k) lab[k] = fill(indices[size_t(k)], img + k * d);
}

int64_t SyntheticDataset::get(int64_t index, uint8_t* dst) const {
  const int64_t d = o_.channels * o_.height * o_.width;
  std::vector<float> v(static_cast<size_t>(d));
  const int64_t c = fill(index, v.data());
  const float lo = -1.f - std::fabs(o_.noise), scale = 255.f / (2.f + 2.f * std::fabs(o_.noise));
  for (int64_t j = 0; j < d; ++j)
    dst[j] = uint8_t(std::clamp(std::lround((v[size_t(j)] - lo) * scale), 0L, 255L));
  return c;
}

}  // namespace volt
