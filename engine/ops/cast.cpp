// cast: a differentiable change of floating type (the gradient is cast back), the building block of
// mixed precision: float32 master weights enter float16/bfloat16 layers through it, and their
// gradients return through it in float32.
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/check.h"
#include "kernels/elementwise.h"

namespace volt {

Tensor cast(const Tensor& x, DType dtype) {
  detail::check_input("cast", "input", x);
  VOLT_CHECK(is_floating(dtype), "cast: target type must be float32, float16 or bfloat16, got ", dtype_name(dtype));
  if (x.dtype() == dtype) return x;
  Tensor y = x.detach().to(dtype);
  autograd::record_cast(y, x);
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
    autograd::record_cast(y, x);
    out[batch[k]] = y;
  }
  VOLT_CUDA_ONLY(cuda::cast_multi(FType::F32, ftype_of(dtype), list.data(), int64_t(list.size()), detail::stream_of(flat)));
  return out;
}

void cast_into(const std::vector<Tensor>& src, const std::vector<Tensor>& dst) {
  VOLT_CHECK(src.size() == dst.size(), "cast_into: ", src.size(), " sources but ", dst.size(), " destinations");
  std::vector<cuda::CastTensor> list;
  size_t lead = src.size();  // the first pair the launch takes; the others it takes are like it
  for (size_t i = 0; i < src.size(); ++i) {
    const Tensor &x = src[i], &y = dst[i];
    detail::check_input("cast_into", "source", x);
    detail::check_input("cast_into", "destination", y);
    VOLT_CHECK(x.shape() == y.shape() && x.device() == y.device(), "cast_into: pair ", i, ": source ",
               shape_str(x.shape()), " on ", x.device().str(), ", destination ", shape_str(y.shape()), " on ",
               y.device().str());
    const bool like_lead = lead == src.size() || (x.device() == src[lead].device() &&
                                                  x.dtype() == src[lead].dtype() && y.dtype() == dst[lead].dtype());
    if (x.device().is_cuda() && x.dtype() != y.dtype() && like_lead) {
      if (lead == src.size()) lead = i;
      y.bump_version();
      list.push_back({x.raw_data(), y.raw_data(), x.numel()});
    } else {
      Tensor out = y;
      out.copy_(x);
    }
  }
  if (list.empty()) return;
  VOLT_CUDA_ONLY(cuda::cast_multi(ftype_of(src[lead].dtype()), ftype_of(dst[lead].dtype()), list.data(),
                                  int64_t(list.size()), detail::stream_of(dst[lead])));
}

}  // namespace volt
