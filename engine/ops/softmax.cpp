// log_softmax, cross_entropy (fused log-softmax + NLL with label smoothing, its gradient made in the
// same pass), argmax, accuracy, and the deferred report of bad targets found on a GPU.
#include <map>
#include <mutex>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/check.h"
#include "kernels/metrics.h"
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
  if (detail::cpu_low_precision(x)) return cast(log_softmax(cast(x, DType::F32), dim), x.dtype());
  const Device dev = x.device();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), dev);
  if (dev.is_cuda())
    VOLT_CUDA_ONLY(cuda::log_softmax_forward(detail::ft(x), p.outer, p.R, p.inner, x.raw_data(), y.raw_data(),
                                             detail::stream_of(x)));
  else cpu::log_softmax_forward(p.outer, p.R, p.inner, x.data<float>(), y.data<float>());
  Tensor saved = y.detach();  // not y itself: y owns this node
  autograd::record(op, y, {x}, [p, saved](const Tensor& g, const std::vector<bool>&) {
    Tensor gx = Tensor::empty(saved.shape(), saved.dtype(), saved.device());
    if (saved.device().is_cuda())
      VOLT_CUDA_ONLY(cuda::log_softmax_backward(detail::ft(saved), p.outer, p.R, p.inner, g.raw_data(),
                                                saved.raw_data(), gx.raw_data(), detail::stream_of(saved)));
    else cpu::log_softmax_backward(p.outer, p.R, p.inner, g.data<float>(), saved.data<float>(), gx.data<float>());
    return std::vector<Tensor>{gx};
  }, {saved});
  return y;
}

namespace {

// Per CUDA device: int64 [3] = (count of targets out of range, the lowest row and its value as
// encode_bad_target, unused), written by the cross-entropy and batch-accuracy kernels and read by
// check_deferred_errors().
std::mutex g_bad_mu;
std::map<int, Tensor> g_bad_targets;

[[maybe_unused]] Tensor bad_target_slot(Device d) {  // CUDA builds only
  std::lock_guard<std::mutex> lock(g_bad_mu);
  auto it = g_bad_targets.find(d.index);
  if (it == g_bad_targets.end()) it = g_bad_targets.emplace(d.index, Tensor::zeros({3}, DType::I64, d)).first;
  return it->second;
}

void check_targets(const char* op, const Tensor& logits, const Tensor& target) {
  detail::check_input(op, "logits", logits, 2);
  VOLT_CHECK(target.defined(), op, ": target is undefined");
  VOLT_CHECK(target.dtype() == DType::I64, op, ": target must hold int64 class indices, got ",
             dtype_name(target.dtype()), " (shape ", shape_str(target.shape()), ")");
  VOLT_CHECK(target.dim() == 1 && target.size(0) == logits.size(0), op, ": target shape ", shape_str(target.shape()),
             " does not match logits ", shape_str(logits.shape()), " (expected [", logits.size(0), "])");
  detail::common_device(op, {{"logits", logits}, {"target", target}});
  // On a GPU the kernel checks the labels (a bad one gives a NaN loss and is reported by
  // check_deferred_errors): copying them to the host here would synchronise every step.
  if (target.device().is_cuda()) return;
  const int64_t C = logits.size(1);
  const int64_t* t = target.data<int64_t>();
  for (int64_t n = 0; n < target.size(0); ++n)
    VOLT_CHECK(t[n] >= 0 && t[n] < C, op, ": target[", n, "] = ", t[n], " is not a class index in [0, ", C, ")");
}

}  // namespace

