// Caching host allocator (see allocator.h).
#include "engine/allocator.h"

#include <algorithm>
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
      peak_in_use_ = std::max(peak_in_use_, stats_.bytes_in_use);
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
  peak_in_use_ = std::max(peak_in_use_, stats_.bytes_in_use);
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
  // Over the limit: blocks of other sizes go first (this size was just wanted), this one's last.
  const size_t limit = std::max(min_cache_, peak_in_use_);
  for (auto it = free_.begin(); stats_.bytes_cached > limit && it != free_.end();) {
    if (it->first == size && free_.size() > 1) {
      ++it;
      continue;
    }
    std::vector<void*>& blocks = it->second;
    while (stats_.bytes_cached > limit && !blocks.empty()) {
      src_.free(blocks.back());
      blocks.pop_back();
      stats_.bytes_cached -= it->first;
    }
    if (blocks.empty()) {
      it = free_.erase(it);
    } else {
      ++it;
    }
    if (it == free_.end() && stats_.bytes_cached > limit) it = free_.begin();  // then this size's own
  }
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
