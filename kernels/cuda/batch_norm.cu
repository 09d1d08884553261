// CUDA batch norm (see kernels/batch_norm.h): one block per channel for the statistics (double
// accumulation around a shift, as the CPU kernel), elementwise kernels for the rest.
#include <cmath>

#include "kernels/batch_norm.h"
#include "kernels/cuda/launch.cuh"

namespace volt::cuda {

using detail::block_sum;
using detail::grid_for;
using detail::launch;
using detail::kThreads;

namespace {

// Element m (of M = N * HW) of channel c in [N, C, HW].
__device__ __forceinline__ int64_t at(int64_t m, int64_t c, int64_t C, int64_t HW) {
  const int64_t n = m / HW, i = m - n * HW;
  return (n * C + c) * HW + i;
}

__global__ void bn_forward_train_kernel(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma,
                                        const float* beta, double eps, float* y, float* save_mean, float* save_invstd,
                                        float* var_unbiased) {
  const int64_t c = blockIdx.x, M = N * HW;
  const double shift = x[c * HW];  // first element of the channel, as the CPU kernel
  double s = 0, s2 = 0;
  for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
    const double d = double(x[at(m, c, C, HW)]) - shift;
    s += d;
    s2 += d * d;
  }
  s = block_sum(s);
  s2 = block_sum(s2);
  __shared__ float scale_s, bias_s;
  if (threadIdx.x == 0) {
    const double mean_shifted = s / double(M);
    const double var = fmax(0.0, s2 / double(M) - mean_shifted * mean_shifted);
    const double mean = shift + mean_shifted;
    const double invstd = 1.0 / sqrt(var + eps);
    save_mean[c] = float(mean);
    save_invstd[c] = float(invstd);
    if (var_unbiased) var_unbiased[c] = M > 1 ? float(var * double(M) / double(M - 1)) : float(var);
    const float g = gamma ? gamma[c] : 1.f;
    scale_s = float(invstd * g);
    bias_s = float((beta ? beta[c] : 0.f) - mean * invstd * g);
  }
  __syncthreads();
  const float scale = scale_s, bias = bias_s;
  for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
    const int64_t k = at(m, c, C, HW);
    y[k] = __fadd_rn(__fmul_rn(x[k], scale), bias);
  }
}

__global__ void bn_forward_eval_kernel(int64_t total, int64_t C, int64_t HW, const float* x, const float* gamma,
                                       const float* beta, const float* rm, const float* rv, double eps, float* y) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (t / HW) % C;
    const double invstd = 1.0 / sqrt(double(rv[c]) + eps);
    const float g = gamma ? gamma[c] : 1.f;
    const float scale = float(invstd * g);
    const float bias = float((beta ? beta[c] : 0.f) - double(rm[c]) * invstd * g);
    y[t] = __fadd_rn(__fmul_rn(x[t], scale), bias);
  }
}

__global__ void bn_update_running_kernel(int64_t C, float* rm, float* rv, const float* mean, const float* var,
                                         double momentum) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  rm[c] = float((1.0 - momentum) * rm[c] + momentum * mean[c]);
  rv[c] = float((1.0 - momentum) * rv[c] + momentum * var[c]);
}

__global__ void bn_backward_kernel(int64_t N, int64_t C, int64_t HW, const float* dy, const float* x,
                                   const float* gamma, const float* mean, const float* invstd, bool training,
                                   float* dx, float* dgamma, float* dbeta) {
  const int64_t c = blockIdx.x, M = N * HW;
  const float mu = mean[c], is = invstd[c];
  double sum_dy = 0, sum_dy_xmu = 0;
  for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
    const int64_t k = at(m, c, C, HW);
    sum_dy += dy[k];
    sum_dy_xmu += double(dy[k]) * double(x[k] - mu);
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
  if (training) {
    // dx = g*invstd/M * (M*dy - sum_dy - xhat*sum_dy_xhat), written as the CPU kernel does
    const float k = float(double(g) * is);
    const float a = float(sdy_s / double(M));
    const float b = float(sdyx_s / double(M)) * is;
    for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
      const int64_t e = at(m, c, C, HW);
      dx[e] = k * (dy[e] - a - (x[e] - mu) * b);
    }
  } else {
    const float k = g * is;
    for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
      const int64_t e = at(m, c, C, HW);
      dx[e] = k * dy[e];
    }
  }
}

__global__ void bn_invstd_kernel(int64_t C, const float* var, double eps, float* invstd) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c < C) invstd[c] = float(1.0 / sqrt(double(var[c]) + eps));
}

constexpr int kStatThreads = 512;

}  // namespace

void batch_norm_forward_train(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma, const float* beta,
                              double eps, float* y, float* save_mean, float* save_invstd, float* batch_var_unbiased,
                              void* stream) {
  VOLT_CHECK(C <= 2147483647, "batch_norm on CUDA: too many channels (", C, ")");
  if (C == 0) return;
  launch(bn_forward_train_kernel, unsigned(C), kStatThreads, 0, stream, N, C, HW, x, gamma, beta, eps, y, save_mean,
         save_invstd, batch_var_unbiased);
}

void batch_norm_forward_eval(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma, const float* beta,
                             const float* running_mean, const float* running_var, double eps, float* y, void* stream) {
  const int64_t total = N * C * HW;
  if (total == 0) return;
  launch(bn_forward_eval_kernel, grid_for(total), kThreads, 0, stream, total, C, HW, x, gamma, beta, running_mean,
         running_var, eps, y);
}

void batch_norm_update_running(int64_t C, float* running_mean, float* running_var, const float* batch_mean,
                               const float* batch_var_unbiased, double momentum, void* stream) {
  if (C == 0) return;
  launch(bn_update_running_kernel, grid_for(C), kThreads, 0, stream, C, running_mean, running_var, batch_mean,
         batch_var_unbiased, momentum);
}

void batch_norm_backward(int64_t N, int64_t C, int64_t HW, const float* dy, const float* x, const float* gamma,
                         const float* mean, const float* invstd, bool training, float* dx, float* dgamma, float* dbeta,
                         void* stream) {
  if (C == 0) return;
  launch(bn_backward_kernel, unsigned(C), kStatThreads, 0, stream, N, C, HW, dy, x, gamma, mean, invstd, training, dx,
         dgamma, dbeta);
}

void batch_norm_invstd(int64_t C, const float* var, double eps, float* invstd, void* stream) {
  if (C == 0) return;
  launch(bn_invstd_kernel, grid_for(C), kThreads, 0, stream, C, var, eps, invstd);
}

}  // namespace volt::cuda
