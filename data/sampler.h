// Which sample indices a rank visits in an epoch, with torch's DistributedSampler semantics:
// shuffle with seed + epoch, pad (repeating from the start) or truncate to a multiple of the world
// size, then rank r takes every world_size-th index starting at r. Equal counts on every rank.
#pragma once
#include <cstdint>
#include <vector>

namespace volt {

struct SamplerOptions {
  bool shuffle = false;
  uint64_t seed = 0;
  int64_t rank = 0, world_size = 1;
  bool drop_last = false;  // truncate instead of padding when size is not a multiple of world_size
};

class DistributedSampler {
 public:
  DistributedSampler(int64_t dataset_size, const SamplerOptions& o);
  void set_epoch(int64_t epoch) { epoch_ = epoch; }
  int64_t epoch() const { return epoch_; }
  int64_t num_samples() const { return num_samples_; }  // per rank
  std::vector<int64_t> indices() const;                  // this rank's indices for the current epoch

 private:
  int64_t n_;
  SamplerOptions o_;
  int64_t epoch_ = 0, num_samples_ = 0;
};

}  // namespace volt
