// The CUDA backend as engine/ sees it: the current stream of a device, the copy stream and events
// that let host-to-device copies overlap it, the caching allocator's statistics and cache, the pinned
// host allocator for staging. No CUDA headers: a stream is a cudaStream_t passed as void*. In a build
// without CUDA these throw volt::Error (stats are zeros).
#pragma once
#include <string>

#include "allocator.h"
#include "device.h"
#include "device_allocator.h"
#include "../kernels/conv2d.h"

namespace volt {

// The stream Volt's work on `d` (a CUDA device) is ordered on; also makes `d` the current device.
void* cuda_stream(Device d);
// Waits for all queued work on cuda:index.
void cuda_synchronize(int index = 0);
// A second stream of `d` for host-to-device copies that run while cuda_stream(d) computes.
void* cuda_copy_stream(Device d);
// Queues a host-to-device copy on `stream` and returns at once. Asynchronous for the host only from
// pinned memory, which must stay untouched until the copy completed (a CudaEvent recorded after it).
void cuda_copy_to_device_async(void* dst, const void* src, size_t bytes, void* stream);
// cuda:index's name ("NVIDIA H100 80GB HBM3") and theoretical memory bandwidth in bytes/s (0 when
// the driver does not say), for benchmarks' fractions of peak.
std::string cuda_device_name(int index);
double cuda_peak_memory_bandwidth(int index);
// Bytes free and in total on cuda:index (what the driver reports; the caching allocator's cache counts as used).
void cuda_mem_info(int index, size_t* free_bytes, size_t* total_bytes);

// An event on a CUDA device (no timing): record() marks the work queued on a stream so far;
// block(stream) makes another stream wait for it without the host waiting; synchronize() waits
// for it on the host. Move-only.
class CudaEvent {
 public:
  explicit CudaEvent(int device);
  ~CudaEvent();
  CudaEvent(CudaEvent&& o) noexcept : event_(o.event_) { o.event_ = nullptr; }
  CudaEvent& operator=(CudaEvent&&) = delete;
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  void record(void* stream);
  void block(void* stream) const;
  void synchronize() const;

 private:
  void* event_ = nullptr;
};
// The caching allocator of cuda:index: stats, peak reset, and giving cached blocks back to the driver.
CachingDeviceAllocator& cuda_caching_allocator(int index);
DeviceAllocatorStats cuda_memory_stats(int index = 0);
void cuda_reset_peak_memory(int index = 0);
void cuda_empty_cache();  // every device, and the pinned host cache

// Which forward kernel a 16-bit convolution with a small reduction (C*R*S <= 96, e.g. a first layer on
// RGB images) runs: Auto (the default: Volt's own tensor-core kernel with the bias fused, or under
// VOLT_CUDNN_FIND=1 the faster of it and cuDNN, timed once per shape), Never (cuDNN) or Always.
// Overrides the VOLT_CONV_OWN variable (0 = Never, 1 = Always), for tests and benchmarks that time
// or check both. Does nothing in a build without CUDA.
void cuda_set_conv_own_kernel(ConvOwnKernel mode);

// Whether the linear layer on a GPU adds its bias in the epilogue of cuBLASLt's GEMM, and sums the bias
// gradient in that of the weight-gradient GEMM (true: the default, one launch each instead of two), or
// in separate kernels after cuBLAS's GEMMs (false, as VOLT_LINEAR_LT=0). A product cuBLASLt has no
// algorithm for takes the second way either way. Overrides the variable, for tests and benchmarks that
// check or time both; the getter says what is in force (false in a build without CUDA).
void cuda_set_linear_fused_bias(bool on);
bool cuda_linear_fused_bias();

// float32 math on the GPU, as PyTorch's torch.set_float32_matmul_precision: "highest" (the default:
// plain FP32 products in convolutions and matrix products) or "high" (TF32 tensor-core products with
// float32 sums: faster, with products rounded to a 10-bit mantissa). Anything else is a volt::Error
// naming the choices. Process-wide; convolution plans are kept per setting. The CPU backend always
// computes in FP32, so in a build without CUDA the setting is only recorded.
void set_float32_matmul_precision(const std::string& precision);
std::string float32_matmul_precision();

// Page-locked host memory with per-size caching, for staging host<->device copies. A block must not
// be freed while an asynchronous copy still reads or writes it.
Allocator& pinned_host_allocator();
AllocatorStats pinned_memory_stats();

namespace detail {
// Registers the CUDA backend (idempotent, thread-safe). backend_for(cuda) calls it, so linking the
// static library never loses the registration to dead-stripping.
void init_cuda_backend();
}  // namespace detail

}  // namespace volt
