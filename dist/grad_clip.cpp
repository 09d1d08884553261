// Gradient clipping by total norm and by value (see grad_clip.h).
#include "dist/grad_clip.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/error.h"

namespace volt {

namespace {
float* grad_data(const Tensor& p, int64_t& n) {
  Tensor g = p.grad();
  if (!g.defined()) return nullptr;
  VOLT_CHECK(g.device().is_cpu(), "gradient clipping: gradient on ", g.device().str(),
             "; only CPU gradients are supported in this build");
  n = g.numel();
  return g.data<float>();
}
}  // namespace

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type) {
  VOLT_CHECK(max_norm >= 0, "clip_grad_norm_: max_norm must be >= 0, got ", max_norm);
  const bool inf = std::isinf(norm_type);
  VOLT_CHECK(inf || norm_type > 0, "clip_grad_norm_: norm_type must be positive or inf, got ", norm_type);
  double acc = 0;
  for (const Tensor& p : params) {
    int64_t n = 0;
    const float* g = grad_data(p, n);
    if (!g) continue;
    for (int64_t i = 0; i < n; ++i) {
      const double a = std::fabs(double(g[i]));
      if (inf)
        acc = std::max(acc, a);
      else
        acc += std::pow(a, norm_type);
    }
  }
  const double total = inf ? acc : std::pow(acc, 1.0 / norm_type);
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1.0) {
    for (const Tensor& p : params) {
      int64_t n = 0;
      float* g = grad_data(p, n);
      if (!g) continue;
      for (int64_t i = 0; i < n; ++i) g[i] = float(double(g[i]) * coef);
    }
  }
  return total;
}

void clip_grad_value_(const std::vector<Tensor>& params, double clip_value) {
  VOLT_CHECK(clip_value >= 0, "clip_grad_value_: clip_value must be >= 0, got ", clip_value);
  const float c = float(clip_value);
  for (const Tensor& p : params) {
    int64_t n = 0;
    float* g = grad_data(p, n);
    if (!g) continue;
    for (int64_t i = 0; i < n; ++i) g[i] = std::min(c, std::max(-c, g[i]));
  }
}

}  // namespace volt
