// Allocator interface and the caching host allocator: a training loop asks for the same sizes
// every step, so freed blocks are kept per size and handed out again instead of going back to the OS.
#pragma once
#include <cstddef>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace volt {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) = 0;
  virtual void empty_cache() {}
};

struct AllocatorStats {
  size_t bytes_in_use = 0;     // handed out and not yet returned
  size_t bytes_cached = 0;     // returned and kept for reuse
  size_t system_allocs = 0;    // times memory came from the system
};

// Where a caching host allocator gets its blocks: plain 64-byte aligned memory by default; the CUDA
// backend passes page-locked (pinned) memory. alloc may return nullptr (then the cache is emptied
// and it is tried once more) or throw.
struct HostMemorySource {
  void* (*alloc)(size_t bytes);
  void (*free)(void* ptr);
  size_t granularity;  // sizes are rounded up to a multiple of it (a power of two)
};
HostMemorySource aligned_host_memory();  // std::aligned_alloc(64, ...), granularity 64

// Host memory with per-size free lists. Thread-safe. The cache holds at most the larger of
// `min_cache_bytes` and the most bytes ever in use at once (what a repeating step needs to find all
// its sizes again): past that, freed blocks of other sizes go back to the system first, so a run
// whose sizes keep changing does not keep every size it ever freed.
class CachingHostAllocator final : public Allocator {
 public:
  explicit CachingHostAllocator(HostMemorySource source = aligned_host_memory(),
                                size_t min_cache_bytes = size_t(256) << 20)
      : src_(source), min_cache_(min_cache_bytes) {}
  ~CachingHostAllocator() override;
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) override;
  void empty_cache() override;
  AllocatorStats stats() const;

 private:
  size_t round_size(size_t bytes) const;
  HostMemorySource src_;
  size_t min_cache_;
  size_t peak_in_use_ = 0;
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};

CachingHostAllocator& host_allocator();

}  // namespace volt
