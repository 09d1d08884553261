// Helpers of the multi-rank tests.
#pragma once
#include <cstring>
#include <vector>

#include "dist/communicator.h"

namespace volt::test {

// Whether every rank's `bytes` host bytes at `data` equal rank 0's, bit for bit (one host all_gather).
inline bool identical_on_all_ranks(Communicator& c, const void* data, size_t bytes) {
  std::vector<char> all(bytes * size_t(c.size()));
  c.all_gather(data, all.data(), bytes);
  for (int r = 1; r < c.size(); ++r)
    if (std::memcmp(all.data(), all.data() + size_t(r) * bytes, bytes) != 0) return false;
  return true;
}

}  // namespace volt::test
