// CUDA reductions, log-softmax, cross-entropy and argmax (see kernels/reduce.h), for float32, float16
// and bfloat16 storage. Accumulation is in double like the CPU kernels; one thread owns one output row
// where the CPU loops over it, so the order of additions (and for sum_dim the result) is the CPU's.
#include <cmath>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/num.cuh"
#include "kernels/fast_div.h"
#include "kernels/metrics.h"
#include "kernels/reduce.h"

namespace volt::cuda {

using detail::block_sum;
using detail::dispatch_ftype;
using detail::grid_for;
using detail::launch;
using detail::kThreads;
using detail::load_f;
using detail::store_f;

namespace {

// One thread per (o, i): the CPU's order exactly.
template <class T>
__global__ void sum_dim_kernel(int64_t outer, int64_t R, int64_t inner, const T* x, T* out) {
  const int64_t total = outer * inner;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = t / inner, i = t % inner;
    const T* p = x + o * R * inner + i;
    double acc = 0;
    for (int64_t r = 0; r < R; ++r) acc += load_f(p[r * inner]);
    out[t] = store_f<T>(float(acc));
  }
}

// inner == 1 with long rows: one block per row.
template <class T>
__global__ void sum_rows_kernel(int64_t R, const T* x, T* out) {
  const T* row = x + blockIdx.x * R;
  double acc = 0;
  for (int64_t r = threadIdx.x; r < R; r += blockDim.x) acc += load_f(row[r]);
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = store_f<T>(float(acc));
}

// One block of 1024 threads: deterministic, and fine for the sizes losses and metrics have.
template <class T>
__global__ void __launch_bounds__(1024) sum_all_kernel(int64_t n, const T* x, double divisor, T* out) {
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += load_f(x[i]);
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[0] = store_f<T>(float(acc / divisor));
}

// o = t / (R * inner) and i = t % inner by FastDiv (no integer division per element).
template <class T>
__global__ void broadcast_dim_kernel(int64_t total, FastDiv inner_div, FastDiv r_inner_div, const T* dy, float alpha,
                                     T* dx) {
  const int64_t inner = inner_div.divisor();
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = inner_div.mod(t), o = r_inner_div.div(t);
    dx[t] = store_f<T>(__fmul_rn(load_f(dy[o * inner + i]), alpha));
  }
}

template <class T>
__global__ void broadcast_scalar_kernel(int64_t n, const T* g, float alpha, T* dx) {
  const T v = store_f<T>(__fmul_rn(load_f(g[0]), alpha));
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n; t += int64_t(gridDim.x) * blockDim.x)
    dx[t] = v;
}

template <class T>
__global__ void log_softmax_forward_kernel(int64_t outer, int64_t R, int64_t inner, const T* x, T* y) {
  const int64_t total = outer * inner;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = t / inner, i = t % inner;
    const T* xo = x + o * R * inner + i;
    T* yo = y + o * R * inner + i;
    float m = -INFINITY;
    for (int64_t r = 0; r < R; ++r) m = fmaxf(m, load_f(xo[r * inner]));
    double s = 0;
    for (int64_t r = 0; r < R; ++r) s += exp(double(load_f(xo[r * inner])) - m);
    const double log_s = log(s);  // (x - max) - log(sum), as the CPU (kernels/cpu/reduce.cpp)
    for (int64_t r = 0; r < R; ++r) yo[r * inner] = store_f<T>(float((double(load_f(xo[r * inner])) - m) - log_s));
  }
}

template <class T>
__global__ void log_softmax_backward_kernel(int64_t outer, int64_t R, int64_t inner, const T* dy, const T* y, T* dx) {
  const int64_t total = outer * inner;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = t / inner, i = t % inner;
    const int64_t base = o * R * inner + i;
    double s = 0;
    for (int64_t r = 0; r < R; ++r) s += load_f(dy[base + r * inner]);
    for (int64_t r = 0; r < R; ++r)
      dx[base + r * inner] =
          store_f<T>(float(double(load_f(dy[base + r * inner])) - exp(double(load_f(y[base + r * inner]))) * s));
  }
}

// Loss and (when grad_base is set) the gradient's per-row base softmax - q in one pass over the logits.
// A target outside [0, C) gives a NaN loss and a NaN gradient row, and is recorded in *bad (the first
// row and value, with a count) for the host to report.
template <class T>
__global__ void cross_entropy_forward_kernel(int64_t N, int64_t C, const T* logits, const int64_t* target, float eps,
                                             float* loss, float* grad_base, int64_t* bad) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    const T* z = logits + n * C;
    const int64_t tn = target[n];
    if (tn < 0 || tn >= C) {
      loss[n] = NAN;
      if (grad_base)
        for (int64_t c = 0; c < C; ++c) grad_base[n * C + c] = NAN;
      detail::note_bad_target(bad, n, tn);
      continue;
    }
    float m = -INFINITY;
    for (int64_t c = 0; c < C; ++c) m = fmaxf(m, load_f(z[c]));
    double s = 0, sum_z = 0;
    for (int64_t c = 0; c < C; ++c) {
      const float zc = load_f(z[c]);
      s += exp(double(zc) - m);
      sum_z += zc;
    }
    const double lse = m + log(s);
    const double nll = lse - load_f(z[tn]);
    const double smooth = lse - sum_z / double(C);
    loss[n] = float((1.0 - eps) * nll + (eps > 0 ? eps * smooth : 0.0));  // a -inf logit: 0 * inf is NaN
    if (grad_base) {
      const double off = eps / double(C);
      for (int64_t c = 0; c < C; ++c) {
        const double p = exp(double(load_f(z[c])) - m) / s;
        const double q = off + (c == tn ? 1.0 - eps : 0.0);
        grad_base[n * C + c] = float(p - q);
      }
    }
  }
}

