// Device count through the CUDA runtime; errors (no driver, no device) count as zero devices, and
// the error is kept so that "no GPU" messages can say why (a driver too old for this toolkit, a
// broken installation) instead of looking like a machine without a GPU.
#include "kernels/cuda/device_query.h"

#include <cuda_runtime_api.h>

#include <atomic>

#include "kernels/cuda/check.h"

namespace volt::cuda {

namespace {
cudaError_t count_devices(int* n) {
  *n = 0;
  const cudaError_t e = cudaGetDeviceCount(n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error
    *n = 0;
  }
  return e;
}
}  // namespace

int device_count() {
  int n = 0;
  count_devices(&n);
  return n;
}

std::string device_name(int index) {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, index) != cudaSuccess) {
    (void)cudaGetLastError();
    return "cuda:" + std::to_string(index);
  }
  return p.name;
}

double peak_memory_bandwidth(int index) {
  int clock_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, index) != cudaSuccess ||
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, index) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0);  // double data rate
}

int multiprocessor_count(int index) {
  constexpr int kDevices = 64;
  static std::atomic<int> known[kDevices] = {};  // 0: not asked yet
  const bool cached = index >= 0 && index < kDevices;
  if (cached) {
    if (const int n = known[index].load(std::memory_order_relaxed)) return n;
  }
  int n = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, index));
  if (n < 1) n = 1;
  if (cached) known[index].store(n, std::memory_order_relaxed);
  return n;
}

std::string device_count_error() {
  int n = 0;
  const cudaError_t e = count_devices(&n);
  if (e == cudaSuccess) return "";
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

}  // namespace volt::cuda
