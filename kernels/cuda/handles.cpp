// Per-device library handles (see handles.h). Handles are never destroyed: destroying them after the
// CUDA context is torn down at exit would fail.
#include "kernels/cuda/handles.h"

#include <mutex>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/runtime.h"

namespace volt::cuda {

namespace {
std::mutex g_mu;
}

cudnnHandle_t cudnn_handle(int device, cudaStream_t stream) {
  static std::vector<cudnnHandle_t> handles;
  std::lock_guard<std::mutex> lock(g_mu);
  if (handles.size() <= size_t(device)) handles.resize(size_t(device) + 1, nullptr);
  cudnnHandle_t& h = handles[size_t(device)];
  if (!h) CUDNN_CHECK(cudnnCreate(&h));
  CUDNN_CHECK(cudnnSetStream(h, stream));
  return h;
}

namespace {
struct Blas {
  cublasHandle_t h = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
};
// A workspace of its own, so neither library allocates inside a captured CUDA graph.
constexpr size_t kBlasWorkspace = size_t(32) << 20;

// The device's entry, its cuBLAS handle and workspace created (call with g_mu held). The entry is
// filled only once both exist, so a failure (a full device) is tried again at the next call.
Blas& blas(int device) {
  static std::vector<Blas> entries;
  if (entries.size() <= size_t(device)) entries.resize(size_t(device) + 1);
  Blas& e = entries[size_t(device)];
  if (!e.h) {
    CUDA_CHECK(cudaSetDevice(device));  // first: the handle belongs to the current device
    // As any device allocation: with the device full, the caching allocator gives its cache back once.
    void* workspace = device_malloc(kBlasWorkspace, device);
    if (!workspace) {
      release_cache(device);
      workspace = device_malloc(kBlasWorkspace, device);
    }
    VOLT_CHECK(workspace, "out of memory on cuda:", device, " allocating cuBLAS's workspace (", kBlasWorkspace >> 20,
               " MiB)");
    cublasHandle_t h = nullptr;
    cublasStatus_t st = cublasCreate(&h);
    // Plain fp32 (no TF32 tensor-core math unless a precision mode asks for it later).
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
    if (st != CUBLAS_STATUS_SUCCESS) {
      if (h) cublasDestroy(h);
      device_free(workspace, device);
      VOLT_FAIL("cuBLAS error: making the handle of cuda:", device, " failed: ", detail::cublas_status_string(st));
    }
    e.h = h;
    e.workspace = workspace;
  }
  return e;
}
}  // namespace

cublasHandle_t cublas_handle(int device, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(g_mu);
  Blas& e = blas(device);
  // cublasSetStream resets the handle to cuBLAS's default pool, so the workspace is set again after it.
  CUBLAS_CHECK(cublasSetStream(e.h, stream));
  CUBLAS_CHECK(cublasSetWorkspace(e.h, e.workspace, kBlasWorkspace));
  return e.h;
}

cublasLtHandle_t cublaslt_handle(int device) {
  std::lock_guard<std::mutex> lock(g_mu);
  Blas& e = blas(device);
  if (!e.lt) CUBLAS_CHECK(cublasLtCreate(&e.lt));
  return e.lt;
}

BlasWorkspace blas_workspace(int device) {
  std::lock_guard<std::mutex> lock(g_mu);
  return {blas(device).workspace, kBlasWorkspace};
}

}  // namespace volt::cuda
