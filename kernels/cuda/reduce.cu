// CUDA reductions, log-softmax, cross-entropy and argmax (see kernels/reduce.h). Accumulation is in
// double like the CPU kernels; one thread owns one output row where the CPU loops over it, so the order
// of additions (and for sum_dim the result) is the CPU's.
#include <cmath>

#include "kernels/cuda/launch.cuh"
#include "kernels/reduce.h"

namespace volt::cuda {

using detail::block_sum;
using detail::grid_for;
using detail::launch;
using detail::kThreads;

namespace {

// One thread per (o, i): the CPU's order exactly.
__global__ void sum_dim_kernel(int64_t outer, int64_t R, int64_t inner, const float* x, float* out) {
  const int64_t total = outer * inner;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = t / inner, i = t % inner;
    const float* p = x + o * R * inner + i;
    double acc = 0;
    for (int64_t r = 0; r < R; ++r) acc += p[r * inner];
    out[t] = float(acc);
  }
}

// inner == 1 with long rows: one block per row.
__global__ void sum_rows_kernel(int64_t R, const float* x, float* out) {
  const float* row = x + blockIdx.x * R;
  double acc = 0;
  for (int64_t r = threadIdx.x; r < R; r += blockDim.x) acc += row[r];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = float(acc);
}

// One block of 1024 threads: deterministic, and fine for the sizes losses and metrics have.
__global__ void sum_all_kernel(int64_t n, const float* x, double divisor, float* out) {
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[0] = float(acc / divisor);
}

__global__ void broadcast_dim_kernel(int64_t outer, int64_t R, int64_t inner, const float* dy, float alpha, float* dx) {
  const int64_t total = outer * R * inner;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t % inner, o = t / (R * inner);
    dx[t] = __fmul_rn(dy[o * inner + i], alpha);
  }
}

__global__ void broadcast_scalar_kernel(int64_t n, const float* g, float alpha, float* dx) {
  const float v = __fmul_rn(g[0], alpha);
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n; t += int64_t(gridDim.x) * blockDim.x)
    dx[t] = v;
}

__global__ void log_softmax_forward_kernel(int64_t outer, int64_t R, int64_t inner, const float* x, float* y) {
  const int64_t total = outer * inner;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = t / inner, i = t % inner;
    const float* xo = x + o * R * inner + i;
    float* yo = y + o * R * inner + i;
    float m = -INFINITY;
    for (int64_t r = 0; r < R; ++r) m = fmaxf(m, xo[r * inner]);
    double s = 0;
    for (int64_t r = 0; r < R; ++r) s += exp(double(xo[r * inner]) - m);
    const float lse = float(m + log(s));
    for (int64_t r = 0; r < R; ++r) yo[r * inner] = __fsub_rn(xo[r * inner], lse);
  }
}

__global__ void log_softmax_backward_kernel(int64_t outer, int64_t R, int64_t inner, const float* dy, const float* y,
                                            float* dx) {
  const int64_t total = outer * inner;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = t / inner, i = t % inner;
    const int64_t base = o * R * inner + i;
    double s = 0;
    for (int64_t r = 0; r < R; ++r) s += dy[base + r * inner];
    for (int64_t r = 0; r < R; ++r)
      dx[base + r * inner] = float(double(dy[base + r * inner]) - exp(double(y[base + r * inner])) * s);
  }
}

__global__ void cross_entropy_forward_kernel(int64_t N, int64_t C, const float* logits, const int64_t* target,
                                             float eps, float* loss) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    const float* z = logits + n * C;
    const int64_t tn = target[n];
    if (tn < 0 || tn >= C) {
      loss[n] = NAN;
      continue;
    }
    float m = -INFINITY;
    for (int64_t c = 0; c < C; ++c) m = fmaxf(m, z[c]);
    double s = 0, sum_z = 0;
    for (int64_t c = 0; c < C; ++c) {
      s += exp(double(z[c]) - m);
      sum_z += z[c];
    }
    const double lse = m + log(s);
    const double nll = lse - z[tn];
    const double smooth = lse - sum_z / double(C);
    loss[n] = float((1.0 - eps) * nll + eps * smooth);
  }
}

