// Shared test helpers: deterministic random tensors, the finite-difference gradient checker, where
// the shared data lives, skipping (exit code 77, which CTest reports as skipped, never passed),
// optimizer parameters and closeness checks, and comparing module states.
#pragma once
#include <doctest/doctest.h>

#include <exception>
#include <set>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "engine/error.h"
#include "engine/tensor.h"
#include "layers/module.h"
#include "layers/optim/optimizer.h"

namespace volt::test {

// Uniform values in [low, high) from a fixed Philox seed.
Tensor rand_tensor(const Shape& shape, uint64_t seed, float low = -1.f, float high = 1.f);

// The real datasets ($VOLT_DATA_DIR, else ../shared/datasets beside the source tree) and the
// PyTorch fixtures ($VOLT_FIXTURES_DIR, $VOLT_DATA_DIR/../fixtures, else ../shared/fixtures).
// Each returns "" when absent.
std::string datasets_dir();
std::string fixtures_dir();
// The source tree this test binary was built from (where engine/ops.h is read by the coverage test).
std::string source_dir();

// Prints "SKIPPED: <why>" and exits with 77 (CTest SKIP_RETURN_CODE).
[[noreturn]] void skip(const std::string& why);

// Skips unless a CUDA device is visible; with $VOLT_REQUIRE_GPU set (the GPU machine's runs,
// tests/gpu_carry.sh) a missing device is a failure instead.
void require_gpu();

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

// A 1-D leaf tensor holding `values` that requires grad (an optimizer's parameter).
Tensor param(const std::vector<float>& values);

// Sets p.grad() to `grad` (p's shape, rounded to float32).
void set_grad(Tensor& p, const std::vector<double>& grad);

// Optimizer options in one expression (the rest at PyTorch's defaults).
SGDOptions sgd_options(double lr, double momentum = 0.0, double dampening = 0.0, double weight_decay = 0.0,
                       bool nesterov = false);
AdamOptions adam_options(double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
                         double weight_decay = 0.0, bool amsgrad = false);

// doctest check that float32 results match a double reference: |got-want| <= atol + rtol*|want|
// (the defaults allow a few float ulps); prints the worst element otherwise.
void check_close(const Tensor& got, const std::vector<double>& want, double atol = 1e-6, double rtol = 1e-5);

// The names of a named list (state_dict items, named_parameters, named_buffers), in order.
std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& items);

// Deep copy of a module's state (values, not shared storage).
StateDict snapshot(const Module& m);

// Same shape, dtype and values.
bool same_values(const Tensor& a, const Tensor& b);

// m's state_dict has the same names in the same order as sd, with the same values.
bool same_state(const Module& m, const StateDict& sd);

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
    FAIL_CHECK("threw a std::exception that is not volt::Error: " << std::string(e.what()));
    return "";
  }
  FAIL_CHECK("expected volt::Error, nothing was thrown");
  return "";
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Sets (or, with nullptr, unsets) an environment variable for its lifetime; restores the old value
// or its absence at scope exit.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value);
  ScopedEnv(const char* name, const std::string& value) : ScopedEnv(name, value.c_str()) {}
  ~ScopedEnv();
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

// A fresh directory /tmp/<prefix>XXXXXX, removed with everything in it at scope exit.
// The names directly inside folder `dir` (none when it cannot be read).
std::set<std::string> names_in(const std::string& dir);

struct TempDir {
  explicit TempDir(const std::string& prefix = "volt_test_");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str(const std::string& child = "") const { return child.empty() ? path : path + "/" + child; }
  std::string operator/(const std::string& child) const { return str(child); }
  std::set<std::string> files() const;  // names directly inside
  std::string path;
};

}  // namespace volt::test

// doctest check that a gradcheck passed, printing the worst point otherwise.
#define VOLT_CHECK_GRADCHECK(report)                                                     \
  do {                                                                                   \
    const auto& r_ = (report);                                                           \
    INFO("checked " << r_.checked << ", skipped " << r_.skipped << ", worst " << r_.worst); \
    CHECK(r_.checked > 0);                                                               \
    CHECK(r_.worst_error <= 1.0);                                                        \
  } while (0)
