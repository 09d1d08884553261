// CUDA batch norm (see kernels/batch_norm.h), optionally fused with the following ReLU, for float32,
// float16 and bfloat16 activations (float32 parameters and statistics): statistics and gradient sums
// in double around a shift as the CPU kernel does, split over (chunk, channel) blocks and combined in
// a fixed order; element-wise passes for the normalisation and dx.
#include <algorithm>
#include <cmath>

#include "kernels/batch_norm.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/num.cuh"

namespace volt::cuda {

using detail::block_sum;
using detail::grid_for;
using detail::launch;
using detail::kThreads;
using detail::load_f;
using detail::store_f;

namespace {

// Element m (of M = N * HW) of channel c in [N, C, HW].
__device__ __forceinline__ int64_t at(int64_t m, int64_t c, int64_t C, int64_t HW) {
  const int64_t n = m / HW, i = m - n * HW;
  return (n * C + c) * HW + i;
}

__device__ __forceinline__ float affine(float x, BnAffine a) { return __fadd_rn(__fmul_rn(x, a.scale), a.bias); }

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

template <class T>
__global__ void bn_partial_stats_kernel(int64_t N, int64_t C, int64_t HW, const T* x, int64_t chunks, double* part) {
  const int64_t c = blockIdx.y, k = blockIdx.x, M = N * HW;
  const int64_t len = (M + chunks - 1) / chunks, m0 = k * len, m1 = min(M, m0 + len);
  const double shift = load_f(x[c * HW]);  // the channel's first element, as the CPU kernel
  double s = 0, s2 = 0;
  for (int64_t m = m0 + threadIdx.x; m < m1; m += blockDim.x) {
    const double d = double(load_f(x[at(m, c, C, HW)])) - shift;
    s += d;
    s2 += d * d;
  }
  s = block_sum(s);
  s2 = block_sum(s2);
  if (threadIdx.x == 0) {
    part[(c * chunks + k) * 2] = s;
    part[(c * chunks + k) * 2 + 1] = s2;
  }
}

template <class T>
__global__ void bn_finish_stats_kernel(int64_t N, int64_t C, int64_t HW, const T* x, int64_t chunks,
                                       const double* part, const float* gamma, const float* beta, double eps,
                                       float* save_mean, float* save_invstd, float* var_unbiased, BnAffine* aff) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const int64_t M = N * HW;
  double s = 0, s2 = 0;
  for (int64_t k = 0; k < chunks; ++k) {
    s += part[(c * chunks + k) * 2];
    s2 += part[(c * chunks + k) * 2 + 1];
  }
  const double shift = load_f(x[c * HW]);
  const double mean_shifted = s / double(M);
  const double var = fmax(0.0, s2 / double(M) - mean_shifted * mean_shifted);
  save_mean[c] = float(shift + mean_shifted);
  save_invstd[c] = float(1.0 / sqrt(var + eps));
  if (var_unbiased) var_unbiased[c] = M > 1 ? float(var * double(M) / double(M - 1)) : float(var);
  aff[c] = bn_affine(save_mean[c], save_invstd[c], gamma, beta, c);
}

template <class T>
__global__ void bn_apply_kernel(int64_t total, int64_t C, int64_t HW, const T* x, const BnAffine* aff, bool relu,
                                T* y) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (t / HW) % C;
    y[t] = store_f<T>(relu_if(affine(load_f(x[t]), aff[c]), relu));
  }
}

template <class T>
__global__ void bn_forward_eval_kernel(int64_t total, int64_t C, int64_t HW, const T* x, const float* gamma,
                                       const float* beta, const float* rm, const float* invstd, bool relu, T* y) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (t / HW) % C;
    y[t] = store_f<T>(relu_if(affine(load_f(x[t]), bn_affine(rm[c], invstd[c], gamma, beta, c)), relu));
  }
}

__global__ void bn_update_running_kernel(int64_t C, float* rm, float* rv, const float* mean, const float* var,
                                         double momentum) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  rm[c] = float((1.0 - momentum) * rm[c] + momentum * mean[c]);
  rv[c] = float((1.0 - momentum) * rv[c] + momentum * var[c]);
}

