// CUDA batch norm (see kernels/batch_norm.h), optionally fused with the following ReLU, for float32,
// float16 and bfloat16 activations (float32 parameters and statistics): statistics and gradient sums
// in double around a shift as the CPU kernel does, split over (chunk, channel) blocks and combined in
// a fixed order; element-wise passes for the normalisation and dx. Fused with a following max pool
// over non-overlapping windows, the normalisation pass writes the pooled output directly.
#include <algorithm>
#include <cmath>

#include "kernels/batch_norm.h"
#include "kernels/cuda/bn_grad.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/num.cuh"
#include "kernels/fast_div.h"

namespace volt::cuda {

using detail::block_sum;
using detail::bn_dx_value;
using detail::BnBackCoef;
using detail::grid_for;
using detail::launch;
using detail::kThreads;
using detail::load_f;
using detail::store_f;

namespace {

// [N, C, HW] and the divisors that split its flat indices (kernels/fast_div.h: no integer division
// per element).
struct Nchw {
  int64_t N, C, HW;
  FastDiv hw, c;
};
Nchw nchw(int64_t N, int64_t C, int64_t HW) {
  return Nchw{N, C, HW, FastDiv(std::max<int64_t>(HW, 1)), FastDiv(std::max<int64_t>(C, 1))};
}

// Element m (of M = N * HW) of channel c.
__device__ __forceinline__ int64_t at(int64_t m, int64_t c, const Nchw& d) {
  const int64_t n = d.hw.div(m), i = m - n * d.HW;
  return (n * d.C + c) * d.HW + i;
}
// The channel of flat element t.
__device__ __forceinline__ int64_t channel_of(int64_t t, const Nchw& d) { return d.c.mod(d.hw.div(t)); }

__device__ __forceinline__ float affine(float x, BnAffine a) { return detail::bn_apply(x, a); }

__device__ __forceinline__ float relu_if(float v, bool relu) {
  return relu ? (v > 0.f ? v : (v != v ? v : 0.f)) : v;
}

// Training statistics in three launches: partial sums per (chunk, channel) block; one thread per
// channel combining them in chunk order (deterministic) into the saved statistics and the affine;
// then an element-wise pass. A channel's values are N * HW strided runs, so several blocks per
// channel keep the whole GPU busy where one block per channel would leave most of it idle.
constexpr int kStatThreads = 256;

// Chunks per channel: about 4 blocks per SM over all channels, at least 4096 values per block.
int64_t chunks_for(int64_t N, int64_t C, int64_t HW) {
  const int64_t M = N * HW;
  const int64_t want = (528 + C - 1) / C;  // ~4 x 132 SMs
  return std::max<int64_t>(1, std::min<int64_t>(want, M / 4096));
}

// The block's sums of a and b, written by thread 0 to out[0] and out[1] (a block's partial pair).
__device__ __forceinline__ void store_partials(double a, double b, double* out) {
  a = block_sum(a);
  b = block_sum(b);
  if (threadIdx.x == 0) {
    out[0] = a;
    out[1] = b;
  }
}

template <class T>
__global__ void bn_partial_stats_kernel(Nchw d, const T* x, int64_t chunks, double* part) {
  const int64_t c = blockIdx.y, k = blockIdx.x, M = d.N * d.HW, HW = d.HW;
  const int64_t len = (M + chunks - 1) / chunks, m0 = k * len, m1 = min(M, m0 + len);
  const double shift = load_f(x[c * HW]);  // the channel's first element, as the CPU kernel
  double s = 0, s2 = 0;
  for (int64_t m = m0 + threadIdx.x; m < m1; m += blockDim.x) {
    const double v = double(load_f(x[at(m, c, d)])) - shift;
    s += v;
    s2 += v * v;
  }
  store_partials(s, s2, part + (c * chunks + k) * 2);
}

// Adds channel c's partial pairs part[c][k][0..1] over its chunks in chunk order (deterministic).
__device__ __forceinline__ void add_partials(const double* part, int64_t c, int64_t chunks, double& a, double& b) {
  for (int64_t k = 0; k < chunks; ++k) {
    a += part[(c * chunks + k) * 2];
    b += part[(c * chunks + k) * 2 + 1];
  }
}

// Channel c's statistics from the sums of (x - shift) and of its square over its M values: the saved
// mean and invstd, the unbiased variance, the running update and the affine.
__device__ __forceinline__ void bn_finish_channel(int64_t c, int64_t M, double s, double s2, double shift,
                                                  const float* gamma, const float* beta, double eps, float* save_mean,
                                                  float* save_invstd, float* var_unbiased, const BnRunning& run,
                                                  BnAffine* aff) {
  const double mean_shifted = s / double(M);
  const double var = fmax(0.0, s2 / double(M) - mean_shifted * mean_shifted);
  const float mean = float(shift + mean_shifted);
  const float unbiased = M > 1 ? float(var * double(M) / double(M - 1)) : float(var);
  save_mean[c] = mean;
  save_invstd[c] = float(1.0 / sqrt(var + eps));
  if (var_unbiased) var_unbiased[c] = unbiased;
  if (run.mean) {
    run.mean[c] = bn_running_update(run.mean[c], mean, run.momentum);
    run.var[c] = bn_running_update(run.var[c], unbiased, run.momentum);
  }
  if (run.batches_tracked && c == 0) ++*run.batches_tracked;
  aff[c] = bn_affine(save_mean[c], save_invstd[c], gamma, beta, c);
}

template <class T>
__global__ void bn_finish_stats_kernel(int64_t N, int64_t C, int64_t HW, const T* x, int64_t chunks,
                                       const double* part, const float* gamma, const float* beta, double eps,
                                       float* save_mean, float* save_invstd, float* var_unbiased, BnRunning run,
                                       BnAffine* aff) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  double s = 0, s2 = 0;
  add_partials(part, c, chunks, s, s2);
  bn_finish_channel(c, N * HW, s, s2, load_f(x[c * HW]), gamma, beta, eps, save_mean, save_invstd, var_unbiased, run,
                    aff);
}

// The same from sums of x and x*x (no shift) per (channel, chunk) that x's producer made ([C][chunks][2],
// many chunks): a block per channel adds them in a fixed order (deterministic).
__global__ void bn_finish_stats_from_sums_kernel(int64_t M, int64_t chunks, const double* sums, const float* gamma,
                                                 const float* beta, double eps, float* save_mean, float* save_invstd,
                                                 float* var_unbiased, BnRunning run, BnAffine* aff) {
  const int64_t c = blockIdx.x;
  double s = 0, s2 = 0;
  for (int64_t k = threadIdx.x; k < chunks; k += blockDim.x) {
    s += sums[(c * chunks + k) * 2];
    s2 += sums[(c * chunks + k) * 2 + 1];
  }
  s = block_sum(s);
  s2 = block_sum(s2);
  if (threadIdx.x == 0)
    bn_finish_channel(c, M, s, s2, 0.0, gamma, beta, eps, save_mean, save_invstd, var_unbiased, run, aff);
}

template <class T>
__global__ void bn_apply_kernel(int64_t total, Nchw d, const T* x, const BnAffine* aff, bool relu, T* y) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = channel_of(t, d);
    y[t] = store_f<T>(relu_if(affine(load_f(x[t]), aff[c]), relu));
  }
}

