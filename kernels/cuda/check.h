// Check macros for the CUDA libraries: each throws volt::Error with file:line, the failing call and
// the library's own message. Only kernels/cuda includes this (it pulls in CUDA headers).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "engine/error.h"

namespace volt::cuda::detail {
const char* cublas_status_string(cublasStatus_t s);
}  // namespace volt::cuda::detail

#define CUDA_CHECK(call)                                                                                    \
  do {                                                                                                      \
    const cudaError_t volt_err_ = (call);                                                                   \
    if (volt_err_ != cudaSuccess) {                                                                         \
      (void)cudaGetLastError(); /* clear a non-sticky error so later calls are not blamed for it */         \
      ::volt::detail::throw_error(::volt::detail::format("CUDA error: ", #call, " failed: ",                \
                                                         cudaGetErrorName(volt_err_), " (",                 \
                                                         cudaGetErrorString(volt_err_), ")"),               \
                                  __FILE__, __LINE__);                                                      \
    }                                                                                                       \
  } while (0)

#define CUBLAS_CHECK(call)                                                                                  \
  do {                                                                                                      \
    const cublasStatus_t volt_st_ = (call);                                                                 \
    if (volt_st_ != CUBLAS_STATUS_SUCCESS)                                                                  \
      ::volt::detail::throw_error(::volt::detail::format("cuBLAS error: ", #call, " failed: ",              \
                                                         ::volt::cuda::detail::cublas_status_string(volt_st_)), \
                                  __FILE__, __LINE__);                                                      \
  } while (0)

#define CUDNN_CHECK(call)                                                                                   \
  do {                                                                                                      \
    const cudnnStatus_t volt_st_ = (call);                                                                  \
    if (volt_st_ != CUDNN_STATUS_SUCCESS)                                                                   \
      ::volt::detail::throw_error(::volt::detail::format("cuDNN error: ", #call, " failed: ",               \
                                                         cudnnGetErrorString(volt_st_)),                    \
                                  __FILE__, __LINE__);                                                      \
  } while (0)

// NCCL_CHECK is in kernels/cuda/nccl_check.h (it needs nccl.h, which the kernels do not).

// After every kernel launch: a bad configuration (grid too large, too much shared memory) is reported
// here, at the launch, not at some later synchronising call.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
