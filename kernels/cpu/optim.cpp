// CPU optimizer updates, written to follow torch/optim/{sgd,adam}.py's single-tensor paths.
#include "kernels/optim.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace volt::cpu {

void sgd_update(int64_t n, float* param, const float* grad, float* buf, const SgdArgs& a) {
  const float lr = float(a.lr), mom = float(a.momentum), wd = float(a.weight_decay), keep = float(1.0 - a.dampening);
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
  const AdamStep st = adam_step(a.lr, a.beta1, a.beta2, a.weight_decay, a.step);  // as the CUDA update forms them
  const float w1 = st.w1, decay = st.decay, step_size = st.step_size, bias2_sqrt = st.bias2_sqrt;
  const float b2 = float(a.beta2), w2 = float(1.0 - a.beta2);
  const float eps = float(a.eps), wd = float(a.weight_decay);
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

namespace {
// |g|^p for one element (p = inf: |g|).
double norm_power(float g, double p) {
  const double a = std::fabs(double(g));
  if (p == 2.0) return a * a;
  if (p == 1.0 || grad_norm_is_max(p)) return a;
  return std::pow(a, p);
}
}  // namespace

double grad_norm_term(int64_t n, const float* grad, double p) {
  // Fixed chunks summed in order: the same result for any number of threads.
  constexpr int64_t kChunk = 65536;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(size_t(std::max<int64_t>(chunks, 1)), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    double acc = 0;
    for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) acc = grad_norm_combine(acc, norm_power(grad[i], p), p);
    part[size_t(c)] = acc;
  }
  double acc = 0;
  for (const double v : part) acc = grad_norm_combine(acc, v, p);
  return acc;
}

double grad_norm_finish(double total, double p) {
  if (p == 1.0 || grad_norm_is_max(p)) return total;
  if (p == 2.0) return std::sqrt(total);
  return std::pow(total, 1.0 / p);
}

void scale_grads(int64_t n, float* grad, double coef) {
  if (coef == 1.0) return;  // the identity
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) grad[i] = float(double(grad[i]) * coef);
}

void clamp_grads(int64_t n, float* grad, float clip) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    if (g == g) grad[i] = std::min(clip, std::max(-clip, g));
  }
}

}  // namespace volt::cpu
