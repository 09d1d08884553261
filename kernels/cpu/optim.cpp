// CPU optimizer updates, written to follow torch/optim/{sgd,adam}.py's single-tensor paths.
#include "kernels/optim.h"

#include <cmath>

namespace volt::cpu {

void sgd_update(int64_t n, float* param, const float* grad, float* buf, const SgdArgs& a) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i];
    if (a.weight_decay != 0.f) g = g + a.weight_decay * param[i];
    if (a.momentum != 0.f) {
      float b = a.first_step ? g : a.momentum * buf[i] + (1.f - a.dampening) * g;
      buf[i] = b;
      g = a.nesterov ? g + a.momentum * b : b;
    }
    param[i] = param[i] - a.lr * g;
  }
}

void adam_update(int64_t n, float* param, const float* grad, float* m, float* v, float* vmax, const AdamArgs& a) {
  const double bias1 = 1.0 - std::pow(double(a.beta1), double(a.step));
  const double bias2 = 1.0 - std::pow(double(a.beta2), double(a.step));
  const float step_size = float(a.lr / bias1);
  const float bias2_sqrt = float(std::sqrt(bias2));
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i];
    float p = param[i];
    if (a.weight_decay != 0.f) {
      if (a.decoupled) p = p * (1.f - a.lr * a.weight_decay);
      else g = g + a.weight_decay * p;
    }
    // torch: exp_avg.lerp_(grad, 1-beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1-beta2)
    m[i] = m[i] + (1.f - a.beta1) * (g - m[i]);
    v[i] = v[i] * a.beta2 + (1.f - a.beta2) * g * g;
    float second = v[i];
    if (a.amsgrad) {
      vmax[i] = std::max(vmax[i], v[i]);
      second = vmax[i];
    }
    const float denom = std::sqrt(second) / bias2_sqrt + a.eps;
    param[i] = p - step_size * (m[i] / denom);
  }
}

}  // namespace volt::cpu
