// conv2d: shape checks, dispatch to kernels/conv2d.h, and its backward (grad input, weight, bias).
#include "kernels/batch_norm.h"
#include "kernels/conv2d.h"

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/check.h"

namespace volt {

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Pair stride, Pair padding) {
  return detail::conv2d_with_channel_sums(x, weight, bias, stride, padding, nullptr);
}

Tensor detail::conv2d_with_channel_sums(const Tensor& x, const Tensor& weight, const Tensor& bias, Pair stride,
                                        Pair padding, Tensor* sums) {
  const char* op = "conv2d";
  if (sums) *sums = Tensor();
  detail::check_input(op, "input", x, 4);
  detail::check_input(op, "weight", weight, 4);
  const Shape& xs = x.shape();
  const Shape& ws = weight.shape();
  VOLT_CHECK(xs[1] == ws[1], op, ": input has ", xs[1], " channels but weight expects ", ws[1], " (input ",
             shape_str(xs), ", weight ", shape_str(ws), ")");
  if (bias.defined()) {
    detail::check_input(op, "bias", bias, 1);
    VOLT_CHECK(bias.size(0) == ws[0], op, ": bias has ", bias.size(0), " elements but weight has ", ws[0],
               " output channels (bias ", shape_str(bias.shape()), ", weight ", shape_str(ws), ")");
  }
  const Device dev = detail::common_device(op, {{"input", x}, {"weight", weight}, {"bias", bias}});
  VOLT_CHECK(stride[0] >= 1 && stride[1] >= 1, op, ": stride must be positive, got [", stride[0], ", ", stride[1], "]");
  VOLT_CHECK(padding[0] >= 0 && padding[1] >= 0, op, ": padding must be non-negative, got [", padding[0], ", ",
             padding[1], "]");
  Conv2dShape s{xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], stride[0], stride[1], padding[0], padding[1], 0, 0};
  VOLT_CHECK(s.H + 2 * s.pad_h >= s.R && s.W + 2 * s.pad_w >= s.S, op, ": kernel ", s.R, "x", s.S,
             " is larger than the padded input ", s.H + 2 * s.pad_h, "x", s.W + 2 * s.pad_w, " (input ", shape_str(xs),
             ", weight ", shape_str(ws), ")");
  s.P = (s.H + 2 * s.pad_h - s.R) / s.stride_h + 1;
  s.Q = (s.W + 2 * s.pad_w - s.S) / s.stride_w + 1;

  const DType dt = detail::common_dtype(op, {{"input", x}, {"weight", weight}, {"bias", bias}});
  if (detail::cpu_low_precision(x))
    return cast(conv2d(cast(x, DType::F32), cast(weight, DType::F32), bias.defined() ? cast(bias, DType::F32) : bias,
                       stride, padding),
                dt);

  Tensor y = Tensor::empty({s.N, s.K, s.P, s.Q}, dt, dev);
  [[maybe_unused]] const void* b = bias.defined() ? bias.raw_data() : nullptr;  // CUDA builds only
  if (dev.is_cuda()) {
#if VOLT_HAVE_CUDA
    const FType t = detail::ft(x);
    double* sp = nullptr;  // the channel sums' bytes: double [K][chunks][2]
    if (sums && cuda::conv2d_forward_own_supported(t, s)) {
      *sums = Tensor::empty({s.K * cuda::conv2d_forward_own_sum_chunks(s) * 2 * 8}, DType::U8, dev);
      sp = static_cast<double*>(sums->raw_data());
    }
    const bool summed = cuda::conv2d_forward(t, s, x.raw_data(), weight.raw_data(), b, y.raw_data(),
                                             detail::stream_of(x), sp);
    if (sums && !summed) *sums = Tensor();  // cuDNN's forward ran (VOLT_CUDNN_FIND measured it faster)
#else
    detail::no_cuda_kernels();
#endif
  } else {
    detail::cpu_kernel(op, [&] {
      cpu::conv2d_forward(s, x.data<float>(), weight.data<float>(), bias.defined() ? bias.data<float>() : nullptr,
                          y.data<float>());
    });
  }
  autograd::record(op, y, {x, weight, bias}, [s, x, weight, dt](const Tensor& gy, const std::vector<bool>& needs) {
    const Device dev = x.device();
    std::vector<Tensor> g(3);
    if (needs[0]) g[0] = Tensor::empty(x.shape(), dt, dev);
    if (needs[1]) g[1] = Tensor::empty(weight.shape(), dt, dev);
    if (needs[2]) g[2] = Tensor::empty({s.K}, dt, dev);
    if (dev.is_cuda()) {
      VOLT_CUDA_ONLY(void* st = detail::stream_of(x); const FType t = detail::ft(x);
                     if (needs[0]) cuda::conv2d_backward_input(t, s, gy.raw_data(), weight.raw_data(),
                                                               g[0].raw_data(), st);
                     Tensor ws;  // channel_sum's, for a bias gradient that cuDNN's path computes
                     if (needs[2]) ws = Tensor::empty({int64_t(cuda::batch_norm_workspace_bytes(s.N, s.K, s.P * s.Q))},
                                                      DType::U8, dev);
                     // One pass over dy for both where Volt's own kernel applies (kernels/conv2d.h).
                     if (needs[1] || needs[2])
                       cuda::conv2d_backward_weight_bias(t, s, gy.raw_data(), x.raw_data(),
                                                         needs[1] ? g[1].raw_data() : nullptr,
                                                         needs[2] ? g[2].raw_data() : nullptr,
                                                         needs[2] ? ws.raw_data() : nullptr, st););
    } else {
      detail::cpu_kernel("conv2d backward", [&] {
        if (needs[0]) cpu::conv2d_backward_input(s, gy.data<float>(), weight.data<float>(), g[0].data<float>());
        if (needs[1]) cpu::conv2d_backward_weight(s, gy.data<float>(), x.data<float>(), g[1].data<float>());
        if (needs[2]) cpu::conv2d_backward_bias(s, gy.data<float>(), g[2].data<float>());
      });
    }
    return g;
  }, {weight.requires_grad() ? x : Tensor(), x.requires_grad() ? weight : Tensor()});  // what backward reads
  return y;
}

}  // namespace volt
