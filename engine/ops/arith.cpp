// Broadcasting add/sub/mul, scalar variants and in-place accumulation.
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/check.h"
#include "kernels/elementwise.h"

namespace volt {

namespace {

Shape broadcast_shape(const char* op, const Shape& a, const Shape& b) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    VOLT_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
               " cannot be broadcast together (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out) {
  std::vector<int64_t> st(out.size(), 0);
  int64_t stride = 1;
  for (size_t k = 0; k < in.size(); ++k) {
    const size_t i = in.size() - 1 - k;
    const size_t o = out.size() - 1 - k;
    st[o] = in[i] == 1 ? 0 : stride;
    stride *= in[i];
  }
  return st;
}

// Sums g down to `target` (the inverse of broadcasting).
Tensor sum_to(const Tensor& g, const Shape& target) {
  if (g.shape() == target) return g;
  Tensor r = g;
  const size_t lead = g.shape().size() - target.size();
  for (size_t i = 0; i < lead; ++i) r = sum(r, 0, false);
  for (size_t i = 0; i < target.size(); ++i)
    if (target[i] == 1 && r.shape()[i] != 1) r = sum(r, int64_t(i), true);
  return r.reshape(target);
}

Tensor binary(const char* op, cpu::BinaryOp kind, const Tensor& a, const Tensor& b) {
  detail::check_input(op, "first operand", a);
  detail::check_input(op, "second operand", b);
  const Device dev = detail::common_device(op, {{"first operand", a}, {"second operand", b}});
  const DType dt = detail::common_dtype(op, {{"first operand", a}, {"second operand", b}});
  const Shape out_shape = broadcast_shape(op, a.shape(), b.shape());
  if (detail::cpu_low_precision(a)) return cast(binary(op, kind, cast(a, DType::F32), cast(b, DType::F32)), dt);
  Tensor y = Tensor::empty(out_shape, dt, dev);
  if (a.shape() == b.shape()) {
    if (dev.is_cuda())
      VOLT_CUDA_ONLY(cuda::binary_same(detail::ft(a), kind, a.numel(), a.raw_data(), b.raw_data(), y.raw_data(),
                                       detail::stream_of(a)));
    else cpu::binary_same(kind, a.numel(), a.data<float>(), b.data<float>(), y.data<float>());
  } else {
    auto as = broadcast_strides(a.shape(), out_shape), bs = broadcast_strides(b.shape(), out_shape);
    if (dev.is_cuda())
      VOLT_CUDA_ONLY(cuda::binary_broadcast(detail::ft(a), kind, int64_t(out_shape.size()), out_shape.data(),
                                            a.raw_data(), as.data(), b.raw_data(), bs.data(), y.raw_data(),
                                            detail::stream_of(a)));
    else
      cpu::binary_broadcast(kind, int64_t(out_shape.size()), out_shape.data(), a.data<float>(), as.data(),
                            b.data<float>(), bs.data(), y.data<float>());
  }
  // Only mul needs the operands' values in backward; add/sub keep just the shapes.
  const bool is_mul = kind == cpu::BinaryOp::Mul;
  Tensor saved_a = is_mul ? a : Tensor(), saved_b = is_mul ? b : Tensor();
  autograd::record(op, y, {a, b}, [kind, saved_a, saved_b, sa = a.shape(), sb = b.shape()](
                                      const Tensor& g, const std::vector<bool>& needs) {
    std::vector<Tensor> gr(2);
    if (kind == cpu::BinaryOp::Mul) {
      if (needs[0]) gr[0] = sum_to(mul(g, saved_b), sa);
      if (needs[1]) gr[1] = sum_to(mul(g, saved_a), sb);
    } else {
      if (needs[0]) gr[0] = sum_to(g, sa);
      if (needs[1]) gr[1] = sum_to(kind == cpu::BinaryOp::Sub ? mul(g, -1.f) : g, sb);
    }
    return gr;
  }, {b.requires_grad() ? saved_a : Tensor(), a.requires_grad() ? saved_b : Tensor()});  // what backward reads
  return y;
}

Tensor affine(const char* op, const Tensor& a, float alpha, float beta) {
  detail::check_input(op, "input", a);
  if (detail::cpu_low_precision(a)) return cast(affine(op, cast(a, DType::F32), alpha, beta), a.dtype());
  Tensor y = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (a.device().is_cuda())
    VOLT_CUDA_ONLY(cuda::scale(detail::ft(a), a.numel(), a.raw_data(), alpha, beta, y.raw_data(), detail::stream_of(a)));
  else cpu::scale(a.numel(), a.data<float>(), alpha, beta, y.data<float>());
  autograd::record(op, y, {a}, [alpha](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{alpha == 1.f ? g : mul(g, alpha)};
  });
  return y;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary("add", cpu::BinaryOp::Add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary("sub", cpu::BinaryOp::Sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary("mul", cpu::BinaryOp::Mul, a, b); }
Tensor mul(const Tensor& a, float s) { return affine("mul", a, s, 0.f); }
Tensor add(const Tensor& a, float s) { return affine("add", a, 1.f, s); }

void add_(Tensor& a, const Tensor& b, float alpha) {
  detail::check_input("add_", "destination", a);
  detail::check_input("add_", "source", b);
  VOLT_CHECK(a.shape() == b.shape(), "add_: shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()), " differ");
  const Device dev = detail::common_device("add_", {{"destination", a}, {"source", b}});
  detail::common_dtype("add_", {{"destination", a}, {"source", b}});
  a.bump_version();
  if (detail::cpu_low_precision(a)) {
    Tensor acc = a.to(DType::F32);
    add_(acc, b.to(DType::F32), alpha);
    a.copy_(acc);
    return;
  }
  if (dev.is_cuda())
    VOLT_CUDA_ONLY(cuda::axpy(detail::ft(a), a.numel(), alpha, b.raw_data(), a.raw_data(), detail::stream_of(a)));
  else cpu::axpy(a.numel(), alpha, b.data<float>(), a.data<float>());
}

void add_int_(Tensor& counter, int64_t delta) {
  VOLT_CHECK(counter.defined() && counter.dtype() == DType::I64 && counter.numel() == 1,
             "add_int_: needs a one-element int64 tensor");
  counter.bump_version();
  if (counter.device().is_cuda())
    VOLT_CUDA_ONLY(cuda::add_i64(counter.data<int64_t>(), delta, detail::stream_of(counter)));
  else counter.data<int64_t>()[0] += delta;
}

}  // namespace volt
