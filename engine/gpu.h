// The CUDA backend as engine/ sees it: the current stream of a device, the caching allocator's
// statistics and cache, the pinned host allocator for staging. No CUDA headers: a stream is a
// cudaStream_t passed as void*. In a build without CUDA these throw volt::Error (stats are zeros).
#pragma once
#include "engine/allocator.h"
#include "engine/device.h"
#include "engine/device_allocator.h"

namespace volt {

// The stream Volt's work on `d` (a CUDA device) is ordered on; also makes `d` the current device.
void* cuda_stream(Device d);
// Waits for all queued work on cuda:index.
void cuda_synchronize(int index = 0);
// The caching allocator of cuda:index: stats, peak reset, and giving cached blocks back to the driver.
DeviceAllocatorStats cuda_memory_stats(int index = 0);
void cuda_reset_peak_memory(int index = 0);
void cuda_empty_cache();  // every device, and the pinned host cache

// Page-locked host memory with per-size caching, for staging host<->device copies. A block must not
// be freed while an asynchronous copy still reads or writes it.
Allocator& pinned_host_allocator();
AllocatorStats pinned_memory_stats();

namespace detail {
// Registers the CUDA backend (idempotent, thread-safe). backend_for(cuda) calls it, so linking the
// static library never loses the registration to dead-stripping.
void init_cuda_backend();
}  // namespace detail

}  // namespace volt
