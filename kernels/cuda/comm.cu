// In-place scaling for the device collectives' average (see kernels/comm.h).
#include "kernels/comm.h"
#include "kernels/cuda/launch.cuh"

namespace volt::cuda {

using detail::grid_for;
using detail::launch;
using detail::kThreads;

namespace {
__global__ void scale_f32_kernel(int64_t n, float* x, float f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = __fmul_rn(x[i], f);
}
__global__ void scale_f64_kernel(int64_t n, double* x, double f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = __dmul_rn(x[i], f);
}
__global__ void divide_i64_kernel(int64_t n, int64_t* x, int64_t d) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] /= d;
}
}  // namespace

void scale_inplace(int64_t n, float* x, float factor, void* stream) {
  if (n == 0) return;
  launch(scale_f32_kernel, grid_for(n), kThreads, 0, stream, n, x, factor);
}

void scale_inplace(int64_t n, double* x, double factor, void* stream) {
  if (n == 0) return;
  launch(scale_f64_kernel, grid_for(n), kThreads, 0, stream, n, x, factor);
}

void divide_inplace(int64_t n, int64_t* x, int64_t divisor, void* stream) {
  if (n == 0) return;
  launch(divide_i64_kernel, grid_for(n), kThreads, 0, stream, n, x, divisor);
}

}  // namespace volt::cuda
