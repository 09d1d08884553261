// log_softmax, cross_entropy (fused log-softmax + NLL with label smoothing), argmax, accuracy.
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/check.h"
#include "kernels/reduce.h"

namespace volt {

namespace {
struct Split {
  int64_t outer = 1, R = 1, inner = 1;
};
Split split_at(const Shape& s, int64_t d) {
  Split p;
  for (int64_t i = 0; i < int64_t(s.size()); ++i) {
    if (i < d) p.outer *= s[size_t(i)];
    else if (i == d) p.R = s[size_t(i)];
    else p.inner *= s[size_t(i)];
  }
  return p;
}
}  // namespace

Tensor log_softmax(const Tensor& x, int64_t dim) {
  const char* op = "log_softmax";
  detail::check_input(op, "input", x);
  VOLT_CHECK(x.dim() >= 1, op, ": input must have at least one dim");
  const Split p = split_at(x.shape(), detail::wrap_dim(op, dim, x.dim()));
  const Device dev = x.device();
  Tensor y = Tensor::empty(x.shape(), DType::F32, dev);
  if (dev.is_cuda())
    VOLT_CUDA_ONLY(cuda::log_softmax_forward(p.outer, p.R, p.inner, x.data<float>(), y.data<float>(),
                                             detail::stream_of(x)));
  else cpu::log_softmax_forward(p.outer, p.R, p.inner, x.data<float>(), y.data<float>());
  Tensor saved = y.detach();  // not y itself: y owns this node
  autograd::record(op, y, {x}, [p, saved](const Tensor& g, const std::vector<bool>&) {
    Tensor gx = Tensor::empty(saved.shape(), DType::F32, saved.device());
    if (saved.device().is_cuda())
      VOLT_CUDA_ONLY(cuda::log_softmax_backward(p.outer, p.R, p.inner, g.data<float>(), saved.data<float>(),
                                                gx.data<float>(), detail::stream_of(saved)));
    else cpu::log_softmax_backward(p.outer, p.R, p.inner, g.data<float>(), saved.data<float>(), gx.data<float>());
    return std::vector<Tensor>{gx};
  });
  return y;
}

static void check_targets(const char* op, const Tensor& logits, const Tensor& target) {
  detail::check_input(op, "logits", logits, 2);
  VOLT_CHECK(target.defined(), op, ": target is undefined");
  VOLT_CHECK(target.dtype() == DType::I64, op, ": target must hold int64 class indices, got ",
             dtype_name(target.dtype()), " (shape ", shape_str(target.shape()), ")");
  VOLT_CHECK(target.dim() == 1 && target.size(0) == logits.size(0), op, ": target shape ", shape_str(target.shape()),
             " does not match logits ", shape_str(logits.shape()), " (expected [", logits.size(0), "])");
  detail::common_device(op, {{"logits", logits}, {"target", target}});
  const int64_t C = logits.size(1);
  // On a GPU the labels are copied to the host for this check (a synchronisation; a device-side
  // check that raises later is the faster alternative). The CUDA kernels also turn a bad label into NaN.
  const Tensor host = target.device().is_cpu() ? target : target.to(Device::cpu());
  const int64_t* t = host.data<int64_t>();
  for (int64_t n = 0; n < target.size(0); ++n)
    VOLT_CHECK(t[n] >= 0 && t[n] < C, op, ": target[", n, "] = ", t[n], " is not a class index in [0, ", C, ")");
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction, double label_smoothing) {
  const char* op = "cross_entropy";
  check_targets(op, logits, target);
  VOLT_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, op, ": label_smoothing must be in [0, 1], got ",
             label_smoothing);
  const int64_t N = logits.size(0), C = logits.size(1);
  const float eps = float(label_smoothing);
  const Device dev = logits.device();
  const bool gpu = dev.is_cuda();
  Tensor per_row = Tensor::empty({N}, DType::F32, dev);
  if (gpu)
    VOLT_CUDA_ONLY(cuda::cross_entropy_forward(N, C, logits.data<float>(), target.data<int64_t>(), eps,
                                               per_row.data<float>(), detail::stream_of(logits)));
  else cpu::cross_entropy_forward(N, C, logits.data<float>(), target.data<int64_t>(), eps, per_row.data<float>());
  Tensor y;
  if (reduction == Reduction::None) {
    y = per_row;
  } else if (gpu) {
    y = Tensor::empty({}, DType::F32, dev);
    VOLT_CUDA_ONLY(cuda::sum_all(N, per_row.data<float>(), reduction == Reduction::Mean ? double(N) : 1.0,
                                 y.data<float>(), detail::stream_of(logits)));
  } else {
    const double total = cpu::sum_all(N, per_row.data<float>());
    y = Tensor::scalar(float(reduction == Reduction::Mean ? total / double(N) : total));
  }
  autograd::record(op, y, {logits}, [logits, target, reduction, eps, N, C](const Tensor& g, const std::vector<bool>&) {
    Tensor gx = Tensor::empty({N, C}, DType::F32, logits.device());
    if (logits.device().is_cuda()) {
      // The incoming gradient stays on the device: one scalar for every row (mean, sum) or one per row.
      [[maybe_unused]] const int64_t stride = reduction == Reduction::None ? 1 : 0;
      [[maybe_unused]] const float div = reduction == Reduction::Mean ? float(N) : 1.f;
      VOLT_CUDA_ONLY(cuda::cross_entropy_backward(N, C, logits.data<float>(), target.data<int64_t>(), eps,
                                                  g.data<float>(), stride, div, gx.data<float>(),
                                                  detail::stream_of(logits)));
      return std::vector<Tensor>{gx};
    }
    Tensor dloss = reduction == Reduction::None
                       ? g
                       : Tensor::full({N}, reduction == Reduction::Mean ? g.item() / float(N) : g.item());
    cpu::cross_entropy_backward(N, C, logits.data<float>(), target.data<int64_t>(), eps, dloss.data<float>(),
                                gx.data<float>());
    return std::vector<Tensor>{gx};
  });
  return y;
}

