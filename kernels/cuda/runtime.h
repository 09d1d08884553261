// Thin, CUDA-free wrappers over the CUDA runtime that engine/ builds the CUDA backend from (streams,
// raw device and pinned memory, copies). Errors throw volt::Error (CUDA_CHECK). A stream is a
// cudaStream_t passed as void* so that this header needs no CUDA headers.
#pragma once
#include <cstddef>
#include <cstdint>

namespace volt::cuda {

void set_device(int device);
int current_device();
// The stream every Volt op on `device` runs on: created once per device (non-blocking), never destroyed.
void* default_stream(int device);  // also makes `device` current
// A second stream per device for host-to-device copies that overlap the default stream's work
// (created once, non-blocking, never destroyed).
void* copy_stream(int device);

// Raw device memory (cudaMalloc / cudaFree). malloc returns nullptr when the device is out of memory
// (so that the caching allocator can free its cache and retry); other errors throw.
void* device_malloc(size_t bytes, int device);
void device_free(void* ptr, int device);
// For memory kernels/cuda takes for itself (cuDNN's workspace): when the device is out of memory, the
// caching allocator gives its cached blocks back (the CUDA backend registers how), and the allocation
// is tried once more. release_cache does nothing until one is registered.
void set_cache_release(void (*release)(int device));
void release_cache(int device);
// Page-locked host memory (cudaHostAlloc, portable: pinned for every device / cudaFreeHost): nullptr
// when the system has no more to lock (as device_malloc), a volt::Error for any other failure.
void* pinned_malloc(size_t bytes);
void pinned_free(void* ptr);

// Copies ordered on `stream`. The *_sync variants return when the copy is complete (host memory may
// be reused or read at once).
void copy_h2d_sync(void* dst, const void* src, size_t bytes, void* stream);
void copy_d2h_sync(void* dst, const void* src, size_t bytes, void* stream);
void copy_d2d_async(void* dst, const void* src, size_t bytes, void* stream);
// Returns at once; asynchronous with respect to the host only when src is pinned, which must then
// stay untouched until the copy is complete (an event recorded after it).
void copy_h2d_async(void* dst, const void* src, size_t bytes, void* stream);
void memset_async(void* dst, int value, size_t bytes, void* stream);
void stream_synchronize(void* stream);
void device_synchronize(int device);

// Bytes free and total on the current device (cudaMemGetInfo).
void mem_info(size_t* free_bytes, size_t* total_bytes);

// Events (cudaEvent_t as void*, created without timing on `device`): record on a stream, make another
// stream wait for it (no host wait), ask whether it completed, or wait for it on the host.
void* event_create(int device);
void event_destroy(void* event);
void event_record(void* event, void* stream);
void stream_wait_event(void* stream, void* event);
void event_synchronize(void* event);

// CUDA graphs (cudaGraphExec_t as void*). graph_capture_begin starts recording `stream` (relaxed
// mode: allocating inside the capture is allowed); graph_capture_end stops it and returns the
// instantiated graph, or throws volt::Error with the reason the capture failed (it then leaves the
// stream as it was). `abandon` ends a capture that an exception interrupted, discarding it.
void graph_capture_begin(void* stream);
void* graph_capture_end(void* stream, size_t* nodes = nullptr);  // nodes: the graph's node count
void graph_capture_abandon(void* stream);
bool stream_capturing(void* stream);
void graph_launch(void* exec, void* stream);
void graph_destroy(void* exec);

}  // namespace volt::cuda
