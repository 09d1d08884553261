// Elementwise kernels: broadcasting binary ops, ReLU, dropout masks and in-place updates.
#pragma once
#include <cstdint>

#include "ftype.h"

namespace volt::cpu {

enum class BinaryOp { Add, Sub, Mul };

// out[i] = a[ia] op b[ib] over `shape` (ndim dims); a_strides/b_strides are element strides with
// 0 on broadcast dims. out is contiguous.
void binary_broadcast(BinaryOp op, int64_t ndim, const int64_t* shape, const float* a, const int64_t* a_strides,
                      const float* b, const int64_t* b_strides, float* out);
// Same-shape fast path.
void binary_same(BinaryOp op, int64_t n, const float* a, const float* b, float* out);
void scale(int64_t n, const float* x, float alpha, float beta, float* out);  // out = alpha*x + beta
void axpy(int64_t n, float alpha, const float* x, float* y);                 // y += alpha*x

void relu_forward(int64_t n, const float* x, float* y);
void relu_backward(int64_t n, const float* dy, const float* x, float* dx);  // dx = dy * (x > 0)

// k = philox uniform(seed, stream, offset, i) >= p; y = k ? x / (1-p) : 0; keep[i] = k. With relu, the
// ReLU before the dropout in the same pass: x is relu(x) above, and keep[i] = k && x > 0, the mask of
// both for backward (dropout(relu(x)) as two ops gives the same values and gradients).
void dropout_forward(int64_t n, const float* x, float p, uint64_t seed, uint64_t stream, uint64_t offset,
                     uint8_t* keep, float* y, bool relu = false);
void dropout_backward(int64_t n, const float* dy, const uint8_t* keep, float p, float* dx);

}  // namespace volt::cpu

// CUDA twins (kernels/cuda/elementwise.cu): the same results for float32 (bit for bit), and the same
// operations on float16/bfloat16 storage (FType t; values widened to float, the result rounded once),
// plus the stream (a cudaStream_t as void*). Host arrays (shape, strides) are read before the launch
// returns.
namespace volt::cuda {

using cpu::BinaryOp;
void binary_broadcast(FType t, BinaryOp op, int64_t ndim, const int64_t* shape, const void* a, const int64_t* a_strides,
                      const void* b, const int64_t* b_strides, void* out, void* stream);  // ndim <= 8
void binary_same(FType t, BinaryOp op, int64_t n, const void* a, const void* b, void* out, void* stream);
void scale(FType t, int64_t n, const void* x, float alpha, float beta, void* out, void* stream);
void axpy(FType t, int64_t n, float alpha, const void* x, void* y, void* stream);
void relu_forward(FType t, int64_t n, const void* x, void* y, void* stream);
void relu_backward(FType t, int64_t n, const void* dy, const void* x, void* dx, void* stream);
// The same Philox mapping as cpu::dropout_forward: identical masks for the same (seed, stream, offset).
// seed_offset: device memory holding {seed, offset}, read when the kernel runs (so that a captured
// step replays with the generator's current offset: engine/cuda_graph.h).
void dropout_forward(FType t, int64_t n, const void* x, float p, uint64_t stream_id, const uint64_t* seed_offset,
                     uint8_t* keep, void* y, void* stream, bool relu = false);
void dropout_backward(FType t, int64_t n, const void* dy, const uint8_t* keep, float p, void* dx, void* stream);
void fill(FType t, int64_t n, float value, void* out, void* stream);
// y = x converted from one storage type to another (round to nearest even; NaN and Inf kept).
void cast(FType from, FType to, int64_t n, const void* x, void* y, void* stream);
// cast() over many tensors, kCastPerLaunch per launch (mixed precision casts every weight of a model
// this way, in one launch instead of one per tensor); the same values bit for bit.
struct CastTensor {
  const void* x;
  void* y;
  int64_t n;
};
constexpr int64_t kCastPerLaunch = 48;
void cast_multi(FType from, FType to, const CastTensor* tensors, int64_t count, void* stream);
void add_i64(int64_t* value, int64_t delta, void* stream);  // *value += delta (one element)
// y[n, c, i] += bias[c] over [N, C, HW] (a convolution's bias).
void add_channel_bias(FType t, int64_t N, int64_t C, int64_t HW, const void* bias, void* y, void* stream);

}  // namespace volt::cuda
