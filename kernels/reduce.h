// Reductions and the softmax family over a tensor viewed as [outer, R, inner] (R is reduced).
#pragma once
#include <cstdint>

#include "ftype.h"
#include "hd.h"

namespace volt {

// The deferred-error slot bad[3] of the cross-entropy and batch-accuracy kernels: bad[0] counts the
// targets outside [0, C); bad[1] records one of them as encode_bad_target(row, value), kept with
// atomicMax so that the lowest row wins whatever order a GPU runs its threads in (0: none yet). Rows
// are saturated to [0, 2^32 - 2] and values to int32.
VOLT_HD uint64_t encode_bad_target(int64_t row, int64_t value) {
  const uint32_t r = row < 0 ? 0u : row > int64_t(0xfffffffell) ? 0xfffffffeu : uint32_t(row);
  const int32_t v = value < -2147483647ll - 1 ? int32_t(-2147483647 - 1)
                    : value > 2147483647ll    ? int32_t(2147483647)
                                              : int32_t(value);
  return (uint64_t(~r) << 32) | uint64_t(uint32_t(v));  // ~r >= 1: lower rows give larger codes, never 0
}
struct BadTarget {
  int64_t row, value;
};
VOLT_HD BadTarget decode_bad_target(uint64_t code) {
  return BadTarget{int64_t(~uint32_t(code >> 32)), int64_t(int32_t(uint32_t(code & 0xffffffffu)))};
}

}  // namespace volt

namespace volt::cpu {

// out[o, i] = sum_r x[o, r, i] (double accumulation).
void sum_dim(int64_t outer, int64_t R, int64_t inner, const float* x, float* out);
double sum_all(int64_t n, const float* x);
// dx[o, r, i] = dy[o, i] * alpha.
void broadcast_dim(int64_t outer, int64_t R, int64_t inner, const float* dy, float alpha, float* dx);

// y = log_softmax over R.
void log_softmax_forward(int64_t outer, int64_t R, int64_t inner, const float* x, float* y);
// dx = dy - exp(y) * sum_r dy.
void log_softmax_backward(int64_t outer, int64_t R, int64_t inner, const float* dy, const float* y, float* dx);

// Cross-entropy over logits [N, C] and class indices target [N] (already range-checked) with
// label smoothing eps: loss_n = (1-eps) * -logp[n, t_n] + eps/C * sum_c -logp[n, c]. In the same pass,
// when grad_base is not null, grad_base[n, c] = softmax[n, c] - q[n, c] (q the smoothed target
// distribution): the gradient up to the incoming dloss, so backward need not read the logits again.
void cross_entropy_forward(int64_t N, int64_t C, const float* logits, const int64_t* target, float eps, float* loss,
                           float* grad_base);
// dlogits[n, c] = grad_base[n, c] * (dloss[n * dloss_stride] / dloss_div) (stride 0: one scalar for
// every row, as the mean and sum reductions give), in float.
void cross_entropy_backward(int64_t N, int64_t C, const float* grad_base, const float* dloss, int64_t dloss_stride,
                            float dloss_div, float* dlogits);

// out[o, i] = argmax_r x[o, r, i]: the first maximum, NaN above every number (the metrics' order,
// kernels/metrics.h, so argmax is the top-1 prediction they count).
void argmax_dim(int64_t outer, int64_t R, int64_t inner, const float* x, int64_t* out);

}  // namespace volt::cpu

// CUDA twins (kernels/cuda/reduce.cu), for float32 (bit for bit the CPU's, except sum_dim's long-row
// path and sum_all, which add in another order) and float16/bfloat16 storage (FType t; float math, one
// rounding at the store). Scalars that a CPU kernel returns to the host stay on the device here (no
// synchronisation inside a step).
namespace volt::cuda {

void sum_dim(FType t, int64_t outer, int64_t R, int64_t inner, const void* x, void* out, void* stream);
// out[0] = sum(x) / divisor, double accumulation, one deterministic order.
void sum_all(FType t, int64_t n, const void* x, double divisor, void* out, void* stream);
void broadcast_dim(FType t, int64_t outer, int64_t R, int64_t inner, const void* dy, float alpha, void* dx,
                   void* stream);
// dx[i] = g[0] * alpha (g is one element on the device).
void broadcast_scalar(FType t, int64_t n, const void* g, float alpha, void* dx, void* stream);
void log_softmax_forward(FType t, int64_t outer, int64_t R, int64_t inner, const void* x, void* y, void* stream);
void log_softmax_backward(FType t, int64_t outer, int64_t R, int64_t inner, const void* dy, const void* y, void* dx,
                          void* stream);
// Logits of storage type t; loss and grad_base float32. A target outside [0, C) gives a NaN loss and
// gradient row and, when `bad` (int64 [3] on the device) is set, counts it in bad[0] and records the
// lowest such row and its value in bad[1] (encode_bad_target), for the host to report later without a
// synchronisation now.
void cross_entropy_forward(FType t, int64_t N, int64_t C, const void* logits, const int64_t* target, float eps,
                           float* loss, float* grad_base, int64_t* bad, void* stream);
void cross_entropy_backward(FType t, int64_t N, int64_t C, const float* grad_base, const float* dloss,
                            int64_t dloss_stride, float dloss_div, void* dlogits, void* stream);
void argmax_dim(FType t, int64_t outer, int64_t R, int64_t inner, const void* x, int64_t* out, void* stream);

}  // namespace volt::cuda
