// Optimizers: the first steps of SGD (momentum, dampening, nesterov, weight decay), Adam, AdamW and
// AMSGrad against PyTorch's documented update rules computed here in double, and a few trajectories
// printed by PyTorch 2.11.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "layers/optim/optimizer.h"
#include "tests/test_util.h"

using namespace volt;

namespace {

using Vec = std::vector<double>;
using test::adam_options;
using test::check_close;
using test::param;
using test::set_grad;
using test::sgd_options;

Vec to_double(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

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
  SGD opt({p}, sgd_options(0.1));
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
  const std::vector<Case> cases = {
      {"momentum", sgd_options(0.1, 0.9, 0.0, 0.0, false)},
      {"momentum + dampening", sgd_options(0.05, 0.8, 0.5, 0.0, false)},
      {"nesterov", sgd_options(0.1, 0.9, 0.0, 0.0, true)},
      {"weight decay", sgd_options(0.2, 0.0, 0.0, 0.1, false)},
      {"momentum + weight decay + nesterov", sgd_options(0.1, 0.5, 0.0, 0.01, true)},
      {"momentum + dampening + weight decay", sgd_options(0.1, 0.9, 0.9, 0.05, false)},
  };
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
    const std::vector<Case> cases = {
        {"Adam", adam_options(0.01, 0.9, 0.999, 1e-8, 0.0, false), false},
        {"Adam, large eps, other betas", adam_options(0.05, 0.8, 0.95, 0.3, 0.0, false), false},
        {"Adam + L2 weight decay", adam_options(0.01, 0.9, 0.999, 1e-8, 0.1, false), false},
        {"AdamW", adam_options(0.01, 0.9, 0.999, 1e-8, 0.1, false), true},
        {"AdamW, strong decay", adam_options(0.1, 0.5, 0.9, 1e-3, 0.5, false), true},
        {"Adam AMSGrad", adam_options(0.01, 0.8, 0.9, 1e-8, 0.0, true), false},
        {"AdamW AMSGrad", adam_options(0.02, 0.9, 0.99, 1e-6, 0.05, true), true},
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
    SGD opt({p, q}, sgd_options(0.1, 0.9));
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
    Adam opt({p, q}, adam_options(0.1));
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
    SGD opt({p, q}, sgd_options(1.0));
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
  const SGDOptions o = sgd_options(0.1);
  CHECK_THROWS_AS((SGD{std::vector<Tensor>{}, o}), volt::Error);
  CHECK(test::contains(test::error_of([&] { SGD(std::vector<Tensor>{mul(p, 2.0f)}, o); }), "not a leaf"));  // an op's result
  {
    // A frozen leaf is accepted (as PyTorch's): no gradient, no update, also with weight decay and
    // momentum, until it is unfrozen.
    Tensor frozen = Tensor::ones({2});
    SGDOptions wd = o;
    wd.momentum = 0.9;
    wd.weight_decay = 0.5;
    SGD opt({frozen}, wd);
    opt.step();
    CHECK(frozen.to_vector() == std::vector<float>{1.0f, 1.0f});
    frozen.requires_grad_(true);
    frozen.set_grad(Tensor::ones({2}));
    opt.step();
    CHECK(frozen.to_vector()[0] < 1.0f);
  }
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

// A factory for an Opt over one parameter with options o.
template <class Opt, class Options>
std::function<std::unique_ptr<Optimizer>(const Tensor&)> over_one(const Options& o) {
  return [o](const Tensor& p) { return std::make_unique<Opt>(std::vector<Tensor>{p}, o); };
}

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
  struct Case {
    const char* torch;  // the PyTorch optimizer that printed the rows
    std::function<std::unique_ptr<Optimizer>(const Tensor&)> make;
    std::vector<Vec> rows;
  };
  const std::vector<Case> cases = {
      {"torch.optim.Adam([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)",
       over_one<Adam>(adam_options(0.01, 0.9, 0.999, 1e-8, 0.05, false)),
       {{0.49000001, -1.24000001, 1.99000001, -0.134999976, 0.75999999},
        {0.485158056, -1.23022032, 1.98276353, -0.142992064, 0.760361254},
        {0.478486687, -1.22314215, 1.97800744, -0.144840807, 0.760075629}}},
      {"torch.optim.AdamW([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)",
       over_one<AdamW>(adam_options(0.01, 0.9, 0.999, 1e-8, 0.1, false)),
       {{0.489500016, -1.23874998, 1.98800004, -0.134874985, 0.759249985},
        {0.485008329, -1.2278595, 1.97921288, -0.143350571, 0.759383976},
        {0.478492469, -1.22074556, 1.97333395, -0.147069439, 0.758994937}}},
      {"torch.optim.Adam([p], lr=0.01, betas=(0.8, 0.99), amsgrad=True)",
       over_one<Adam>(adam_options(0.01, 0.8, 0.99, 1e-8, 0.0, true)),
       {{0.49000001, -1.24000001, 1.99000001, -0.13499999, 0.75999999},
        {0.486514658, -1.23017657, 1.98362589, -0.143916175, 0.760314465},
        {0.48058486, -1.22478199, 1.98047459, -0.147335976, 0.760186911}}},
      {"torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)",
       over_one<SGD>(sgd_options(0.1, 0.9, 0.0, 0.01, true)),
       {{0.44205001, -1.20962501, 1.7112, -0.126662493, 0.900574982},
        {0.435505122, -1.11411417, 1.5810287, -0.13663058, 0.849056363},
        {0.382185102, -1.08212626, 1.52121067, -0.137156263, 0.846386909}}},
  };
  for (const Case& c : cases) {
    INFO(c.torch);
    Tensor p = param(kTorchP0);
    std::unique_ptr<Optimizer> opt = c.make(p);
    check_torch_trajectory(*opt, p, c.rows);
  }
}
