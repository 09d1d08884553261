// Reductions and the softmax family over a tensor viewed as [outer, R, inner] (R is reduced).
#pragma once
#include <cstdint>

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
// label smoothing eps: loss_n = (1-eps) * -logp[n, t_n] + eps/C * sum_c -logp[n, c].
void cross_entropy_forward(int64_t N, int64_t C, const float* logits, const int64_t* target, float eps, float* loss);
// dlogits[n, c] = dloss[n] * (softmax[n, c] - q[n, c]) with q the smoothed target distribution.
void cross_entropy_backward(int64_t N, int64_t C, const float* logits, const int64_t* target, float eps,
                            const float* dloss, float* dlogits);

// out[o, i] = argmax_r x[o, r, i] (first maximum).
void argmax_dim(int64_t outer, int64_t R, int64_t inner, const float* x, int64_t* out);

}  // namespace volt::cpu

// CUDA twins (kernels/cuda/reduce.cu). Scalars that a CPU kernel returns to the host stay on the
// device here (no synchronisation inside a step).
namespace volt::cuda {

void sum_dim(int64_t outer, int64_t R, int64_t inner, const float* x, float* out, void* stream);
// out[0] = float(sum(x) / divisor), double accumulation, one deterministic order.
void sum_all(int64_t n, const float* x, double divisor, float* out, void* stream);
void broadcast_dim(int64_t outer, int64_t R, int64_t inner, const float* dy, float alpha, float* dx, void* stream);
// dx[i] = g[0] * alpha (g is one element on the device).
void broadcast_scalar(int64_t n, const float* g, float alpha, float* dx, void* stream);
void log_softmax_forward(int64_t outer, int64_t R, int64_t inner, const float* x, float* y, void* stream);
void log_softmax_backward(int64_t outer, int64_t R, int64_t inner, const float* dy, const float* y, float* dx,
                          void* stream);
// A target outside [0, C) gives a NaN loss (the op checks targets before calling).
void cross_entropy_forward(int64_t N, int64_t C, const float* logits, const int64_t* target, float eps, float* loss,
                           void* stream);
// Row n's incoming gradient is dloss[n * dloss_stride] / dloss_div (stride 0: one device scalar for
// every row, as the mean and sum reductions give).
void cross_entropy_backward(int64_t N, int64_t C, const float* logits, const int64_t* target, float eps,
                            const float* dloss, int64_t dloss_stride, float dloss_div, float* dlogits, void* stream);
void argmax_dim(int64_t outer, int64_t R, int64_t inner, const float* x, int64_t* out, void* stream);
// out[0] = number of i with a[i] == b[i].
void count_equal(int64_t n, const int64_t* a, const int64_t* b, int64_t* out, void* stream);

}  // namespace volt::cuda
