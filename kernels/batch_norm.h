// Batch normalisation over [N, C, HW] (per channel C). gamma/beta may be null (no affine).
#pragma once
#include <cstdint>

namespace volt::cpu {

// Training: batch mean and biased variance normalise x; save_mean/save_invstd [C] are kept for
// backward; batch_var_unbiased [C] (may be null) feeds the running-statistics update.
void batch_norm_forward_train(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma, const float* beta,
                              double eps, float* y, float* save_mean, float* save_invstd, float* batch_var_unbiased);
// Evaluation: running statistics normalise x.
void batch_norm_forward_eval(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma, const float* beta,
                             const float* running_mean, const float* running_var, double eps, float* y);
// running = (1 - momentum) * running + momentum * batch.
void batch_norm_update_running(int64_t C, float* running_mean, float* running_var, const float* batch_mean,
                               const float* batch_var_unbiased, double momentum);
// Backward through the normalisation with statistics mean/invstd (batch ones in training; running
// ones in eval, where `training` is false and mean/invstd are constants). Outputs may be null.
void batch_norm_backward(int64_t N, int64_t C, int64_t HW, const float* dy, const float* x, const float* gamma,
                         const float* mean, const float* invstd, bool training, float* dx, float* dgamma, float* dbeta);

}  // namespace volt::cpu

// CUDA twins (kernels/cuda/batch_norm.cu), same arguments plus the stream.
namespace volt::cuda {

void batch_norm_forward_train(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma, const float* beta,
                              double eps, float* y, float* save_mean, float* save_invstd, float* batch_var_unbiased,
                              void* stream);
void batch_norm_forward_eval(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma, const float* beta,
                             const float* running_mean, const float* running_var, double eps, float* y, void* stream);
void batch_norm_update_running(int64_t C, float* running_mean, float* running_var, const float* batch_mean,
                               const float* batch_var_unbiased, double momentum, void* stream);
void batch_norm_backward(int64_t N, int64_t C, int64_t HW, const float* dy, const float* x, const float* gamma,
                         const float* mean, const float* invstd, bool training, float* dx, float* dgamma, float* dbeta,
                         void* stream);
// invstd[c] = 1 / sqrt(var[c] + eps) (eval-mode statistics for backward).
void batch_norm_invstd(int64_t C, const float* var, double eps, float* invstd, void* stream);

}  // namespace volt::cuda
