// Optimizers and learning-rate schedules: the first steps of SGD (momentum, dampening, nesterov,
// weight decay), Adam, AdamW and AMSGrad against PyTorch's documented update rules computed here
// in double, a few trajectories and every schedule against values printed by PyTorch 2.11.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/tensor.h"
#include "layers/optim/optimizer.h"
#include "layers/optim/scheduler.h"
#include "tests/test_util.h"

using namespace volt;

namespace {

using Vec = std::vector<double>;

Tensor param(const std::vector<float>& v) {
  Tensor p = Tensor::from_vector({int64_t(v.size())}, v);
  p.requires_grad_();
  return p;
}

void set_grad(Tensor& p, const Vec& g) {
  std::vector<float> f(g.begin(), g.end());
  p.set_grad(Tensor::from_vector(p.shape(), f));
}

Vec to_double(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

// float32 results against a double reference: a few float ulps of slack.
void check_close(const Tensor& got, const Vec& want, double atol = 1e-6, double rtol = 1e-5) {
  std::string where;
  const double v = test::max_rel_violation(got.to_vector(), want, atol, rtol, &where);
  INFO(where);
  CHECK(v <= 1.0);
}

void check_lrs(LRScheduler& s, Optimizer& opt, const Vec& want, double tol = 1e-12) {
  for (size_t t = 0; t < want.size(); ++t) {
    if (t > 0) s.step();
    INFO("t = " << t << ": lr " << opt.lr() << ", expected " << want[t]);
    CHECK(s.last_epoch() == int64_t(t));
    CHECK(std::fabs(opt.lr() - want[t]) <= tol * std::max(1.0, std::fabs(want[t])) + 1e-15);
    CHECK(s.last_lr() == opt.lr());
  }
}

// ---- PyTorch's update rules (torch.optim docs, single-tensor path), elementwise in double ----

// SGD: g += wd*p; b = first ? g : mu*b + (1-dampening)*g; g = nesterov ? g + mu*b : b; p -= lr*g
struct SgdRef {
  double lr, mu = 0, dampening = 0, wd = 0;
  bool nesterov = false;
  Vec buf;
  void step(Vec& p, const Vec& grad) {
    const bool first = buf.empty();
    if (first) buf.assign(p.size(), 0.0);
    for (size_t i = 0; i < p.size(); ++i) {
      double g = grad[i] + wd * p[i];
      if (mu != 0) {
        buf[i] = first ? g : mu * buf[i] + (1 - dampening) * g;
        g = nesterov ? g + mu * buf[i] : buf[i];
      }
      p[i] -= lr * g;
    }
  }
};

// Adam / AdamW:
//   AdamW: p *= 1 - lr*wd          Adam: g += wd*p
//   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  vmax = max(vmax, v) (amsgrad)
//   p -= lr/(1-b1^t) * m / (sqrt(v or vmax)/sqrt(1-b2^t) + eps)
struct AdamRef {
  double lr, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0;
  bool decoupled = false, amsgrad = false;
  Vec m, v, vmax;
  int t = 0;
  void step(Vec& p, const Vec& grad) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0), vmax.assign(p.size(), 0.0);
    ++t;
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    for (size_t i = 0; i < p.size(); ++i) {
      double g = grad[i];
      if (wd != 0) {
        if (decoupled) p[i] *= 1 - lr * wd;
        else g += wd * p[i];
      }
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      vmax[i] = std::max(vmax[i], v[i]);
      const double second = amsgrad ? vmax[i] : v[i];
      p[i] -= lr / bc1 * m[i] / (std::sqrt(second) / std::sqrt(bc2) + eps);
    }
  }
};

const std::vector<float> kP0 = {1.0f, -2.0f, 0.5f, 0.0f, 3.0f};
const std::vector<Vec> kGrads = {{0.5, -1.0, 2.0, 0.25, -0.125},
                                 {-0.25, 0.75, 1.5, -0.5, 0.0625},
                                 {0.125, 0.5, -3.0, 0.05, 0.3}};

}  // namespace

