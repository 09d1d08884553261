// Tensor factories, views, conversions and element access (see tensor.h).
#include "engine/tensor.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/cuda_graph.h"
#include "engine/error.h"
#include "engine/gpu.h"
#include "volt/config.h"
#if VOLT_HAVE_CUDA
#include "kernels/elementwise.h"
#endif

namespace volt {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

static void check_shape(const Shape& s) {
  // The product of the non-zero sizes: a 0 in front must not let [0, 2^62, 2^62] through, whose
  // views (flatten, reshape) would multiply the others and overflow.
  int64_t n = 1;
  for (int64_t d : s) {
    VOLT_CHECK(d >= 0, "tensor shape ", shape_str(s), " has a negative size");
    VOLT_CHECK(d == 0 || n <= (int64_t(1) << 48) / d, "tensor shape ", shape_str(s), " is too large");
    if (d != 0) n *= d;
  }
}

Storage::Storage(size_t nbytes, Device dev) : bytes(nbytes), device(dev) {
  allocator = &backend_for(dev).allocator(dev.index);
  data = allocator->allocate(nbytes);
}

Storage::Storage(size_t nbytes, Device dev, Allocator& alloc) : bytes(nbytes), device(dev), allocator(&alloc) {
  data = allocator->allocate(nbytes);
}

Storage::~Storage() { allocator->deallocate(data, bytes); }

void Tensor::check_defined(const char* what) const {
  VOLT_CHECK(impl_ != nullptr, what, ": the tensor is undefined (default-constructed)");
}

const Shape& Tensor::shape() const { check_defined("shape"); return impl_->shape; }
DType Tensor::dtype() const { check_defined("dtype"); return impl_->dtype; }
Device Tensor::device() const { check_defined("device"); return impl_->storage->device; }

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  VOLT_CHECK(d >= -n && d < n, "size: dim ", d, " is out of range for shape ", shape_str(shape()));
  return shape()[size_t(d < 0 ? d + n : d)];
}

void* Tensor::raw_data() const {
  check_defined("data");
  return static_cast<char*>(impl_->storage->data) + impl_->offset * int64_t(dtype_size(impl_->dtype));
}

void check_dtype_access(const Tensor& t, DType want) {
  DType have = t.dtype();
  bool ok = have == want || (want == DType::F16 && have == DType::BF16);
  VOLT_CHECK(ok, "data: tensor holds ", dtype_name(have), ", not ", dtype_name(want));
}

bool Tensor::same_storage(const Tensor& o) const {
  return defined() && o.defined() && impl_->storage == o.impl_->storage;
}

// ---- factories ----
Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  check_shape(shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::empty_pinned(const Shape& shape, DType dtype) {
  check_shape(shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(dtype), Device::cpu(),
                                            pinned_host_allocator());
  impl->shape = shape;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  backend_for(device).zero(t.raw_data(), t.nbytes(), device.index);
  return t;
}

Tensor Tensor::full(const Shape& shape, float value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.f, dtype, device); }

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values, Device device) {
  check_shape(shape);
  VOLT_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
             " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, DType::F32, device);
  backend_for(device).copy_from_host(t.raw_data(), values.data(), t.nbytes(), device.index);
  return t;
}

Tensor Tensor::from_labels(const std::vector<int64_t>& labels, Device device) {
  Tensor t = empty({int64_t(labels.size())}, DType::I64, device);
  backend_for(device).copy_from_host(t.raw_data(), labels.data(), t.nbytes(), device.index);
  return t;
}

Tensor Tensor::scalar(float value, Device device) { return full({}, value, DType::F32, device); }

// ---- conversions between dtypes on the host ----
static float load_as_float(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::F16: return half_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::BF16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::I64: return float(static_cast<const int64_t*>(p)[i]);
    case DType::I32: return float(static_cast<const int32_t*>(p)[i]);
    case DType::U8: return float(static_cast<const uint8_t*>(p)[i]);
  }
  return 0.f;
}

