// libFuzzer entry point for one target (-DVOLT_FUZZ=ON builds one binary per target, naming it in
// VOLT_FUZZ_TARGET; tools/fuzz.sh runs them). A readers' error is an ordinary outcome; anything
// escaping the target aborts, which libFuzzer reports as a crash with the input saved.
#include <cstdio>
#include <cstdlib>

#include "tests/fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const volt::fuzz::Target* t = [] {
    const volt::fuzz::Target* found = volt::fuzz::find_target(VOLT_FUZZ_TARGET);
    if (!found) {
      std::fprintf(stderr, "no fuzz target %s\n", VOLT_FUZZ_TARGET);
      std::abort();
    }
    return found;
  }();
  t->run(data, size);
  return 0;
}
