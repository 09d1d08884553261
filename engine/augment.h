// augment_batch: the fused gather + augmentation op (kernels/augment.h) on the device of a resident
// uint8 image store: one CPU loop or one CUDA launch per batch, no autograd (data has no gradient).
#pragma once
#include <cstdint>

#include "tensor.h"
#include "../kernels/augment.h"

namespace volt {

// The store and what the op reads besides it, all on one device: images uint8 [N, C, H, W], labels
// int64 [N], order int64 [M] (the epoch's sample order, values in [0, N)) and the normalisation table
// lut float32 [C, 256] (cpu::augment_lut).
struct AugmentSource {
  Tensor images, labels, order, lut;
};

// Images [count, C, H, W] of `dtype` (float32, float16 or bfloat16) and labels int64 [count] on the
// source's device, for positions [begin, begin + count) of the order (see cpu::augment_batch; keys
// key_base + position * key_stride). On the GPU it is queued on the device's stream and returns at once.
void augment_batch(const AugmentSource& src, const AugmentSpec& spec, int64_t begin, int64_t count,
                   uint64_t key_base, uint64_t key_stride, DType dtype, Tensor& out_images, Tensor& out_labels);

}  // namespace volt