// float -> integer as x86's truncating conversion does (what PyTorch gives there): NaN and values out
// of the type's range become its lowest value ("integer indefinite"), where a C++ cast is undefined;
// uint8 wraps through int64, as PyTorch's.
template <class I>
static I truncate_to(float v) {
  constexpr double lo = double(std::numeric_limits<I>::min()), hi = -lo;  // 2^63, 2^31
  return v >= lo && double(v) < hi ? I(v) : std::numeric_limits<I>::min();
}

static void store_from_float(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::F32: static_cast<float*>(p)[i] = v; break;
    case DType::F16: static_cast<uint16_t*>(p)[i] = float_to_half(v); break;
    case DType::BF16: static_cast<uint16_t*>(p)[i] = float_to_bf16(v); break;
    case DType::I64: static_cast<int64_t*>(p)[i] = truncate_to<int64_t>(v); break;
    case DType::I32: static_cast<int32_t*>(p)[i] = truncate_to<int32_t>(v); break;
    case DType::U8: static_cast<uint8_t*>(p)[i] = uint8_t(truncate_to<int64_t>(v)); break;
  }
}

static bool is_integer(DType t) { return t == DType::I64 || t == DType::I32 || t == DType::U8; }

// y[i] = f(x[i]) for i < n, in parallel chunks when n is large (each element on its own: the result does
// not depend on the thread count).
template <class To, class From, class F>
static void convert_each(To* y, const From* x, int64_t n, F f) {
#pragma omp parallel for schedule(static) if (n >= (int64_t(1) << 16))
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

// float32 <-> float16/bfloat16; false for other pairs.
static bool convert_floating(void* dst, DType dt, const void* src, DType st, int64_t n) {
  auto* y16 = static_cast<uint16_t*>(dst);
  auto* y32 = static_cast<float*>(dst);
  const auto* x16 = static_cast<const uint16_t*>(src);
  const auto* x32 = static_cast<const float*>(src);
  if (st == DType::F32 && dt == DType::F16) convert_each(y16, x32, n, [](float v) { return float_to_half(v); });
  else if (st == DType::F32 && dt == DType::BF16) convert_each(y16, x32, n, [](float v) { return float_to_bf16(v); });
  else if (st == DType::F16 && dt == DType::F32) convert_each(y32, x16, n, [](uint16_t v) { return half_to_float(v); });
  else if (st == DType::BF16 && dt == DType::F32) convert_each(y32, x16, n, [](uint16_t v) { return bf16_to_float(v); });
  else return false;
  return true;
}

// Converts n elements between host buffers. Integer -> integer goes through int64 (exact).
static void convert_host(void* dst, DType dt, const void* src, DType st, int64_t n) {
  if (dt == st) { std::memcpy(dst, src, size_t(n) * dtype_size(dt)); return; }
  if (is_integer(dt) && is_integer(st)) {
    for (int64_t i = 0; i < n; ++i) {
      int64_t v = st == DType::I64 ? static_cast<const int64_t*>(src)[i]
                : st == DType::I32 ? static_cast<const int32_t*>(src)[i]
                                   : static_cast<const uint8_t*>(src)[i];
      if (dt == DType::I64) static_cast<int64_t*>(dst)[i] = v;
      else if (dt == DType::I32) static_cast<int32_t*>(dst)[i] = int32_t(v);
      else static_cast<uint8_t*>(dst)[i] = uint8_t(v);
    }
    return;
  }
  // The floating pairs (mixed precision's casts on the CPU, every step): typed loops over inline
  // conversions, shared out over the threads when large.
  if (convert_floating(dst, dt, src, st, n)) return;
  for (int64_t i = 0; i < n; ++i) store_from_float(dst, dt, i, load_as_float(src, st, i));
}

static void require_cpu(const Tensor& t, const char* what) {
  VOLT_CHECK(t.device().is_cpu(), what, ": needs a cpu tensor, got one on ", t.device().str(),
             " (copy it with .to(Device::cpu()) first)");
}

static int64_t flat_index(const Tensor& t, std::initializer_list<int64_t> index) {
  const Shape& s = t.shape();
  VOLT_CHECK(index.size() == s.size(), "at: ", index.size(), " indices for a tensor of shape ", shape_str(s));
  int64_t flat = 0;
  size_t d = 0;
  for (int64_t i : index) {
    VOLT_CHECK(i >= 0 && i < s[d], "at: index ", i, " is out of range for dim ", d, " of shape ", shape_str(s));
    flat = flat * s[d] + i;
    ++d;
  }
  return flat;
}

float Tensor::at(std::initializer_list<int64_t> index) const {
  require_cpu(*this, "at");
  return load_as_float(raw_data(), dtype(), flat_index(*this, index));
}

void Tensor::set(std::initializer_list<int64_t> index, float value) {
  require_cpu(*this, "set");
  bump_version();
  store_from_float(raw_data(), dtype(), flat_index(*this, index), value);
}

float Tensor::item() const {
  VOLT_CHECK(numel() == 1, "item: tensor of shape ", shape_str(shape()), " has ", numel(), " elements, not 1");
  if (!device().is_cpu()) return to(Device::cpu()).item();
  return load_as_float(raw_data(), dtype(), 0);
}

std::vector<float> Tensor::to_vector() const {
  if (!device().is_cpu()) return to(Device::cpu()).to_vector();
  std::vector<float> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) out[size_t(i)] = load_as_float(raw_data(), dtype(), i);
  return out;
}