// Backward in three launches like the forward: partial sums of dy (through the ReLU's mask) and
// dy * (x - mean) per (chunk, channel); per channel the gradients of gamma and beta and the dx
// coefficients (BnBackCoef, kernels/cuda/bn_grad.cuh); then dx element-wise.

template <class T>
__global__ void bn_partial_grad_kernel(Nchw d, const T* dy, const T* x, const float* gamma, const float* beta,
                                       const float* mean, const float* invstd, bool relu, int64_t chunks,
                                       double* part) {
  const int64_t c = blockIdx.y, k = blockIdx.x, M = d.N * d.HW;
  const int64_t len = (M + chunks - 1) / chunks, m0 = k * len, m1 = min(M, m0 + len);
  const float mu = mean[c];
  const BnAffine aff = bn_affine(mu, invstd[c], gamma, beta, c);
  double sum_dy = 0, sum_dy_xmu = 0;
  for (int64_t m = m0 + threadIdx.x; m < m1; m += blockDim.x) {
    const int64_t e = at(m, c, d);
    const float xv = load_f(x[e]);
    const float d = !relu || affine(xv, aff) > 0.f ? load_f(dy[e]) : 0.f;
    sum_dy += d;
    sum_dy_xmu += double(d) * double(xv - mu);
  }
  store_partials(sum_dy, sum_dy_xmu, part + (c * chunks + k) * 2);
}