// ---------------------------------------------------------------------------------------------
TEST_CASE("SGD without momentum") {
  Tensor p = param(kP0);
  SGDOptions o;
  o.lr = 0.1;
  SGD opt({p}, o);
  set_grad(p, kGrads[0]);
  opt.step();
  // p1 = p0 - 0.1 * g1
  check_close(p, {1.0 - 0.05, -2.0 + 0.1, 0.5 - 0.2, 0.0 - 0.025, 3.0 + 0.0125});
  set_grad(p, kGrads[1]);
  opt.step();
  check_close(p, {0.95 + 0.025, -1.9 - 0.075, 0.3 - 0.15, -0.025 + 0.05, 3.0125 - 0.00625});
  CHECK(opt.lr() == 0.1);
  CHECK(opt.momentum() == 0.0);
}

TEST_CASE("SGD variants follow torch.optim.SGD for three steps") {
  struct Case {
    const char* name;
    SGDOptions o;
  };
  std::vector<Case> cases;
  auto add = [&](const char* name, double lr, double mu, double damp, double wd, bool nesterov) {
    SGDOptions o;
    o.lr = lr;
    o.momentum = mu;
    o.dampening = damp;
    o.weight_decay = wd;
    o.nesterov = nesterov;
    cases.push_back({name, o});
  };
  add("momentum", 0.1, 0.9, 0.0, 0.0, false);
  add("momentum + dampening", 0.05, 0.8, 0.5, 0.0, false);
  add("nesterov", 0.1, 0.9, 0.0, 0.0, true);
  add("weight decay", 0.2, 0.0, 0.0, 0.1, false);
  add("momentum + weight decay + nesterov", 0.1, 0.5, 0.0, 0.01, true);
  add("momentum + dampening + weight decay", 0.1, 0.9, 0.9, 0.05, false);
  for (const Case& c : cases) {
    INFO(c.name);
    Tensor p = param(kP0);
    SGD opt({p}, c.o);
    SgdRef ref{c.o.lr, c.o.momentum, c.o.dampening, c.o.weight_decay, c.o.nesterov, {}};
    Vec want = to_double(kP0);
    for (size_t s = 0; s < kGrads.size(); ++s) {
      INFO("step " << s + 1);
      set_grad(p, kGrads[s]);
      opt.step();
      ref.step(want, kGrads[s]);
      check_close(p, want);
    }
  }
}

TEST_CASE("SGD momentum: the first buffer is the gradient (no dampening), written out") {
  Tensor p = param({1.0f, -1.0f});
  SGDOptions o;
  o.lr = 0.1;
  o.momentum = 0.9;
  o.dampening = 0.5;
  SGD opt({p}, o);
  set_grad(p, {1.0, 2.0});
  opt.step();
  // b1 = g1 = (1, 2); p1 = p0 - 0.1 * b1
  check_close(p, {0.9, -1.2});
  set_grad(p, {-1.0, 0.5});
  opt.step();
  // b2 = 0.9*b1 + (1-0.5)*g2 = (0.9 - 0.5, 1.8 + 0.25) = (0.4, 2.05); p2 = p1 - 0.1*b2
  check_close(p, {0.9 - 0.04, -1.2 - 0.205});

  Tensor q = param({1.0f, -1.0f});
  o.dampening = 0;
  o.nesterov = true;
  SGD nest({q}, o);
  set_grad(q, {1.0, 2.0});
  nest.step();
  // b1 = g1; step = g1 + 0.9*b1 = 1.9*g1
  check_close(q, {1.0 - 0.19, -1.0 - 0.38});
  set_grad(q, {-1.0, 0.5});
  nest.step();
  // b2 = 0.9*g1 + g2 = (-0.1, 2.3); step = g2 + 0.9*b2 = (-1.09, 2.57)
  check_close(q, {0.81 + 0.109, -1.38 - 0.257});

  Tensor r = param({2.0f});
  SGDOptions wd;
  wd.lr = 0.5;
  wd.weight_decay = 0.1;
  SGD decay({r}, wd);
  set_grad(r, {0.0});
  decay.step();
  check_close(r, {2.0 - 0.5 * 0.1 * 2.0});  // decay alone moves p even with a zero gradient
}

