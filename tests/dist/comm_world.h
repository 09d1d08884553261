// The world communicator of the test_comm program (test_comm.cpp, test_comm_trainer.cpp): made on
// first use from the launcher's environment ($VOLT_COMM_TIMEOUT overrides its 30 s timeout).
#pragma once
#include <cstddef>
#include <memory>

#include "dist/communicator.h"
#include "dist/process_env.h"
#include "tests/dist/dist_util.h"

namespace volt::test {

inline Communicator& comm() {
  static std::unique_ptr<Communicator> c = [] {
    const ProcessEnv env = detect_process_env();
    CommOptions opts;
    opts.timeout_s = 30;
    return make_communicator(env, opts);
  }();
  return *c;
}

// Every rank's copy of `data` (bytes) is the same as rank 0's.
inline bool identical_on_all_ranks(const void* data, size_t bytes) { return identical_on_all_ranks(comm(), data, bytes); }

}  // namespace volt::test
