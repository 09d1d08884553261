// Per-device library handles (see handles.h). Handles are never destroyed: destroying them after the
// CUDA context is torn down at exit would fail.
#include "kernels/cuda/handles.h"

#include <mutex>
#include <vector>

#include "kernels/cuda/check.h"

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

cublasHandle_t cublas_handle(int device, cudaStream_t stream) {
  struct Entry {
    cublasHandle_t h = nullptr;
    void* workspace = nullptr;
  };
  static std::vector<Entry> handles;
  // A workspace of its own, so cuBLAS never allocates inside a captured CUDA graph. cublasSetStream
  // resets the handle to cuBLAS's default pool, so it is set again after every cublasSetStream.
  constexpr size_t kWorkspace = size_t(32) << 20;
  std::lock_guard<std::mutex> lock(g_mu);
  if (handles.size() <= size_t(device)) handles.resize(size_t(device) + 1);
  Entry& e = handles[size_t(device)];
  if (!e.h) {
    CUBLAS_CHECK(cublasCreate(&e.h));
    // Plain fp32 (no TF32 tensor-core math unless a precision mode asks for it later).
    CUBLAS_CHECK(cublasSetMathMode(e.h, CUBLAS_DEFAULT_MATH));
    CUDA_CHECK(cudaSetDevice(device));
    CUDA_CHECK(cudaMalloc(&e.workspace, kWorkspace));
  }
  CUBLAS_CHECK(cublasSetStream(e.h, stream));
  CUBLAS_CHECK(cublasSetWorkspace(e.h, e.workspace, kWorkspace));
  return e.h;
}

}  // namespace volt::cuda
