// Shared argument checks (see check.h).
#include "engine/ops/check.h"

#include "engine/gpu.h"

namespace volt::detail {

void check_input(const char* op, const char* what, const Tensor& t, int64_t rank) {
  VOLT_CHECK(t.defined(), op, ": ", what, " is undefined");
  VOLT_CHECK(is_floating(t.dtype()), op, ": ", what, " must be float32, float16 or bfloat16, got ",
             dtype_name(t.dtype()), " (shape ", shape_str(t.shape()), ")");
  VOLT_CHECK(rank < 0 || t.dim() == rank, op, ": ", what, " must have ", rank, " dims, got shape ",
             shape_str(t.shape()));
  VOLT_CHECK(t.numel() > 0, op, ": ", what, " is empty (shape ", shape_str(t.shape()), ")");
  VOLT_CHECK(t.device().is_cpu() || VOLT_HAVE_CUDA, op, ": no kernel for device ", t.device().str(), " in this build");
}

void check_f32(const char* op, const char* what, const Tensor& t) {
  VOLT_CHECK(!t.defined() || t.dtype() == DType::F32, op, ": ", what, " must be float32 (parameters and statistics stay "
             "float32 under mixed precision), got ", dtype_name(t.dtype()), " (shape ", shape_str(t.shape()), ")");
}

DType common_dtype(const char* op, const std::vector<std::pair<const char*, Tensor>>& named) {
  const char* first_name = nullptr;
  DType d = DType::F32;
  for (const auto& [name, t] : named) {
    if (!t.defined()) continue;
    if (!first_name) {
      first_name = name;
      d = t.dtype();
      continue;
    }
    VOLT_CHECK(t.dtype() == d, op, ": ", name, " is ", dtype_name(t.dtype()), " but ", first_name, " is ",
               dtype_name(d), " (cast them to one type, or run the layer under volt::Autocast)");
  }
  return d;
}

Device common_device(const char* op, const std::vector<std::pair<const char*, Tensor>>& named) {
  const char* first_name = nullptr;
  Device d;
  for (const auto& [name, t] : named) {
    if (!t.defined()) continue;
    if (!first_name) {
      first_name = name;
      d = t.device();
      continue;
    }
    VOLT_CHECK(t.device() == d, op, ": ", first_name, " is on ", d.str(), " but ", name, " is on ", t.device().str());
  }
  return d;
}

Device common_device(const char* op, const std::vector<Tensor>& ts) {
  Device d;
  bool first = true;
  for (const Tensor& t : ts) {
    if (!t.defined()) continue;
    if (first) { d = t.device(); first = false; continue; }
    VOLT_CHECK(t.device() == d, op, ": tensors are on different devices (", d.str(), " and ", t.device().str(), ")");
  }
  return d;
}

int64_t wrap_dim(const char* op, int64_t dim, int64_t rank) {
  VOLT_CHECK(dim >= -rank && dim < rank, op, ": dim ", dim, " is out of range for a tensor with ", rank, " dims");
  return dim < 0 ? dim + rank : dim;
}

void* stream_of(const Tensor& t) { return cuda_stream(t.device()); }

void no_cuda_kernels() {
  VOLT_FAIL("no CUDA kernels in this build of Volt (configured with VOLT_CUDA=OFF or without the CUDA toolkit)");
}

}  // namespace volt::detail