void check_deferred_errors(Device d) {
  if (!d.is_cuda()) return;
  Tensor slot;
  {
    std::lock_guard<std::mutex> lock(g_bad_mu);
    auto it = g_bad_targets.find(d.index);
    if (it == g_bad_targets.end()) return;
    slot = it->second;
  }
  const std::vector<int64_t> v = slot.to_int_vector();
  if (v[0] == 0) return;
  slot.zero_();
  const BadTarget b = decode_bad_target(uint64_t(v[1]));
  VOLT_FAIL("cross_entropy/batch_accuracy: ", v[0], " target(s) on ", d.str(),
            " were not class indices (their losses are NaN, their predictions count as wrong); the lowest row: target[",
            b.row, "] = ", b.value, " is not a class index");
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction, double label_smoothing) {
  const char* op = "cross_entropy";
  check_targets(op, logits, target);
  VOLT_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, op, ": label_smoothing must be in [0, 1], got ",
             label_smoothing);
  // float16/bfloat16 logits on the CPU: the float32 loss of their float32 values (the cast's backward
  // rounds the gradient to the logits' type).
  if (detail::cpu_low_precision(logits))
    return cross_entropy(cast(logits, DType::F32), target, reduction, label_smoothing);
  const int64_t N = logits.size(0), C = logits.size(1);
  const float eps = float(label_smoothing);
  const Device dev = logits.device();
  const bool gpu = dev.is_cuda();
  // The gradient up to the incoming dloss (softmax - smoothed target), made in the forward pass.
  Tensor grad_base = logits.requires_grad() && autograd::grad_enabled() ? Tensor::empty({N, C}, DType::F32, dev)
                                                                        : Tensor();
  float* gb = grad_base.defined() ? grad_base.data<float>() : nullptr;
  Tensor per_row = Tensor::empty({N}, DType::F32, dev);
  if (gpu)
    VOLT_CUDA_ONLY(cuda::cross_entropy_forward(detail::ft(logits), N, C, logits.raw_data(), target.data<int64_t>(), eps,
                                               per_row.data<float>(), gb, bad_target_slot(dev).data<int64_t>(),
                                               detail::stream_of(logits)));
  else
    cpu::cross_entropy_forward(N, C, logits.data<float>(), target.data<int64_t>(), eps, per_row.data<float>(), gb);
  Tensor y;
  if (reduction == Reduction::None) {
    y = per_row;
  } else if (gpu) {
    y = Tensor::empty({}, DType::F32, dev);
    VOLT_CUDA_ONLY(cuda::sum_all(FType::F32, N, per_row.data<float>(), reduction == Reduction::Mean ? double(N) : 1.0,
                                 y.data<float>(), detail::stream_of(logits)));
  } else {
    const double total = cpu::sum_all(N, per_row.data<float>());
    y = Tensor::scalar(float(reduction == Reduction::Mean ? total / double(N) : total));
  }
  const DType dt = logits.dtype();
  autograd::record(op, y, {logits}, [grad_base, reduction, dt, N, C](const Tensor& g, const std::vector<bool>&) {
    Tensor gx = Tensor::empty({N, C}, dt, grad_base.device());
    // One incoming value for every row (mean, sum) or one per row; on a GPU it stays on the device.
    const int64_t stride = reduction == Reduction::None ? 1 : 0;
    const float div = reduction == Reduction::Mean ? float(N) : 1.f;
    if (grad_base.device().is_cuda())
      VOLT_CUDA_ONLY(cuda::cross_entropy_backward(ftype_of(dt), N, C, grad_base.data<float>(), g.data<float>(), stride,
                                                  div, gx.raw_data(), detail::stream_of(grad_base)));
    else
      cpu::cross_entropy_backward(N, C, grad_base.data<float>(), g.data<float>(), stride, div, gx.data<float>());
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
  if (detail::cpu_low_precision(x)) return argmax(x.to(DType::F32), dim);  // the same order in float32
  Tensor y = Tensor::empty(out_shape, DType::I64, x.device());
  if (x.device().is_cuda())
    VOLT_CUDA_ONLY(cuda::argmax_dim(detail::ft(x), p.outer, p.R, p.inner, x.raw_data(), y.data<int64_t>(),
                                    detail::stream_of(x)));
  else cpu::argmax_dim(p.outer, p.R, p.inner, x.data<float>(), y.data<int64_t>());
  return y;
}

Tensor batch_accuracy(const Tensor& logits, const Tensor& target) {
  check_targets("batch_accuracy", logits, target);
  const int64_t N = logits.size(0), C = logits.size(1);
  Tensor out = Tensor::empty({}, DType::F32, logits.device());
  if (logits.device().is_cuda()) {
    VOLT_CUDA_ONLY(cuda::accuracy_fraction(detail::ft(logits), N, C, logits.raw_data(), target.data<int64_t>(),
                                           out.data<float>(), bad_target_slot(logits.device()).data<int64_t>(),
                                           detail::stream_of(logits)));
    return out;
  }
  const Tensor f = logits.dtype() == DType::F32 ? logits : logits.to(DType::F32);
  cpu::accuracy_fraction(N, C, f.data<float>(), target.data<int64_t>(), out.data<float>());
  return out;
}

double accuracy(const Tensor& logits, const Tensor& target) {
  const double acc = batch_accuracy(logits, target).item();  // one copy to the host on a GPU
  check_deferred_errors(logits.device());                    // the targets, checked on the device meanwhile
  return acc;
}

}  // namespace volt
