// Gradient clipping by total norm and by value (see grad_clip.h): the CPU kernels, or the CUDA
// multi-tensor kernels with the norm and the coefficient kept on the device.
#include "layers/optim/grad_clip.h"

#include <cmath>
#include <vector>

#include "engine/error.h"
#include "engine/gpu.h"
#include "kernels/optim.h"
#include "volt/config.h"

namespace volt {

namespace {
// The parameters' gradients (those that have one), checked: float32, all on one device.
std::vector<Tensor> gradients(const std::vector<Tensor>& params, const char* who) {
  std::vector<Tensor> grads;
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    VOLT_CHECK(g.dtype() == DType::F32, who, ": gradients must be float32, got ", dtype_name(g.dtype()));
    VOLT_CHECK(grads.empty() || g.device() == grads[0].device(), who, ": gradients on several devices (",
               grads[0].device().str(), " and ", g.device().str(), ")");
    grads.push_back(g);
  }
  return grads;
}

#if VOLT_HAVE_CUDA
std::vector<cuda::GradTensor> grad_list(const std::vector<Tensor>& grads) {
  std::vector<cuda::GradTensor> list;
  for (const Tensor& g : grads) list.push_back({g.data<float>(), g.numel()});
  return list;
}
#endif
}  // namespace

Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type) {
  const char* who = "clip_grad_norm_";
  VOLT_CHECK(max_norm >= 0, who, ": max_norm must be >= 0, got ", max_norm);
  VOLT_CHECK(norm_type > 0, who, ": norm_type must be positive or inf, got ", norm_type);
  const std::vector<Tensor> grads = gradients(params, who);
  if (grads.empty()) return Tensor::zeros({});
  for (const Tensor& g : grads) g.bump_version();  // scaled in place below
  const Device d = grads[0].device();
  Tensor norm = Tensor::empty({}, DType::F32, d);
  if (d.is_cuda()) {
#if VOLT_HAVE_CUDA
    const auto list = grad_list(grads);
    const int64_t n = int64_t(list.size());
    const int64_t partials = cuda::grad_norm_partial_count(list.data(), n);
    // partials, then the coefficient: doubles in a float32 buffer (device allocations are aligned)
    Tensor scratch = Tensor::empty({2 * (partials + 1)}, DType::F32, d);
    double* base = reinterpret_cast<double*>(scratch.data<float>());
    void* stream = cuda_stream(d);
    cuda::grad_norm_multi(list.data(), n, norm_type, max_norm, base, norm.data<float>(), base + partials, stream);
    cuda::scale_grads_multi(list.data(), n, base + partials, stream);
#endif
    return norm;
  }
  double total = 0;
  for (const Tensor& g : grads)
    total = cpu::grad_norm_combine(total, cpu::grad_norm_term(g.numel(), g.data<float>(), norm_type), norm_type);
  total = cpu::grad_norm_finish(total, norm_type);
  const double coef = cpu::clip_coefficient(total, max_norm);
  for (const Tensor& g : grads) cpu::scale_grads(g.numel(), g.data<float>(), coef);
  norm.fill_(float(total));
  return norm;
}

void clip_grad_value_(const std::vector<Tensor>& params, double clip_value) {
  const char* who = "clip_grad_value_";
  VOLT_CHECK(clip_value >= 0, who, ": clip_value must be >= 0, got ", clip_value);
  const std::vector<Tensor> grads = gradients(params, who);
  if (grads.empty()) return;
  for (const Tensor& g : grads) g.bump_version();  // clamped in place below
  const float c = float(clip_value);
  if (grads[0].device().is_cuda()) {
#if VOLT_HAVE_CUDA
    const auto list = grad_list(grads);
    cuda::clamp_grads_multi(list.data(), int64_t(list.size()), c, cuda_stream(grads[0].device()));
#endif
    return;
  }
  for (const Tensor& g : grads) cpu::clamp_grads(g.numel(), g.data<float>(), c);
}

}  // namespace volt
