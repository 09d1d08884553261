// Shared test helpers: deterministic random tensors, the finite-difference gradient checker, where
// the shared data lives, and skipping (exit code 77, which CTest reports as skipped, never passed).
#pragma once
#include <doctest/doctest.h>

#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/tensor.h"

namespace volt::test {

// Uniform values in [low, high) from a fixed Philox seed.
Tensor rand_tensor(const Shape& shape, uint64_t seed, float low = -1.f, float high = 1.f);

// The real datasets ($VOLT_DATA_DIR, else ../shared/datasets beside the source tree) and the
// PyTorch fixtures ($VOLT_FIXTURES_DIR, $VOLT_DATA_DIR/../fixtures, else ../shared/fixtures).
// Each returns "" when absent.
std::string datasets_dir();
std::string fixtures_dir();

// Prints "SKIPPED: <why>" and exits with 77 (CTest SKIP_RETURN_CODE).
[[noreturn]] void skip(const std::string& why);

struct GradcheckOptions {
  double eps = 1e-2;             // perturbation (absolute)
  double rtol = 2e-2, atol = 2e-3;
  int64_t max_points = 120;      // elements checked per input (spread evenly); all when fewer
  double max_skip_fraction = 0.2;  // more kinks skipped than this fails the check
  uint64_t seed = 1234;          // for the random projection of the output
};

struct GradcheckReport {
  int64_t checked = 0, skipped = 0;
  double worst_error = 0;  // |num - ana| / (atol + rtol*max(|num|,|ana|)); <= 1 passes
  std::string worst;       // description of the worst point
};

// Checks d<fn(inputs), R>/d inputs[i] (R a fixed random projection) by central differences
// accumulated in double against autograd, for every input that requires grad. Points where the
// forward and backward one-sided differences disagree (a ReLU or max-pool kink inside the
// perturbation) are skipped. fn must be deterministic (no changing random stream or state).
GradcheckReport gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn, std::vector<Tensor> inputs,
                          const GradcheckOptions& opts = {});

// Largest |a-b| / (atol + rtol*|b|) over elements (<= 1 means all within tolerance); `where`
// receives the worst index and values.
double max_rel_violation(const std::vector<float>& a, const std::vector<double>& b, double atol, double rtol,
                         std::string* where = nullptr);

}  // namespace volt::test

namespace volt::test {

// Runs f, which must throw volt::Error, and returns its message ("" and a failed check otherwise).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const volt::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL_CHECK("threw a std::exception that is not volt::Error: " << e.what());
    return "";
  }
  FAIL_CHECK("expected volt::Error, nothing was thrown");
  return "";
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace volt::test

// doctest check that a gradcheck passed, printing the worst point otherwise.
#define VOLT_CHECK_GRADCHECK(report)                                                     \
  do {                                                                                   \
    const auto& r_ = (report);                                                           \
    INFO("checked " << r_.checked << ", skipped " << r_.skipped << ", worst " << r_.worst); \
    CHECK(r_.checked > 0);                                                               \
    CHECK(r_.worst_error <= 1.0);                                                        \
  } while (0)
