// Test helpers (see test_util.h).
#include "tests/test_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"

#ifndef VOLT_SOURCE_DIR
#define VOLT_SOURCE_DIR "."
#endif

namespace volt::test {

Tensor rand_tensor(const Shape& shape, uint64_t seed, float low, float high) {
  Tensor t = Tensor::empty(shape);
  Generator g(seed, 7);
  uniform_(t, low, high, g);
  return t;
}

static bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string datasets_dir() {
  if (const char* d = std::getenv("VOLT_DATA_DIR"); d && *d) return is_dir(d) ? d : "";
  const std::string p = std::string(VOLT_SOURCE_DIR) + "/../shared/datasets";
  return is_dir(p) ? p : "";
}

std::string source_dir() { return VOLT_SOURCE_DIR; }

std::string fixtures_dir() {
  if (const char* d = std::getenv("VOLT_FIXTURES_DIR"); d && *d) return is_dir(d) ? d : "";
  if (const char* d = std::getenv("VOLT_DATA_DIR"); d && *d && is_dir(std::string(d) + "/../fixtures"))
    return std::string(d) + "/../fixtures";
  const std::string p = std::string(VOLT_SOURCE_DIR) + "/../shared/fixtures";
  return is_dir(p) ? p : "";
}

TempDir::TempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "XXXXXX";
  VOLT_CHECK(::mkdtemp(tmpl.data()) != nullptr, "TempDir: cannot create ", tmpl);
  path = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

std::set<std::string> names_in(const std::string& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) out.insert(e.path().filename().string());
  return out;
}

std::set<std::string> TempDir::files() const { return names_in(path); }

void skip(const std::string& why) {
  std::printf("SKIPPED: %s\n", why.c_str());
  std::fflush(stdout);
  std::_Exit(77);
}

void require_gpu() {
  if (cuda_device_count() > 0) return;
  const char* must = std::getenv("VOLT_REQUIRE_GPU");
  if (must && *must && std::string(must) != "0") {
    // On the GPU machine a broken driver or library path must fail, not pass as "skipped".
    std::printf("FAILED: VOLT_REQUIRE_GPU is set but no CUDA device is visible (%s)\n",
                cuda_unavailable_reason().c_str());
    std::fflush(stdout);
    std::_Exit(1);
  }
  skip("no CUDA device visible (" + cuda_unavailable_reason() + ")");
}

static double project(const Tensor& out, const std::vector<float>& proj) {
  const std::vector<float> v = out.to_vector();
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += double(v[i]) * double(proj[i]);
  return s;
}

GradcheckReport gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn, std::vector<Tensor> inputs,
                          const GradcheckOptions& o) {
  GradcheckReport rep;
  for (Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) t.set_grad(Tensor());
  Tensor out = fn(inputs);
  const Tensor proj_t = rand_tensor(out.shape(), o.seed);
  const std::vector<float> proj = proj_t.to_vector();
  Tensor loss = sum(mul(out, proj_t));
  loss.backward();

  NoGradGuard no_grad;
  const double f0 = project(fn(inputs), proj);
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    const Tensor g = x.grad();
    VOLT_CHECK(g.defined(), "gradcheck: input ", k, " requires grad but got no gradient");
    const std::vector<float> ana = g.to_vector();
    float* data = x.data<float>();
    const int64_t n = x.numel();
    const int64_t points = std::min(n, o.max_points);
    int64_t skipped_here = 0;
    for (int64_t p = 0; p < points; ++p) {
      const int64_t j = points == n ? p : (p * n) / points + (p * 7919) % std::max<int64_t>(1, n / points);
      const float orig = data[j];
      data[j] = float(orig + o.eps);
      const double fp = project(fn(inputs), proj);
      data[j] = float(orig - o.eps);
      const double fm = project(fn(inputs), proj);
      data[j] = orig;
      const double h_up = double(float(orig + o.eps)) - orig, h_dn = orig - double(float(orig - o.eps));
      const double fwd = (fp - f0) / h_up, bwd = (f0 - fm) / h_dn;
      const double num = (fp - fm) / (h_up + h_dn);
      const double scale = std::max({1e-3, std::fabs(fwd), std::fabs(bwd)});
      if (std::fabs(fwd - bwd) > 0.1 * scale + 10 * o.atol) {
        ++skipped_here;
        continue;
      }
      const double a = ana[size_t(j)];
      const double err = std::fabs(num - a) / (o.atol + o.rtol * std::max(std::fabs(num), std::fabs(a)));
      ++rep.checked;
      if (!(err <= rep.worst_error)) {  // a NaN gradient (or difference) is the worst of all
        rep.worst_error = std::isnan(err) ? INFINITY : err;
        std::ostringstream os;
        os << "input " << k << " " << shape_str(x.shape()) << " element " << j << ": numeric " << num
           << ", autograd " << a;
        rep.worst = os.str();
      }
    }
    rep.skipped += skipped_here;
    if (double(skipped_here) > o.max_skip_fraction * double(points)) {
      rep.worst_error = std::max(rep.worst_error, 1e9);
      rep.worst = "input " + std::to_string(k) + ": " + std::to_string(skipped_here) + " of " + std::to_string(points) +
                  " points were non-smooth (more than allowed)";
    }
  }
  return rep;
}

