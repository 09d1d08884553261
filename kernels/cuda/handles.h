// Per-device cuBLAS, cuBLASLt and cuDNN handles, created on first use (cuBLAS's and cuDNN's bound to the
// caller's stream; cuBLASLt takes the stream per call). Only kernels/cuda includes this.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

namespace volt::cuda {
cudnnHandle_t cudnn_handle(int device, cudaStream_t stream);
cublasHandle_t cublas_handle(int device, cudaStream_t stream);
cublasLtHandle_t cublaslt_handle(int device);
// cuBLAS's workspace on `device` (32 MiB, allocated once): cuBLASLt calls share it, as calls of both
// libraries on one stream run one after another.
struct BlasWorkspace {
  void* ptr;
  size_t bytes;
};
BlasWorkspace blas_workspace(int device);
}  // namespace volt::cuda
