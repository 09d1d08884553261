// CUDA max pooling (see kernels/pool.h) for float32, float16 and bfloat16: one thread per output in
// forward; backward gathers per input element over the windows that contain it, in the CPU's order
// (deterministic, no atomics).
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/num.cuh"
#include "kernels/fast_div.h"
#include "kernels/pool.h"

namespace volt::cuda {

using detail::grid_for;
using detail::launch;
using detail::kThreads;
using detail::load_f;
using detail::store_f;

namespace {

// The shape and the divisors that split flat indices (kernels/fast_div.h: no integer division per element).
struct PoolDims {
  cpu::Pool2dShape s;
  FastDiv q, p, w, h, stride_h, stride_w;
};
PoolDims pool_dims(const cpu::Pool2dShape& s) {
  return PoolDims{s, FastDiv(s.Q), FastDiv(s.P), FastDiv(s.W), FastDiv(s.H), FastDiv(s.stride_h), FastDiv(s.stride_w)};
}

template <class T>
__global__ void max_pool_forward_kernel(PoolDims d, const T* x, T* y, int32_t* indices) {
  const cpu::Pool2dShape& s = d.s;
  const int64_t total = s.planes * s.P * s.Q;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = d.q.div(t), q = t - row * s.Q, pl = d.p.div(row), p = row - pl * s.P;
    const T* xp = x + pl * s.H * s.W;
    const int64_t h0 = p * s.stride_h - s.pad_h, w0 = q * s.stride_w - s.pad_w;
    const int64_t h1 = min(h0 + s.kh, s.H), w1 = min(w0 + s.kw, s.W);
    float best = -INFINITY;
    int64_t best_i = -1;
    bool done = false;
    for (int64_t i = max(h0, int64_t(0)); i < h1 && !done; ++i)
      for (int64_t j = max(w0, int64_t(0)); j < w1; ++j) {
        const float v = load_f(xp[i * s.W + j]);
        if (v > best || isnan(v) || best_i < 0) {
          best = v;
          best_i = i * s.W + j;
          if (isnan(v)) {
            done = true;
            break;
          }
        }
      }
    y[t] = store_f<T>(best);
    indices[t] = int32_t(best_i);
  }
}

template <class T>
__global__ void max_pool_backward_kernel(PoolDims d, const T* dy, const int32_t* indices, T* dx) {
  const cpu::Pool2dShape& s = d.s;
  const int64_t total = s.planes * s.H * s.W;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = d.w.div(t), w = t - row * s.W, pl = d.h.div(row), h = row - pl * s.H;
    // Windows p cover rows [p*stride - pad, p*stride - pad + k): those containing h.
    const int64_t p0 = h + s.pad_h < s.kh ? 0 : d.stride_h.div(h + s.pad_h - s.kh) + 1;
    const int64_t p1 = min(d.stride_h.div(h + s.pad_h) + 1, s.P);
    const int64_t q0 = w + s.pad_w < s.kw ? 0 : d.stride_w.div(w + s.pad_w - s.kw) + 1;
    const int64_t q1 = min(d.stride_w.div(w + s.pad_w) + 1, s.Q);
    const int32_t me = int32_t(h * s.W + w);
    const T* dyp = dy + pl * s.P * s.Q;
    const int32_t* ip = indices + pl * s.P * s.Q;
    float acc = 0.f;
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t q = q0; q < q1; ++q)
        if (ip[p * s.Q + q] == me) acc += load_f(dyp[p * s.Q + q]);
    dx[t] = store_f<T>(acc);
  }
}

}  // namespace

void max_pool2d_forward(FType t, const cpu::Pool2dShape& s, const void* x, void* y, int32_t* indices, void* stream) {
  const int64_t total = s.planes * s.P * s.Q;
  if (total == 0) return;
  VOLT_FTYPE_T(t, launch(max_pool_forward_kernel<T>, grid_for(total), kThreads, 0, stream, pool_dims(s), x, y,
                         indices));
}

void max_pool2d_backward(FType t, const cpu::Pool2dShape& s, const void* dy, const int32_t* indices, void* dx,
                         void* stream) {
  const int64_t total = s.planes * s.H * s.W;
  if (total == 0) return;
  VOLT_FTYPE_T(t, launch(max_pool_backward_kernel<T>, grid_for(total), kThreads, 0, stream, pool_dims(s), dy, indices,
                         dx));
}

}  // namespace volt::cuda
