// Fully connected layer: x [M, in], w [out, in], b [out] -> y [M, out].
#pragma once
#include <cstdint>

namespace volt::cpu {

void linear_forward(int64_t M, int64_t in, int64_t out, const float* x, const float* w, const float* b, float* y);
// Each output may be null (not needed). All are overwritten.
void linear_backward(int64_t M, int64_t in, int64_t out, const float* dy, const float* x, const float* w, float* dx,
                     float* dw, float* db);

}  // namespace volt::cpu

// CUDA twins (kernels/cuda/linear.cu, cuBLAS SGEMM in fp32; TF32 is not enabled).
namespace volt::cuda {

void linear_forward(int64_t M, int64_t in, int64_t out, const float* x, const float* w, const float* b, float* y,
                    void* stream);
void linear_backward(int64_t M, int64_t in, int64_t out, const float* dy, const float* x, const float* w, float* dx,
                     float* dw, float* db, void* stream);

}  // namespace volt::cuda
