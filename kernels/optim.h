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

}  // namespace volt::cpu
