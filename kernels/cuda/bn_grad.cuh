// Batch norm's backward per element, shared by batch_norm.cu (its dx kernels) and conv_igemm.cu (a
// first layer's weight gradient formed from the pooled gradient of the batch norm + ReLU + max pool
// that follows it, the layer's output gradient never stored): both compute each element of dx with
// the same operations, so the two paths give the same bits.
#pragma once
#include "kernels/batch_norm.h"
#include "kernels/cuda/launch.cuh"  // the CUDA headers, or the emulator's
#include "kernels/cuda/num.cuh"

namespace volt::cuda::detail {

// y = x * scale + bias, each operation rounded once (the CPU kernel's order).
__device__ __forceinline__ float bn_apply(float x, BnAffine a) { return __fadd_rn(__fmul_rn(x, a.scale), a.bias); }

// The per-channel coefficients of dx, from the gradient sums.
struct BnBackCoef {
  BnAffine aff;    // the forward's pre-activation (the ReLU mask)
  float k, a, b;   // dx = k * ((dy - a) - (x - mean) * b) in training, k * dy in eval
};

// dx of one element from its (masked) dy and x.
__device__ __forceinline__ float bn_dx_value(const BnBackCoef& q, float d, float xv, float mean, bool training) {
  return training ? __fmul_rn(q.k, __fsub_rn(__fsub_rn(d, q.a), __fmul_rn(__fsub_rn(xv, mean), q.b)))
                  : __fmul_rn(q.k, d);
}

// Whether the pooled gradient reaches an element of x (value xv) at position `pos` of its pool window:
// it was the window's maximum (the window's stored position `win`) and its activation was positive.
__device__ __forceinline__ bool bn_pool_routes(const BnBackCoef& q, float xv, int64_t win, int64_t pos) {
  return win == pos && bn_apply(xv, q.aff) > 0.f;
}

// dx of element (plane, h, w) of batch_norm_relu_pool's input x (value xv): the pooled gradient dy
// [planes, P, Q] where the element is its kh x kw window's maximum (window: its position there) and
// the activation was positive, then bn_dx_value. Not rounded.
template <class T>
__device__ __forceinline__ float bn_pool_dx_value(const BnBackCoef& q, float mean, bool training, const T* dy,
                                                  const uint8_t* window, float xv, int64_t plane, int64_t h, int64_t w,
                                                  int64_t pp, int64_t pq, int64_t P, int64_t Q, int64_t kh,
                                                  int64_t kw) {
  float d = 0.f;
  if (pp < P && pq < Q) {
    const int64_t e = (plane * P + pp) * Q + pq;
    if (bn_pool_routes(q, xv, int64_t(window[e]), (h - pp * kh) * kw + (w - pq * kw))) d = load_f(dy[e]);
  }
  return bn_dx_value(q, d, xv, mean, training);
}

}  // namespace volt::cuda::detail
