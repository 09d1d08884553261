// Caching device allocator (see device_allocator.h).
#include "engine/device_allocator.h"

#include <algorithm>

#include "engine/error.h"

namespace volt {

CachingDeviceAllocator::CachingDeviceAllocator(RawMemory* raw, std::string device_name)
    : raw_(raw), name_(std::move(device_name)) {}

CachingDeviceAllocator::~CachingDeviceAllocator() = default;

size_t CachingDeviceAllocator::round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  constexpr size_t kSmall = 512, kLarge = size_t(64) << 10, kSplit = size_t(1) << 20;
  if (bytes <= kSplit) return (bytes + kSmall - 1) / kSmall * kSmall;
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

void* CachingDeviceAllocator::allocate(size_t bytes) {
  const size_t size = round_size(bytes);
  void* stream = raw_->current_stream();
  std::lock_guard<std::mutex> lock(mu_);
  auto fl = free_.find(stream);
  if (fl != free_.end()) {
    auto it = fl->second.lower_bound(size);
    if (it != fl->second.end() && it->first <= 2 * size) {
      void* p = it->second;
      const size_t got = it->first;
      fl->second.erase(it);
      live_[p] = Block{got, stream};
      stats_.bytes_cached -= got;
      stats_.bytes_in_use += got;
      stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
      stats_.cache_hits += 1;
      return p;
    }
  }
  void* p = raw_->malloc(size);
  if (!p && stats_.bytes_cached > 0) {
    // Out of memory: give the cache back to the driver and try once more.
    free_cached_locked();
    p = raw_->malloc(size);
  }
  VOLT_CHECK(p != nullptr, "out of memory on ", name_, " allocating ", bytes, " bytes (", stats_.bytes_in_use,
             " bytes in use by tensors, ", stats_.bytes_cached, " cached)");
  live_[p] = Block{size, stream};
  stats_.system_allocs += 1;
  stats_.bytes_in_use += size;
  stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
  return p;
}

void CachingDeviceAllocator::deallocate(void* ptr, size_t) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  VOLT_CHECK(it != live_.end(), "CachingDeviceAllocator (", name_, "): freeing a pointer it did not allocate");
  const Block b = it->second;
  live_.erase(it);
  // The block goes back to the stream it was used on: work queued there that still reads it runs
  // before any later use from the same stream.
  free_[b.stream].emplace(b.size, ptr);
  stats_.bytes_in_use -= b.size;
  stats_.bytes_cached += b.size;
}

void CachingDeviceAllocator::free_cached_locked() {
  if (stats_.bytes_cached == 0) return;
  raw_->synchronize();  // freed blocks may still be read by queued work
  for (auto& [stream, blocks] : free_)
    for (auto& [size, p] : blocks) {
      raw_->free(p);
      stats_.system_frees += 1;
    }
  free_.clear();
  stats_.bytes_cached = 0;
}

void CachingDeviceAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  free_cached_locked();
}

DeviceAllocatorStats CachingDeviceAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingDeviceAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_bytes_in_use = stats_.bytes_in_use;
}

}  // namespace volt