std::vector<int64_t> Tensor::to_int_vector() const {
  Tensor t = to(DType::I64).to(Device::cpu());
  const int64_t* p = t.data<int64_t>();
  return std::vector<int64_t>(p, p + numel());
}

// ---- views ----
static Tensor make_view(const Tensor& src, Shape shape, int64_t extra_offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = src.impl()->storage;
  impl->offset = src.impl()->offset + extra_offset;
  impl->shape = std::move(shape);
  impl->dtype = src.impl()->dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::reshape(const Shape& new_shape) const {
  check_defined("reshape");
  Shape s = new_shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      VOLT_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(new_shape));
      infer = int64_t(i);
    } else {
      VOLT_CHECK(s[i] >= 0, "reshape: negative size in ", shape_str(new_shape));
      // (bounded so that the product cannot overflow int64)
      VOLT_CHECK(s[i] == 0 || known <= (int64_t(1) << 62) / s[i], "reshape: cannot reshape ", shape_str(shape()),
                 " (", numel(), " elements) into ", shape_str(new_shape));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    VOLT_CHECK(known > 0 && numel() % known == 0, "reshape: cannot reshape ", shape_str(shape()),
               " (", numel(), " elements) into ", shape_str(new_shape));
    s[size_t(infer)] = numel() / known;
  }
  VOLT_CHECK(shape_numel(s) == numel(), "reshape: cannot reshape ", shape_str(shape()), " (", numel(),
             " elements) into ", shape_str(new_shape));
  Tensor out = make_view(*this, s, 0);
  Shape in_shape = shape();
  autograd::record("reshape", out, {*this}, [in_shape](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{g.reshape(in_shape)};
  });
  return out;
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  int64_t n = dim();
  if (n == 0) return reshape({1});
  if (start_dim < 0) start_dim += n;
  if (end_dim < 0) end_dim += n;
  VOLT_CHECK(start_dim >= 0 && start_dim < n && end_dim >= start_dim && end_dim < n, "flatten: dims [",
             start_dim, ", ", end_dim, "] are out of range for shape ", shape_str(shape()));
  Shape s;
  for (int64_t i = 0; i < start_dim; ++i) s.push_back(shape()[size_t(i)]);
  int64_t m = 1;
  for (int64_t i = start_dim; i <= end_dim; ++i) m *= shape()[size_t(i)];
  s.push_back(m);
  for (int64_t i = end_dim + 1; i < n; ++i) s.push_back(shape()[size_t(i)]);
  return reshape(s);
}

