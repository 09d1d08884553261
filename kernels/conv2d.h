// 2-D convolution kernels (cross-correlation, like PyTorch): x [N, C, H, W], w [K, C, R, S],
// y [N, K, P, Q] with P = (H + 2*pad_h - R) / stride_h + 1. The CUDA twins take the same
// arguments plus a stream.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ftype.h"

namespace volt {

struct Conv2dShape {
  int64_t N, C, H, W;      // input
  int64_t K, R, S;         // output channels, kernel height, kernel width
  int64_t stride_h, stride_w, pad_h, pad_w;
  int64_t P, Q;            // output height, width
};

// Which forward kernel a CUDA convolution that Volt's own kernel supports runs (see below): Auto (the
// default rule), Never (cuDNN only) or Always (Volt's).
enum class ConvOwnKernel { Auto, Never, Always };

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

// CUDA twins (kernels/cuda/conv2d.cu): cuDNN, NCHW, for float32 (FMA math; TF32 only when asked for,
// kernels/math_mode.h) and
// float16/bfloat16 (tensor cores, float32 accumulation) storage (FType t: x, w, b, y and the
// gradients all of that type); algorithms from the cuDNN heuristics (or timed once with
// VOLT_CUDNN_FIND=1) cached per shape and type, one workspace per device that only grows.
namespace volt::cuda {
// sums (may be null): as conv2d_forward_own's, written when Volt's own kernel runs (the return value).
bool conv2d_forward(FType t, const Conv2dShape& s, const void* x, const void* w, const void* b, void* y,
                    void* stream, double* sums = nullptr);
void conv2d_backward_input(FType t, const Conv2dShape& s, const void* dy, const void* w, void* dx, void* stream);
void conv2d_backward_weight(FType t, const Conv2dShape& s, const void* dy, const void* x, void* dw, void* stream);
// Volt's own forward kernel (kernels/cuda/conv_igemm.cu): 16-bit storage, C*R*S <= 96, bias fused;
// an implicit GEMM on the tensor cores with float accumulation. conv2d_forward uses it where it
// applies unless VOLT_CONV_OWN=0 (or, under VOLT_CUDNN_FIND=1, cuDNN measured faster at the first call).
bool conv2d_forward_own_supported(FType t, const Conv2dShape& s);
// With sums (double [K][conv2d_forward_own_sum_chunks(s)][2]), it also writes the sums of y and y*y
// (as stored) per output channel and block of 128 output pixels: batch norm's statistics
// (batch_norm_relu_pool_forward_train_from_sums) without reading y again.
void conv2d_forward_own(FType t, const Conv2dShape& s, const void* x, const void* w, const void* b, void* y,
                        void* stream, double* sums = nullptr);
int64_t conv2d_forward_own_sum_chunks(const Conv2dShape& s);
// Its weight gradient, with the bias gradient (db may be null) in the same pass over dy (C*R*S <= 95):
// an implicit GEMM of dy and the gathered input whose extra column of ones yields db; each block
// leaves float partial sums in `workspace` (conv2d_backward_weight_own_workspace bytes, 32-byte
// aligned), added in a fixed order by a second kernel (deterministic). max_blocks (0: 256) bounds the
// blocks per 64 channels (at most one a pixel tile; tests lower it so that a block takes several),
// per_sm picks the build of the kernel (0 or 3: 3 blocks an SM; 4: 4, with fewer registers).
// conv2d_backward_weight_own_grid gives both for a GPU of `multiprocessors` SMs: its slots filled once.
struct ConvWgradGrid {
  int blocks;
  int per_sm;
};
ConvWgradGrid conv2d_backward_weight_own_grid(const Conv2dShape& s, int multiprocessors);
bool conv2d_backward_weight_own_supported(FType t, const Conv2dShape& s);
size_t conv2d_backward_weight_own_workspace(const Conv2dShape& s, int max_blocks = 0);
void conv2d_backward_weight_own(FType t, const Conv2dShape& s, const void* dy, const void* x, void* dw, void* db,
                                void* workspace, void* stream, int max_blocks = 0, int per_sm = 0);
// The same weight (and bias) gradient for a convolution whose output y fed batch_norm_relu_pool
// (kernels/batch_norm.h), from that op's pooled gradient: each element of the convolution's output
// gradient is formed in the GEMM's tile as the op's dx kernel would store it, never written to memory
// (coef: the per-channel coefficients its backward left at batch_norm_coef_offset in its workspace).
struct BnPoolGradSource {
  const void* dy;  // the pooled gradient [N, K, P / kh, Q / kw]
  const uint8_t* window;
  const void* y;  // the convolution's output [N, K, P, Q]
  const float* mean;
  const void* coef;
  bool training;
  int64_t kh, kw;
};
void conv2d_backward_weight_own_from_pool(FType t, const Conv2dShape& s, const BnPoolGradSource& g, const void* x,
                                          void* dw, void* db, void* workspace, void* stream, int max_blocks = 0,
                                          int per_sm = 0);
// With the workspace from the convolutions' own (grown as needed): for the engine's fused block.
void conv2d_backward_weight_bias_from_pool(FType t, const Conv2dShape& s, const BnPoolGradSource& g, const void* x,
                                           void* dw, void* db, void* stream);
// Whether Volt's own kernels may run at all (not VOLT_CONV_OWN=0 / ConvOwnKernel::Never).
bool conv2d_own_kernels_allowed();
// dw and db (either may be null) for one shape: Volt's own kernel where it applies (as for the
// forward), else cuDNN's backward filter and channel_sum (bias_workspace: batch_norm_workspace_bytes
// of (N, K, P*Q), needed with db).
void conv2d_backward_weight_bias(FType t, const Conv2dShape& s, const void* dy, const void* x, void* dw, void* db,
                                 void* bias_workspace, void* stream);
// Overrides VOLT_CONV_OWN for the process (engine/gpu.h's cuda_set_conv_own_kernel).
void set_conv2d_own_kernel(ConvOwnKernel mode);
// db = the sum of dy per output channel (batch_norm.h's channel_sum), with its workspace.
void conv2d_backward_bias(FType t, const Conv2dShape& s, const void* dy, void* db, void* workspace, void* stream);
}  // namespace volt::cuda
