// Fused gather + augmentation of a batch of uint8 images into the model's input: output image k is
// image order[begin + k] of a resident uint8 store [N, C, H, W], randomly cropped (zero padding),
// flipped, scaled and normalised through a per-channel lookup table, then cut out; its label is
// gathered beside it. The random choices come from Philox keyed by (seed, key), so every backend
// and every worker draws the same ones. The host DataLoader's transform is cpu::augment_image.
#pragma once
#include <cstdint>

#include "ftype.h"
#include "philox.h"

namespace volt {

// The image shape and the augmentation (plain values: the CUDA kernel takes it by value).
struct AugmentSpec {
  int64_t channels = 0, height = 0, width = 0;
  int64_t crop_padding = 0;      // > 0: pad by this much and crop back at a random offset
  bool horizontal_flip = false;  // flip with probability 1/2
  int64_t cutout = 0;            // > 0: zero a square of this side at a random centre (after normalising)
  uint64_t seed = 0;
};

// One image's random choices: source pixel (y + dy, (flip ? W-1-x : x) + dx) for output (y, x), and
// the cutout rectangle [cut_y0, cut_y1) x [cut_x0, cut_x1) (empty without cutout).
struct AugmentDraw {
  int32_t dy, dx, flip;
  int32_t cut_y0, cut_y1, cut_x0, cut_x1;
};

// Four Philox words per image: crop dy, crop dx, flip, cutout centre.
VOLT_HD AugmentDraw augment_draw(const AugmentSpec& s, uint64_t key) {
  const uint64_t stream = 7000 + (key >> 40), offset = key & ((uint64_t(1) << 40) - 1);
  const Philox4 r = philox4x32_10(uint32_t(offset), uint32_t(offset >> 32), uint32_t(stream), uint32_t(stream >> 32),
                                  uint32_t(s.seed), uint32_t(s.seed >> 32));
  AugmentDraw d{0, 0, 0, 0, 0, 0, 0};
  if (s.crop_padding > 0) {
    const uint32_t span = uint32_t(2 * s.crop_padding + 1);
    d.dy = int32_t(int64_t(r.v[0] % span) - s.crop_padding);
    d.dx = int32_t(int64_t(r.v[1] % span) - s.crop_padding);
  }
  d.flip = s.horizontal_flip && (r.v[2] & 1u) ? 1 : 0;
  if (s.cutout > 0) {
    const int64_t H = s.height, W = s.width, half = s.cutout / 2;
    const int64_t cy = int64_t(r.v[3] % uint32_t(H)), cx = int64_t((r.v[3] >> 16) % uint32_t(W));
    d.cut_y0 = int32_t(cy - half > 0 ? cy - half : 0);
    d.cut_y1 = int32_t(cy - half + s.cutout < H ? cy - half + s.cutout : H);
    d.cut_x0 = int32_t(cx - half > 0 ? cx - half : 0);
    d.cut_x1 = int32_t(cx - half + s.cutout < W ? cx - half + s.cutout : W);
  }
  return d;
}

}  // namespace volt

namespace volt::cpu {

// lut [C, 256]: the model input for byte value v in channel c, v * (1/std/255) - mean/std in float32
// (n_stats = 1: one mean/std for every channel; 0: no normalisation, v / 255).
void augment_lut(int64_t channels, int64_t n_stats, const float* mean, const float* std, float* lut);

// One image: in uint8 [C, H, W] -> out float [C, H, W] with the draws of `key`.
void augment_image(const AugmentSpec& s, const float* lut, const uint8_t* in, uint64_t key, float* out);

// A batch of `count` images: out_images[k] = augment_image(images[order[begin + k]]) with key
// key_base + (begin + k) * key_stride, out_labels[k] = labels[order[begin + k]].
// images uint8 [N, C, H, W], labels [N], order [>= begin + count] (values in [0, N)).
void augment_batch(const AugmentSpec& s, const float* lut, const uint8_t* images, const int64_t* labels,
                   const int64_t* order, int64_t begin, int64_t count, uint64_t key_base, uint64_t key_stride,
                   float* out_images, int64_t* out_labels);

}  // namespace volt::cpu

// CUDA twin (kernels/cuda/augment.cu): the same batch, every pointer on the device, in one launch on
// `stream`; out_images is float32, float16 or bfloat16 (out_type; the 16-bit values are the float32
// results rounded to nearest even). float32 results equal the CPU's bit for bit (a table lookup per
// pixel, no arithmetic). C <= 65535 and H * W < 2^31. images holds n images; an order value outside
// [0, n) (the CPU refuses it; the device cannot without a synchronisation) reads nothing and gives a
// zero image labelled -1, which the loss then reports as a target that is not a class index.
namespace volt::cuda {

void augment_batch(const AugmentSpec& s, const float* lut, const uint8_t* images, const int64_t* labels, int64_t n,
                   const int64_t* order, int64_t begin, int64_t count, uint64_t key_base, uint64_t key_stride,
                   FType out_type, void* out_images, int64_t* out_labels, void* stream);

}  // namespace volt::cuda
