// sum and mean, over all elements or one dim, on the input's device. On a GPU the total stays on the
// device (no host synchronisation).
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/check.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace volt {

namespace {

Tensor reduce_all(const char* op, const Tensor& x, bool average) {
  detail::check_input(op, "input", x);
  if (detail::cpu_low_precision(x)) return cast(reduce_all(op, cast(x, DType::F32), average), x.dtype());
  const int64_t n = x.numel();
  Tensor y;
  if (x.device().is_cuda()) {
    y = Tensor::empty({}, x.dtype(), x.device());
    VOLT_CUDA_ONLY(cuda::sum_all(detail::ft(x), n, x.raw_data(), average ? double(n) : 1.0, y.raw_data(),
                                 detail::stream_of(x)));
  } else {
    const double total = cpu::sum_all(n, x.data<float>());
    y = Tensor::scalar(float(average ? total / double(n) : total));
  }
  const float scale = average ? 1.f / float(n) : 1.f;
  Shape in_shape = x.shape();
  autograd::record(op, y, {x}, [in_shape, scale](const Tensor& g, const std::vector<bool>&) {
    if (g.device().is_cuda()) {
      Tensor gx = Tensor::empty(in_shape, g.dtype(), g.device());
      VOLT_CUDA_ONLY(cuda::broadcast_scalar(detail::ft(g), gx.numel(), g.raw_data(), scale, gx.raw_data(),
                                            detail::stream_of(g)));
      return std::vector<Tensor>{gx};
    }
    return std::vector<Tensor>{Tensor::full(in_shape, g.item() * scale)};
  });
  return y;
}

Tensor reduce_dim(const char* op, const Tensor& x, int64_t dim, bool keepdim, bool average) {
  detail::check_input(op, "input", x);
  VOLT_CHECK(x.dim() >= 1, op, ": cannot reduce a dim of a 0-dim tensor");
  const int64_t d = detail::wrap_dim(op, dim, x.dim());
  const Shape& s = x.shape();
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= s[size_t(i)];
  for (int64_t i = d + 1; i < x.dim(); ++i) inner *= s[size_t(i)];
  const int64_t R = s[size_t(d)];
  Shape out_shape;
  for (int64_t i = 0; i < x.dim(); ++i) {
    if (i != d) out_shape.push_back(s[size_t(i)]);
    else if (keepdim) out_shape.push_back(1);
  }
  if (detail::cpu_low_precision(x)) return cast(reduce_dim(op, cast(x, DType::F32), dim, keepdim, average), x.dtype());
  const Device dev = x.device();
  Tensor y = Tensor::empty(out_shape, x.dtype(), dev);
  const float scale = average ? 1.f / float(R) : 1.f;
  if (dev.is_cuda()) {
    // A float16 mean is the float32 sum, rounded, then scaled and rounded again (PyTorch divides the
    // float32 accumulator once; the difference is at most one 16-bit rounding).
    VOLT_CUDA_ONLY(void* st = detail::stream_of(x); const FType t = detail::ft(x);
                   cuda::sum_dim(t, outer, R, inner, x.raw_data(), y.raw_data(), st);
                   if (average) cuda::scale(t, y.numel(), y.raw_data(), scale, 0.f, y.raw_data(), st));
  } else {
    detail::cpu_kernel(op, [&] { cpu::sum_dim(outer, R, inner, x.data<float>(), y.data<float>()); });
    if (average) cpu::scale(y.numel(), y.data<float>(), scale, 0.f, y.data<float>());
  }
  Shape in_shape = s;
  autograd::record(op, y, {x}, [in_shape, outer, R, inner, scale](const Tensor& g, const std::vector<bool>&) {
    Tensor gx = Tensor::empty(in_shape, g.dtype(), g.device());
    if (g.device().is_cuda())
      VOLT_CUDA_ONLY(cuda::broadcast_dim(detail::ft(g), outer, R, inner, g.raw_data(), scale, gx.raw_data(),
                                         detail::stream_of(g)));
    else cpu::broadcast_dim(outer, R, inner, g.data<float>(), scale, gx.data<float>());
    return std::vector<Tensor>{gx};
  });
  return y;
}

}  // namespace

Tensor sum(const Tensor& x) { return reduce_all("sum", x, false); }
Tensor mean(const Tensor& x) { return reduce_all("mean", x, true); }
Tensor sum(const Tensor& x, int64_t dim, bool keepdim) { return reduce_dim("sum", x, dim, keepdim, false); }
Tensor mean(const Tensor& x, int64_t dim, bool keepdim) { return reduce_dim("mean", x, dim, keepdim, true); }

}  // namespace volt