__global__ void bn_finish_grad_kernel(int64_t M, int64_t C, int64_t chunks, const double* part, const float* gamma,
                                      const float* beta, const float* mean, const float* invstd, bool training,
                                      float* dgamma, float* dbeta, BnBackCoef* coef) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  double sum_dy = 0, sum_dy_xmu = 0;
  add_partials(part, c, chunks, sum_dy, sum_dy_xmu);
  const float is = invstd[c];
  const double sdyx = sum_dy_xmu * is;  // sum of dy * xhat
  if (dgamma) dgamma[c] = float(sdyx);
  if (dbeta) dbeta[c] = float(sum_dy);
  const float g = gamma ? gamma[c] : 1.f;
  BnBackCoef q;
  q.aff = bn_affine(mean[c], is, gamma, beta, c);
  // training: dx = g*invstd/M * (M*dy - sum_dy - xhat*sum_dy_xhat), written as the CPU kernel does
  q.k = training ? float(double(g) * is) : __fmul_rn(g, is);
  q.a = training ? float(sum_dy / double(M)) : 0.f;
  q.b = training ? __fmul_rn(float(sdyx / double(M)), is) : 0.f;
  coef[c] = q;
}

template <class T>
__global__ void bn_dx_kernel(int64_t total, Nchw d, const T* dy, const T* x, const float* mean,
                             const BnBackCoef* coef, bool training, bool relu, T* dx) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = channel_of(t, d);
    const BnBackCoef q = coef[c];
    const float xv = load_f(x[t]);
    const float d = !relu || affine(xv, q.aff) > 0.f ? load_f(dy[t]) : 0.f;
    dx[t] = store_f<T>(bn_dx_value(q, d, xv, mean[c], training));
  }
}

// ---- batch norm + ReLU + max pooling over non-overlapping windows (BnPoolShape) ----

// The shape with its pooled sizes and the divisors that split flat indices.
struct PoolDims {
  BnPoolShape s;
  int64_t P, Q;
  FastDiv q, p, pq, c, w, h, kw, kh;
};
PoolDims pool_dims(const BnPoolShape& s) {
  const int64_t P = s.H / s.kh, Q = s.W / s.kw;
  return PoolDims{s, P, Q, FastDiv(Q), FastDiv(P), FastDiv(P * Q), FastDiv(s.C), FastDiv(s.W), FastDiv(s.H),
                  FastDiv(s.kw), FastDiv(s.kh)};
}

// One thread per pooled output: the window's activations, each rounded to T as batch_norm_relu would
// store it, and the first maximum (or NaN) as max_pool2d picks it; x_at_max (may be null) keeps the
// input there for backward's sums, which then need not gather it from x.
template <class T>
__global__ void bn_relu_pool_kernel(PoolDims d, const T* x, const BnAffine* aff, T* y, uint8_t* window,
                                    T* x_at_max) {
  const BnPoolShape& s = d.s;
  const int64_t total = s.N * s.C * d.P * d.Q;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = d.q.div(t), q = t - row * d.Q, plane = d.p.div(row), p = row - plane * d.P;
    const BnAffine a = aff[d.c.mod(plane)];
    const T* xp = x + plane * s.H * s.W + p * s.kh * s.W + q * s.kw;
    float best = 0.f;
    int best_i = -1;
    bool done = false;
    for (int64_t i = 0; i < s.kh && !done; ++i)
      for (int64_t j = 0; j < s.kw; ++j) {
        const float v = load_f(store_f<T>(relu_if(affine(load_f(xp[i * s.W + j]), a), true)));
        if (best_i < 0 || v > best || isnan(v)) {
          best = v;
          best_i = int(i * s.kw + j);
          if (isnan(v)) {
            done = true;
            break;
          }
        }
      }
    y[t] = store_f<T>(best);
    window[t] = uint8_t(best_i);
    if (x_at_max) {
      const int64_t bi = d.kw.div(best_i), bj = best_i - bi * s.kw;
      x_at_max[t] = xp[bi * s.W + bj];
    }
  }
}

