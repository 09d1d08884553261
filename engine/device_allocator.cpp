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
  // In a private pool: its own free blocks first, then the stream's cached ones (which join the pool).
  for (void* key : {active_pool_, stream}) {
    if (!key) continue;
    auto fl = free_.find(key);
    if (fl == free_.end()) continue;
    auto it = fl->second.lower_bound(size);
    if (it != fl->second.end() && it->first <= 2 * size) {
      void* p = it->second;
      const size_t got = it->first;
      fl->second.erase(it);
      live_[p] = Block{got, stream, active_pool_};
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
  live_[p] = Block{size, stream, active_pool_};
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
  // before any later use from the same stream. A live private pool keeps its blocks, and a block
  // allocated before a capture but freed during it joins the pool being filled: the captured work
  // may use it, and every replay repeats that work (so does a block of a released pool).
  void* const pool = b.pool && pools_.count(b.pool) ? b.pool : active_pool_;
  free_[pool ? pool : b.stream].emplace(b.size, ptr);
  stats_.bytes_in_use -= b.size;
  stats_.bytes_cached += b.size;
}

void CachingDeviceAllocator::free_cached_locked() {
  if (stats_.bytes_cached == 0) return;
  raw_->synchronize();  // freed blocks may still be read by queued work
  for (auto it = free_.begin(); it != free_.end();) {
    if (pools_.count(it->first)) {  // a live graph's memory stays
      ++it;
      continue;
    }
    for (auto& [size, p] : it->second) {
      raw_->free(p);
      stats_.system_frees += 1;
      stats_.bytes_cached -= size;
    }
    it = free_.erase(it);
  }
}

void CachingDeviceAllocator::begin_pool(void* key) {
  std::lock_guard<std::mutex> lock(mu_);
  VOLT_CHECK(key != nullptr && active_pool_ == nullptr, "CachingDeviceAllocator (", name_,
             "): begin_pool needs a key and no other pool being filled");
  pools_[key] = raw_->current_stream();
  active_pool_ = key;
}

void CachingDeviceAllocator::end_pool() {
  std::lock_guard<std::mutex> lock(mu_);
  active_pool_ = nullptr;
}

void CachingDeviceAllocator::release_pool(void* key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pools_.find(key);
  if (it == pools_.end()) return;
  void* stream = it->second;
  pools_.erase(it);
  if (active_pool_ == key) active_pool_ = nullptr;
  auto fl = free_.find(key);
  if (fl == free_.end()) return;
  for (auto& [size, p] : fl->second) free_[stream].emplace(size, p);
  free_.erase(fl);
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
