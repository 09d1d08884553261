// Caching host allocator (see allocator.h).
#include "engine/allocator.h"

#include <cstdlib>
#include <new>

#include "engine/error.h"

namespace volt {

HostMemorySource aligned_host_memory() {
  return {[](size_t bytes) { return std::aligned_alloc(64, bytes); }, [](void* p) { std::free(p); }, 64};
}

size_t CachingHostAllocator::round_size(size_t bytes) const {
  if (bytes == 0) bytes = 1;
  return (bytes + src_.granularity - 1) & ~(src_.granularity - 1);
}

void* CachingHostAllocator::allocate(size_t bytes) {
  size_t size = round_size(bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      stats_.bytes_cached -= size;
      stats_.bytes_in_use += size;
      return p;
    }
  }
  void* p = src_.alloc(size);
  if (!p) {
    empty_cache();
    p = src_.alloc(size);
  }
  VOLT_CHECK(p != nullptr, "out of host memory allocating ", bytes, " bytes");
  std::lock_guard<std::mutex> lock(mu_);
  stats_.bytes_in_use += size;
  stats_.system_allocs += 1;
  return p;
}

void CachingHostAllocator::deallocate(void* ptr, size_t bytes) {
  if (!ptr) return;
  size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  free_[size].push_back(ptr);
  stats_.bytes_in_use -= size;
  stats_.bytes_cached += size;
}

void CachingHostAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [size, blocks] : free_)
    for (void* p : blocks) src_.free(p);
  free_.clear();
  stats_.bytes_cached = 0;
}

AllocatorStats CachingHostAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

CachingHostAllocator::~CachingHostAllocator() { empty_cache(); }

CachingHostAllocator& host_allocator() {
  // Never destroyed: tensors in static objects may be freed after main returns.
  static CachingHostAllocator* a = new CachingHostAllocator();
  return *a;
}

}  // namespace volt