TEST_CASE("Adam follows the documented update with bias corrections and eps") {
  SUBCASE("first step is lr * g / (|g| + eps), written out") {
    Tensor p = param({1.0f, -2.0f, 0.5f});
    AdamOptions o;
    o.lr = 0.1;
    o.eps = 0.1;  // large enough to see
    Adam opt({p}, o);
    set_grad(p, {0.5, -1.0, 0.0});
    opt.step();
    // m1/(1-b1) = g, sqrt(v1/(1-b2)) = |g|
    check_close(p, {1.0 - 0.1 * 0.5 / 0.6, -2.0 + 0.1 * 1.0 / 1.1, 0.5});
    CHECK(opt.step_count(0) == 1);
    check_close(opt.exp_avg(0), {0.1 * 0.5, 0.1 * -1.0, 0.0});
    // 1 - beta2 is formed in double and rounded once, as torch does: float(0.001), 5e-8 relative.
    check_close(opt.exp_avg_sq(0), {0.001 * 0.25, 0.001 * 1.0, 0.0}, 1e-9, 1e-6);
    set_grad(p, {-0.5, -1.0, 2.0});
    opt.step();
    // m2 = 0.9*0.1*g1 + 0.1*g2; v2 = 0.999*0.001*g1^2 + 0.001*g2^2; bc1 = 0.19, bc2 = 1 - 0.999^2
    const double bc1 = 1 - 0.9 * 0.9, bc2 = 1 - 0.999 * 0.999;
    const double m0 = 0.09 * 0.5 - 0.05, v0 = 0.000999 * 0.25 + 0.001 * 0.25;
    const double m2 = 0.9 * 0.0 + 0.1 * 2.0, v2 = 0.999 * 0.0 + 0.001 * 4.0;
    check_close(p, {1.0 - 0.1 * 0.5 / 0.6 - 0.1 / bc1 * m0 / (std::sqrt(v0 / bc2) + 0.1),
                    -2.0 + 0.1 / 1.1 - 0.1 / bc1 * (-0.09 - 0.1) / (std::sqrt((0.000999 + 0.001) / bc2) + 0.1),
                    0.5 - 0.1 / bc1 * m2 / (std::sqrt(v2 / bc2) + 0.1)});
    CHECK(opt.step_count(0) == 2);
  }
  SUBCASE("three steps of each variant against the reference") {
    struct Case {
      const char* name;
      AdamOptions o;
      bool decoupled;
    };
    auto make = [](double lr, double b1, double b2, double eps, double wd, bool ams) {
      AdamOptions o;
      o.lr = lr;
      o.beta1 = b1;
      o.beta2 = b2;
      o.eps = eps;
      o.weight_decay = wd;
      o.amsgrad = ams;
      return o;
    };
    const std::vector<Case> cases = {
        {"Adam", make(0.01, 0.9, 0.999, 1e-8, 0.0, false), false},
        {"Adam, large eps, other betas", make(0.05, 0.8, 0.95, 0.3, 0.0, false), false},
        {"Adam + L2 weight decay", make(0.01, 0.9, 0.999, 1e-8, 0.1, false), false},
        {"AdamW", make(0.01, 0.9, 0.999, 1e-8, 0.1, false), true},
        {"AdamW, strong decay", make(0.1, 0.5, 0.9, 1e-3, 0.5, false), true},
        {"Adam AMSGrad", make(0.01, 0.8, 0.9, 1e-8, 0.0, true), false},
        {"AdamW AMSGrad", make(0.02, 0.9, 0.99, 1e-6, 0.05, true), true},
    };
    for (const Case& c : cases) {
      INFO(c.name);
      Tensor p = param(kP0);
      std::unique_ptr<Adam> opt = c.decoupled ? std::make_unique<AdamW>(std::vector<Tensor>{p}, c.o)
                                              : std::make_unique<Adam>(std::vector<Tensor>{p}, c.o);
      AdamRef ref{c.o.lr, c.o.beta1, c.o.beta2, c.o.eps, c.o.weight_decay, c.decoupled, c.o.amsgrad, {}, {}, {}, 0};
      Vec want = to_double(kP0);
      for (size_t s = 0; s < kGrads.size(); ++s) {
        INFO("step " << s + 1);
        set_grad(p, kGrads[s]);
        opt->step();
        ref.step(want, kGrads[s]);
        check_close(p, want);
        check_close(opt->exp_avg(0), ref.m);
        check_close(opt->exp_avg_sq(0), ref.v, 1e-8, 1e-6);
      }
    }
  }
}