// The same for 2x2 windows on rows of even length (the usual max pool): the window's two pairs read
// as two aligned vector loads, and x_at_max taken from them; the same comparisons in the same order.
template <class T>
__global__ void bn_relu_pool2x2_kernel(PoolDims d, const T* x, const BnAffine* aff, T* y, uint8_t* window,
                                       T* x_at_max) {
  struct alignas(2 * sizeof(T)) Pair {
    T v[2];
  };
  const BnPoolShape& s = d.s;
  const int64_t total = s.N * s.C * d.P * d.Q;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = d.q.div(t), q = t - row * d.Q, plane = d.p.div(row), p = row - plane * d.P;
    const BnAffine a = aff[d.c.mod(plane)];
    const T* xp = x + plane * s.H * s.W + p * 2 * s.W + q * 2;
    const Pair top = *reinterpret_cast<const Pair*>(xp), bottom = *reinterpret_cast<const Pair*>(xp + s.W);
    const T in[4] = {top.v[0], top.v[1], bottom.v[0], bottom.v[1]};
    float best = 0.f;
    int best_i = -1;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float v = load_f(store_f<T>(relu_if(affine(load_f(in[i]), a), true)));
      if (best_i < 0 || v > best || isnan(v)) {
        best = v;
        best_i = i;
        if (isnan(v)) break;
      }
    }
    y[t] = store_f<T>(best);
    window[t] = uint8_t(best_i);
    if (x_at_max) x_at_max[t] = in[best_i];
  }
}

// The normalise-ReLU-pool pass over x with the per-channel affine aff: the 2x2 kernel where it applies.
void bn_relu_pool(FType t, const BnPoolShape& s, const void* x, const BnAffine* aff, void* y, uint8_t* window,
                  void* x_at_max, void* stream) {
  const int64_t pooled = s.N * s.C * (s.H / s.kh) * (s.W / s.kw);
  const bool pairs = s.kh == 2 && s.kw == 2 && s.W % 2 == 0 &&
                     reinterpret_cast<uintptr_t>(x) % (2 * ftype_size(t)) == 0;
  VOLT_FTYPE_T(t, launch(pairs ? bn_relu_pool2x2_kernel<T> : bn_relu_pool_kernel<T>, grid_for(pooled), kThreads, 0,
                         stream, pool_dims(s), static_cast<const T*>(x), aff, static_cast<T*>(y), window,
                         static_cast<T*>(x_at_max)));
}

// The affine of eval mode (running statistics) per channel, into aff.
__global__ void bn_eval_affine_kernel(int64_t C, const float* gamma, const float* beta, const float* rm,
                                      const float* invstd, BnAffine* aff) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c < C) aff[c] = bn_affine(rm[c], invstd[c], gamma, beta, c);
}

// The pooled gradient reaches one element per window (its maximum, where the activation was
// positive): the partial sums of bn_partial_grad_kernel over those elements only.
template <class T>
__global__ void bn_pool_partial_grad_kernel(PoolDims d, const T* dy, const uint8_t* window, const T* x,
                                            const T* x_at_max, const float* gamma, const float* beta,
                                            const float* mean, const float* invstd, int64_t chunks, double* part) {
  const BnPoolShape& s = d.s;
  const int64_t Q = d.Q, PQ = d.P * d.Q, M = s.N * PQ;
  const int64_t c = blockIdx.y, k = blockIdx.x;
  const int64_t len = (M + chunks - 1) / chunks, m0 = k * len, m1 = min(M, m0 + len);
  const float mu = mean[c];
  const BnAffine aff = bn_affine(mu, invstd[c], gamma, beta, c);
  double sum_dy = 0, sum_dy_xmu = 0;
  for (int64_t m = m0 + threadIdx.x; m < m1; m += blockDim.x) {
    const int64_t n = d.pq.div(m), r = m - n * PQ, p = d.q.div(r), q = r - p * Q, plane = n * s.C + c;
    const int64_t e = plane * PQ + r;
    float xv;
    if (x_at_max) {
      xv = load_f(x_at_max[e]);  // kept by the forward pass: a quarter of the bytes, read in order
    } else {
      const int64_t w = window[e], i = d.kw.div(w), j = w - i * s.kw;
      xv = load_f(x[plane * s.H * s.W + (p * s.kh + i) * s.W + q * s.kw + j]);
    }
    const float d = affine(xv, aff) > 0.f ? load_f(dy[e]) : 0.f;
    sum_dy += d;
    sum_dy_xmu += double(d) * double(xv - mu);
  }
  store_partials(sum_dy, sum_dy_xmu, part + (c * chunks + k) * 2);
}

