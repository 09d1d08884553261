// Per-image transform from stored uint8 pixels to the float model input: optional augmentation
// (random crop with zero padding, horizontal flip, cutout), scaling to [0, 1] and Normalize(mean, std).
// Random choices come from Philox keyed by (seed, key), so they do not depend on which worker
// thread handles the image. The arithmetic is the augmentation kernel's CPU twin (kernels/augment.h),
// so the host loader and the GPU-resident loader make the same batches.
#pragma once
#include <cstdint>
#include <vector>

#include "../engine/tensor.h"
#include "../kernels/augment.h"

namespace volt {

struct TransformOptions {
  std::vector<float> mean, std;  // per channel (one value = all channels); empty: no normalisation
  int64_t crop_padding = 0;      // > 0: pad by this much and crop back at a random offset
  bool horizontal_flip = false;  // flip with probability 1/2
  int64_t cutout = 0;            // > 0: zero a square of this side at a random centre (after normalising)
  bool augments() const { return crop_padding > 0 || horizontal_flip || cutout > 0; }
};

// The transform for one image shape and seed, as the augmentation kernels take it: the spec and the
// per-channel normalisation table (float32 [C, 256]).
struct PreparedTransform {
  AugmentSpec spec;
  std::vector<float> lut;
  // in: uint8 [C, H, W]; out: float [C, H, W].
  void apply(const uint8_t* in, float* out, uint64_t key) const {
    cpu::augment_image(spec, lut.data(), in, key, out);
  }
};
// Checks the options (check_transform) and prepares them.
PreparedTransform prepare_transform(const TransformOptions& t, const Shape& chw, uint64_t seed);

// in: uint8 [C, H, W]; out: float [C, H, W]. Throws volt::Error on inconsistent options.
// (Prepares the transform each call: a loader prepares it once and calls apply().)
void apply_transform(const TransformOptions& t, const Shape& chw, const uint8_t* in, float* out, uint64_t seed,
                     uint64_t key);

// Checks the options against an image shape (mean/std sizes, positive std, crop/cutout sizes).
void check_transform(const TransformOptions& t, const Shape& chw);

}  // namespace volt
