// Optimizer update kernels with PyTorch's exact formulas (torch.optim.SGD / Adam / AdamW,
// single-tensor, non-fused variants). Each updates one parameter tensor in place.
#pragma once
#include <cmath>
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

// Gradient clipping with torch.nn.utils' semantics (clip_grad_norm_, clip_grad_value_), accumulated
// in double. grad_norm_term: over n floats, the sum of |g|^p (g*g for p = 2, exact in double), or the
// largest |g| for p = inf; a NaN propagates. The terms of several tensors combine by
// grad_norm_combine (a sum, or the max for p = inf), and grad_norm_finish turns the total into the
// norm (the p-th root). clip_coefficient: max_norm / (norm + 1e-6), clamped to at most 1 (a NaN norm
// gives NaN, as torch's clamp). scale_grads: g = float(double(g) * coef). clamp_grads: g clamped to
// [-clip, clip], NaN kept.
double grad_norm_term(int64_t n, const float* grad, double p);
inline bool grad_norm_is_max(double p) { return std::isinf(p); }
inline double grad_norm_combine(double a, double b, double p) {
  if (!grad_norm_is_max(p)) return a + b;
  return (b > a || b != b) && a == a ? b : a;
}
double grad_norm_finish(double total, double p);
inline double clip_coefficient(double norm, double max_norm) {
  const double q = max_norm / (norm + 1e-6);
  return q > 1.0 ? 1.0 : q;
}
void scale_grads(int64_t n, float* grad, double coef);
void clamp_grads(int64_t n, float* grad, float clip);

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

// clip_grad_norm_ over many tensors without the host: per-block terms (cpu::grad_norm_term's, in
// double) into `partials`, combined in a fixed order by one block (deterministic), which writes the
// norm (*norm, float) and cpu::clip_coefficient (*coef, double); then scale_grads_multi multiplies
// every gradient by *coef (nothing happens where it is 1). `partials` holds
// grad_norm_partial_count(tensors, count) doubles of device memory.
int64_t grad_norm_partial_count(const GradTensor* tensors, int64_t count);
void grad_norm_multi(const GradTensor* tensors, int64_t count, double norm_type, double max_norm, double* partials,
                     float* norm, double* coef, void* stream);
void scale_grads_multi(const GradTensor* tensors, int64_t count, const double* coef, void* stream);
// cpu::clamp_grads over many tensors.
void clamp_grads_multi(const GradTensor* tensors, int64_t count, float clip, void* stream);

}  // namespace volt::cuda
