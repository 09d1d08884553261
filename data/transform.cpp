// Image transform (see transform.h).
#include "data/transform.h"

#include "engine/error.h"
#include "kernels/philox.h"

namespace volt {

void check_transform(const TransformOptions& t, const Shape& chw) {
  VOLT_CHECK(chw.size() == 3, "transform: image shape must be [C, H, W], got ", shape_str(chw));
  const int64_t C = chw[0];
  VOLT_CHECK(t.mean.size() == t.std.size(), "transform: mean has ", t.mean.size(), " values but std has ", t.std.size());
  VOLT_CHECK(t.mean.empty() || t.mean.size() == 1 || int64_t(t.mean.size()) == C, "transform: ", t.mean.size(),
             " mean/std values for images with ", C, " channels");
  for (float s : t.std) VOLT_CHECK(s > 0.f, "transform: std must be positive, got ", s);
  VOLT_CHECK(t.crop_padding >= 0 && t.cutout >= 0, "transform: crop padding and cutout must be non-negative");
  VOLT_CHECK(t.cutout <= std::min(chw[1], chw[2]), "transform: cutout ", t.cutout, " is larger than the image ",
             shape_str(chw));
}

void apply_transform(const TransformOptions& t, const Shape& chw, const uint8_t* in, float* out, uint64_t seed,
                     uint64_t key) {
  const int64_t C = chw[0], H = chw[1], W = chw[2];
  // Four random words per image: crop dy, crop dx, flip, cutout centre.
  const uint64_t stream = 7000 + (key >> 40), offset = key & ((uint64_t(1) << 40) - 1);
  const Philox4 r = philox4x32_10(uint32_t(offset), uint32_t(offset >> 32), uint32_t(stream), uint32_t(stream >> 32),
                                  uint32_t(seed), uint32_t(seed >> 32));
  int64_t dy = 0, dx = 0;
  if (t.crop_padding > 0) {
    const uint32_t span = uint32_t(2 * t.crop_padding + 1);
    dy = int64_t(r.v[0] % span) - t.crop_padding;
    dx = int64_t(r.v[1] % span) - t.crop_padding;
  }
  const bool flip = t.horizontal_flip && (r.v[2] & 1u);
  for (int64_t c = 0; c < C; ++c) {
    const size_t mc = t.mean.size() == 1 ? 0 : size_t(c);
    const float mean = t.mean.empty() ? 0.f : t.mean[mc];
    const float inv_std = t.std.empty() ? 1.f : 1.f / t.std[mc];
    const float scale = inv_std / 255.f, bias = -mean * inv_std;
    const uint8_t* src = in + c * H * W;
    float* dst = out + c * H * W;
    for (int64_t y = 0; y < H; ++y) {
      const int64_t sy = y + dy;
      for (int64_t x = 0; x < W; ++x) {
        const int64_t sx0 = flip ? W - 1 - x : x;
        const int64_t sx = sx0 + dx;
        // Zero padding is black pixels (0), which normalise like any other pixel value.
        const float v = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? float(src[sy * W + sx]) : 0.f;
        dst[y * W + x] = v * scale + bias;
      }
    }
  }
  if (t.cutout > 0) {
    const int64_t cy = int64_t(r.v[3] % uint32_t(H)), cx = int64_t((r.v[3] >> 16) % uint32_t(W));
    const int64_t y0 = std::max<int64_t>(0, cy - t.cutout / 2), y1 = std::min(H, cy - t.cutout / 2 + t.cutout);
    const int64_t x0 = std::max<int64_t>(0, cx - t.cutout / 2), x1 = std::min(W, cx - t.cutout / 2 + t.cutout);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = x0; x < x1; ++x) out[(c * H + y) * W + x] = 0.f;
  }
}

}  // namespace volt