TEST_CASE("Adam weight decay is L2 on the gradient - AdamW decays the parameter first") {
  // One element, p = 2, g = 0, wd = 0.5, lr = 0.1: plain Adam sees g' = 1 and moves by ~lr;
  // AdamW first scales p by 1 - 0.05 and then sees g = 0 (no Adam move at all).
  AdamOptions o;
  o.lr = 0.1;
  o.weight_decay = 0.5;
  Tensor a = param({2.0f}), w = param({2.0f});
  Adam adam({a}, o);
  AdamW adamw({w}, o);
  set_grad(a, {0.0});
  set_grad(w, {0.0});
  adam.step();
  adamw.step();
  check_close(a, {2.0 - 0.1 * 1.0 / (1.0 + 1e-8)});
  check_close(w, {2.0 * (1 - 0.1 * 0.5)});
  CHECK(AdamW::defaults().weight_decay == 0.01);
}

TEST_CASE("AMSGrad keeps the largest second moment") {
  // A large gradient, then small ones: v decays, vmax holds, so AMSGrad takes smaller steps.
  AdamOptions o;
  o.lr = 0.1;
  o.beta2 = 0.5;
  Tensor plain = param({0.0f}), ams = param({0.0f});
  Adam a({plain}, o);
  o.amsgrad = true;
  Adam b({ams}, o);
  AdamRef ra{0.1, 0.9, 0.5, 1e-8, 0, false, false, {}, {}, {}, 0};
  AdamRef rb{0.1, 0.9, 0.5, 1e-8, 0, false, true, {}, {}, {}, 0};
  Vec pa{0.0}, pb{0.0};
  for (double g : {10.0, 0.1, 0.1, 0.1}) {
    set_grad(plain, {g});
    set_grad(ams, {g});
    a.step();
    b.step();
    ra.step(pa, {g});
    rb.step(pb, {g});
    check_close(plain, pa);
    check_close(ams, pb);
  }
  CHECK(std::fabs(pb[0] - pa[0]) > 1e-3);  // the two really differ here
  CHECK(std::fabs(ams.at({0}) - plain.at({0})) > 1e-3);
}

TEST_CASE("parameters without a gradient are skipped") {
  SUBCASE("SGD with momentum") {
    Tensor p = param({1.0f, 2.0f}), q = param({3.0f});
    SGDOptions o;
    o.lr = 0.1;
    o.momentum = 0.9;
    SGD opt({p, q}, o);
    set_grad(p, {1.0, 1.0});
    opt.step();
    check_close(p, {0.9, 1.9});
    check_close(q, {3.0});
    CHECK_FALSE(q.grad().defined());
    // q's first step later starts its buffer from its gradient.
    set_grad(q, {2.0});
    set_grad(p, {0.0, 0.0});
    opt.step();
    check_close(q, {3.0 - 0.2});
    check_close(p, {0.9 - 0.09, 1.9 - 0.09});
  }
  SUBCASE("Adam keeps a per-parameter step count") {
    Tensor p = param({1.0f}), q = param({-1.0f});
    AdamOptions o;
    o.lr = 0.1;
    Adam opt({p, q}, o);
    set_grad(p, {0.5});
    opt.step();
    CHECK(opt.step_count(0) == 1);
    CHECK(opt.step_count(1) == 0);
    check_close(q, {-1.0});
    set_grad(q, {-2.0});
    opt.step();  // p: step 2 with the same gradient; q: its first step, bias-corrected as step 1
    CHECK(opt.step_count(0) == 2);
    CHECK(opt.step_count(1) == 1);
    check_close(q, {-1.0 + 0.1 * 2.0 / (2.0 + 1e-8)});
    AdamRef ref{0.1};
    Vec want{1.0};
    ref.step(want, {0.5});
    ref.step(want, {0.5});
    check_close(p, want);
  }
  SUBCASE("zero_grad") {
    Tensor p = param({1.0f}), q = param({2.0f});
    SGDOptions o;
    o.lr = 1.0;
    SGD opt({p, q}, o);
    set_grad(p, {1.0});
    set_grad(q, {1.0});
    opt.zero_grad(false);
    CHECK(p.grad().defined());
    CHECK(p.grad().item() == 0.f);
    opt.step();
    check_close(p, {1.0});
    opt.zero_grad();
    CHECK_FALSE(p.grad().defined());
    CHECK_FALSE(q.grad().defined());
    opt.step();
    check_close(q, {2.0});
  }
}