Tensor argmax(const Tensor& x, int64_t dim) {
  detail::check_input("argmax", "input", x);
  VOLT_CHECK(x.dim() >= 1, "argmax: input must have at least one dim");
  const int64_t d = detail::wrap_dim("argmax", dim, x.dim());
  const Split p = split_at(x.shape(), d);
  Shape out_shape;
  for (int64_t i = 0; i < x.dim(); ++i)
    if (i != d) out_shape.push_back(x.shape()[size_t(i)]);
  Tensor y = Tensor::empty(out_shape, DType::I64, x.device());
  if (x.device().is_cuda())
    VOLT_CUDA_ONLY(cuda::argmax_dim(p.outer, p.R, p.inner, x.data<float>(), y.data<int64_t>(), detail::stream_of(x)));
  else cpu::argmax_dim(p.outer, p.R, p.inner, x.data<float>(), y.data<int64_t>());
  return y;
}

double accuracy(const Tensor& logits, const Tensor& target) {
  check_targets("accuracy", logits, target);
  Tensor pred = argmax(logits, 1);
  if (logits.device().is_cuda()) {
    Tensor correct = Tensor::empty({}, DType::I64, logits.device());
    VOLT_CUDA_ONLY(cuda::count_equal(target.size(0), pred.data<int64_t>(), target.data<int64_t>(),
                                     correct.data<int64_t>(), detail::stream_of(logits)));
    return double(correct.to_int_vector()[0]) / double(target.size(0));  // one 8-byte copy to the host
  }
  const int64_t* p = pred.data<int64_t>();
  const int64_t* t = target.data<int64_t>();
  int64_t correct = 0;
  for (int64_t n = 0; n < target.size(0); ++n) correct += p[n] == t[n];
  return double(correct) / double(target.size(0));
}

}  // namespace volt
