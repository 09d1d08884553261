// CPU augmentation (see kernels/augment.h): the reference for the CUDA kernel and the host loader's
// transform. Each output row is the valid source span looked up through the channel's table, with
// the padding on either side the table's value for 0 (a black pixel normalises like any other).
#include <algorithm>

#include "kernels/augment.h"

namespace volt::cpu {

void augment_lut(int64_t channels, int64_t n_stats, const float* mean, const float* std, float* lut) {
  for (int64_t c = 0; c < channels; ++c) {
    const int64_t mc = n_stats == 1 ? 0 : c;
    const float m = n_stats == 0 ? 0.f : mean[mc];
    const float inv_std = n_stats == 0 ? 1.f : 1.f / std[mc];
    const float scale = inv_std / 255.f, bias = -m * inv_std;
    for (int v = 0; v < 256; ++v) lut[c * 256 + v] = float(v) * scale + bias;
  }
}

void augment_image(const AugmentSpec& s, const float* lut, const uint8_t* in, uint64_t key, float* out) {
  const int64_t C = s.channels, H = s.height, W = s.width;
  const AugmentDraw d = augment_draw(s, key);
  // Output x reads source column sx = (flip ? W-1-x : x) + dx, inside the image for x in [x0, x1).
  const int64_t x0 = std::min<int64_t>(W, std::max<int64_t>(0, d.flip ? d.dx : -d.dx));
  const int64_t x1 = std::max(x0, std::min<int64_t>(W, d.flip ? W + d.dx : W - d.dx));
  for (int64_t c = 0; c < C; ++c) {
    const float* t = lut + c * 256;
    const float pad = t[0];
    for (int64_t y = 0; y < H; ++y) {
      float* dst = out + (c * H + y) * W;
      const int64_t sy = y + d.dy;
      if (sy < 0 || sy >= H) {
        std::fill(dst, dst + W, pad);
        continue;
      }
      const uint8_t* src = in + (c * H + sy) * W;
      std::fill(dst, dst + x0, pad);
      if (d.flip) {
        for (int64_t x = x0; x < x1; ++x) dst[x] = t[src[W - 1 - x + d.dx]];
      } else {
        for (int64_t x = x0; x < x1; ++x) dst[x] = t[src[x + d.dx]];
      }
      std::fill(dst + x1, dst + W, pad);
    }
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = d.cut_y0; y < d.cut_y1; ++y)
      std::fill(out + (c * H + y) * W + d.cut_x0, out + (c * H + y) * W + d.cut_x1, 0.f);
}

void augment_batch(const AugmentSpec& s, const float* lut, const uint8_t* images, const int64_t* labels,
                   const int64_t* order, int64_t begin, int64_t count, uint64_t key_base, uint64_t key_stride,
                   float* out_images, int64_t* out_labels) {
  const int64_t d = s.channels * s.height * s.width;
  for (int64_t k = 0; k < count; ++k) {
    const int64_t src = order[begin + k];
    out_labels[k] = labels[src];
    augment_image(s, lut, images + src * d, key_base + uint64_t(begin + k) * key_stride, out_images + k * d);
  }
}

}  // namespace volt::cpu
