// Gradient clipping by total norm and by value (see grad_clip.h).
#include "dist/grad_clip.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/error.h"

namespace volt {

namespace {
// A parameter's gradient as host floats: the gradient itself on the CPU; on a GPU a host copy that
// write_back() stores again (a correct, not a fast, path: clipping is off the GPU hot path so far).
struct HostGrad {
  Tensor grad, host;
  explicit HostGrad(const Tensor& p) : grad(p.grad()) {
    if (grad.defined()) host = grad.device().is_cpu() ? grad : grad.to(Device::cpu());
  }
  bool defined() const { return grad.defined(); }
  float* data() const { return host.data<float>(); }
  int64_t numel() const { return host.numel(); }
  void write_back() {
    if (!grad.device().is_cpu()) grad.copy_(host);
  }
};
}  // namespace

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type) {
  VOLT_CHECK(max_norm >= 0, "clip_grad_norm_: max_norm must be >= 0, got ", max_norm);
  const bool inf = std::isinf(norm_type);
  VOLT_CHECK(inf || norm_type > 0, "clip_grad_norm_: norm_type must be positive or inf, got ", norm_type);
  double acc = 0;
  std::vector<HostGrad> grads;
  for (const Tensor& p : params) {
    HostGrad h(p);
    if (!h.defined()) continue;
    const float* g = h.data();
    const int64_t n = h.numel();
    grads.push_back(std::move(h));
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
    for (HostGrad& h : grads) {
      float* g = h.data();
      for (int64_t i = 0; i < h.numel(); ++i) g[i] = float(double(g[i]) * coef);
      h.write_back();
    }
  }
  return total;
}

void clip_grad_value_(const std::vector<Tensor>& params, double clip_value) {
  VOLT_CHECK(clip_value >= 0, "clip_grad_value_: clip_value must be >= 0, got ", clip_value);
  const float c = float(clip_value);
  for (const Tensor& p : params) {
    HostGrad h(p);
    if (!h.defined()) continue;
    float* g = h.data();
    for (int64_t i = 0; i < h.numel(); ++i) g[i] = std::min(c, std::max(-c, g[i]));
    h.write_back();
  }
}

}  // namespace volt
