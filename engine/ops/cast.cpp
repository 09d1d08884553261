// cast: a differentiable change of floating type (the gradient is cast back), the building block of
// mixed precision: float32 master weights enter float16/bfloat16 layers through it, and their
// gradients return through it in float32.
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/check.h"
#include "kernels/elementwise.h"

namespace volt {

namespace {
void record_cast(Tensor& y, const Tensor& x) {
  const DType from = x.dtype();
  autograd::record("cast", y, {x}, [from](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{g.detach().to(from)};
  });
}
}  // namespace

Tensor cast(const Tensor& x, DType dtype) {
  detail::check_input("cast", "input", x);
  VOLT_CHECK(is_floating(dtype), "cast: target type must be float32, float16 or bfloat16, got ", dtype_name(dtype));
  if (x.dtype() == dtype) return x;
  Tensor y = x.detach().to(dtype);
  record_cast(y, x);
  return y;
}

std::vector<Tensor> cast_many(const std::vector<Tensor>& xs, DType dtype) {
  VOLT_CHECK(is_floating(dtype), "cast_many: target type must be float32, float16 or bfloat16, got ",
             dtype_name(dtype));
  std::vector<Tensor> out(xs.size());
  // The tensors that one launch can cast: float32 (not yet `dtype`) on the first such tensor's GPU.
  std::vector<size_t> batch;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    if (!x.defined()) continue;
    detail::check_input("cast_many", "input", x);
    if (x.device().is_cuda() && x.dtype() == DType::F32 && dtype != DType::F32 &&
        (batch.empty() || xs[batch[0]].device() == x.device()))
      batch.push_back(i);
    else
      out[i] = cast(x, dtype);
  }
  if (batch.size() < 2) {
    for (size_t i : batch) out[i] = cast(xs[i], dtype);
    return out;
  }
  // One buffer, each tensor starting on a 256-byte boundary as its own allocation would.
  const int64_t align = 256 / int64_t(dtype_size(dtype));
  std::vector<int64_t> offset(batch.size());
  int64_t total = 0;
  for (size_t k = 0; k < batch.size(); ++k) {
    offset[k] = total;
    total += (xs[batch[k]].numel() + align - 1) / align * align;
  }
  const Tensor flat = Tensor::empty({total}, dtype, xs[batch[0]].device());
  std::vector<cuda::CastTensor> list;
  for (size_t k = 0; k < batch.size(); ++k) {
    const Tensor& x = xs[batch[k]];
    Tensor y = flat.narrow(offset[k], x.numel()).reshape(x.shape());
    list.push_back({x.raw_data(), y.raw_data(), x.numel()});
    record_cast(y, x);
    out[batch[k]] = y;
  }
  VOLT_CUDA_ONLY(cuda::cast_multi(FType::F32, ftype_of(dtype), list.data(), int64_t(list.size()), detail::stream_of(flat)));
  return out;
}

}  // namespace volt
