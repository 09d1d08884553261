// CUDA max pooling (see kernels/pool.h): one thread per output in forward; backward gathers per input
// element over the windows that contain it, in the CPU's order (deterministic, no atomics).
#include "kernels/cuda/launch.cuh"
#include "kernels/pool.h"

namespace volt::cuda {

using detail::grid_for;
using detail::launch;
using detail::kThreads;

namespace {

__global__ void max_pool_forward_kernel(cpu::Pool2dShape s, const float* x, float* y, int32_t* indices) {
  const int64_t total = s.planes * s.P * s.Q;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t q = t % s.Q, p = (t / s.Q) % s.P, pl = t / (s.P * s.Q);
    const float* xp = x + pl * s.H * s.W;
    const int64_t h0 = p * s.stride_h - s.pad_h, w0 = q * s.stride_w - s.pad_w;
    const int64_t h1 = min(h0 + s.kh, s.H), w1 = min(w0 + s.kw, s.W);
    float best = -INFINITY;
    int64_t best_i = -1;
    bool done = false;
    for (int64_t i = max(h0, int64_t(0)); i < h1 && !done; ++i)
      for (int64_t j = max(w0, int64_t(0)); j < w1; ++j) {
        const float v = xp[i * s.W + j];
        if (v > best || isnan(v) || best_i < 0) {
          best = v;
          best_i = i * s.W + j;
          if (isnan(v)) {
            done = true;
            break;
          }
        }
      }
    y[t] = best;
    indices[t] = int32_t(best_i);
  }
}

__global__ void max_pool_backward_kernel(cpu::Pool2dShape s, const float* dy, const int32_t* indices, float* dx) {
  const int64_t total = s.planes * s.H * s.W;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = t % s.W, h = (t / s.W) % s.H, pl = t / (s.H * s.W);
    // Windows p cover rows [p*stride - pad, p*stride - pad + k): those containing h.
    const int64_t p0 = h + s.pad_h < s.kh ? 0 : (h + s.pad_h - s.kh) / s.stride_h + 1;
    const int64_t p1 = min((h + s.pad_h) / s.stride_h + 1, s.P);
    const int64_t q0 = w + s.pad_w < s.kw ? 0 : (w + s.pad_w - s.kw) / s.stride_w + 1;
    const int64_t q1 = min((w + s.pad_w) / s.stride_w + 1, s.Q);
    const int32_t me = int32_t(h * s.W + w);
    const float* dyp = dy + pl * s.P * s.Q;
    const int32_t* ip = indices + pl * s.P * s.Q;
    float acc = 0.f;
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t q = q0; q < q1; ++q)
        if (ip[p * s.Q + q] == me) acc += dyp[p * s.Q + q];
    dx[t] = acc;
  }
}

}  // namespace

void max_pool2d_forward(const cpu::Pool2dShape& s, const float* x, float* y, int32_t* indices, void* stream) {
  const int64_t total = s.planes * s.P * s.Q;
  if (total == 0) return;
  launch(max_pool_forward_kernel, grid_for(total), kThreads, 0, stream, s, x, y, indices);
}

void max_pool2d_backward(const cpu::Pool2dShape& s, const float* dy, const int32_t* indices, float* dx, void* stream) {
  const int64_t total = s.planes * s.H * s.W;
  if (total == 0) return;
  launch(max_pool_backward_kernel, grid_for(total), kThreads, 0, stream, s, dy, indices, dx);
}

}  // namespace volt::cuda
