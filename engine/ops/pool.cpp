// max_pool2d with saved argmax indices for backward.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/check.h"
#include "kernels/pool.h"

namespace volt {

Tensor max_pool2d(const Tensor& x, Pair kernel, Pair stride, Pair padding) {
  const char* op = "max_pool2d";
  detail::check_input(op, "input", x, 4);
  VOLT_CHECK(kernel[0] >= 1 && kernel[1] >= 1, op, ": kernel must be positive, got [", kernel[0], ", ", kernel[1], "]");
  VOLT_CHECK(stride[0] >= 1 && stride[1] >= 1, op, ": stride must be positive, got [", stride[0], ", ", stride[1], "]");
  VOLT_CHECK(padding[0] >= 0 && padding[1] >= 0 && 2 * padding[0] <= kernel[0] && 2 * padding[1] <= kernel[1], op,
             ": padding [", padding[0], ", ", padding[1], "] must be between 0 and half the kernel [", kernel[0], ", ",
             kernel[1], "]");
  const Shape& xs = x.shape();
  VOLT_CHECK(xs[2] + 2 * padding[0] >= kernel[0] && xs[3] + 2 * padding[1] >= kernel[1], op, ": kernel [", kernel[0],
             ", ", kernel[1], "] is larger than the padded input (input ", shape_str(xs), ")");
  // The argmax indices are int32 positions within a plane.
  VOLT_CHECK(xs[2] <= std::numeric_limits<int32_t>::max() / std::max<int64_t>(1, xs[3]), op, ": a plane of ", xs[2],
             " x ", xs[3], " has more positions than its int32 argmax indices can hold (input ", shape_str(xs), ")");
  cpu::Pool2dShape s{xs[0] * xs[1], xs[2], xs[3], kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], 0, 0};
  s.P = (s.H + 2 * s.pad_h - s.kh) / s.stride_h + 1;
  s.Q = (s.W + 2 * s.pad_w - s.kw) / s.stride_w + 1;
  if (detail::cpu_low_precision(x)) return cast(max_pool2d(cast(x, DType::F32), kernel, stride, padding), x.dtype());
  const Device dev = x.device();
  const DType dt = x.dtype();
  Tensor y = Tensor::empty({xs[0], xs[1], s.P, s.Q}, dt, dev);
  Tensor indices = Tensor::empty(y.shape(), DType::I32, dev);
  if (dev.is_cuda())
    VOLT_CUDA_ONLY(cuda::max_pool2d_forward(detail::ft(x), s, x.raw_data(), y.raw_data(), indices.data<int32_t>(),
                                            detail::stream_of(x)));
  else cpu::max_pool2d_forward(s, x.data<float>(), y.data<float>(), indices.data<int32_t>());
  Shape in_shape = xs;
  autograd::record(op, y, {x}, [s, indices, in_shape, dt](const Tensor& gy, const std::vector<bool>&) {
    Tensor gx = Tensor::empty(in_shape, dt, gy.device());
    if (gy.device().is_cuda())
      VOLT_CUDA_ONLY(cuda::max_pool2d_backward(detail::ft(gy), s, gy.raw_data(), indices.data<int32_t>(),
                                               gx.raw_data(), detail::stream_of(gy)));
    else cpu::max_pool2d_backward(s, gy.data<float>(), indices.data<int32_t>(), gx.data<float>());
    return std::vector<Tensor>{gx};
  });
  return y;
}

}  // namespace volt