TEST_CASE("optimizer arguments are validated and set_lr takes effect") {
  Tensor p = param({1.0f});
  SGDOptions o;
  o.lr = 0.1;
  CHECK_THROWS_AS((SGD{std::vector<Tensor>{}, o}), volt::Error);
  CHECK_THROWS_AS((SGD{{Tensor::ones({2})}, o}), volt::Error);  // does not require grad
  SGDOptions bad = o;
  bad.nesterov = true;
  CHECK_THROWS_AS((SGD{{p}, bad}), volt::Error);  // nesterov without momentum
  bad.momentum = 0.9;
  bad.dampening = 0.1;
  CHECK_THROWS_AS((SGD{{p}, bad}), volt::Error);  // nesterov with dampening
  bad = o;
  bad.lr = -1;
  CHECK_THROWS_AS((SGD{{p}, bad}), volt::Error);
  AdamOptions ao;
  ao.beta1 = 1.0;
  CHECK_THROWS_AS((Adam{{p}, ao}), volt::Error);
  ao.beta1 = 0.9;
  ao.eps = -1;
  CHECK_THROWS_AS((Adam{{p}, ao}), volt::Error);

  SGD opt({p}, o);
  opt.set_lr(0.5);
  CHECK(opt.lr() == 0.5);
  CHECK_THROWS_AS(opt.set_lr(-0.1), volt::Error);
  set_grad(p, {1.0});
  opt.step();
  check_close(p, {0.5});
  CHECK(opt.params().size() == 1);
}

// ---------------------------------------------------------------------------------------------
// Trajectories printed by PyTorch 2.11 (generated by a throwaway script, /tmp/gen/gen_optim.py): p0 = kTorchP0, gradients kTorchGrads
// set as p.grad before each opt.step(); rows are p after steps 1, 2, 3.
namespace {
const std::vector<float> kTorchP0 = {0.5f, -1.25f, 2.0f, -0.125f, 0.75f};
const std::vector<Vec> kTorchGrads = {{0.3, -0.2, 1.5, 0.01, -0.8},
                                      {-0.1, -0.4, 0.02, 0.05, 0.6},
                                      {0.2, 0.1, -0.3, -0.02, 0.05}};

void check_torch_trajectory(Optimizer& opt, Tensor& p, const std::vector<Vec>& rows) {
  for (size_t s = 0; s < rows.size(); ++s) {
    INFO("step " << s + 1);
    set_grad(p, kTorchGrads[s]);
    opt.step();
    check_close(p, rows[s], 1e-6, 2e-6);
  }
}
}  // namespace

