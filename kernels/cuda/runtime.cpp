// CUDA runtime wrappers (see runtime.h) and the cuBLAS status strings for CUBLAS_CHECK.
#include "kernels/cuda/runtime.h"

#include <mutex>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device_query.h"

namespace volt::cuda {

namespace detail {
const char* cublas_status_string(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}
}  // namespace detail

void set_device(int device) { CUDA_CHECK(cudaSetDevice(device)); }

int current_device() {
  int d = 0;
  CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

namespace {
// One non-blocking stream per device from `streams`, created on first use; never destroyed: tensors
// may be freed after main returns.
void* stream_of_device(std::vector<cudaStream_t>& streams, int device) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (streams.empty()) {
    const int n = device_count();
    VOLT_CHECK(n > 0, "CUDA: no CUDA device is visible (no GPU, no driver, or CUDA_VISIBLE_DEVICES is empty)");
    streams.assign(size_t(n), nullptr);
  }
  VOLT_CHECK(device >= 0 && device < int(streams.size()), "CUDA: device cuda:", device, " does not exist (",
             streams.size(), " visible)");
  if (!streams[size_t(device)]) {
    // The stream belongs to `device`, which stays current: switching back to the previous device
    // (0 by default) would create a context there too, costing memory on a GPU this process does not use.
    CUDA_CHECK(cudaSetDevice(device));
    cudaStream_t s = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    streams[size_t(device)] = s;
  }
  return streams[size_t(device)];
}
}  // namespace

void* default_stream(int device) {
  static std::vector<cudaStream_t> streams;
  return stream_of_device(streams, device);
}

void* copy_stream(int device) {
  static std::vector<cudaStream_t> streams;
  return stream_of_device(streams, device);
}

void* device_malloc(size_t bytes, int device) {
  CUDA_CHECK(cudaSetDevice(device));
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    return nullptr;
  }
  CUDA_CHECK(e);
  return p;
}

namespace {
void (*g_cache_release)(int) = nullptr;
}
void set_cache_release(void (*release)(int device)) { g_cache_release = release; }
void release_cache(int device) {
  if (g_cache_release) g_cache_release(device);
}

void device_free(void* ptr, int device) {
  CUDA_CHECK(cudaSetDevice(device));
  CUDA_CHECK(cudaFree(ptr));
}

void* pinned_malloc(size_t bytes) {
  void* p = nullptr;
  const cudaError_t e = cudaHostAlloc(&p, bytes, cudaHostAllocPortable);  // pinned for every device, any thread
  if (e == cudaErrorMemoryAllocation) {  // the caller frees its cache and tries again
    (void)cudaGetLastError();
    return nullptr;
  }
  CUDA_CHECK(e);
  return p;
}

void pinned_free(void* ptr) { CUDA_CHECK(cudaFreeHost(ptr)); }

void copy_h2d_sync(void* dst, const void* src, size_t bytes, void* stream) {
  if (!bytes) return;
  auto s = static_cast<cudaStream_t>(stream);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void copy_d2h_sync(void* dst, const void* src, size_t bytes, void* stream) {
  if (!bytes) return;
  auto s = static_cast<cudaStream_t>(stream);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void copy_d2d_async(void* dst, const void* src, size_t bytes, void* stream) {
  if (!bytes || dst == src) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream)));
}

void copy_h2d_async(void* dst, const void* src, size_t bytes, void* stream) {
  if (!bytes) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)));
}

void memset_async(void* dst, int value, size_t bytes, void* stream) {
  if (!bytes) return;
  CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, static_cast<cudaStream_t>(stream)));
}

void stream_synchronize(void* stream) { CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream))); }

void device_synchronize(int device) {
  CUDA_CHECK(cudaSetDevice(device));
  CUDA_CHECK(cudaDeviceSynchronize());
}

void mem_info(size_t* free_bytes, size_t* total_bytes) { CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes)); }

void* event_create(int device) {
  CUDA_CHECK(cudaSetDevice(device));
  cudaEvent_t e = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

void event_destroy(void* event) { CUDA_CHECK(cudaEventDestroy(static_cast<cudaEvent_t>(event))); }

void event_record(void* event, void* stream) {
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)));
}

void stream_wait_event(void* stream, void* event) {
  CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event), 0));
}

void event_synchronize(void* event) { CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event))); }

void graph_capture_begin(void* stream) {
  CUDA_CHECK(cudaStreamBeginCapture(static_cast<cudaStream_t>(stream), cudaStreamCaptureModeRelaxed));
}

void* graph_capture_end(void* stream, size_t* nodes) {
  cudaGraph_t graph = nullptr;
  const cudaError_t e = cudaStreamEndCapture(static_cast<cudaStream_t>(stream), &graph);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    if (graph) (void)cudaGraphDestroy(graph);
    VOLT_FAIL("CUDA graph capture failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e),
              "): the step did something a graph cannot hold");
  }
  if (nodes) {
    *nodes = 0;
    const cudaError_t ne = cudaGraphGetNodes(graph, nullptr, nodes);
    if (ne != cudaSuccess) {
      (void)cudaGraphDestroy(graph);
      CUDA_CHECK(ne);
    }
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t ie = cudaGraphInstantiateWithFlags(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);
  CUDA_CHECK(ie);
  return exec;
}

void graph_capture_abandon(void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s, &st) != cudaSuccess || st == cudaStreamCaptureStatusNone) {
    (void)cudaGetLastError();
    return;
  }
  cudaGraph_t graph = nullptr;
  (void)cudaStreamEndCapture(s, &graph);
  if (graph) (void)cudaGraphDestroy(graph);
  (void)cudaGetLastError();
}

bool stream_capturing(void* stream) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(static_cast<cudaStream_t>(stream), &st));
  return st != cudaStreamCaptureStatusNone;
}

void graph_launch(void* exec, void* stream) {
  CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), static_cast<cudaStream_t>(stream)));
}

void graph_destroy(void* exec) {
  if (exec) CUDA_CHECK(cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec)));
}

}  // namespace volt::cuda
