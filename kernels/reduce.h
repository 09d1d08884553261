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