// dx for every element of x: the pooled gradient where the element is its window's maximum.
template <class T>
__global__ void bn_pool_dx_kernel(PoolDims d, const T* dy, const uint8_t* window, const T* x, const float* mean,
                                  const BnBackCoef* coef, bool training, T* dx) {
  const BnPoolShape& s = d.s;
  const int64_t P = d.P, Q = d.Q, total = s.N * s.C * s.H * s.W;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = d.w.div(t), w = t - row * s.W, plane = d.h.div(row), h = row - plane * s.H;
    const int64_t c = d.c.mod(plane);
    const float xv = load_f(x[t]);
    dx[t] = store_f<T>(detail::bn_pool_dx_value(coef[c], mean[c], training, dy, window, xv, plane, h, w, d.kh.div(h),
                                                d.kw.div(w), P, Q, s.kh, s.kw));
  }
}

template <class T>
__global__ void channel_partial_sum_kernel(Nchw d, const T* x, int64_t chunks, double* part) {
  const int64_t c = blockIdx.y, k = blockIdx.x, M = d.N * d.HW;
  const int64_t len = (M + chunks - 1) / chunks, m0 = k * len, m1 = min(M, m0 + len);
  double s = 0;
  for (int64_t m = m0 + threadIdx.x; m < m1; m += blockDim.x) s += load_f(x[at(m, c, d)]);
  s = block_sum(s);
  if (threadIdx.x == 0) part[(c * chunks + k) * 2] = s;
}

template <class T>
__global__ void channel_sum_finish_kernel(int64_t C, int64_t chunks, const double* part, T* out) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  double s = 0;
  for (int64_t k = 0; k < chunks; ++k) s += part[(c * chunks + k) * 2];
  out[c] = store_f<T>(float(s));
}

__global__ void bn_invstd_kernel(int64_t C, const float* var, double eps, float* invstd) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c < C) invstd[c] = float(1.0 / sqrt(double(var[c]) + eps));
}

// Workspace layout: partial sums (double [C][chunks][2]), then the per-channel coefficients.
struct Layout {
  int64_t chunks;
  size_t coef_offset, bytes;
};
Layout layout(int64_t N, int64_t C, int64_t HW) {
  Layout l;
  l.chunks = chunks_for(N, C, HW);
  l.coef_offset = size_t(C * l.chunks * 2) * sizeof(double);
  l.bytes = l.coef_offset + size_t(C) * std::max(sizeof(BnAffine), sizeof(BnBackCoef));
  return l;
}

}  // namespace

size_t batch_norm_workspace_bytes(int64_t N, int64_t C, int64_t HW) { return layout(N, C, HW).bytes; }
size_t batch_norm_coef_offset(int64_t N, int64_t C, int64_t HW) { return layout(N, C, HW).coef_offset; }
int64_t batch_norm_chunks(int64_t N, int64_t C, int64_t HW) { return layout(N, C, HW).chunks; }

namespace {
// The batch statistics and the per-channel affine (in the workspace, returned) of a training forward.
BnAffine* train_statistics(FType t, int64_t N, int64_t C, int64_t HW, const void* x, const float* gamma,
                           const float* beta, double eps, float* save_mean, float* save_invstd,
                           float* batch_var_unbiased, const BnRunning& running, void* workspace, void* stream) {
  VOLT_CHECK(C <= 65535, "batch_norm on CUDA: at most 65535 channels (grid y), got ", C);
  const Layout l = layout(N, C, HW);
  auto* part = static_cast<double*>(workspace);
  auto* aff = reinterpret_cast<BnAffine*>(static_cast<char*>(workspace) + l.coef_offset);
  VOLT_FTYPE_T(t, launch(bn_partial_stats_kernel<T>, dim3(unsigned(l.chunks), unsigned(C)), kStatThreads, 0, stream,
                         nchw(N, C, HW), x, l.chunks, part);
               launch(bn_finish_stats_kernel<T>, grid_for(C), kThreads, 0, stream, N, C, HW, x, l.chunks, part, gamma,
                      beta, eps, save_mean, save_invstd, batch_var_unbiased, running, aff));
  return aff;
}

void check_pool_shape(const BnPoolShape& s) {
  VOLT_CHECK(s.kh >= 1 && s.kw >= 1 && s.kh * s.kw <= 256 && s.H >= s.kh && s.W >= s.kw,
             "batch_norm_relu_pool on CUDA: window ", s.kh, "x", s.kw, " does not fit (input ", s.H, "x", s.W,
             ", at most 256 positions)");
}
}  // namespace

