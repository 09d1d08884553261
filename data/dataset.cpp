// Subset and random_split (see dataset.h).
#include "data/dataset.h"

#include "engine/error.h"
#include "engine/random.h"

namespace volt {

Subset::Subset(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices, std::string name)
    : base_(std::move(base)), indices_(std::move(indices)), name_(std::move(name)) {
  VOLT_CHECK(base_ != nullptr, "Subset: base dataset is null");
  for (int64_t i : indices_)
    VOLT_CHECK(i >= 0 && i < base_->size(), "Subset: index ", i, " is out of range for ", base_->name(), " (size ",
               base_->size(), ")");
  if (name_.empty()) name_ = base_->name() + " subset";
}

int64_t Subset::get(int64_t index, uint8_t* dst) const {
  VOLT_CHECK(index >= 0 && index < size(), name_, ": index ", index, " is out of range [0, ", size(), ")");
  return base_->get(indices_[size_t(index)], dst);
}

std::vector<std::vector<int64_t>> random_split_indices(int64_t n, const std::vector<int64_t>& lengths, uint64_t seed) {
  int64_t total = 0;
  for (int64_t l : lengths) {
    VOLT_CHECK(l >= 0, "random_split: negative length ", l);
    total += l;
  }
  VOLT_CHECK(total == n, "random_split: lengths sum to ", total, " but the dataset has ", n, " items");
  Generator g(seed, kStreamShuffle);
  const std::vector<int64_t> perm = randperm(n, g);
  std::vector<std::vector<int64_t>> out;
  int64_t pos = 0;
  for (int64_t l : lengths) {
    out.emplace_back(perm.begin() + pos, perm.begin() + pos + l);
    pos += l;
  }
  return out;
}

}  // namespace volt
