// Optimizer update kernels with PyTorch's exact formulas (torch.optim.SGD / Adam / AdamW,
// single-tensor, non-fused variants). Each updates one parameter tensor in place.
#pragma once
#include <cmath>
#include <cstdint>

#include "hd.h"

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

// b^n (n >= 0) by repeated squaring: the same double operations on the CPU and the GPU, so that both
// backends form Adam's bias corrections bit for bit alike. (It differs from pow() in the last bits of
// the double at times; for beta 0.9 and 0.999 the float step sizes agree with pow()'s for every step
// below 200,000, checked.)
VOLT_HD double pow_steps(double b, int64_t n) {
  double r = 1.0;
  while (n > 0) {
    if (n & 1) r = r * b;
    b = b * b;
    n >>= 1;
  }
  return r;
}

// Adam's per-step values, formed in double from the step's hyperparameters and rounded once: the
// CPU update and the CUDA update (which forms them on the device from the step count it keeps there)
// share this function.
struct AdamStep {
  float w1;          // 1 - beta1 (exp_avg's lerp weight)
  float decay;       // 1 - lr * weight_decay (AdamW)
  float step_size;   // lr / (1 - beta1^step)
  float bias2_sqrt;  // sqrt(1 - beta2^step)
};
VOLT_HD AdamStep adam_step(double lr, double beta1, double beta2, double weight_decay, int64_t step) {
  const double bias1 = 1.0 - pow_steps(beta1, step), bias2 = 1.0 - pow_steps(beta2, step);
  return AdamStep{float(1.0 - beta1), float(1.0 - lr * weight_decay), float(lr / bias1), float(sqrt(bias2))};
}

// The values of an update that change from step to step and reach the CUDA updates through device
// memory (so that a captured step replays with the current ones), as doubles:
//   SGD:  [lr, momentum]       Adam: [lr, beta1]
// (a scheduler may change both). Everything else is formed from them on the device.
constexpr int64_t kOptimStepValues = 2;

// Mixed precision's loss-scale step: grad *= inv_scale, and *found_inf = 1 when any gradient (before
// scaling) is Inf or NaN (left unchanged otherwise), as torch's _amp_foreach_non_finite_check_and_unscale_.
void unscale_grads(int64_t n, float* grad, float inv_scale, float* found_inf);

// The loss scale after a step, as torch's _amp_update_scale_ (the scale is a float): after a step with
// Inf/NaN gradients it is multiplied by backoff, the growth tracker restarts and the step counts as
// skipped; after growth_interval clean steps in a row it is multiplied by growth (unless that
// overflows to Inf) and the tracker restarts. The CPU scaler and the CUDA kernel share it.
struct LossScaleCounts {
  int64_t growth_tracker, skipped, steps;
};
VOLT_HD float loss_scale_update(float scale, LossScaleCounts& c, bool found_inf, double growth, double backoff,
                                int64_t growth_interval) {
  ++c.steps;
  if (found_inf) {
    ++c.skipped;
    c.growth_tracker = 0;
    return float(double(scale) * backoff);
  }
  if (++c.growth_tracker < growth_interval) return scale;
  c.growth_tracker = 0;
  const float grown = float(double(scale) * growth);
  return grown > 3.40282347e38f ? scale : grown;  // overflowed to +Inf: keep the scale
}
// 1 / scale as the unscale step multiplies by it (the reciprocal in double, then float, as torch).
VOLT_HD float inverse_scale(float scale) { return float(1.0 / double(scale)); }

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
// contraction, IEEE sqrt and division), many tensors per launch. `values` is the device copy of the
// step's values (kOptimStepValues doubles, above); the constant hyperparameters come from `a` (its lr,
// momentum/beta1, step and first_step are ignored; SGD's momentum only says whether there is one).
// Each tensor has a device count of the updates it has taken (`steps`): Adam's step is that count + 1;
// SGD counts the updates with momentum, and its buffer starts from the gradient while the count is 0.
// The call advances every count after the update. When `skip` (one device float)
// is not null and holds a non-zero value, nothing is updated and no count advances: a mixed-precision
// step with Inf/NaN gradients, decided on the device without the host.
namespace volt::cuda {

struct SgdTensor {
  float* param;
  const float* grad;
  float* momentum_buf;  // null without momentum
  int64_t* steps;       // device: updates taken
  int64_t n;
};
void sgd_update_multi(const SgdTensor* tensors, int64_t count, const cpu::SgdArgs& a, const double* values,
                      const float* skip, void* stream);

struct AdamTensor {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  float* max_exp_avg_sq;  // null without amsgrad
  int64_t* steps;         // device: updates taken
  int64_t n;
};
void adam_update_multi(const AdamTensor* tensors, int64_t count, const cpu::AdamArgs& a, const double* values,
                       const float* skip, void* stream);

// cpu::unscale_grads over many tensors in one launch (per 24), with inv_scale and found_inf in device
// memory (one float each), so the step needs no host value.
struct GradTensor {
  float* grad;
  int64_t n;
};
void unscale_grads_multi(const GradTensor* tensors, int64_t count, const float* inv_scale, float* found_inf,
                         void* stream);
// cpu::loss_scale_update on the device, one thread: reads *found_inf, updates *scale, *inv_scale and
// counts = {growth_tracker, skipped, steps}. A step of the scaler with no host value and no wait.
void loss_scale_update(const float* found_inf, float* scale, float* inv_scale, int64_t* counts, double growth,
                       double backoff, int64_t growth_interval, void* stream);

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
