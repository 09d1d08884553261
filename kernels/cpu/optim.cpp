// CPU optimizer updates, written to follow torch/optim/{sgd,adam}.py's single-tensor paths.
#include "kernels/optim.h"

#include <cmath>

namespace volt::cpu {

void sgd_update(int64_t n, float* param, const float* grad, float* buf, const SgdArgs& a) {
  const float lr = float(a.lr), wd = float(a.weight_decay), mom = float(a.momentum);
  const float keep = float(1.0 - a.dampening);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i];
    if (wd != 0.f) g = g + wd * param[i];
    if (mom != 0.f) {
      float b = a.first_step ? g : mom * buf[i] + keep * g;
      buf[i] = b;
      g = a.nesterov ? g + mom * b : b;
    }
    param[i] = param[i] - lr * g;
  }
}

void adam_update(int64_t n, float* param, const float* grad, float* m, float* v, float* vmax, const AdamArgs& a) {
  const double bias1 = 1.0 - std::pow(a.beta1, double(a.step));
  const double bias2 = 1.0 - std::pow(a.beta2, double(a.step));
  const float step_size = float(a.lr / bias1);
  const float bias2_sqrt = float(std::sqrt(bias2));
  const float w1 = float(1.0 - a.beta1), b2 = float(a.beta2), w2 = float(1.0 - a.beta2);
  const float eps = float(a.eps), wd = float(a.weight_decay), decay = float(1.0 - a.lr * a.weight_decay);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i];
    float p = param[i];
    if (wd != 0.f) {
      if (a.decoupled) p = p * decay;
      else g = g + wd * p;
    }
    // torch: exp_avg.lerp_(grad, 1-beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1-beta2)
    m[i] = m[i] + w1 * (g - m[i]);
    v[i] = v[i] * b2 + w2 * g * g;
    float second = v[i];
    if (a.amsgrad) {
      vmax[i] = std::max(vmax[i], v[i]);
      second = vmax[i];
    }
    const float denom = std::sqrt(second) / bias2_sqrt + eps;
    param[i] = p - step_size * (m[i] / denom);
  }
}

void unscale_grads(int64_t n, float* grad, float inv_scale, float* found_inf) {
  bool bad = false;
#pragma omp parallel for schedule(static) reduction(|| : bad) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    bad = bad || !std::isfinite(g);
    grad[i] = g * inv_scale;
  }
  if (bad) *found_inf = 1.f;
}

}  // namespace volt::cpu
