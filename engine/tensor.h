// Tensor: a shared handle to contiguous row-major (NCHW) storage with a shape, dtype and device,
// plus the autograd fields (requires_grad, grad, grad_fn). Views (reshape, flatten, narrow on
// dim 0) share storage. All public; no CUDA headers.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "device.h"
#include "dtype.h"

namespace volt {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[8, 3, 32, 32]"
int64_t shape_numel(const Shape& s);

class Allocator;
class Node;

// Owns one allocation on one device.
struct Storage {
  Storage(size_t bytes, Device device);
  Storage(size_t bytes, Device device, Allocator& allocator);  // from a given allocator (pinned host memory)
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data = nullptr;
  size_t bytes = 0;
  Device device;
  Allocator* allocator = nullptr;
  // Counts in-place changes (Tensor::bump_version) to any view of this memory: autograd checks that
  // a tensor an op saved for its backward is unchanged when that backward runs.
  uint64_t version = 0;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape;
  DType dtype = DType::F32;
  bool requires_grad = false;          // leaf flag set by the user
  std::shared_ptr<TensorImpl> grad;    // accumulated gradient (leaves)
  std::shared_ptr<Node> grad_fn;       // set on op outputs that need a gradient
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Factories. Shapes must be non-negative; a bad shape throws volt::Error.
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  // A CPU tensor in page-locked memory, so that copies to a GPU can be asynchronous (engine/gpu.h);
  // ordinary host memory in a build without CUDA.
  static Tensor empty_pinned(const Shape& shape, DType dtype = DType::F32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, float value, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values, Device device = Device::cpu());
  static Tensor from_labels(const std::vector<int64_t>& labels, Device device = Device::cpu());  // int64 [N]
  static Tensor scalar(float value, Device device = Device::cpu());                             // shape []

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return int64_t(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(shape()); }
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype()); }

  // Typed pointer to the first element; throws if T does not match dtype().
  template <class T> T* data() const;
  void* raw_data() const;

  // Element access for tests and small tools (CPU only; converts f16/bf16/int to float).
  float at(std::initializer_list<int64_t> index) const;
  void set(std::initializer_list<int64_t> index, float value);
  float item() const;                     // one-element tensors
  std::vector<float> to_vector() const;   // all elements as float
  std::vector<int64_t> to_int_vector() const;

  // Views that share storage.
  Tensor reshape(const Shape& shape) const;  // one dim may be -1
  Tensor view(const Shape& shape) const { return reshape(shape); }
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor narrow(int64_t start, int64_t length) const;  // rows [start, start+length) of dim 0

  // Copies.
  Tensor detach() const;  // shares storage, no autograd history
  Tensor clone() const;   // new storage, no autograd history
  // Converted or moved copies, outside autograd as clone() (unlike PyTorch's .to): the result has no
  // history; the same type or device returns this tensor itself. cast() (engine/ops.h) is the
  // differentiable conversion between floating types.
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  void copy_(const Tensor& src);  // same shape; converts dtype; not recorded by autograd
  void fill_(float value);
  void zero_() { fill_(0.f); }
  // The in-place change count of this tensor's memory (shared by its views). copy_, fill_, set, add_,
  // add_int_ and the optimizers' steps count theirs; code that changes a tensor in place through
  // raw_data() or a kernel of its own calls bump_version(), so that a backward that needs the old
  // values says so instead of computing wrong gradients.
  uint64_t version() const;
  void bump_version() const;

  // Autograd.
  bool requires_grad() const;
  Tensor& requires_grad_(bool value = true);
  bool is_leaf() const;
  Tensor grad() const;
  void set_grad(const Tensor& g);
  const std::shared_ptr<Node>& grad_fn() const;
  void backward() const;                     // from a one-element loss
  void backward(const Tensor& grad) const;   // with an explicit output gradient

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same_storage(const Tensor& o) const;

 private:
  void check_defined(const char* what) const;
  std::shared_ptr<TensorImpl> impl_;
};

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::I64; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::I32; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::U8; };
template <> struct dtype_of<uint16_t> { static constexpr DType value = DType::F16; };  // f16 or bf16 bits

void check_dtype_access(const Tensor& t, DType want);

template <class T> T* Tensor::data() const {
  check_dtype_access(*this, dtype_of<T>::value);
  return static_cast<T*>(raw_data());
}

std::ostream& operator<<(std::ostream& os, const Tensor& t);

}  // namespace volt
