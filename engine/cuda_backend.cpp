// The CUDA backend behind backend_for(Device::cuda(i)): one caching allocator per device over
// cudaMalloc, copies and zeroing ordered on the device's stream, and the pinned host allocator.
// Built in every configuration; without CUDA the entry points report that the backend is missing.
#include "engine/gpu.h"

#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "engine/error.h"
#include "kernels/math_mode.h"
#include "volt/config.h"
#if VOLT_HAVE_CUDA
#include "kernels/conv2d.h"
#include "kernels/cuda/device_query.h"
#include "kernels/cuda/runtime.h"
#include "kernels/linear.h"
#endif

namespace volt {

#if VOLT_HAVE_CUDA

namespace {

class CudaRawMemory final : public RawMemory {
 public:
  explicit CudaRawMemory(int device) : device_(device) {}
  void* malloc(size_t bytes) override { return cuda::device_malloc(bytes, device_); }
  void free(void* p) override { cuda::device_free(p, device_); }
  void* current_stream() override { return cuda::default_stream(device_); }
  void synchronize() override { cuda::device_synchronize(device_); }

 private:
  int device_;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend() {
    const int n = cuda::device_count();
    for (int i = 0; i < n; ++i) {
      raw_.push_back(std::make_unique<CudaRawMemory>(i));
      alloc_.push_back(std::make_unique<CachingDeviceAllocator>(raw_.back().get(), "cuda:" + std::to_string(i)));
    }
  }
  const char* name() const override { return "cuda"; }
  CachingDeviceAllocator& caching(int i) {
    VOLT_CHECK(i >= 0 && i < int(alloc_.size()), "device cuda:", i, " is not available: ", alloc_.size(),
               " CUDA device(s) visible", alloc_.empty() ? " (no GPU or no driver on this machine)" : "");
    return *alloc_[size_t(i)];
  }
  Allocator& allocator(int i) override { return caching(i); }
  void copy_from_host(void* dst, const void* src, size_t n, int i) override {
    cuda::copy_h2d_sync(dst, src, n, stream(i));
  }
  void copy_to_host(void* dst, const void* src, size_t n, int i) override {
    cuda::copy_d2h_sync(dst, src, n, stream(i));
  }
  void copy_within(void* dst, const void* src, size_t n, int i) override {
    cuda::copy_d2d_async(dst, src, n, stream(i));
  }
  void zero(void* dst, size_t n, int i) override { cuda::memset_async(dst, 0, n, stream(i)); }
  void synchronize(int i) override { cuda::stream_synchronize(stream(i)); }
  void* stream(int i) {
    caching(i);  // range check with a clear message
    cuda::set_device(i);
    return cuda::default_stream(i);
  }
  int devices() const { return int(alloc_.size()); }

 private:
  std::vector<std::unique_ptr<CudaRawMemory>> raw_;
  std::vector<std::unique_ptr<CachingDeviceAllocator>> alloc_;
};

// Never destroyed: tensors held by static objects may be freed after main returns.
CudaBackend& cuda_backend() {
  static CudaBackend* b = new CudaBackend();
  return *b;
}

// Page-locked host memory for copies to and from the GPU, cached like ordinary host memory.
CachingHostAllocator& pinned() {
  static CachingHostAllocator* a = new CachingHostAllocator(
      {[](size_t bytes) { return cuda::pinned_malloc(bytes); }, [](void* p) { cuda::pinned_free(p); }, 4096});
  return *a;
}

}  // namespace

namespace detail {
void init_cuda_backend() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_backend(DeviceType::CUDA, &cuda_backend());
    // cuDNN's workspace, when the device is full, may take back what the cache holds.
    cuda::set_cache_release([](int device) { cuda_backend().caching(device).empty_cache(); });
  });
}
}  // namespace detail

void* cuda_stream(Device d) {
  VOLT_CHECK(d.is_cuda(), "cuda_stream: ", d.str(), " is not a CUDA device");
  detail::init_cuda_backend();
  return cuda_backend().stream(d.index);
}

void cuda_synchronize(int index) {
  detail::init_cuda_backend();
  cuda_backend().synchronize(index);
}

void* cuda_copy_stream(Device d) {
  cuda_stream(d);  // the device check, and d becomes the current device
  return cuda::copy_stream(d.index);
}

void cuda_copy_to_device_async(void* dst, const void* src, size_t bytes, void* stream) {
  cuda::copy_h2d_async(dst, src, bytes, stream);
}

