// The caching device allocator's bookkeeping, on a fake device (runs everywhere): rounding, reuse
// per stream, best fit within a factor of two, no driver calls in a steady-state loop, empty_cache,
// and the out-of-memory retry after freeing the cache, and private pools for CUDA graphs. Also: a cuda tensor on a machine without a GPU
// is an error that names the device.
#include <doctest/doctest.h>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "engine/device_allocator.h"
#include "engine/tensor.h"
#include "tests/test_util.h"

using namespace volt;

namespace {

// Host memory standing in for a device; counts calls, refuses allocations beyond a budget.
struct FakeDevice final : RawMemory {
  void* malloc(size_t bytes) override {
    if (live_bytes + bytes > budget) return nullptr;
    void* p = std::malloc(bytes);
    live[p] = bytes;
    live_bytes += bytes;
    ++mallocs;
    return p;
  }
  void free(void* p) override {
    auto it = live.find(p);
    REQUIRE(it != live.end());
    live_bytes -= it->second;
    live.erase(it);
    ++frees;
    std::free(p);
  }
  void* current_stream() override { return stream; }
  void synchronize() override { ++syncs; }
  std::map<void*, size_t> live;
  size_t live_bytes = 0, budget = size_t(1) << 40;
  int mallocs = 0, frees = 0, syncs = 0;
  void* stream = reinterpret_cast<void*>(0x1);
};

}  // namespace

TEST_CASE("device allocator: sizes are rounded to 512 bytes below 1 MiB and 64 KiB above") {
  CHECK(CachingDeviceAllocator::round_size(0) == 512);
  CHECK(CachingDeviceAllocator::round_size(1) == 512);
  CHECK(CachingDeviceAllocator::round_size(512) == 512);
  CHECK(CachingDeviceAllocator::round_size(513) == 1024);
  CHECK(CachingDeviceAllocator::round_size(size_t(1) << 20) == size_t(1) << 20);
  CHECK(CachingDeviceAllocator::round_size((size_t(1) << 20) + 1) == (size_t(1) << 20) + (size_t(64) << 10));
}

TEST_CASE("device allocator: a steady-state loop makes no new driver allocations") {
  FakeDevice dev;
  {
    CachingDeviceAllocator a(&dev, "fake:0");
    const std::vector<size_t> step = {4000, 100, 3u << 20, 4000, 77777, 12};
    for (int iter = 0; iter < 5; ++iter) {
      std::vector<void*> ptrs;
      for (size_t b : step) ptrs.push_back(a.allocate(b));
      for (size_t k = 0; k < ptrs.size(); ++k) a.deallocate(ptrs[k], step[k]);
      if (iter == 0) {
        CHECK(dev.mallocs == int(step.size()));  // two 4000-byte requests alive at once: two blocks
      }
    }
    CHECK(dev.mallocs == int(step.size()));
    CHECK(dev.frees == 0);
    const DeviceAllocatorStats s = a.stats();
    CHECK(s.system_allocs == step.size());
    CHECK(s.cache_hits == 4 * step.size());
    CHECK(s.bytes_in_use == 0);
    CHECK(s.bytes_cached > 0);
    CHECK(s.peak_bytes_in_use >= (3u << 20));
    a.empty_cache();
    CHECK(dev.frees == int(step.size()));
    CHECK(dev.syncs >= 1);  // queued work may still use freed blocks
    CHECK(a.stats().bytes_cached == 0);
    CHECK(dev.live.empty());
  }
}

TEST_CASE("device allocator: blocks are reused only on their stream, and best fit within 2x") {
  FakeDevice dev;
  CachingDeviceAllocator a(&dev, "fake:0");
  void* p = a.allocate(10000);
  a.deallocate(p, 10000);
  dev.stream = reinterpret_cast<void*>(0x2);
  void* q = a.allocate(10000);
  CHECK(q != p);  // another stream does not take a block the first stream may still be using
  CHECK(dev.mallocs == 2);
  dev.stream = reinterpret_cast<void*>(0x1);
  void* r = a.allocate(6000);  // 10240-byte block serves a 6144-byte request (within 2x)
  CHECK(r == p);
  a.deallocate(r, 6000);
  void* small = a.allocate(100);  // 512 bytes: the 10 KiB block is more than twice that, so a new block
  CHECK(small != p);
  CHECK(dev.mallocs == 3);
  a.deallocate(small, 100);
  a.deallocate(q, 10000);
  a.empty_cache();
  CHECK(dev.live.empty());
}