// Backward in three launches like the forward: partial sums of dy (through the ReLU's mask) and
// dy * (x - mean) per (chunk, channel); per channel the gradients of gamma and beta and the dx
// coefficients; then dx element-wise.
struct BnBackCoef {
  BnAffine aff;    // the forward's pre-activation (the ReLU mask)
  float k, a, b;   // dx = k * ((dy - a) - (x - mean) * b) in training, k * dy in eval
};

template <class T>
__global__ void bn_partial_grad_kernel(int64_t N, int64_t C, int64_t HW, const T* dy, const T* x, const float* gamma,
                                       const float* beta, const float* mean, const float* invstd, bool relu,
                                       int64_t chunks, double* part) {
  const int64_t c = blockIdx.y, k = blockIdx.x, M = N * HW;
  const int64_t len = (M + chunks - 1) / chunks, m0 = k * len, m1 = min(M, m0 + len);
  const float mu = mean[c];
  const BnAffine aff = bn_affine(mu, invstd[c], gamma, beta, c);
  double sum_dy = 0, sum_dy_xmu = 0;
  for (int64_t m = m0 + threadIdx.x; m < m1; m += blockDim.x) {
    const int64_t e = at(m, c, C, HW);
    const float xv = load_f(x[e]);
    const float d = !relu || affine(xv, aff) > 0.f ? load_f(dy[e]) : 0.f;
    sum_dy += d;
    sum_dy_xmu += double(d) * double(xv - mu);
  }
  sum_dy = block_sum(sum_dy);
  sum_dy_xmu = block_sum(sum_dy_xmu);
  if (threadIdx.x == 0) {
    part[(c * chunks + k) * 2] = sum_dy;
    part[(c * chunks + k) * 2 + 1] = sum_dy_xmu;
  }
}

__global__ void bn_finish_grad_kernel(int64_t M, int64_t C, int64_t chunks, const double* part, const float* gamma,
                                      const float* beta, const float* mean, const float* invstd, bool training,
                                      float* dgamma, float* dbeta, BnBackCoef* coef) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  double sum_dy = 0, sum_dy_xmu = 0;
  for (int64_t k = 0; k < chunks; ++k) {
    sum_dy += part[(c * chunks + k) * 2];
    sum_dy_xmu += part[(c * chunks + k) * 2 + 1];
  }
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
__global__ void bn_dx_kernel(int64_t total, int64_t C, int64_t HW, const T* dy, const T* x, const float* mean,
                             const BnBackCoef* coef, bool training, bool relu, T* dx) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (t / HW) % C;
    const BnBackCoef q = coef[c];
    const float xv = load_f(x[t]);
    const float d = !relu || affine(xv, q.aff) > 0.f ? load_f(dy[t]) : 0.f;
    dx[t] = store_f<T>(training ? __fmul_rn(q.k, __fsub_rn(__fsub_rn(d, q.a), __fmul_rn(__fsub_rn(xv, mean[c]), q.b)))
                                : __fmul_rn(q.k, d));
  }
}

