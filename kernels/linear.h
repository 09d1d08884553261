// Fully connected layer: x [M, in], w [out, in], b [out] -> y [M, out].
#pragma once
#include <cstdint>

#include "ftype.h"

namespace volt::cpu {

void linear_forward(int64_t M, int64_t in, int64_t out, const float* x, const float* w, const float* b, float* y);
// Each output may be null (not needed). All are overwritten.
void linear_backward(int64_t M, int64_t in, int64_t out, const float* dy, const float* x, const float* w, float* dx,
                     float* dw, float* db);

}  // namespace volt::cpu

// CUDA twins (kernels/cuda/linear.cu): cuBLAS GEMMs with float32 accumulation on float32 (no TF32
// unless asked for: kernels/math_mode.h), float16 or bfloat16 storage (FType t: x, w, b, y and the
// gradients all of that type). The bias is added in cuBLASLt's epilogue of the forward GEMM, and its
// gradient summed in that of the weight-gradient GEMM (when both gradients are wanted), unless
// VOLT_LINEAR_LT=0 or set_linear_fused_bias(false); then (and for a product cuBLASLt has no
// algorithm for) by separate kernels.
namespace volt::cuda {

void linear_forward(FType t, int64_t M, int64_t in, int64_t out, const void* x, const void* w, const void* b, void* y,
                    void* stream);
void linear_backward(FType t, int64_t M, int64_t in, int64_t out, const void* dy, const void* x, const void* w,
                     void* dx, void* dw, void* db, void* stream);
// Overrides VOLT_LINEAR_LT for the process (engine/gpu.h's cuda_set_linear_fused_bias).
void set_linear_fused_bias(bool on);
bool linear_fused_bias();

}  // namespace volt::cuda
