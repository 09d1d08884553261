// Device count through the CUDA runtime; errors (no driver, no device) count as zero devices.
#include "kernels/cuda/device_query.h"

#include <cuda_runtime_api.h>

namespace volt::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error
    return 0;
  }
  return n;
}

}  // namespace volt::cuda
