// NCCL_CHECK(call): throws volt::Error with file:line, the failing call and ncclGetErrorString, like
// CUDA_CHECK (kernels/cuda/check.h). For the NCCL communicator; only code that includes nccl.h uses it.
#pragma once
#include <nccl.h>

#include "engine/error.h"

#define NCCL_CHECK(call)                                                                                    \
  do {                                                                                                      \
    const ncclResult_t volt_nccl_ = (call);                                                                 \
    if (volt_nccl_ != ncclSuccess)                                                                          \
      ::volt::detail::throw_error(::volt::detail::format("NCCL error: ", #call, " failed: ",                \
                                                         ncclGetErrorString(volt_nccl_)),                   \
                                  __FILE__, __LINE__);                                                      \
  } while (0)