void batch_norm_forward_train(FType t, int64_t N, int64_t C, int64_t HW, const void* x, const float* gamma,
                              const float* beta, double eps, bool relu, void* y, float* save_mean, float* save_invstd,
                              float* batch_var_unbiased, const BnRunning& running, void* workspace, void* stream) {
  if (C == 0) return;
  const BnAffine* aff = train_statistics(t, N, C, HW, x, gamma, beta, eps, save_mean, save_invstd, batch_var_unbiased,
                                         running, workspace, stream);
  VOLT_FTYPE_T(t, launch(bn_apply_kernel<T>, grid_for(N * C * HW), kThreads, 0, stream, N * C * HW, nchw(N, C, HW), x,
                         aff, relu, y));
}

void batch_norm_relu_pool_forward_train(FType t, const BnPoolShape& s, const void* x, const float* gamma,
                                        const float* beta, double eps, void* y, uint8_t* window, float* save_mean,
                                        float* save_invstd, float* batch_var_unbiased, const BnRunning& running,
                                        void* workspace, void* stream, void* x_at_max) {
  check_pool_shape(s);
  if (s.N * s.C == 0) return;
  const BnAffine* aff = train_statistics(t, s.N, s.C, s.H * s.W, x, gamma, beta, eps, save_mean, save_invstd,
                                         batch_var_unbiased, running, workspace, stream);
  bn_relu_pool(t, s, x, aff, y, window, x_at_max, stream);
}

void batch_norm_relu_pool_forward_train_from_sums(FType t, const BnPoolShape& s, const void* x, const double* sums,
                                                  int64_t chunks, const float* gamma, const float* beta, double eps,
                                                  void* y, uint8_t* window, float* save_mean, float* save_invstd,
                                                  float* batch_var_unbiased, const BnRunning& running,
                                                  void* workspace, void* stream, void* x_at_max) {
  check_pool_shape(s);
  VOLT_CHECK(chunks >= 1, "batch_norm_relu_pool on CUDA: the sums need at least one chunk, got ", chunks);
  if (s.N * s.C == 0) return;
  auto* aff = reinterpret_cast<BnAffine*>(static_cast<char*>(workspace) + layout(s.N, s.C, s.H * s.W).coef_offset);
  launch(bn_finish_stats_from_sums_kernel, dim3(unsigned(s.C)), kStatThreads, 0, stream, s.N * s.H * s.W, chunks,
         sums, gamma, beta, eps, save_mean, save_invstd, batch_var_unbiased, running, aff);
  bn_relu_pool(t, s, x, aff, y, window, x_at_max, stream);
}

void batch_norm_relu_pool_forward_eval(FType t, const BnPoolShape& s, const void* x, const float* gamma,
                                       const float* beta, const float* running_mean, const float* invstd, void* y,
                                       uint8_t* window, void* workspace, void* stream, void* x_at_max) {
  check_pool_shape(s);
  if (s.N * s.C == 0) return;
  auto* aff = reinterpret_cast<BnAffine*>(static_cast<char*>(workspace) + layout(s.N, s.C, s.H * s.W).coef_offset);
  launch(bn_eval_affine_kernel, grid_for(s.C), kThreads, 0, stream, s.C, gamma, beta, running_mean, invstd, aff);
  bn_relu_pool(t, s, x, aff, y, window, x_at_max, stream);
}

