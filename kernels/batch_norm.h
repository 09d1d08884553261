// Batch normalisation over [N, C, HW] (per channel C), optionally fused with the ReLU that follows
// it (relu = true: y = max(0, bn(x)) forward, and backward masks dy where bn(x) <= 0, recomputing bn(x)
// from x instead of keeping y). gamma/beta may be null (no affine).
#pragma once
#include <cstddef>
#include <cstdint>

#include "ftype.h"
#include "hd.h"

namespace volt {

// The per-channel affine both backends apply, y = x * scale + bias, formed from the float32 statistics
// kept for backward, so that backward recomputes exactly the forward's pre-activation (the ReLU mask).
struct BnAffine {
  float scale, bias;
};
VOLT_HD BnAffine bn_affine(float mean, float invstd, const float* gamma, const float* beta, int64_t c) {
  const double g = gamma ? double(gamma[c]) : 1.0;
  return BnAffine{float(double(invstd) * g), float((beta ? double(beta[c]) : 0.0) - double(mean) * double(invstd) * g)};
}

// running = (1 - momentum) * running + momentum * batch, in double, rounded once (both backends).
VOLT_HD float bn_running_update(float running, float batch, double momentum) {
  return float((1.0 - momentum) * double(running) + momentum * double(batch));
}

}  // namespace volt

namespace volt::cpu {

// Training: batch mean and biased variance normalise x; save_mean/save_invstd [C] are kept for
// backward; batch_var_unbiased [C] (may be null) feeds the running-statistics update.
void batch_norm_forward_train(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma, const float* beta,
                              double eps, bool relu, float* y, float* save_mean, float* save_invstd,
                              float* batch_var_unbiased);
// invstd[c] = 1 / sqrt(var[c] + eps) (eval-mode statistics, also kept for backward).
void batch_norm_invstd(int64_t C, const float* var, double eps, float* invstd);
// Evaluation: the running mean and invstd (batch_norm_invstd of the running variance) normalise x.
void batch_norm_forward_eval(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma, const float* beta,
                             const float* running_mean, const float* invstd, bool relu, float* y);
// running = (1 - momentum) * running + momentum * batch.
void batch_norm_update_running(int64_t C, float* running_mean, float* running_var, const float* batch_mean,
                               const float* batch_var_unbiased, double momentum);
// Backward through the normalisation (and the ReLU when relu) with statistics mean/invstd (batch ones
// in training; running ones in eval, where `training` is false and mean/invstd are constants).
// Outputs may be null.
void batch_norm_backward(int64_t N, int64_t C, int64_t HW, const float* dy, const float* x, const float* gamma,
                         const float* beta, const float* mean, const float* invstd, bool training, bool relu,
                         float* dx, float* dgamma, float* dbeta);

}  // namespace volt::cpu