template <class T>
__global__ void cross_entropy_backward_kernel(int64_t N, int64_t C, const float* grad_base, const float* dloss,
                                              int64_t dloss_stride, float dloss_div, T* dlogits) {
  const int64_t total = N * C;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = t / C;
    const float g = __fdiv_rn(dloss[n * dloss_stride], dloss_div);
    dlogits[t] = store_f<T>(__fmul_rn(grad_base[t], g));
  }
}

template <class T>
__global__ void argmax_dim_kernel(int64_t outer, int64_t R, int64_t inner, const T* x, int64_t* out) {
  const int64_t total = outer * inner;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = t / inner, i = t % inner;
    const T* xo = x + o * R * inner + i;
    out[t] = metric_top1([&](int64_t r) { return load_f(xo[r * inner]); }, R);  // the metrics' order
  }
}

}  // namespace

void sum_dim(FType t, int64_t outer, int64_t R, int64_t inner, const void* x, void* out, void* stream) {
  if (outer * inner == 0) return;
  VOLT_FTYPE_T(t, if (inner == 1 && R >= 1024 && outer <= 65535) {
    launch(sum_rows_kernel<T>, unsigned(outer), kThreads, 0, stream, R, x, out);
  } else {
    launch(sum_dim_kernel<T>, grid_for(outer * inner), kThreads, 0, stream, outer, R, inner, x, out);
  });
}

void sum_all(FType t, int64_t n, const void* x, double divisor, void* out, void* stream) {
  VOLT_FTYPE_T(t, launch(sum_all_kernel<T>, 1, 1024, 0, stream, n, x, divisor, out));
}

void broadcast_dim(FType t, int64_t outer, int64_t R, int64_t inner, const void* dy, float alpha, void* dx,
                   void* stream) {
  const int64_t total = outer * R * inner;
  if (total == 0) return;
  VOLT_FTYPE_T(t, launch(broadcast_dim_kernel<T>, grid_for(total), kThreads, 0, stream, total, FastDiv(inner),
                         FastDiv(R * inner), dy, alpha, dx));
}

void broadcast_scalar(FType t, int64_t n, const void* g, float alpha, void* dx, void* stream) {
  if (n == 0) return;
  VOLT_FTYPE_T(t, launch(broadcast_scalar_kernel<T>, grid_for(n), kThreads, 0, stream, n, g, alpha, dx));
}

void log_softmax_forward(FType t, int64_t outer, int64_t R, int64_t inner, const void* x, void* y, void* stream) {
  if (outer * inner == 0) return;
  VOLT_FTYPE_T(t, launch(log_softmax_forward_kernel<T>, grid_for(outer * inner), kThreads, 0, stream, outer, R, inner,
                         x, y));
}

void log_softmax_backward(FType t, int64_t outer, int64_t R, int64_t inner, const void* dy, const void* y, void* dx,
                          void* stream) {
  if (outer * inner == 0) return;
  VOLT_FTYPE_T(t, launch(log_softmax_backward_kernel<T>, grid_for(outer * inner), kThreads, 0, stream, outer, R, inner,
                         dy, y, dx));
}

void cross_entropy_forward(FType t, int64_t N, int64_t C, const void* logits, const int64_t* target, float eps,
                           float* loss, float* grad_base, int64_t* bad, void* stream) {
  if (N == 0) return;
  VOLT_FTYPE_T(t, launch(cross_entropy_forward_kernel<T>, grid_for(N), kThreads, 0, stream, N, C, logits, target, eps,
                         loss, grad_base, bad));
}

void cross_entropy_backward(FType t, int64_t N, int64_t C, const float* grad_base, const float* dloss,
                            int64_t dloss_stride, float dloss_div, void* dlogits, void* stream) {
  if (N * C == 0) return;
  VOLT_FTYPE_T(t, launch(cross_entropy_backward_kernel<T>, grid_for(N * C), kThreads, 0, stream, N, C, grad_base,
                         dloss, dloss_stride, dloss_div, dlogits));
}

void argmax_dim(FType t, int64_t outer, int64_t R, int64_t inner, const void* x, int64_t* out, void* stream) {
  if (outer * inner == 0) return;
  VOLT_FTYPE_T(t, launch(argmax_dim_kernel<T>, grid_for(outer * inner), kThreads, 0, stream, outer, R, inner, x, out));
}

}  // namespace volt::cuda
