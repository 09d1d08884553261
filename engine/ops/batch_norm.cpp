// batch_norm: training (batch statistics + running update) and eval (running statistics) modes.
#include "kernels/batch_norm.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/check.h"

namespace volt {

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean, Tensor running_var,
                  bool training, double momentum, double eps) {
  const char* op = "batch_norm";
  detail::check_input(op, "input", x);
  VOLT_CHECK(x.dim() >= 2, op, ": input must be [N, C, ...], got shape ", shape_str(x.shape()));
  const int64_t N = x.size(0), C = x.size(1), HW = x.numel() / (N * C);
  auto check_channel = [&](const char* what, const Tensor& t) {
    if (!t.defined()) return;
    detail::check_input(op, what, t, 1);
    VOLT_CHECK(t.size(0) == C, op, ": ", what, " has ", t.size(0), " elements but the input has ", C,
               " channels (input ", shape_str(x.shape()), ", ", what, " ", shape_str(t.shape()), ")");
  };
  check_channel("weight", weight);
  check_channel("bias", bias);
  check_channel("running_mean", running_mean);
  check_channel("running_var", running_var);
  VOLT_CHECK(running_mean.defined() == running_var.defined(), op, ": running_mean and running_var must both be given or both absent");
  VOLT_CHECK(training || running_mean.defined(), op, ": eval mode needs running statistics");
  VOLT_CHECK(!training || N * HW > 1, op, ": training needs more than one value per channel, got input shape ",
             shape_str(x.shape()));
  VOLT_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  VOLT_CHECK(momentum >= 0 && momentum <= 1, op, ": momentum must be in [0, 1], got ", momentum);
  const Device dev = detail::common_device(op, {{"input", x}, {"weight", weight}, {"bias", bias},
                                               {"running_mean", running_mean}, {"running_var", running_var}});
  const bool gpu = dev.is_cuda();

  const float* gamma = weight.defined() ? weight.data<float>() : nullptr;
  const float* beta = bias.defined() ? bias.data<float>() : nullptr;
  Tensor y = Tensor::empty(x.shape(), DType::F32, dev);
  Tensor mean = Tensor::empty({C}, DType::F32, dev), invstd = Tensor::empty({C}, DType::F32, dev);
  if (training) {
    Tensor var_unbiased = Tensor::empty({C}, DType::F32, dev);
    if (gpu) {
      VOLT_CUDA_ONLY(void* s = detail::stream_of(x);
                     cuda::batch_norm_forward_train(N, C, HW, x.data<float>(), gamma, beta, eps, y.data<float>(),
                                                    mean.data<float>(), invstd.data<float>(),
                                                    var_unbiased.data<float>(), s);
                     if (running_mean.defined())
                       cuda::batch_norm_update_running(C, running_mean.data<float>(), running_var.data<float>(),
                                                       mean.data<float>(), var_unbiased.data<float>(), momentum, s));
    } else {
      cpu::batch_norm_forward_train(N, C, HW, x.data<float>(), gamma, beta, eps, y.data<float>(), mean.data<float>(),
                                    invstd.data<float>(), var_unbiased.data<float>());
      if (running_mean.defined())
        cpu::batch_norm_update_running(C, running_mean.data<float>(), running_var.data<float>(), mean.data<float>(),
                                       var_unbiased.data<float>(), momentum);
    }
  } else {
    // Statistics for backward are the running ones, frozen now (a later update must not change them).
    mean.copy_(running_mean);
    if (gpu) {
      VOLT_CUDA_ONLY(void* s = detail::stream_of(x);
                     cuda::batch_norm_forward_eval(N, C, HW, x.data<float>(), gamma, beta, running_mean.data<float>(),
                                                   running_var.data<float>(), eps, y.data<float>(), s);
                     cuda::batch_norm_invstd(C, running_var.data<float>(), eps, invstd.data<float>(), s));
    } else {
      cpu::batch_norm_forward_eval(N, C, HW, x.data<float>(), gamma, beta, running_mean.data<float>(),
                                   running_var.data<float>(), eps, y.data<float>());
      const float* rv = running_var.data<float>();
      float* is = invstd.data<float>();
      for (int64_t c = 0; c < C; ++c) is[c] = float(1.0 / std::sqrt(double(rv[c]) + eps));
    }
  }
  autograd::record(op, y, {x, weight, bias},
                   [x, weight, mean, invstd, training, N, C, HW](const Tensor& gy, const std::vector<bool>& needs) {
                     const Device dev = x.device();
                     std::vector<Tensor> g(3);
                     for (size_t i = 0; i < 3; ++i)
                       if (needs[i]) g[i] = Tensor::empty(i == 0 ? x.shape() : Shape{C}, DType::F32, dev);
                     const float* gamma = weight.defined() ? weight.data<float>() : nullptr;
                     float* dx = needs[0] ? g[0].data<float>() : nullptr;
                     float* dgamma = needs[1] ? g[1].data<float>() : nullptr;
                     float* dbeta = needs[2] ? g[2].data<float>() : nullptr;
                     if (dev.is_cuda())
                       VOLT_CUDA_ONLY(cuda::batch_norm_backward(N, C, HW, gy.data<float>(), x.data<float>(), gamma,
                                                                mean.data<float>(), invstd.data<float>(), training, dx,
                                                                dgamma, dbeta, detail::stream_of(x)));
                     else
                       cpu::batch_norm_backward(N, C, HW, gy.data<float>(), x.data<float>(), gamma, mean.data<float>(),
                                                invstd.data<float>(), training, dx, dgamma, dbeta);
                     return g;
                   });
  return y;
}

}  // namespace volt
