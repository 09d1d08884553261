// relu, dropout and the two fused (relu_dropout), on the input's device and in its floating type.
#include "engine/autograd.h"
#include "engine/cuda_graph.h"
#include "engine/ops.h"
#include "engine/ops/check.h"
#include "kernels/elementwise.h"

namespace volt {

Tensor relu(const Tensor& x) {
  detail::check_input("relu", "input", x);
  if (detail::cpu_low_precision(x)) return cast(relu(cast(x, DType::F32)), x.dtype());
  const Device dev = x.device();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), dev);
  if (dev.is_cuda())
    VOLT_CUDA_ONLY(cuda::relu_forward(detail::ft(x), x.numel(), x.raw_data(), y.raw_data(), detail::stream_of(x)));
  else cpu::relu_forward(x.numel(), x.data<float>(), y.data<float>());
  autograd::record("relu", y, {x}, [x](const Tensor& gy, const std::vector<bool>&) {
    Tensor gx = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (x.device().is_cuda())
      VOLT_CUDA_ONLY(cuda::relu_backward(detail::ft(x), x.numel(), gy.raw_data(), x.raw_data(), gx.raw_data(),
                                         detail::stream_of(x)));
    else cpu::relu_backward(x.numel(), gy.data<float>(), x.data<float>(), gx.data<float>());
    return std::vector<Tensor>{gx};
  }, {x});
  return y;
}

namespace {

// dropout, or (relu) dropout(relu(x)) in one pass each way: the kept mask and the ReLU's mask are one
// byte per element, and backward is dropout's.
Tensor dropout_impl(const char* op, const Tensor& x, double p, bool training, Generator& gen, bool relu_first) {
  detail::check_input(op, "input", x);
  VOLT_CHECK(p >= 0.0 && p <= 1.0, op, ": probability must be in [0, 1], got ", p);
  if (!training || p == 0.0) return relu_first ? relu(x) : x;
  if (detail::cpu_low_precision(x))
    return cast(dropout_impl(op, cast(x, DType::F32), p, training, gen, relu_first), x.dtype());
  const int64_t n = x.numel();
  const Device dev = x.device();
  Tensor keep = Tensor::empty(x.shape(), DType::U8, dev);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), dev);
  // Both backends draw element i from Philox (seed, stream, offset + i / 4, word i % 4): same masks.
  // On a GPU the seed and offset reach the kernel through device memory, taken from the generator when
  // the step runs (a captured step's replays each reserve fresh offsets: engine/cuda_graph.h); `gen`
  // must outlive such a graph (the default generators and a layer's own do).
  if (dev.is_cuda()) {
    [[maybe_unused]] const auto* so = static_cast<const uint64_t*>(step_scalars(dev, 2, [&gen, n](uint64_t* v) {
      v[0] = gen.seed();
      v[1] = gen.reserve(uint64_t(n));
    }));
    VOLT_CUDA_ONLY(cuda::dropout_forward(detail::ft(x), n, x.raw_data(), float(p), gen.stream(), so,
                                         keep.data<uint8_t>(), y.raw_data(), detail::stream_of(x), relu_first));
  } else {
    const uint64_t offset = gen.reserve(uint64_t(n));
    cpu::dropout_forward(n, x.data<float>(), float(p), gen.seed(), gen.stream(), offset, keep.data<uint8_t>(),
                         y.data<float>(), relu_first);
  }
  autograd::record(op, y, {x}, [keep, p](const Tensor& gy, const std::vector<bool>&) {
    Tensor gx = Tensor::empty(gy.shape(), gy.dtype(), gy.device());
    if (gy.device().is_cuda())
      VOLT_CUDA_ONLY(cuda::dropout_backward(detail::ft(gy), gy.numel(), gy.raw_data(), keep.data<uint8_t>(), float(p),
                                            gx.raw_data(), detail::stream_of(gy)));
    else cpu::dropout_backward(gy.numel(), gy.data<float>(), keep.data<uint8_t>(), float(p), gx.data<float>());
    return std::vector<Tensor>{gx};
  });
  return y;
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  return dropout_impl("dropout", x, p, training, gen, false);
}

Tensor relu_dropout(const Tensor& x, double p, bool training, Generator& gen) {
  return dropout_impl("relu_dropout", x, p, training, gen, true);
}

}  // namespace volt