TEST_CASE("Adam, AdamW, AMSGrad and SGD nesterov match PyTorch trajectories") {
  SUBCASE("Adam") {
    // torch.optim.Adam([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
    Tensor p = param(kTorchP0);
    AdamOptions o;
    o.lr = 0.01;
    o.weight_decay = 0.05;
    Adam opt({p}, o);
    check_torch_trajectory(opt, p,
                           {{0.49000001, -1.24000001, 1.99000001, -0.134999976, 0.75999999},
                            {0.485158056, -1.23022032, 1.98276353, -0.142992064, 0.760361254},
                            {0.478486687, -1.22314215, 1.97800744, -0.144840807, 0.760075629}});
  }
  SUBCASE("AdamW") {
    // torch.optim.AdamW([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    Tensor p = param(kTorchP0);
    AdamOptions o = AdamW::defaults();
    o.lr = 0.01;
    o.weight_decay = 0.1;
    AdamW opt({p}, o);
    check_torch_trajectory(opt, p,
                           {{0.489500016, -1.23874998, 1.98800004, -0.134874985, 0.759249985},
                            {0.485008329, -1.2278595, 1.97921288, -0.143350571, 0.759383976},
                            {0.478492469, -1.22074556, 1.97333395, -0.147069439, 0.758994937}});
  }
  SUBCASE("Adam AMSGrad") {
    // torch.optim.Adam([p], lr=0.01, betas=(0.8, 0.99), amsgrad=True)
    Tensor p = param(kTorchP0);
    AdamOptions o;
    o.lr = 0.01;
    o.beta1 = 0.8;
    o.beta2 = 0.99;
    o.amsgrad = true;
    Adam opt({p}, o);
    check_torch_trajectory(opt, p,
                           {{0.49000001, -1.24000001, 1.99000001, -0.13499999, 0.75999999},
                            {0.486514658, -1.23017657, 1.98362589, -0.143916175, 0.760314465},
                            {0.48058486, -1.22478199, 1.98047459, -0.147335976, 0.760186911}});
  }
  SUBCASE("SGD nesterov") {
    // torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    Tensor p = param(kTorchP0);
    SGDOptions o;
    o.lr = 0.1;
    o.momentum = 0.9;
    o.nesterov = true;
    o.weight_decay = 0.01;
    SGD opt({p}, o);
    check_torch_trajectory(opt, p,
                           {{0.44205001, -1.20962501, 1.7112, -0.126662493, 0.900574982},
                            {0.435505122, -1.11411417, 1.5810287, -0.13663058, 0.849056363},
                            {0.382185102, -1.08212626, 1.52121067, -0.137156263, 0.846386909}});
  }
}

// ---------------------------------------------------------------------------------------------
// Schedules: lists are opt.param_groups[0]['lr'] right after construction (t = 0) and after each
// scheduler.step(), printed by PyTorch 2.11 (generated by a throwaway script, /tmp/gen/gen_sched.py).
TEST_CASE("StepLR matches PyTorch") {
  Tensor p = param({1.0f});
  SGDOptions o;
  o.lr = 0.1;
  SGD opt({p}, o);
  // torch.optim.lr_scheduler.StepLR(SGD(lr=0.1), step_size=3, gamma=0.5), t = 0..10
  StepLR s(opt, 3, 0.5);
  check_lrs(s, opt, {0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125, 0.0125});
  CHECK_THROWS_AS((StepLR{opt, 0}), volt::Error);
}

TEST_CASE("CosineAnnealingLR matches PyTorch, past T_max too") {
  Tensor p = param({1.0f});
  SGDOptions o;
  o.lr = 0.1;
  SGD opt({p}, o);
  // torch.optim.lr_scheduler.CosineAnnealingLR(SGD(lr=0.1), T_max=5, eta_min=0.001), t = 0..12
  CosineAnnealingLR s(opt, 5, 0.001);
  check_lrs(s, opt,
            {0.1, 0.0905463412215599, 0.06579634122155989, 0.035203658778440096, 0.010453658778440105, 0.001,
             0.010453658778440102, 0.03520365877844012, 0.06579634122155993, 0.09054634122155995,
             0.10000000000000005, 0.09054634122155998, 0.06579634122155995},
            1e-9);
  // Resuming: set_last_epoch applies the schedule at that step.
  s.set_last_epoch(3);
  CHECK(std::fabs(opt.lr() - 0.035203658778440096) < 1e-12);
  s.step();
  CHECK(std::fabs(opt.lr() - 0.010453658778440105) < 1e-12);
  CHECK_THROWS_AS(s.set_last_epoch(-1), volt::Error);
}

TEST_CASE("LinearLR matches PyTorch") {
  Tensor p = param({1.0f});
  SGDOptions o;
  o.lr = 0.1;
  {
    SGD opt({p}, o);
    // torch.optim.lr_scheduler.LinearLR(SGD(lr=0.1), start_factor=0.25, end_factor=1.0, total_iters=4), t = 0..7
    LinearLR s(opt, 0.25, 1.0, 4);
    check_lrs(s, opt,
              {0.025, 0.043750000000000004, 0.06250000000000001, 0.08125000000000002, 0.10000000000000002,
               0.10000000000000002, 0.10000000000000002, 0.10000000000000002});
  }
  {
    SGD opt({p}, o);
    // torch.optim.lr_scheduler.LinearLR(SGD(lr=0.1), start_factor=1.0, end_factor=0.1, total_iters=3), t = 0..5
    LinearLR s(opt, 1.0, 0.1, 3);
    check_lrs(s, opt,
              {0.1, 0.06999999999999999, 0.039999999999999994, 0.009999999999999998, 0.009999999999999998,
               0.009999999999999998});
  }
  SGD opt({p}, o);
  CHECK_THROWS_AS((LinearLR{opt, 0.0, 1.0, 4}), volt::Error);
  CHECK_THROWS_AS((LinearLR{opt, 0.5, 1.0, 0}), volt::Error);
}

