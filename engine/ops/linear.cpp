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
  const DType dt = detail::common_dtype(op, {{"input", x}, {"weight", weight}, {"bias", bias}});
  if (detail::cpu_low_precision(x))
    return cast(linear(cast(x, DType::F32), cast(weight, DType::F32), bias.defined() ? cast(bias, DType::F32) : bias),
                dt);
  Tensor y = Tensor::empty({M, out}, dt, dev);
  if (dev.is_cuda())
    VOLT_CUDA_ONLY(cuda::linear_forward(detail::ft(x), M, in, out, x.raw_data(), weight.raw_data(),
                                        bias.defined() ? bias.raw_data() : nullptr, y.raw_data(),
                                        detail::stream_of(x)));
  else
    cpu::linear_forward(M, in, out, x.data<float>(), weight.data<float>(),
                        bias.defined() ? bias.data<float>() : nullptr, y.data<float>());
  autograd::record(op, y, {x, weight, bias}, [x, weight, M, in, out, dt](const Tensor& gy, const std::vector<bool>& needs) {
    const Device dev = x.device();
    std::vector<Tensor> g(3);
    if (needs[0]) g[0] = Tensor::empty(x.shape(), dt, dev);
    if (needs[1]) g[1] = Tensor::empty(weight.shape(), dt, dev);
    if (needs[2]) g[2] = Tensor::empty({out}, dt, dev);
    void* dx = needs[0] ? g[0].raw_data() : nullptr;
    void* dw = needs[1] ? g[1].raw_data() : nullptr;
    void* db = needs[2] ? g[2].raw_data() : nullptr;
    if (dev.is_cuda())
      VOLT_CUDA_ONLY(cuda::linear_backward(detail::ft(x), M, in, out, gy.raw_data(), x.raw_data(), weight.raw_data(),
                                           dx, dw, db, detail::stream_of(x)));
    else
      cpu::linear_backward(M, in, out, gy.data<float>(), x.data<float>(), weight.data<float>(),
                           static_cast<float*>(dx), static_cast<float*>(dw), static_cast<float*>(db));
    return g;
  }, {weight.requires_grad() ? x : Tensor(), x.requires_grad() ? weight : Tensor()});  // what backward reads
  return y;
}

}  // namespace volt
