// Max pooling over [N*C planes of H x W]; indices [N*C, P*Q] hold the flat position (h*W + w) of
// each maximum within its plane, for backward. Windows wholly in padding cannot occur (checked above).
#pragma once
#include <cstdint>

#include "ftype.h"

namespace volt::cpu {

struct Pool2dShape {
  int64_t planes, H, W, kh, kw, stride_h, stride_w, pad_h, pad_w, P, Q;
};

void max_pool2d_forward(const Pool2dShape& s, const float* x, float* y, int32_t* indices);
// dx is overwritten.
void max_pool2d_backward(const Pool2dShape& s, const float* dy, const int32_t* indices, float* dx);

}  // namespace volt::cpu

// CUDA twins (kernels/cuda/pool.cu), for float32/float16/bfloat16 storage (FType t). Backward gathers
// (no atomics): each input element sums the gradients of the windows whose maximum it is, in the CPU's
// order, so float32 results are identical.
namespace volt::cuda {

void max_pool2d_forward(FType t, const cpu::Pool2dShape& s, const void* x, void* y, int32_t* indices, void* stream);
void max_pool2d_backward(FType t, const cpu::Pool2dShape& s, const void* dy, const int32_t* indices, void* dx,
                         void* stream);

}  // namespace volt::cuda
