// Optimizer update kernels with PyTorch's exact formulas (torch.optim.SGD / Adam / AdamW,
// single-tensor, non-fused variants). Each updates one parameter tensor in place.
#pragma once
#include <cstdint>

namespace volt::cpu {

// Hyperparameters are double, as in PyTorch (Python floats): derived constants such as 1 - beta2
// are formed in double and only then rounded to float, so they match torch's bit for bit.
struct SgdArgs {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, first_step;  // first_step: the momentum buffer is initialised to the gradient
};
void sgd_update(int64_t n, float* param, const float* grad, float* momentum_buf, const SgdArgs& a);

struct AdamArgs {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;     // 1 on the first update
  bool decoupled;   // AdamW: param *= 1 - lr*wd; Adam: grad += wd*param
  bool amsgrad;
};
void adam_update(int64_t n, float* param, const float* grad, float* exp_avg, float* exp_avg_sq, float* max_exp_avg_sq,
                 const AdamArgs& a);

// Mixed precision's loss-scale step: grad *= inv_scale, and *found_inf = 1 when any gradient (before
// scaling) is Inf or NaN (left unchanged otherwise), as torch's _amp_foreach_non_finite_check_and_unscale_.
void unscale_grads(int64_t n, float* grad, float inv_scale, float* found_inf);

}  // namespace volt::cpu

// CUDA updates (kernels/cuda/optim.cu): the same per-element arithmetic as the CPU (no FMA
// contraction, IEEE sqrt and division), many tensors per launch.
namespace volt::cuda {

struct SgdTensor {
  float* param;
  const float* grad;
  float* momentum_buf;  // null without momentum
  int64_t n;
  bool first_step;
};
// a.first_step is ignored (per tensor above).
void sgd_update_multi(const SgdTensor* tensors, int64_t count, const cpu::SgdArgs& a, void* stream);

struct AdamTensor {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  float* max_exp_avg_sq;  // null without amsgrad
  int64_t n;
  int64_t step;  // this tensor's step count (1 on its first update)
};
// a.step is ignored (per tensor above).
void adam_update_multi(const AdamTensor* tensors, int64_t count, const cpu::AdamArgs& a, void* stream);

// cpu::unscale_grads over many tensors in one launch (per 24), with inv_scale and found_inf in device
// memory (one float each), so the step needs no host value.
struct GradTensor {
  float* grad;
  int64_t n;
};
void unscale_grads_multi(const GradTensor* tensors, int64_t count, const float* inv_scale, float* found_inf,
                         void* stream);

}  // namespace volt::cuda
