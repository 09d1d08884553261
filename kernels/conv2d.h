// 2-D convolution kernels (cross-correlation, like PyTorch): x [N, C, H, W], w [K, C, R, S],
// y [N, K, P, Q] with P = (H + 2*pad_h - R) / stride_h + 1. The CUDA twins take the same
// arguments plus a stream.
#pragma once
#include <cstdint>

namespace volt {

struct Conv2dShape {
  int64_t N, C, H, W;      // input
  int64_t K, R, S;         // output channels, kernel height, kernel width
  int64_t stride_h, stride_w, pad_h, pad_w;
  int64_t P, Q;            // output height, width
};

namespace cpu {
// y = conv(x, w) + b (b may be null).
void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* b, float* y);
// dx = conv_transpose(dy, w); dx is overwritten.
void conv2d_backward_input(const Conv2dShape& s, const float* dy, const float* w, float* dx);
// dw = sum over the batch of dy (x) x; dw is overwritten.
void conv2d_backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw);
// db[k] = sum of dy over n, p, q; db is overwritten.
void conv2d_backward_bias(const Conv2dShape& s, const float* dy, float* db);
}  // namespace cpu

}  // namespace volt

// CUDA twins (kernels/cuda/conv2d.cu): cuDNN, fp32 NCHW, FMA math (no TF32), algorithms from the
// cuDNN heuristics cached per shape, one workspace per device that only grows.
namespace volt::cuda {
void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* b, float* y, void* stream);
void conv2d_backward_input(const Conv2dShape& s, const float* dy, const float* w, float* dx, void* stream);
void conv2d_backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw, void* stream);
void conv2d_backward_bias(const Conv2dShape& s, const float* dy, float* db, void* stream);
}  // namespace volt::cuda
