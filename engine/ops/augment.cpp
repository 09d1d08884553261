// augment_batch (see engine/augment.h): shape checks, then the CPU kernel or the CUDA launch.
#include "engine/augment.h"

#include "engine/ops/check.h"

namespace volt {

void augment_batch(const AugmentSource& src, const AugmentSpec& spec, int64_t begin, int64_t count,
                   uint64_t key_base, uint64_t key_stride, DType dtype, Tensor& out_images, Tensor& out_labels) {
  const char* op = "augment_batch";
  VOLT_CHECK(src.images.defined() && src.labels.defined() && src.order.defined() && src.lut.defined(), op,
             ": the source needs images, labels, order and lut");
  const Device dev = detail::common_device(
      op, {{"images", src.images}, {"labels", src.labels}, {"order", src.order}, {"lut", src.lut}});
  const Shape want{src.images.dim() == 4 ? src.images.size(0) : -1, spec.channels, spec.height, spec.width};
  VOLT_CHECK(src.images.dtype() == DType::U8 && src.images.shape() == want, op, ": images must be uint8 ",
             shape_str(want), ", got ", dtype_name(src.images.dtype()), " ", shape_str(src.images.shape()));
  const int64_t n = want[0];
  VOLT_CHECK(src.labels.dtype() == DType::I64 && src.labels.shape() == Shape{n}, op, ": labels must be int64 [", n,
             "], got ", dtype_name(src.labels.dtype()), " ", shape_str(src.labels.shape()));
  VOLT_CHECK(src.order.dtype() == DType::I64 && src.order.dim() == 1, op, ": order must be int64 [M], got ",
             dtype_name(src.order.dtype()), " ", shape_str(src.order.shape()));
  VOLT_CHECK(src.lut.dtype() == DType::F32 && src.lut.shape() == (Shape{spec.channels, 256}), op,
             ": lut must be float32 [", spec.channels, ", 256], got ", shape_str(src.lut.shape()));
  VOLT_CHECK(begin >= 0 && count >= 1 && begin + count <= src.order.size(0), op, ": positions [", begin, ", ",
             begin + count, ") are outside the order's ", src.order.size(0));
  VOLT_CHECK(is_floating(dtype), op, ": images can be float32, float16 or bfloat16, not ", dtype_name(dtype));
  [[maybe_unused]] const FType ft = ftype_of(dtype);  // unused in a build without CUDA
  const Shape out_shape{count, spec.channels, spec.height, spec.width};
  out_labels = Tensor::empty({count}, DType::I64, dev);
  if (dev.is_cuda()) {
    out_images = Tensor::empty(out_shape, dtype, dev);
    VOLT_CUDA_ONLY(cuda::augment_batch(spec, src.lut.data<float>(), src.images.data<uint8_t>(),
                                       src.labels.data<int64_t>(), n, src.order.data<int64_t>(), begin, count, key_base,
                                       key_stride, ft, out_images.raw_data(), out_labels.data<int64_t>(),
                                       detail::stream_of(src.images)));
    return;
  }
  const int64_t* order = src.order.data<int64_t>();
  for (int64_t k = begin; k < begin + count; ++k)
    VOLT_CHECK(order[k] >= 0 && order[k] < n, op, ": order[", k, "] = ", order[k], " is outside [0, ", n, ")");
  Tensor f32 = Tensor::empty(out_shape, DType::F32);
  cpu::augment_batch(spec, src.lut.data<float>(), src.images.data<uint8_t>(), src.labels.data<int64_t>(), order,
                     begin, count, key_base, key_stride, f32.data<float>(), out_labels.data<int64_t>());
  out_images = dtype == DType::F32 ? f32 : f32.to(dtype);
}

}  // namespace volt