Tensor Tensor::narrow(int64_t start, int64_t length) const {
  check_defined("narrow");
  VOLT_CHECK(dim() >= 1, "narrow: needs at least one dim, got shape ", shape_str(shape()));
  // (length <= rows - start: start + length could overflow and pass)
  VOLT_CHECK(start >= 0 && length >= 0 && start <= shape()[0] && length <= shape()[0] - start, "narrow: ", length,
             " rows from row ", start, " are out of range for shape ", shape_str(shape()));
  Shape s = shape();
  s[0] = length;
  const int64_t row = numel() / std::max<int64_t>(shape()[0], 1);
  Tensor out = make_view(*this, s, start * row);
  Shape in_shape = shape();
  autograd::record("narrow", out, {*this}, [in_shape, start, length, row](const Tensor& g, const std::vector<bool>&) {
    Tensor gi = Tensor::zeros(in_shape, g.dtype(), g.device());
    backend_for(g.device()).copy_within(static_cast<char*>(gi.raw_data()) + size_t(start * row) * dtype_size(g.dtype()), g.raw_data(),
                                        size_t(length * row) * dtype_size(g.dtype()), g.device().index);
    return std::vector<Tensor>{gi};
  });
  return out;
}

// ---- copies ----
Tensor Tensor::detach() const {
  check_defined("detach");
  return make_view(*this, shape(), 0);
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  backend_for(device()).copy_within(out.raw_data(), raw_data(), nbytes(), device().index);
  return out;
}

Tensor Tensor::to(DType dt) const {
  check_defined("to");
  if (dt == dtype()) return *this;
#if VOLT_HAVE_CUDA
  if (device().is_cuda() && is_floating(dt) && is_floating(dtype())) {  // on the device: one cast kernel
    Tensor out = empty(shape(), dt, device());
    cuda::cast(ftype_of(dtype()), ftype_of(dt), numel(), raw_data(), out.raw_data(), cuda_stream(device()));
    return out;
  }
#endif
  // Other conversions run on the host; a device tensor makes the round trip (fine outside the hot path).
  if (!device().is_cpu()) return to(Device::cpu()).to(dt).to(device());
  Tensor out = empty(shape(), dt, device());
  convert_host(out.raw_data(), dt, raw_data(), dtype(), numel());
  return out;
}

Tensor Tensor::to(Device dev) const {
  check_defined("to");
  if (dev == device()) return *this;
  Tensor out = empty(shape(), dtype(), dev);
  if (device().is_cpu()) backend_for(dev).copy_from_host(out.raw_data(), raw_data(), nbytes(), dev.index);
  else if (dev.is_cpu()) backend_for(device()).copy_to_host(out.raw_data(), raw_data(), nbytes(), device().index);
  else return to(Device::cpu()).to(dev);
  return out;
}

void Tensor::copy_(const Tensor& src) {
  check_defined("copy_");
  VOLT_CHECK(src.defined(), "copy_: source tensor is undefined");
  VOLT_CHECK(src.shape() == shape(), "copy_: source shape ", shape_str(src.shape()), " does not match ",
             shape_str(shape()));
  if (same_storage(src) && impl_->offset == src.impl()->offset && dtype() == src.dtype()) return;
  bump_version();
  if (same_storage(src) && device().is_cuda()) {
    // Overlapping views of one buffer: cudaMemcpy's result is undefined there (the host's memmove
    // is not), so the source goes through a copy of its own first.
    const auto* a = static_cast<const char*>(raw_data());
    const auto* b = static_cast<const char*>(src.raw_data());
    if (a < b + src.nbytes() && b < a + nbytes()) {
      Tensor tmp = empty(src.shape(), src.dtype(), src.device());
      tmp.copy_(src);
      copy_(tmp);
      return;
    }
  }
  if (dtype() == src.dtype()) {
    if (device() == src.device()) {
      backend_for(device()).copy_within(raw_data(), src.raw_data(), nbytes(), device().index);
    } else if (src.device().is_cpu()) {
      backend_for(device()).copy_from_host(raw_data(), src.raw_data(), nbytes(), device().index);
    } else {
      Tensor host = src.to(Device::cpu());
      copy_(host);
    }
    return;
  }
  if (device() == src.device() && device().is_cuda() && is_floating(dtype()) && is_floating(src.dtype())) {
    copy_(src.to(dtype()));  // the cast kernel, then a device copy
    return;
  }
  Tensor host_src = src.to(Device::cpu());
  if (device().is_cpu()) {
    convert_host(raw_data(), dtype(), host_src.raw_data(), host_src.dtype(), numel());
  } else {
    copy_(host_src.to(dtype()));
  }
}

