// Image transform (see transform.h).
#include "data/transform.h"

#include "engine/error.h"

namespace volt {

void check_transform(const TransformOptions& t, const Shape& chw) {
  VOLT_CHECK(chw.size() == 3, "transform: image shape must be [C, H, W], got ", shape_str(chw));
  const int64_t C = chw[0];
  VOLT_CHECK(t.mean.size() == t.std.size(), "transform: mean has ", t.mean.size(), " values but std has ", t.std.size());
  VOLT_CHECK(t.mean.empty() || t.mean.size() == 1 || int64_t(t.mean.size()) == C, "transform: ", t.mean.size(),
             " mean/std values for images with ", C, " channels");
  for (float s : t.std) VOLT_CHECK(s > 0.f, "transform: std must be positive, got ", s);
  VOLT_CHECK(t.crop_padding >= 0 && t.cutout >= 0, "transform: crop padding and cutout must be non-negative");
  VOLT_CHECK(t.crop_padding <= (int64_t(1) << 20), "transform: crop padding ", t.crop_padding, " is too large");
  VOLT_CHECK(t.cutout <= std::min(chw[1], chw[2]), "transform: cutout ", t.cutout, " is larger than the image ",
             shape_str(chw));
}

PreparedTransform prepare_transform(const TransformOptions& t, const Shape& chw, uint64_t seed) {
  check_transform(t, chw);
  PreparedTransform p;
  p.spec.channels = chw[0];
  p.spec.height = chw[1];
  p.spec.width = chw[2];
  p.spec.crop_padding = t.crop_padding;
  p.spec.horizontal_flip = t.horizontal_flip;
  p.spec.cutout = t.cutout;
  p.spec.seed = seed;
  p.lut.resize(size_t(chw[0]) * 256);
  cpu::augment_lut(chw[0], int64_t(t.mean.size()), t.mean.data(), t.std.data(), p.lut.data());
  return p;
}

void apply_transform(const TransformOptions& t, const Shape& chw, const uint8_t* in, float* out, uint64_t seed,
                     uint64_t key) {
  prepare_transform(t, chw, seed).apply(in, out, key);
}

}  // namespace volt
