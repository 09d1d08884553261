// Per-device cuBLAS and cuDNN handles, created on first use and bound to the caller's stream.
// Only kernels/cuda includes this.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

namespace volt::cuda {
cudnnHandle_t cudnn_handle(int device, cudaStream_t stream);
cublasHandle_t cublas_handle(int device, cudaStream_t stream);
}  // namespace volt::cuda