uint64_t Tensor::version() const {
  check_defined("version");
  return impl_->storage->version;
}

void Tensor::bump_version() const {
  check_defined("bump_version");
  ++impl_->storage->version;
  cuda_graph_note_write(impl_->storage);
}

void Tensor::fill_(float value) {
  check_defined("fill_");
  bump_version();
  if (!device().is_cpu()) {
#if VOLT_HAVE_CUDA
    if (is_floating(dtype()) && device().is_cuda()) {
      cuda::fill(ftype_of(dtype()), numel(), value, raw_data(), cuda_stream(device()));
      return;
    }
#endif
    copy_(full(shape(), value, dtype(), Device::cpu()));
    return;
  }
  void* p = raw_data();
  const int64_t n = numel();
  if (dtype() == DType::F32) {
    float* f = static_cast<float*>(p);
    for (int64_t i = 0; i < n; ++i) f[i] = value;
  } else {
    for (int64_t i = 0; i < n; ++i) store_from_float(p, dtype(), i, value);
  }
}

// ---- autograd fields ----
bool Tensor::requires_grad() const {
  check_defined("requires_grad");
  return impl_->requires_grad || impl_->grad_fn != nullptr;
}

Tensor& Tensor::requires_grad_(bool value) {
  check_defined("requires_grad_");
  VOLT_CHECK(is_leaf(), "requires_grad_: only leaf tensors can change requires_grad (use detach() first)");
  VOLT_CHECK(!value || dtype() == DType::F32 || dtype() == DType::F16 || dtype() == DType::BF16,
             "requires_grad_: only floating-point tensors can require gradients, not ", dtype_name(dtype()));
  impl_->requires_grad = value;
  return *this;
}

bool Tensor::is_leaf() const { check_defined("is_leaf"); return impl_->grad_fn == nullptr; }

Tensor Tensor::grad() const {
  check_defined("grad");
  return Tensor(impl_->grad);
}

void Tensor::set_grad(const Tensor& g) {
  check_defined("set_grad");
  VOLT_CHECK(!g.defined() || g.shape() == shape(), "set_grad: gradient shape ", g.defined() ? shape_str(g.shape()) : "",
             " does not match tensor shape ", shape_str(shape()));
  impl_->grad = g.impl_ptr();
}

const std::shared_ptr<Node>& Tensor::grad_fn() const { check_defined("grad_fn"); return impl_->grad_fn; }

void Tensor::backward() const { autograd::backward(*this, Tensor()); }
void Tensor::backward(const Tensor& grad) const { autograd::backward(*this, grad); }

// ---- printing ----
static void print_rec(std::ostream& os, const std::vector<float>& v, const Shape& s, size_t d, int64_t& pos, int indent) {
  const int64_t n = s[d];
  const int64_t edge = 3;
  const bool elide = n > 2 * edge + 1;
  int64_t inner = 1;
  for (size_t k = d + 1; k < s.size(); ++k) inner *= s[k];
  os << "[";
  for (int64_t i = 0; i < n; ++i) {
    if (elide && i == edge) {
      os << (d + 1 == s.size() ? "..., " : "...,\n" + std::string(size_t(indent + 1), ' '));
      pos += (n - 2 * edge) * inner;
      i = n - edge - 1;
      continue;
    }
    if (d + 1 == s.size()) {
      os << v[size_t(pos++)];
      if (i + 1 < n) os << ", ";
    } else {
      print_rec(os, v, s, d + 1, pos, indent + 1);
      if (i + 1 < n) os << ",\n" << std::string(size_t(indent + 1), ' ');
    }
  }
  os << "]";
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "tensor(undefined)";
  std::vector<float> v = t.to_vector();
  os << "tensor(";
  if (t.dim() == 0) {
    os << v[0];
  } else if (t.numel() == 0) {
    os << "[]";
  } else {
    int64_t pos = 0;
    print_rec(os, v, t.shape(), 0, pos, 7);
  }
  os << ", shape=" << shape_str(t.shape()) << ", dtype=" << dtype_name(t.dtype()) << ", device=" << t.device().str();
  if (t.requires_grad()) os << ", requires_grad";
  return os << ")";
}

}  // namespace volt
