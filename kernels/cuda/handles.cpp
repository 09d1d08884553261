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
  static std::vector<cublasHandle_t> handles;
  std::lock_guard<std::mutex> lock(g_mu);
  if (handles.size() <= size_t(device)) handles.resize(size_t(device) + 1, nullptr);
  cublasHandle_t& h = handles[size_t(device)];
  if (!h) {
    CUBLAS_CHECK(cublasCreate(&h));
    // Plain fp32 (no TF32 tensor-core math unless a precision mode asks for it later).
    CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  }
  CUBLAS_CHECK(cublasSetStream(h, stream));
  return h;
}

}  // namespace volt::cuda