template <class T>
__global__ void channel_partial_sum_kernel(int64_t N, int64_t C, int64_t HW, const T* x, int64_t chunks, double* part) {
  const int64_t c = blockIdx.y, k = blockIdx.x, M = N * HW;
  const int64_t len = (M + chunks - 1) / chunks, m0 = k * len, m1 = min(M, m0 + len);
  double s = 0;
  for (int64_t m = m0 + threadIdx.x; m < m1; m += blockDim.x) s += load_f(x[at(m, c, C, HW)]);
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

void batch_norm_forward_train(FType t, int64_t N, int64_t C, int64_t HW, const void* x, const float* gamma,
                              const float* beta, double eps, bool relu, void* y, float* save_mean, float* save_invstd,
                              float* batch_var_unbiased, void* workspace, void* stream) {
  VOLT_CHECK(C <= 65535, "batch_norm on CUDA: at most 65535 channels (grid y), got ", C);
  if (C == 0) return;
  const Layout l = layout(N, C, HW);
  auto* part = static_cast<double*>(workspace);
  auto* aff = reinterpret_cast<BnAffine*>(static_cast<char*>(workspace) + l.coef_offset);
  VOLT_FTYPE_T(t, launch(bn_partial_stats_kernel<T>, dim3(unsigned(l.chunks), unsigned(C)), kStatThreads, 0, stream, N,
                         C, HW, x, l.chunks, part);
               launch(bn_finish_stats_kernel<T>, grid_for(C), kThreads, 0, stream, N, C, HW, x, l.chunks, part, gamma,
                      beta, eps, save_mean, save_invstd, batch_var_unbiased, aff);
               launch(bn_apply_kernel<T>, grid_for(N * C * HW), kThreads, 0, stream, N * C * HW, C, HW, x, aff, relu,
                      y));
}

void batch_norm_invstd(int64_t C, const float* var, double eps, float* invstd, void* stream) {
  if (C == 0) return;
  launch(bn_invstd_kernel, grid_for(C), kThreads, 0, stream, C, var, eps, invstd);
}

void batch_norm_forward_eval(FType t, int64_t N, int64_t C, int64_t HW, const void* x, const float* gamma,
                             const float* beta, const float* running_mean, const float* invstd, bool relu, void* y,
                             void* stream) {
  const int64_t total = N * C * HW;
  if (total == 0) return;
  VOLT_FTYPE_T(t, launch(bn_forward_eval_kernel<T>, grid_for(total), kThreads, 0, stream, total, C, HW, x, gamma, beta,
                         running_mean, invstd, relu, y));
}

void batch_norm_update_running(int64_t C, float* running_mean, float* running_var, const float* batch_mean,
                               const float* batch_var_unbiased, double momentum, void* stream) {
  if (C == 0) return;
  launch(bn_update_running_kernel, grid_for(C), kThreads, 0, stream, C, running_mean, running_var, batch_mean,
         batch_var_unbiased, momentum);
}

void batch_norm_backward(FType t, int64_t N, int64_t C, int64_t HW, const void* dy, const void* x, const float* gamma,
                         const float* beta, const float* mean, const float* invstd, bool training, bool relu, void* dx,
                         float* dgamma, float* dbeta, void* workspace, void* stream) {
  VOLT_CHECK(C <= 65535, "batch_norm on CUDA: at most 65535 channels (grid y), got ", C);
  if (C == 0) return;
  const Layout l = layout(N, C, HW);
  auto* part = static_cast<double*>(workspace);
  auto* coef = reinterpret_cast<BnBackCoef*>(static_cast<char*>(workspace) + l.coef_offset);
  VOLT_FTYPE_T(t, launch(bn_partial_grad_kernel<T>, dim3(unsigned(l.chunks), unsigned(C)), kStatThreads, 0, stream, N,
                         C, HW, dy, x, gamma, beta, mean, invstd, relu, l.chunks, part);
               launch(bn_finish_grad_kernel, grid_for(C), kThreads, 0, stream, N * HW, C, l.chunks, part, gamma, beta,
                      mean, invstd, training, dgamma, dbeta, coef);
               if (dx) launch(bn_dx_kernel<T>, grid_for(N * C * HW), kThreads, 0, stream, N * C * HW, C, HW, dy, x,
                              mean, coef, training, relu, dx));
}

void channel_sum(FType t, int64_t N, int64_t C, int64_t HW, const void* x, void* out, void* workspace, void* stream) {
  VOLT_CHECK(C <= 65535, "channel_sum on CUDA: at most 65535 channels (grid y), got ", C);
  if (C == 0) return;
  const Layout l = layout(N, C, HW);
  auto* part = static_cast<double*>(workspace);
  VOLT_FTYPE_T(t, launch(channel_partial_sum_kernel<T>, dim3(unsigned(l.chunks), unsigned(C)), kStatThreads, 0, stream,
                         N, C, HW, x, l.chunks, part);
               launch(channel_sum_finish_kernel<T>, grid_for(C), kThreads, 0, stream, C, l.chunks, part, out));
}

}  // namespace volt::cuda