void batch_norm_relu_pool_backward(FType t, const BnPoolShape& s, const void* dy, const uint8_t* window, const void* x,
                                   const float* gamma, const float* beta, const float* mean, const float* invstd,
                                   bool training, void* dx, float* dgamma, float* dbeta, void* workspace,
                                   void* stream, const void* x_at_max) {
  check_pool_shape(s);
  VOLT_CHECK(s.C <= 65535, "batch_norm on CUDA: at most 65535 channels (grid y), got ", s.C);
  if (s.N * s.C == 0) return;
  const Layout l = layout(s.N, s.C, s.H * s.W);
  // Chunks over the pooled positions: never more than the workspace holds for the full size.
  const int64_t chunks = chunks_for(s.N, s.C, (s.H / s.kh) * (s.W / s.kw));
  auto* part = static_cast<double*>(workspace);
  auto* coef = reinterpret_cast<BnBackCoef*>(static_cast<char*>(workspace) + l.coef_offset);
  VOLT_FTYPE_T(t, launch(bn_pool_partial_grad_kernel<T>, dim3(unsigned(chunks), unsigned(s.C)), kStatThreads, 0,
                         stream, pool_dims(s), dy, window, x, x_at_max, gamma, beta, mean, invstd, chunks, part);
               launch(bn_finish_grad_kernel, grid_for(s.C), kThreads, 0, stream, s.N * s.H * s.W, s.C, chunks, part,
                      gamma, beta, mean, invstd, training, dgamma, dbeta, coef);
               if (dx) launch(bn_pool_dx_kernel<T>, grid_for(s.N * s.C * s.H * s.W), kThreads, 0, stream,
                              pool_dims(s), dy, window, x, mean, coef, training, dx));
}

void batch_norm_invstd(int64_t C, const float* var, double eps, float* invstd, void* stream) {
  if (C == 0) return;
  launch(bn_invstd_kernel, grid_for(C), kThreads, 0, stream, C, var, eps, invstd);
}

void batch_norm_forward_eval(FType t, int64_t N, int64_t C, int64_t HW, const void* x, const float* gamma,
                             const float* beta, const float* running_mean, const float* invstd, bool relu, void* y,
                             void* workspace, void* stream) {
  const int64_t total = N * C * HW;
  if (total == 0) return;
  // The affine once per channel (in double, bn_affine), then the element-wise pass of training.
  auto* aff = reinterpret_cast<BnAffine*>(static_cast<char*>(workspace) + layout(N, C, HW).coef_offset);
  launch(bn_eval_affine_kernel, grid_for(C), kThreads, 0, stream, C, gamma, beta, running_mean, invstd, aff);
  VOLT_FTYPE_T(t, launch(bn_apply_kernel<T>, grid_for(total), kThreads, 0, stream, total, nchw(N, C, HW), x, aff, relu,
                         y));
}

void batch_norm_backward(FType t, int64_t N, int64_t C, int64_t HW, const void* dy, const void* x, const float* gamma,
                         const float* beta, const float* mean, const float* invstd, bool training, bool relu, void* dx,
                         float* dgamma, float* dbeta, void* workspace, void* stream) {
  VOLT_CHECK(C <= 65535, "batch_norm on CUDA: at most 65535 channels (grid y), got ", C);
  if (C == 0) return;
  const Layout l = layout(N, C, HW);
  auto* part = static_cast<double*>(workspace);
  auto* coef = reinterpret_cast<BnBackCoef*>(static_cast<char*>(workspace) + l.coef_offset);
  VOLT_FTYPE_T(t, launch(bn_partial_grad_kernel<T>, dim3(unsigned(l.chunks), unsigned(C)), kStatThreads, 0, stream,
                         nchw(N, C, HW), dy, x, gamma, beta, mean, invstd, relu, l.chunks, part);
               launch(bn_finish_grad_kernel, grid_for(C), kThreads, 0, stream, N * HW, C, l.chunks, part, gamma, beta,
                      mean, invstd, training, dgamma, dbeta, coef);
               if (dx) launch(bn_dx_kernel<T>, grid_for(N * C * HW), kThreads, 0, stream, N * C * HW, nchw(N, C, HW),
                              dy, x, mean, coef, training, relu, dx));
}

void channel_sum(FType t, int64_t N, int64_t C, int64_t HW, const void* x, void* out, void* workspace, void* stream) {
  VOLT_CHECK(C <= 65535, "channel_sum on CUDA: at most 65535 channels (grid y), got ", C);
  if (C == 0) return;
  const Layout l = layout(N, C, HW);
  auto* part = static_cast<double*>(workspace);
  VOLT_FTYPE_T(t, launch(channel_partial_sum_kernel<T>, dim3(unsigned(l.chunks), unsigned(C)), kStatThreads, 0, stream,
                         nchw(N, C, HW), x, l.chunks, part);
               launch(channel_sum_finish_kernel<T>, grid_for(C), kThreads, 0, stream, C, l.chunks, part, out));
}

}  // namespace volt::cuda
