// linear: y = x w^T + b.
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/check.h"
#include "kernels/linear.h"

namespace volt {

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const char* op = "linear";
  detail::check_input(op, "input", x, 2);
  detail::check_input(op, "weight", weight, 2);
  const int64_t M = x.size(0), in = x.size(1), out = weight.size(0);
  VOLT_CHECK(weight.size(1) == in, op, ": input has ", in, " features but weight expects ", weight.size(1),
             " (input ", shape_str(x.shape()), ", weight ", shape_str(weight.shape()), ")");
  if (bias.defined()) {
    detail::check_input(op, "bias", bias, 1);
    VOLT_CHECK(bias.size(0) == out, op, ": bias has ", bias.size(0), " elements but weight has ", out,
               " outputs (bias ", shape_str(bias.shape()), ", weight ", shape_str(weight.shape()), ")");
  }
  const Device dev = detail::common_device(op, {{"input", x}, {"weight", weight}, {"bias", bias}});
  Tensor y = Tensor::empty({M, out}, DType::F32, dev);
  const float* b = bias.defined() ? bias.data<float>() : nullptr;
  if (dev.is_cuda())
    VOLT_CUDA_ONLY(cuda::linear_forward(M, in, out, x.data<float>(), weight.data<float>(), b, y.data<float>(),
                                        detail::stream_of(x)));
  else cpu::linear_forward(M, in, out, x.data<float>(), weight.data<float>(), b, y.data<float>());
  autograd::record(op, y, {x, weight, bias}, [x, weight, M, in, out](const Tensor& gy, const std::vector<bool>& needs) {
    const Device dev = x.device();
    std::vector<Tensor> g(3);
    if (needs[0]) g[0] = Tensor::empty(x.shape(), DType::F32, dev);
    if (needs[1]) g[1] = Tensor::empty(weight.shape(), DType::F32, dev);
    if (needs[2]) g[2] = Tensor::empty({out}, DType::F32, dev);
    float* dx = needs[0] ? g[0].data<float>() : nullptr;
    float* dw = needs[1] ? g[1].data<float>() : nullptr;
    float* db = needs[2] ? g[2].data<float>() : nullptr;
    if (dev.is_cuda())
      VOLT_CUDA_ONLY(cuda::linear_backward(M, in, out, gy.data<float>(), x.data<float>(), weight.data<float>(), dx, dw,
                                           db, detail::stream_of(x)));
    else cpu::linear_backward(M, in, out, gy.data<float>(), x.data<float>(), weight.data<float>(), dx, dw, db);
    return g;
  });
  return y;
}

}  // namespace volt