std::string cuda_device_name(int index) { return cuda::device_name(index); }
double cuda_peak_memory_bandwidth(int index) { return cuda::peak_memory_bandwidth(index); }

void cuda_mem_info(int index, size_t* free_bytes, size_t* total_bytes) {
  cuda_stream(Device::cuda(index));
  cuda::mem_info(free_bytes, total_bytes);
}

CudaEvent::CudaEvent(int device) {
  cuda_stream(Device::cuda(device));
  event_ = cuda::event_create(device);
}
CudaEvent::~CudaEvent() {
  try {
    if (event_) cuda::event_destroy(event_);
  } catch (const Error&) {  // a destructor does not throw; a failing driver reports on the next call
  }
}
void CudaEvent::record(void* stream) { cuda::event_record(event_, stream); }
void CudaEvent::block(void* stream) const { cuda::stream_wait_event(stream, event_); }
void CudaEvent::synchronize() const { cuda::event_synchronize(event_); }

CachingDeviceAllocator& cuda_caching_allocator(int index) {
  detail::init_cuda_backend();
  return cuda_backend().caching(index);
}

DeviceAllocatorStats cuda_memory_stats(int index) {
  detail::init_cuda_backend();
  return cuda_backend().caching(index).stats();
}

void cuda_reset_peak_memory(int index) {
  detail::init_cuda_backend();
  cuda_backend().caching(index).reset_peak();
}

void cuda_empty_cache() {
  detail::init_cuda_backend();
  for (int i = 0; i < cuda_backend().devices(); ++i) cuda_backend().caching(i).empty_cache();
  pinned().empty_cache();
}

void cuda_set_conv_own_kernel(ConvOwnKernel mode) { cuda::set_conv2d_own_kernel(mode); }
void cuda_set_linear_fused_bias(bool on) { cuda::set_linear_fused_bias(on); }
bool cuda_linear_fused_bias() { return cuda::linear_fused_bias(); }

Allocator& pinned_host_allocator() { return pinned(); }
AllocatorStats pinned_memory_stats() { return pinned().stats(); }

#else  // no CUDA in this build

namespace {
[[noreturn]] void no_cuda(const char* what) {
  VOLT_FAIL(what, ": this build of Volt has no CUDA backend (configured with VOLT_CUDA=OFF or without the CUDA "
            "toolkit)");
}
}  // namespace

namespace detail {
void init_cuda_backend() {}
}  // namespace detail
void* cuda_stream(Device) { no_cuda("cuda_stream"); }
void cuda_synchronize(int) { no_cuda("cuda_synchronize"); }
void* cuda_copy_stream(Device) { no_cuda("cuda_copy_stream"); }
void cuda_copy_to_device_async(void*, const void*, size_t, void*) { no_cuda("cuda_copy_to_device_async"); }
std::string cuda_device_name(int) { no_cuda("cuda_device_name"); }
double cuda_peak_memory_bandwidth(int) { no_cuda("cuda_peak_memory_bandwidth"); }
void cuda_mem_info(int, size_t*, size_t*) { no_cuda("cuda_mem_info"); }
CudaEvent::CudaEvent(int) { no_cuda("CudaEvent"); }
CudaEvent::~CudaEvent() = default;
void CudaEvent::record(void*) { no_cuda("CudaEvent::record"); }
void CudaEvent::block(void*) const { no_cuda("CudaEvent::block"); }
void CudaEvent::synchronize() const { no_cuda("CudaEvent::synchronize"); }
CachingDeviceAllocator& cuda_caching_allocator(int) { no_cuda("cuda_caching_allocator"); }
DeviceAllocatorStats cuda_memory_stats(int) { return {}; }
void cuda_reset_peak_memory(int) {}
void cuda_empty_cache() {}
void cuda_set_conv_own_kernel(ConvOwnKernel) {}
void cuda_set_linear_fused_bias(bool) {}
bool cuda_linear_fused_bias() { return false; }
Allocator& pinned_host_allocator() { return host_allocator(); }
AllocatorStats pinned_memory_stats() { return {}; }

#endif

void set_float32_matmul_precision(const std::string& precision) {
  VOLT_CHECK(precision == "highest" || precision == "high", "float32 matmul precision '", precision,
             "': expected 'highest' (FP32 products) or 'high' (TF32 tensor-core products)");
  float32_tf32_allowed().store(precision == "high");
}

std::string float32_matmul_precision() { return float32_tf32_allowed().load() ? "high" : "highest"; }

}  // namespace volt
