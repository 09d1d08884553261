// Helpers of the multi-rank tests.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "dist/communicator.h"
#include "engine/tensor.h"

namespace volt::test {

// Whether every rank's `bytes` host bytes at `data` equal rank 0's, bit for bit (one host all_gather).
inline bool identical_on_all_ranks(Communicator& c, const void* data, size_t bytes) {
  std::vector<char> all(bytes * size_t(c.size()));
  c.all_gather(data, all.data(), bytes);
  for (int r = 1; r < c.size(); ++r)
    if (std::memcmp(all.data(), all.data() + size_t(r) * bytes, bytes) != 0) return false;
  return true;
}

// Each float32 tensor of `got` (named, as Module::named_parameters or StateDict::items give them) is
// the one of `want` at its place within 1e-5 + rtol * |want| per element, and has the same bits on
// every rank; tensors of other types (num_batches_tracked) are skipped.
inline void check_near_and_identical(Communicator& c, const std::vector<std::pair<std::string, Tensor>>& got,
                                     const std::vector<std::pair<std::string, Tensor>>& want, double rtol) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO(got[i].first);
    if (got[i].second.dtype() != DType::F32) continue;
    const std::vector<float> g = got[i].second.to_vector(), w = want[i].second.to_vector();
    REQUIRE(g.size() == w.size());
    double worst = 0;
    for (size_t k = 0; k < g.size(); ++k) worst = std::max(worst, std::fabs(g[k] - w[k]) / (1e-5 + rtol * std::fabs(w[k])));
    CHECK(worst <= 1.0);
    CHECK(identical_on_all_ranks(c, g.data(), g.size() * sizeof(float)));
  }
}

}  // namespace volt::test
