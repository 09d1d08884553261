// CUDA batch norm (see kernels/batch_norm.h), optionally fused with the following ReLU, for float32,
// float16 and bfloat16 activations (float32 parameters and statistics): one block per channel for the
// statistics (double accumulation around a shift, as the CPU kernel) and the normalisation, an
// element-wise kernel in eval mode.
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

template <class T>
__global__ void bn_forward_train_kernel(int64_t N, int64_t C, int64_t HW, const T* x, const float* gamma,
                                        const float* beta, double eps, bool relu, T* y, float* save_mean,
                                        float* save_invstd, float* var_unbiased) {
  const int64_t c = blockIdx.x, M = N * HW;
  const double shift = load_f(x[c * HW]);  // first element of the channel, as the CPU kernel
  double s = 0, s2 = 0;
  for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
    const double d = double(load_f(x[at(m, c, C, HW)])) - shift;
    s += d;
    s2 += d * d;
  }
  s = block_sum(s);
  s2 = block_sum(s2);
  __shared__ BnAffine aff_s;
  if (threadIdx.x == 0) {
    const double mean_shifted = s / double(M);
    const double var = fmax(0.0, s2 / double(M) - mean_shifted * mean_shifted);
    save_mean[c] = float(shift + mean_shifted);
    save_invstd[c] = float(1.0 / sqrt(var + eps));
    if (var_unbiased) var_unbiased[c] = M > 1 ? float(var * double(M) / double(M - 1)) : float(var);
    aff_s = bn_affine(save_mean[c], save_invstd[c], gamma, beta, c);
  }
  __syncthreads();
  const BnAffine aff = aff_s;
  for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
    const int64_t k = at(m, c, C, HW);
    y[k] = store_f<T>(relu_if(affine(load_f(x[k]), aff), relu));
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

template <class T>
__global__ void bn_backward_kernel(int64_t N, int64_t C, int64_t HW, const T* dy, const T* x, const float* gamma,
                                   const float* beta, const float* mean, const float* invstd, bool training, bool relu,
                                   T* dx, float* dgamma, float* dbeta) {
  const int64_t c = blockIdx.x, M = N * HW;
  const float mu = mean[c], is = invstd[c];
  const BnAffine aff = bn_affine(mu, is, gamma, beta, c);
  double sum_dy = 0, sum_dy_xmu = 0;
  for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
    const int64_t k = at(m, c, C, HW);
    const float xv = load_f(x[k]);
    const float d = !relu || affine(xv, aff) > 0.f ? load_f(dy[k]) : 0.f;
    sum_dy += d;
    sum_dy_xmu += double(d) * double(xv - mu);
  }
  sum_dy = block_sum(sum_dy);
  sum_dy_xmu = block_sum(sum_dy_xmu);
  __shared__ double sdy_s, sdyx_s;
  if (threadIdx.x == 0) {
    sdy_s = sum_dy;
    sdyx_s = sum_dy_xmu * is;  // sum of dy * xhat
    if (dgamma) dgamma[c] = float(sdyx_s);
    if (dbeta) dbeta[c] = float(sum_dy);
  }
  __syncthreads();
  if (!dx) return;
  const float g = gamma ? gamma[c] : 1.f;
  // training: dx = g*invstd/M * (M*dy - sum_dy - xhat*sum_dy_xhat), written as the CPU kernel does;
  // eval: dx = g*invstd * dy.
  const float k = training ? float(double(g) * is) : __fmul_rn(g, is);
  const float a = training ? float(sdy_s / double(M)) : 0.f;
  const float b = training ? __fmul_rn(float(sdyx_s / double(M)), is) : 0.f;
  for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
    const int64_t e = at(m, c, C, HW);
    const float xv = load_f(x[e]);
    const float d = !relu || affine(xv, aff) > 0.f ? load_f(dy[e]) : 0.f;
    dx[e] = store_f<T>(training ? __fmul_rn(k, __fsub_rn(__fsub_rn(d, a), __fmul_rn(__fsub_rn(xv, mu), b)))
                                : __fmul_rn(k, d));
  }
}

__global__ void bn_invstd_kernel(int64_t C, const float* var, double eps, float* invstd) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c < C) invstd[c] = float(1.0 / sqrt(double(var[c]) + eps));
}

constexpr int kStatThreads = 512;

}  // namespace

void batch_norm_forward_train(FType t, int64_t N, int64_t C, int64_t HW, const void* x, const float* gamma,
                              const float* beta, double eps, bool relu, void* y, float* save_mean, float* save_invstd,
                              float* batch_var_unbiased, void* stream) {
  VOLT_CHECK(C <= 2147483647, "batch_norm on CUDA: too many channels (", C, ")");
  if (C == 0) return;
  VOLT_FTYPE_T(t, launch(bn_forward_train_kernel<T>, unsigned(C), kStatThreads, 0, stream, N, C, HW, x, gamma, beta,
                         eps, relu, y, save_mean, save_invstd, batch_var_unbiased));
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
                         float* dgamma, float* dbeta, void* stream) {
  if (C == 0) return;
  VOLT_FTYPE_T(t, launch(bn_backward_kernel<T>, unsigned(C), kStatThreads, 0, stream, N, C, HW, dy, x, gamma, beta,
                         mean, invstd, training, relu, dx, dgamma, dbeta));
}

}  // namespace volt::cuda
