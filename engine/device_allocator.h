// The caching device allocator: a training loop asks for the same sizes every step, so blocks freed
// on a stream are kept in a per-stream free list (best fit, sizes rounded) and handed out again to
// the same stream without going back to the driver: no cudaMalloc/cudaFree in the steady state.
// It is written against a RawMemory interface (cudaMalloc/cudaFree for CUDA; a fake in the CPU tests),
// so this header and its logic need no CUDA.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <mutex>
#include <unordered_map>

#include "allocator.h"

namespace volt {

struct DeviceAllocatorStats {
  size_t bytes_in_use = 0;      // handed out and not yet returned (rounded sizes)
  size_t bytes_cached = 0;      // returned and kept for reuse
  size_t peak_bytes_in_use = 0;
  size_t system_allocs = 0;     // blocks obtained from the driver (cudaMalloc calls that succeeded)
  size_t system_frees = 0;      // blocks given back to the driver (empty_cache, out-of-memory retries)
  size_t cache_hits = 0;        // allocations served from the cache
};

// What the caching allocator needs from the device.
class RawMemory {
 public:
  virtual ~RawMemory() = default;
  virtual void* malloc(size_t bytes) = 0;  // nullptr when out of memory
  virtual void free(void* ptr) = 0;
  virtual void* current_stream() = 0;      // the stream an allocation is used on
  virtual void synchronize() = 0;          // all work on the device finished (before giving memory back)
};

class CachingDeviceAllocator final : public Allocator {
 public:
  explicit CachingDeviceAllocator(RawMemory* raw, std::string device_name);
  ~CachingDeviceAllocator() override;  // leaks the blocks on purpose (the driver may be gone at exit)
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) override;
  void empty_cache() override;  // synchronizes, then frees every cached block
  DeviceAllocatorStats stats() const;
  void reset_peak();

  // Requests are rounded up: to 512 bytes below 1 MiB, to 64 KiB above.
  static size_t round_size(size_t bytes);

  // Private pools (a captured CUDA graph's memory). Between begin_pool(key) and end_pool(), blocks
  // are handed out from pool `key` (taking cached blocks of the current stream, or new ones, into it);
  // a block of the pool returns to the pool when freed, at any time, and so does one allocated
  // before begin_pool (or in a pool since released) but freed before end_pool (the captured work may
  // have used it), so nothing
  // outside the pool ever gets memory the graph's replays write. release_pool(key) gives the pool's free blocks back to the
  // stream's cache; its blocks still held by tensors follow when those are freed.
  void begin_pool(void* key);
  void end_pool();
  void release_pool(void* key);

 private:
  struct Block {
    size_t size;
    void* stream;
    void* pool;  // nullptr, or the private pool the block belongs to
  };
  void free_cached_locked();
  RawMemory* raw_;
  std::string name_;
  mutable std::mutex mu_;
  // stream -> (size -> blocks): best fit within a factor of two, so a large block is not spent on a small request.
  std::map<void*, std::multimap<size_t, void*>> free_;
  std::unordered_map<void*, Block> live_;  // every block handed out
  std::map<void*, void*> pools_;           // live private pools: key -> the stream they serve
  void* active_pool_ = nullptr;            // between begin_pool and end_pool
  DeviceAllocatorStats stats_;
};

}  // namespace volt
