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

// 64-byte aligned host memory with per-size free lists. Thread-safe.
class CachingHostAllocator final : public Allocator {
 public:
  ~CachingHostAllocator() override;
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) override;
  void empty_cache() override;
  AllocatorStats stats() const;

 private:
  static size_t round_size(size_t bytes);
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};

CachingHostAllocator& host_allocator();

}  // namespace volt
