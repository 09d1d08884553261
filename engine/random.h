// Seeded randomness for dropout, initialisation and shuffling: a Generator is a (seed, stream)
// pair plus an offset that advances with each draw, over Philox 4x32-10 (kernels/philox.h).
#pragma once
#include <cstdint>
#include <vector>

#include "tensor.h"

namespace volt {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0, uint64_t stream = 0) : seed_(seed), stream_(stream) {}
  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t offset) { offset_ = offset; }
  void manual_seed(uint64_t seed) { seed_ = seed; offset_ = 0; }

  // Reserves n values: returns the offset to use and advances past them (in blocks of four).
  uint64_t reserve(uint64_t n);
  uint32_t next_u32();
  float next_uniform();                       // [0, 1)
  uint64_t next_below(uint64_t bound);        // uniform integer in [0, bound)

 private:
  uint64_t seed_, stream_, offset_ = 0;
};

// Streams of the default generator (one key, separate counters per purpose).
enum : uint64_t { kStreamInit = 0, kStreamDropout = 1, kStreamShuffle = 2, kStreamData = 3 };

// The generator layers use for initialisation when none is passed; `manual_seed` resets all streams.
Generator& default_generator(uint64_t stream = kStreamInit);
void manual_seed(uint64_t seed);

// Fills a float32 tensor (CPU) with uniform values in [low, high).
void uniform_(Tensor& t, float low, float high, Generator& gen);
// A random permutation of 0..n-1 (Fisher-Yates over the generator).
std::vector<int64_t> randperm(int64_t n, Generator& gen);

}  // namespace volt
