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

// The values of an update that change from step to step (learning rate, a cycled momentum, bias
// corrections), as floats formed exactly as the CPU updates form them. The CUDA updates read them from
// device memory, so that a captured step replays with the current ones. Layouts:
//   SGD:  [lr, momentum, first_step(t) (1 or 0) for each tensor t]
//   Adam: [1 - beta1, 1 - lr*weight_decay, then lr / (1 - beta1^step_t), sqrt(1 - beta2^step_t) per tensor]
inline int64_t sgd_scalar_count(int64_t tensors) { return 2 + tensors; }
void sgd_scalars(const SgdArgs& a, const bool* first_step, int64_t tensors, float* out);
inline int64_t adam_scalar_count(int64_t tensors) { return 2 + 2 * tensors; }
void adam_scalars(const AdamArgs& a, const int64_t* steps, int64_t tensors, float* out);

// Mixed precision's loss-scale step: grad *= inv_scale, and *found_inf = 1 when any gradient (before
// scaling) is Inf or NaN (left unchanged otherwise), as torch's _amp_foreach_non_finite_check_and_unscale_.
void unscale_grads(int64_t n, float* grad, float inv_scale, float* found_inf);

}  // namespace volt::cpu

// CUDA updates (kernels/cuda/optim.cu): the same per-element arithmetic as the CPU (no FMA
// contraction, IEEE sqrt and division), many tensors per launch. `scalars` is the device copy of
// sgd_scalars / adam_scalars for these tensors, in this order; the constant hyperparameters come from
// `a` (its lr, momentum/beta1, step and first_step are ignored). When `skip` (one device float) is not
// null and holds a non-zero value, nothing is updated: a mixed-precision step with Inf/NaN gradients.
namespace volt::cuda {

struct SgdTensor {
  float* param;
  const float* grad;
  float* momentum_buf;  // null without momentum
  int64_t n;
};
void sgd_update_multi(const SgdTensor* tensors, int64_t count, const cpu::SgdArgs& a, const float* scalars,
                      const float* skip, void* stream);

struct AdamTensor {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  float* max_exp_avg_sq;  // null without amsgrad
  int64_t n;
};
void adam_update_multi(const AdamTensor* tensors, int64_t count, const cpu::AdamArgs& a, const float* scalars,
                       const float* skip, void* stream);

// cpu::unscale_grads over many tensors in one launch (per 24), with inv_scale and found_inf in device
// memory (one float each), so the step needs no host value.
struct GradTensor {
  float* grad;
  int64_t n;
};
void unscale_grads_multi(const GradTensor* tensors, int64_t count, const float* inv_scale, float* found_inf,
                         void* stream);

}  // namespace volt::cuda