TEST_CASE("OneCycleLR (cos) with SGD momentum cycling matches PyTorch - stepping past total_steps throws") {
  Tensor p = param({1.0f});
  SGDOptions so;
  so.lr = 0.1;
  so.momentum = 0.9;
  SGD opt({p}, so);
  OneCycleOptions o;
  o.max_lr = 0.1;
  o.total_steps = 10;
  // torch.optim.lr_scheduler.OneCycleLR(SGD(lr=0.1, momentum=0.9), max_lr=0.1, total_steps=10)
  OneCycleLR s(opt, o);
  const Vec lr = {0.0040000000000000036, 0.052000000000000005, 0.1, 0.09504846320134738, 0.0811745653949763,
                  0.06112620219362893, 0.03887419780637107, 0.0188258346050237, 0.004951936798652629, 4e-07,
                  0.004951936798652624};
  const Vec mom = {0.95, 0.8999999999999999, 0.85, 0.854951556604879, 0.8688255099070633, 0.8888739533021842,
                   0.9111260466978157, 0.9311744900929366, 0.945048443395121, 0.95, 0.945048443395121};
  for (size_t t = 0; t < lr.size(); ++t) {
    if (t > 0) s.step();
    INFO("t = " << t);
    CHECK(std::fabs(opt.lr() - lr[t]) < 1e-12);
    CHECK(std::fabs(opt.momentum() - mom[t]) < 1e-12);
    CHECK(std::fabs(s.lr_at(int64_t(t)) - lr[t]) < 1e-12);
    CHECK(std::fabs(s.momentum_at(int64_t(t)) - mom[t]) < 1e-12);
  }
  // torch: "ValueError: Tried to step 11 times. The specified number of total steps is 10"
  CHECK_THROWS_AS(s.step(), volt::Error);
  CHECK_THROWS_AS(s.lr_at(11), volt::Error);
}

TEST_CASE("OneCycleLR (linear) cycles Adam's beta1 and matches PyTorch") {
  Tensor p = param({1.0f});
  AdamOptions ao;
  ao.lr = 0.1;
  Adam opt({p}, ao);
  OneCycleOptions o;
  o.max_lr = 0.05;
  o.total_steps = 12;
  o.pct_start = 0.25;
  o.cos_anneal = false;
  o.div_factor = 10.0;
  o.final_div_factor = 100.0;
  // torch.optim.lr_scheduler.OneCycleLR(Adam(lr=0.1), max_lr=0.05, total_steps=12, pct_start=0.25,
  //     anneal_strategy='linear', div_factor=10, final_div_factor=100); lr and betas[0], t = 0..12
  OneCycleLR s(opt, o);
  const Vec lr = {0.005, 0.027500000000000004, 0.05, 0.04445, 0.038900000000000004, 0.033350000000000005,
                  0.027800000000000002, 0.022250000000000002, 0.016700000000000007, 0.01115, 0.005600000000000001,
                  5.000000000000143e-05, -0.005499999999999998};
  const Vec beta1 = {0.95, 0.8999999999999999, 0.85, 0.861111111111111, 0.8722222222222222, 0.8833333333333333,
                     0.8944444444444444, 0.9055555555555556, 0.9166666666666666, 0.9277777777777777,
                     0.9388888888888889, 0.95, 0.961111111111111};
  // Beta1 = 0.95 at t = 0 is the one Adam uses: the first moment is (1 - 0.95) * g.
  set_grad(p, {2.0});
  opt.step();
  CHECK(std::fabs(opt.exp_avg(0).item() - 0.05 * 2.0) < 1e-7);
  for (size_t t = 0; t + 1 < lr.size(); ++t) {
    if (t > 0) s.step();
    INFO("t = " << t);
    CHECK(std::fabs(opt.lr() - lr[t]) < 1e-12);
    CHECK(std::fabs(opt.momentum() - beta1[t]) < 1e-12);
  }
  // t = total_steps: PyTorch extrapolates the last phase to a negative rate (-0.0055) that is
  // never used; Volt clamps it at 0 instead of failing on the last scheduler step of a run.
  CHECK_NOTHROW(s.step());
  CHECK(opt.lr() == 0.0);
  CHECK(std::fabs(opt.momentum() - beta1[12]) < 1e-12);
  CHECK_THROWS_AS(s.step(), volt::Error);
}