// CUDA twins (kernels/cuda/batch_norm.cu), same arguments plus the storage type of x, y, dy and dx
// (FType t: float32, float16 or bfloat16; parameters and statistics stay float32), device scratch
// memory of batch_norm_workspace_bytes(N, C, HW) bytes (the training passes split each channel over
// several blocks and combine their partial sums in a fixed order: deterministic), and the stream.
namespace volt::cuda {

size_t batch_norm_workspace_bytes(int64_t N, int64_t C, int64_t HW);
// What a training forward updates in the launch that finishes its statistics (so no launch of its
// own): the running statistics (mean and var both, or neither), as cpu::batch_norm_update_running,
// and a count of batches (BatchNorm2d's num_batches_tracked) that advances by one. Null: not kept.
struct BnRunning {
  float* mean = nullptr;
  float* var = nullptr;
  double momentum = 0.1;
  int64_t* batches_tracked = nullptr;
};
void batch_norm_forward_train(FType t, int64_t N, int64_t C, int64_t HW, const void* x, const float* gamma,
                              const float* beta, double eps, bool relu, void* y, float* save_mean, float* save_invstd,
                              float* batch_var_unbiased, const BnRunning& running, void* workspace, void* stream);
void batch_norm_invstd(int64_t C, const float* var, double eps, float* invstd, void* stream);
void batch_norm_forward_eval(FType t, int64_t N, int64_t C, int64_t HW, const void* x, const float* gamma,
                             const float* beta, const float* running_mean, const float* invstd, bool relu, void* y,
                             void* workspace, void* stream);
void batch_norm_backward(FType t, int64_t N, int64_t C, int64_t HW, const void* dy, const void* x, const float* gamma,
                         const float* beta, const float* mean, const float* invstd, bool training, bool relu, void* dx,
                         float* dgamma, float* dbeta, void* workspace, void* stream);
// batch_norm + ReLU + max pooling over non-overlapping kh x kw windows (stride = kernel, no padding),
// in one pass each way, so that the full-size activation is neither written nor read again. The
// pooled output is [N, C, H / kh, W / kw] (the last H % kh rows and W % kw columns belong to no window).
// window[N*C*P*Q] holds the position i*kw + j of each window's maximum: the first maximum (or the
// first NaN) in row-major order of the activations rounded to the storage type, the one max_pool2d
// over batch_norm_relu's output picks; kh * kw <= 256. Backward takes the pooled gradient and gives
// batch_norm_relu's input gradients for it (dx for every element of x, dgamma, dbeta; any may be null).
// The workspace is batch_norm_workspace_bytes(N, C, H * W). x_at_max (optional, [N*C*P*Q] of x's type):
// the forward passes keep x at each window's maximum there, and backward reads it from there instead
// of gathering it from x (a quarter of the bytes where the gather touches nearly every sector of x).
struct BnPoolShape {
  int64_t N, C, H, W, kh, kw;
};
void batch_norm_relu_pool_forward_train(FType t, const BnPoolShape& s, const void* x, const float* gamma,
                                        const float* beta, double eps, void* y, uint8_t* window, float* save_mean,
                                        float* save_invstd, float* batch_var_unbiased, const BnRunning& running,
                                        void* workspace, void* stream, void* x_at_max = nullptr);
// The same, with the batch statistics from sums of x and x*x per (channel, chunk) in double
// ([C][chunks][2]) that x's producer made as it wrote x (a convolution's epilogue: kernels/conv2d.h),
// so x is read once, by the normalise-and-pool pass. The sums are not shifted: the variance
// E[x^2] - E[x]^2 in double loses accuracy only where |mean| exceeds about 10^6 standard deviations.
void batch_norm_relu_pool_forward_train_from_sums(FType t, const BnPoolShape& s, const void* x, const double* sums,
                                                  int64_t chunks, const float* gamma, const float* beta, double eps,
                                                  void* y, uint8_t* window, float* save_mean, float* save_invstd,
                                                  float* batch_var_unbiased, const BnRunning& running,
                                                  void* workspace, void* stream, void* x_at_max = nullptr);
void batch_norm_relu_pool_forward_eval(FType t, const BnPoolShape& s, const void* x, const float* gamma,
                                       const float* beta, const float* running_mean, const float* invstd, void* y,
                                       uint8_t* window, void* workspace, void* stream, void* x_at_max = nullptr);
void batch_norm_relu_pool_backward(FType t, const BnPoolShape& s, const void* dy, const uint8_t* window, const void* x,
                                   const float* gamma, const float* beta, const float* mean, const float* invstd,
                                   bool training, void* dx, float* dgamma, float* dbeta, void* workspace, void* stream,
                                   const void* x_at_max = nullptr);

// Where batch_norm_backward and batch_norm_relu_pool_backward leave the per-channel dx coefficients
// (kernels/cuda/bn_grad.cuh's BnBackCoef [C]) in their workspace, for a kernel that forms dx itself.
size_t batch_norm_coef_offset(int64_t N, int64_t C, int64_t HW);
// After channel_sum and batch_norm_backward, their workspace begins with the partial sums of each
// (channel, chunk) in double, [C][batch_norm_chunks(N, C, HW)][2]: channel_sum's in slot 0,
// batch_norm_backward's sums of dy and of dy * (x - mean) in slots 0 and 1. Added per channel in
// chunk order they are the kernels' own double sums, before the rounding to the output type.
int64_t batch_norm_chunks(int64_t N, int64_t C, int64_t HW);

// out[c] = the sum of x[n, c, i] over n and i (double accumulation, one rounding to the storage type),
// with the same split reduction and workspace (a convolution's bias gradient).
void channel_sum(FType t, int64_t N, int64_t C, int64_t HW, const void* x, void* out, void* workspace, void* stream);

}  // namespace volt::cuda
