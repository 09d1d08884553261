// DistributedSampler (see sampler.h).
#include "data/sampler.h"

#include "engine/error.h"
#include "engine/random.h"

namespace volt {

DistributedSampler::DistributedSampler(int64_t n, const SamplerOptions& o) : n_(n), o_(o) {
  VOLT_CHECK(n > 0, "sampler: the dataset is empty");
  VOLT_CHECK(o.world_size >= 1 && o.rank >= 0 && o.rank < o.world_size, "sampler: rank ", o.rank,
             " is out of range for world size ", o.world_size);
  VOLT_CHECK(!o.drop_last || n >= o.world_size, "sampler: ", n, " samples cannot be split over ", o.world_size,
             " ranks with drop_last");
  num_samples_ = o.drop_last ? n / o.world_size : (n + o.world_size - 1) / o.world_size;
}

std::vector<int64_t> DistributedSampler::indices() const {
  std::vector<int64_t> all;
  if (o_.shuffle) {
    Generator g(o_.seed + uint64_t(epoch_), kStreamShuffle);
    all = randperm(n_, g);
  } else {
    all.resize(static_cast<size_t>(n_));
    for (int64_t i = 0; i < n_; ++i) all[size_t(i)] = i;
  }
  const int64_t total = num_samples_ * o_.world_size;
  if (total > n_) {  // pad by repeating from the start
    for (int64_t i = n_; i < total; ++i) all.push_back(all[size_t((i - n_) % n_)]);
  } else {
    all.resize(size_t(total));
  }
  std::vector<int64_t> mine;
  mine.reserve(size_t(num_samples_));
  for (int64_t i = o_.rank; i < total; i += o_.world_size) mine.push_back(all[size_t(i)]);
  return mine;
}

}  // namespace volt