TEST_CASE("OneCycleLR three_phase and cycle_momentum=false match PyTorch") {
  Tensor p = param({1.0f});
  SGDOptions so;
  so.lr = 0.1;
  so.momentum = 0.9;
  {
    SGD opt({p}, so);
    OneCycleOptions o;
    o.max_lr = 0.2;
    o.total_steps = 10;
    o.pct_start = 0.3;
    o.three_phase = true;
    // torch.optim.lr_scheduler.OneCycleLR(SGD(lr=0.1, momentum=0.9), max_lr=0.2, total_steps=10,
    //     pct_start=0.3, three_phase=True); lr and momentum, t = 0..10
    OneCycleLR s(opt, o);
    const Vec lr = {0.008000000000000007, 0.10400000000000001, 0.2, 0.10400000000000001, 0.008,
                    0.007236144370702039, 0.005236344370702039, 0.0027644556292979604, 0.0007646556292979606, 8e-07,
                    0.0007646556292979597};
    const Vec mom = {0.95, 0.8999999999999999, 0.85, 0.8999999999999999, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95};
    for (size_t t = 0; t < lr.size(); ++t) {
      if (t > 0) s.step();
      INFO("t = " << t);
      CHECK(std::fabs(opt.lr() - lr[t]) < 1e-12);
      CHECK(std::fabs(opt.momentum() - mom[t]) < 1e-12);
    }
    CHECK_THROWS_AS(s.step(), volt::Error);
  }
  {
    SGD opt({p}, so);
    OneCycleOptions o;
    o.max_lr = 0.1;
    o.total_steps = 8;
    o.cycle_momentum = false;
    // torch.optim.lr_scheduler.OneCycleLR(SGD(lr=0.1, momentum=0.9), max_lr=0.1, total_steps=8,
    //     cycle_momentum=False); lr, t = 0..8 (momentum stays 0.9)
    OneCycleLR s(opt, o);
    const Vec lr = {0.0040000000000000036, 0.08192751048921922, 0.09719417773875232, 0.0811745653949763,
                    0.05559840141227016, 0.028306099820869922, 0.0076641593834256404, 4e-07, 0.007664159383425634};
    for (size_t t = 0; t < lr.size(); ++t) {
      if (t > 0) s.step();
      INFO("t = " << t);
      CHECK(std::fabs(opt.lr() - lr[t]) < 1e-12);
      CHECK(opt.momentum() == 0.9);
    }
  }
  SGD opt({p}, so);
  OneCycleOptions bad;
  bad.total_steps = 0;
  CHECK_THROWS_AS((OneCycleLR{opt, bad}), volt::Error);
  bad.total_steps = 10;
  bad.pct_start = 1.5;
  CHECK_THROWS_AS((OneCycleLR{opt, bad}), volt::Error);
}

TEST_CASE("a schedule drives the optimizer's updates") {
  // SGD(lr=1) under StepLR(step_size=1, gamma=0.5): with g = 1 each step moves p by the current lr.
  Tensor p = param({0.0f});
  SGDOptions o;
  o.lr = 1.0;
  SGD opt({p}, o);
  StepLR s(opt, 1, 0.5);
  double want = 0.0, lr = 1.0;
  for (int i = 0; i < 4; ++i) {
    set_grad(p, {1.0});
    opt.step();
    want -= lr;
    s.step();
    lr *= 0.5;
    check_close(p, {want});
  }
}