TEST_CASE("device allocator: out of memory frees the cache and retries, then reports the sizes") {
  FakeDevice dev;
  dev.budget = 3u << 20;
  CachingDeviceAllocator a(&dev, "fake:1");
  void* c = a.allocate(2u << 20);
  a.deallocate(c, 2u << 20);  // cached: the fake device still holds 2 MiB
  // 2.5 MiB cannot reuse the 2 MiB block and does not fit beside it: the cache goes back, then it fits.
  void* big = a.allocate((5u << 20) / 2);
  CHECK(big != nullptr);
  CHECK(dev.frees == 1);
  CHECK(a.stats().system_frees == 1);
  CHECK(a.stats().bytes_cached == 0);
  const std::string msg = volt::test::error_of([&] { a.allocate(1u << 20); });
  CHECK(volt::test::contains(msg, "out of memory on fake:1"));
  a.deallocate(big, (5u << 20) / 2);
  a.empty_cache();
  CHECK(dev.live.empty());
}

TEST_CASE("device allocator: a private pool (a CUDA graph's memory) keeps its blocks until released") {
  FakeDevice dev;
  CachingDeviceAllocator a(&dev, "fake:0");
  void* warm = a.allocate(4000);  // an eager step's block, cached on the stream
  a.deallocate(warm, 4000);
  void* before = a.allocate(7000);  // a tensor alive when the capture starts
  int pool_key = 0;
  a.begin_pool(&pool_key);
  void* p1 = a.allocate(4000);  // the stream's cached block joins the pool
  CHECK(p1 == warm);
  void* p2 = a.allocate(5000);
  a.deallocate(p2, 5000);       // freed during the capture: back to the pool, reusable inside it
  void* p3 = a.allocate(5000);
  CHECK(p3 == p2);
  a.deallocate(before, 7000);   // allocated before the capture, freed in it: the pool keeps it too
  a.end_pool();
  a.deallocate(p3, 5000);
  // Outside the pool nothing gets the pool's memory, even of the same size on the same stream.
  void* outside = a.allocate(5000);
  CHECK(outside != p3);
  CHECK(outside != p1);
  void* outside7 = a.allocate(7000);
  CHECK(outside7 != before);
  a.deallocate(outside7, 7000);
  a.deallocate(outside, 5000);
  a.deallocate(p1, 4000);       // a tensor made in the capture, freed after it: stays in the pool
  a.empty_cache();              // gives back the stream's cache, not a live pool's blocks
  CHECK(dev.live.count(p1) == 1);
  CHECK(dev.live.count(p3) == 1);
  CHECK(dev.live.count(outside) == 0);
  CHECK(dev.live.count(before) == 1);
  a.release_pool(&pool_key);    // the graph is gone: its blocks return to the stream's cache
  void* again = a.allocate(4000);
  CHECK(again == p1);
  a.deallocate(again, 4000);
  a.empty_cache();
  CHECK(dev.live.empty());
}

TEST_CASE("device allocator: a released pool's block freed during another capture joins that capture's pool") {
  FakeDevice dev;
  CachingDeviceAllocator a(&dev, "fake:0");
  int graph_a = 0, graph_b = 0;
  a.begin_pool(&graph_a);
  void* kept = a.allocate(6000);  // made in graph A's capture, outlives A
  a.end_pool();
  a.release_pool(&graph_a);
  a.begin_pool(&graph_b);
  a.deallocate(kept, 6000);  // graph B's captured work may have read it: B's replays will again
  a.end_pool();
  void* eager = a.allocate(6000);
  CHECK(eager != kept);  // it went to the stream's cache, and eager work got it while B replays
  a.deallocate(eager, 6000);
  a.release_pool(&graph_b);  // B is gone: the stream's cache has both
  void* x = a.allocate(6000);
  void* y = a.allocate(6000);
  CHECK(((x == kept && y == eager) || (x == eager && y == kept)));
  a.deallocate(x, 6000);
  a.deallocate(y, 6000);
  a.empty_cache();  // (the allocator's destructor leaves its blocks to the driver on purpose)
  CHECK(dev.live.empty());
}

// Last in this file: on a machine with a GPU it skips (exit 77), which ends the process.
TEST_CASE("without a GPU, a cuda tensor is refused with a message naming the device") {
  if (cuda_device_count() > 0) volt::test::skip("a GPU is visible: this case checks the machines without one");
  CHECK(!backend_available(DeviceType::CUDA));
  const std::string msg = volt::test::error_of([] { (void)Tensor::zeros({3}, DType::F32, Device::cuda(0)); });
  CHECK(volt::test::contains(msg, "cuda:0"));
  CHECK(volt::test::contains(msg, "not available"));
  CHECK(volt::test::contains(volt::test::error_of([] { (void)Tensor::ones({2}).to(Device::cuda(0)); }), "cuda:0"));
}