__global__ void cross_entropy_backward_kernel(int64_t N, int64_t C, const float* logits, const int64_t* target,
                                              float eps, const float* dloss, int64_t dloss_stride, float dloss_div,
                                              float* dlogits) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    const float* z = logits + n * C;
    float* dz = dlogits + n * C;
    const int64_t tn = target[n];
    float m = -INFINITY;
    for (int64_t c = 0; c < C; ++c) m = fmaxf(m, z[c]);
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += exp(double(z[c]) - m);
    const double g = double(__fdiv_rn(dloss[n * dloss_stride], dloss_div));
    const double off = eps / double(C);
    for (int64_t c = 0; c < C; ++c) {
      const double p = exp(double(z[c]) - m) / s;
      const double q = off + (c == tn ? 1.0 - eps : 0.0);
      dz[c] = float(g * (p - q));
    }
  }
}

__global__ void argmax_dim_kernel(int64_t outer, int64_t R, int64_t inner, const float* x, int64_t* out) {
  const int64_t total = outer * inner;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = t / inner, i = t % inner;
    const float* xo = x + o * R * inner + i;
    int64_t best = 0;
    for (int64_t r = 1; r < R; ++r) {
      const float v = xo[r * inner], b = xo[best * inner];
      if (v > b || (isnan(v) && !isnan(b))) best = r;
    }
    out[t] = best;
  }
}

__global__ void count_equal_kernel(int64_t n, const int64_t* a, const int64_t* b, int64_t* out) {
  long long acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += a[i] == b[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[0] = int64_t(acc);
}

}  // namespace

void sum_dim(int64_t outer, int64_t R, int64_t inner, const float* x, float* out, void* stream) {
  if (outer * inner == 0) return;
  if (inner == 1 && R >= 1024 && outer <= 65535) {
    launch(sum_rows_kernel, unsigned(outer), kThreads, 0, stream, R, x, out);
  } else {
    launch(sum_dim_kernel, grid_for(outer * inner), kThreads, 0, stream, outer, R, inner, x, out);
  }
}

void sum_all(int64_t n, const float* x, double divisor, float* out, void* stream) {
  launch(sum_all_kernel, 1, 1024, 0, stream, n, x, divisor, out);
}

void broadcast_dim(int64_t outer, int64_t R, int64_t inner, const float* dy, float alpha, float* dx, void* stream) {
  const int64_t total = outer * R * inner;
  if (total == 0) return;
  launch(broadcast_dim_kernel, grid_for(total), kThreads, 0, stream, outer, R, inner, dy, alpha, dx);
}

void broadcast_scalar(int64_t n, const float* g, float alpha, float* dx, void* stream) {
  if (n == 0) return;
  launch(broadcast_scalar_kernel, grid_for(n), kThreads, 0, stream, n, g, alpha, dx);
}

void log_softmax_forward(int64_t outer, int64_t R, int64_t inner, const float* x, float* y, void* stream) {
  if (outer * inner == 0) return;
  launch(log_softmax_forward_kernel, grid_for(outer * inner), kThreads, 0, stream, outer, R, inner, x, y);
}

void log_softmax_backward(int64_t outer, int64_t R, int64_t inner, const float* dy, const float* y, float* dx,
                          void* stream) {
  if (outer * inner == 0) return;
  launch(log_softmax_backward_kernel, grid_for(outer * inner), kThreads, 0, stream, outer, R, inner, dy, y, dx);
}

void cross_entropy_forward(int64_t N, int64_t C, const float* logits, const int64_t* target, float eps, float* loss,
                           void* stream) {
  if (N == 0) return;
  launch(cross_entropy_forward_kernel, grid_for(N), kThreads, 0, stream, N, C, logits, target, eps, loss);
}

void cross_entropy_backward(int64_t N, int64_t C, const float* logits, const int64_t* target, float eps,
                            const float* dloss, int64_t dloss_stride, float dloss_div, float* dlogits, void* stream) {
  if (N == 0) return;
  launch(cross_entropy_backward_kernel, grid_for(N), kThreads, 0, stream, N, C, logits, target, eps, dloss,
         dloss_stride, dloss_div, dlogits);
}

void argmax_dim(int64_t outer, int64_t R, int64_t inner, const float* x, int64_t* out, void* stream) {
  if (outer * inner == 0) return;
  launch(argmax_dim_kernel, grid_for(outer * inner), kThreads, 0, stream, outer, R, inner, x, out);
}

void count_equal(int64_t n, const int64_t* a, const int64_t* b, int64_t* out, void* stream) {
  launch(count_equal_kernel, 1, 1024, 0, stream, n, a, b, out);
}

}  // namespace volt::cuda