double max_rel_violation(const std::vector<float>& a, const std::vector<double>& b, double atol, double rtol,
                         std::string* where) {
  VOLT_CHECK(a.size() == b.size(), "max_rel_violation: sizes differ (", a.size(), " vs ", b.size(), ")");
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double v = std::fabs(double(a[i]) - b[i]) / (atol + rtol * std::fabs(b[i]));
    if (!(v <= worst)) {  // also catches NaN
      worst = std::isnan(v) ? INFINITY : v;
      if (where) {
        std::ostringstream os;
        os << "index " << i << ": got " << a[i] << ", expected " << b[i];
        *where = os.str();
      }
    }
  }
  return worst;
}

Tensor param(const std::vector<float>& values) {
  Tensor p = Tensor::from_vector({int64_t(values.size())}, values);
  p.requires_grad_();
  return p;
}

void set_grad(Tensor& p, const std::vector<double>& grad) {
  std::vector<float> f(grad.begin(), grad.end());
  p.set_grad(Tensor::from_vector(p.shape(), f));
}

SGDOptions sgd_options(double lr, double momentum, double dampening, double weight_decay, bool nesterov) {
  SGDOptions o;
  o.lr = lr;
  o.momentum = momentum;
  o.dampening = dampening;
  o.weight_decay = weight_decay;
  o.nesterov = nesterov;
  return o;
}

AdamOptions adam_options(double lr, double beta1, double beta2, double eps, double weight_decay, bool amsgrad) {
  AdamOptions o;
  o.lr = lr;
  o.beta1 = beta1;
  o.beta2 = beta2;
  o.eps = eps;
  o.weight_decay = weight_decay;
  o.amsgrad = amsgrad;
  return o;
}

void check_close(const Tensor& got, const std::vector<double>& want, double atol, double rtol) {
  std::string where;
  const double v = max_rel_violation(got.to_vector(), want, atol, rtol, &where);
  INFO(where);
  CHECK(v <= 1.0);
}

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& items) {
  std::vector<std::string> out;
  for (const auto& kv : items) out.push_back(kv.first);
  return out;
}

StateDict snapshot(const Module& m) {
  StateDict out;
  for (const auto& kv : m.state_dict().items()) out.add(kv.first, kv.second.clone());
  return out;
}

bool same_values(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.to_vector() == b.to_vector();
}

bool same_state(const Module& m, const StateDict& sd) {
  StateDict mine = m.state_dict();
  if (mine.size() != sd.size()) return false;
  for (size_t i = 0; i < mine.size(); ++i) {
    if (mine.items()[i].first != sd.items()[i].first) return false;
    if (!same_values(mine.items()[i].second, sd.items()[i].second)) return false;
  }
  return true;
}

ScopedEnv::ScopedEnv(const char* name, const char* value) : name_(name) {
  if (const char* old = std::getenv(name)) {
    old_ = old;
    had_ = true;
  }
  if (value)
    ::setenv(name, value, 1);
  else
    ::unsetenv(name);
}

ScopedEnv::~ScopedEnv() {
  if (had_)
    ::setenv(name_.c_str(), old_.c_str(), 1);
  else
    ::unsetenv(name_.c_str());
}

}  // namespace volt::test
