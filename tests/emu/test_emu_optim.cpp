// The CUDA multi-tensor optimizer updates, run by the CPU emulator, against the CPU's
// single-tensor updates: the same parameters bit for bit, over more tensors than one launch holds.
#include "kernels/optim.h"
#include "tests/emu/emu_util.h"

using namespace volt;
using namespace volt::emu_test;

namespace {
// 30 tensors (more than one launch's 24) of awkward sizes.
std::vector<int64_t> sizes() {
  std::vector<int64_t> s;
  for (int i = 0; i < 30; ++i) s.push_back(1 + (i * 97) % 613);
  return s;
}
}  // namespace

TEST_CASE("emu optim: multi-tensor SGD (momentum, nesterov, weight decay) equals the CPU bit for bit") {
  const auto n = sizes();
  for (bool nesterov : {false, true}) {
    std::vector<Guarded<float>> p1, p2, g, b1, b2;
    for (size_t t = 0; t < n.size(); ++t) {
      p1.emplace_back(random_floats(size_t(n[t]), 100 + t));
      p2.emplace_back(p1.back().vec());
      g.emplace_back(random_floats(size_t(n[t]), 200 + t));
      b1.emplace_back(size_t(n[t]));
      b2.emplace_back(size_t(n[t]));
    }
    Guarded<int64_t> counts(n.size(), 0);  // the device's steps taken: the first step starts the buffers
    cpu::SgdArgs a{0.05, 0.9, nesterov ? 0.0 : 0.1, 1e-3, nesterov, true};
    for (int step = 0; step < 3; ++step) {
      a.lr = 0.05 / (step + 1);  // a schedule: the per-step values travel through `values`
      std::vector<cuda::SgdTensor> list;
      for (size_t t = 0; t < n.size(); ++t)
        list.push_back({p1[t].data(), g[t].data(), b1[t].data(), counts.data() + t, n[t]});
      const Guarded<double> values(std::vector<double>{a.lr, a.momentum});
      cuda::sgd_update_multi(list.data(), int64_t(list.size()), a, values.data(), nullptr, nullptr);
      a.first_step = step == 0;
      for (size_t t = 0; t < n.size(); ++t) cpu::sgd_update(n[t], p2[t].data(), g[t].data(), b2[t].data(), a);
    }
    CHECK(counts.vec() == std::vector<int64_t>(n.size(), 3));
    CHECK(counts.guards_intact());
    for (size_t t = 0; t < n.size(); ++t) {
      check_bitwise(p1[t].vec(), p2[t].vec(), "param " + std::to_string(t));
      check_bitwise(b1[t].vec(), b2[t].vec(), "momentum " + std::to_string(t));
      REQUIRE((p1[t].guards_intact() && b1[t].guards_intact()));
    }
  }
}

TEST_CASE("emu optim: a non-zero skip flag leaves every tensor and count untouched (a mixed-precision step with Inf)") {
  const auto n = sizes();
  std::vector<Guarded<float>> p, g, m, v;
  for (size_t t = 0; t < n.size(); ++t) {
    p.emplace_back(random_floats(size_t(n[t]), 600 + t));
    g.emplace_back(random_floats(size_t(n[t]), 700 + t));
    m.emplace_back(size_t(n[t]));
    v.emplace_back(size_t(n[t]));
  }
  Guarded<int64_t> counts(n.size(), 0), sgd_counts(n.size(), 0);
  std::vector<cuda::AdamTensor> list;
  std::vector<cuda::SgdTensor> slist;
  for (size_t t = 0; t < n.size(); ++t) {
    list.push_back({p[t].data(), g[t].data(), m[t].data(), v[t].data(), nullptr, counts.data() + t, n[t]});
    slist.push_back({p[t].data(), g[t].data(), m[t].data(), sgd_counts.data() + t, n[t]});
  }
  const cpu::AdamArgs a{1e-3, 0.9, 0.999, 1e-8, 0.0, 1, false, false};
  Guarded<double> values(std::vector<double>{1e-3, 0.9});
  Guarded<float> skip(std::vector<float>{1.f});
  std::vector<std::vector<float>> before;
  for (auto& x : p) before.push_back(x.vec());
  cuda::adam_update_multi(list.data(), int64_t(list.size()), a, values.data(), skip.data(), nullptr);
  const cpu::SgdArgs sa{0.1, 0.9, 0.0, 0.0, false, true};
  cuda::sgd_update_multi(slist.data(), int64_t(slist.size()), sa, values.data(), skip.data(), nullptr);
  for (size_t t = 0; t < n.size(); ++t) {
    REQUIRE(p[t].vec() == before[t]);
    REQUIRE(m[t].vec() == std::vector<float>(size_t(n[t]), 0.f));
  }
  CHECK(counts.vec() == std::vector<int64_t>(n.size(), 0));
  CHECK(sgd_counts.vec() == std::vector<int64_t>(n.size(), 0));
  skip[0] = 0.f;  // a clean step updates, as the first step (Adam's step 1)
  cuda::adam_update_multi(list.data(), int64_t(list.size()), a, values.data(), skip.data(), nullptr);
  CHECK(counts.vec() == std::vector<int64_t>(n.size(), 1));
  std::vector<float> want = before[0], wm(static_cast<size_t>(n[0])), wv(static_cast<size_t>(n[0]));
  cpu::adam_update(n[0], want.data(), g[0].data(), wm.data(), wv.data(), nullptr, a);
  check_bitwise(p[0].vec(), want, "the first step taken after a skipped one is Adam's step 1");
}

TEST_CASE("emu optim: the multi-tensor loss-scale unscale finds Inf and NaN and scales like the CPU") {
  const auto n = sizes();
  for (int bad_kind = 0; bad_kind < 3; ++bad_kind) {  // none, an Inf, a NaN (in the last tensor)
    std::vector<Guarded<float>> g1;
    std::vector<std::vector<float>> g2;
    for (size_t t = 0; t < n.size(); ++t) {
      g2.push_back(random_floats(size_t(n[t]), 500 + t, -1e4f, 1e4f));
      if (t + 1 == n.size() && bad_kind) g2.back()[size_t(n[t]) / 2] = bad_kind == 1 ? INFINITY : NAN;
      g1.emplace_back(g2.back());
    }
    Guarded<float> inv(std::vector<float>{1.f / 1024.f}), found1(std::vector<float>{0.f});
    float found2 = 0.f;
    std::vector<cuda::GradTensor> list;
    for (size_t t = 0; t < n.size(); ++t) list.push_back({g1[t].data(), n[t]});
    cuda::unscale_grads_multi(list.data(), int64_t(list.size()), inv.data(), found1.data(), nullptr);
    for (size_t t = 0; t < n.size(); ++t) cpu::unscale_grads(n[t], g2[t].data(), 1.f / 1024.f, &found2);
    CHECK(found1[0] == (bad_kind ? 1.f : 0.f));
    CHECK(found2 == found1[0]);
    for (size_t t = 0; t < n.size(); ++t) {
      check_bitwise(g1[t].vec(), g2[t], "unscaled gradient " + std::to_string(t));
      REQUIRE(g1[t].guards_intact());
    }
  }
}

TEST_CASE("emu optim: multi-tensor Adam, AdamW and AMSGrad equal the CPU bit for bit") {
  const auto n = sizes();
  for (int variant = 0; variant < 3; ++variant) {
    const bool decoupled = variant == 1, amsgrad = variant == 2;
    std::vector<Guarded<float>> p1, p2, g, m1, m2, v1, v2, x1, x2;
    for (size_t t = 0; t < n.size(); ++t) {
      p1.emplace_back(random_floats(size_t(n[t]), 300 + t));
      p2.emplace_back(p1.back().vec());
      g.emplace_back(random_floats(size_t(n[t]), 400 + t, -1e-3f, 1e-3f));
      for (auto* v : {&m1, &m2, &v1, &v2, &x1, &x2}) v->emplace_back(size_t(n[t]));
    }
    cpu::AdamArgs a{1e-3, 0.9, 0.999, 1e-8, variant == 0 ? 0.0 : 1e-2, 1, decoupled, amsgrad};
    Guarded<int64_t> counts(n.size(), 0);
    for (int64_t step = 1; step <= 3; ++step) {
      a.lr = 1e-3 * double(step);  // a schedule, through `values`
      a.beta1 = 0.9 - 0.01 * double(step);  // a cycled beta1 (OneCycleLR), likewise
      std::vector<cuda::AdamTensor> list;
      for (size_t t = 0; t < n.size(); ++t)
        list.push_back({p1[t].data(), g[t].data(), m1[t].data(), v1[t].data(), amsgrad ? x1[t].data() : nullptr,
                        counts.data() + t, n[t]});
      const Guarded<double> values(std::vector<double>{a.lr, a.beta1});
      cuda::adam_update_multi(list.data(), int64_t(list.size()), a, values.data(), nullptr, nullptr);
      a.step = step;
      for (size_t t = 0; t < n.size(); ++t)
        cpu::adam_update(n[t], p2[t].data(), g[t].data(), m2[t].data(), v2[t].data(), amsgrad ? x2[t].data() : nullptr,
                         a);
    }
    CHECK(counts.vec() == std::vector<int64_t>(n.size(), 3));
    for (size_t t = 0; t < n.size(); ++t) {
      INFO("variant " << variant << ", tensor " << t);
      check_bitwise(p1[t].vec(), p2[t].vec(), "param");
      check_bitwise(m1[t].vec(), m2[t].vec(), "exp_avg");
      check_bitwise(v1[t].vec(), v2[t].vec(), "exp_avg_sq");
      if (amsgrad) check_bitwise(x1[t].vec(), x2[t].vec(), "max_exp_avg_sq");
      REQUIRE((p1[t].guards_intact() && m1[t].guards_intact() && v1[t].guards_intact() && x1[t].guards_intact()));
    }
  }
}

TEST_CASE("emu optim: the device's loss-scale update follows the CPU's over a run of clean and Inf steps") {
  // growth_interval 3, growth 2, backoff 0.5: grows after 3 clean steps, halves on each Inf; an
  // odd factor pair too, and a scale that would overflow float32 when grown (kept).
  struct Case {
    float scale;
    double growth, backoff;
    int64_t interval;
  };
  const std::vector<int> infs = {0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0};
  for (const Case c : {Case{1024.f, 2.0, 0.5, 3}, Case{1000.f, 3.0, 0.3, 2}, Case{3e38f, 2.0, 0.5, 1}}) {
    INFO("scale " << c.scale << " growth " << c.growth);
    Guarded<float> scale(std::vector<float>{c.scale}), inv(size_t(1)), found(size_t(1));
    Guarded<int64_t> counts(size_t(3), 0);
    float host = c.scale;
    cpu::LossScaleCounts hc{0, 0, 0};
    for (int f : infs) {
      found[0] = float(f);
      cuda::loss_scale_update(found.data(), scale.data(), inv.data(), counts.data(), c.growth, c.backoff, c.interval,
                              nullptr);
      host = cpu::loss_scale_update(host, hc, f != 0, c.growth, c.backoff, c.interval);
      REQUIRE(scale[0] == host);
      REQUIRE(inv[0] == cpu::inverse_scale(host));
      REQUIRE(counts.vec() == std::vector<int64_t>{hc.growth_tracker, hc.skipped, hc.steps});
    }
    CHECK(hc.steps == int64_t(infs.size()));
    CHECK(hc.skipped == 3);
    CHECK((scale.guards_intact() && inv.guards_intact() && counts.guards_intact()));
  }
  // The arithmetic itself: 1024 grows to 2048 after 3 clean steps, halves on Inf; 3e38 never grows to Inf.
  cpu::LossScaleCounts c{0, 0, 0};
  float s = 1024.f;
  for (int i = 0; i < 3; ++i) s = cpu::loss_scale_update(s, c, false, 2.0, 0.5, 3);
  CHECK(s == 2048.f);
  CHECK(cpu::loss_scale_update(s, c, true, 2.0, 0.5, 3) == 1024.f);
  CHECK(cpu::loss_scale_update(3e38f, c, false, 2.0, 0.5, 1) == 3e38f);
}

namespace {
// The CPU's clip_grad_norm_ over tensors g (in place); returns the norm.
double cpu_clip_norm(std::vector<std::vector<float>>& g, double max_norm, double p) {
  double total = 0;
  for (auto& x : g) total = cpu::grad_norm_combine(total, cpu::grad_norm_term(int64_t(x.size()), x.data(), p), p);
  const double norm = cpu::grad_norm_finish(total, p);
  for (auto& x : g) cpu::scale_grads(int64_t(x.size()), x.data(), cpu::clip_coefficient(norm, max_norm));
  return norm;
}
}  // namespace

TEST_CASE("emu optim: multi-tensor clip_grad_norm_ (p = 2, 1, 3, inf) matches the CPU, and leaves a small norm alone") {
  auto n = sizes();
  n.push_back(3001);  // 12 blocks of one tensor: their partial terms combine too
  for (double p : {2.0, 1.0, 3.0, double(INFINITY)}) {
    for (double max_norm : {0.5, 1e9}) {
      INFO("p " << p << ", max_norm " << max_norm);
      std::vector<Guarded<float>> g1;
      std::vector<std::vector<float>> g2;
      for (size_t t = 0; t < n.size(); ++t) {
        g2.push_back(random_floats(size_t(n[t]), 800 + t, -3.f, 2.f));
        g1.emplace_back(g2.back());
      }
      std::vector<cuda::GradTensor> list;
      for (size_t t = 0; t < n.size(); ++t) list.push_back({g1[t].data(), n[t]});
      const int64_t np = cuda::grad_norm_partial_count(list.data(), int64_t(list.size()));
      Guarded<double> partials(size_t(np + 1), -1.0);
      Guarded<float> norm(1);
      cuda::grad_norm_multi(list.data(), int64_t(list.size()), p, max_norm, partials.data(), norm.data(),
                            partials.data() + np, nullptr);
      cuda::scale_grads_multi(list.data(), int64_t(list.size()), partials.data() + np, nullptr);
      const double want = cpu_clip_norm(g2, max_norm, p);
      CHECK(norm[0] == doctest::Approx(want).epsilon(1e-6));
      CHECK(partials[size_t(np)] == doctest::Approx(cpu::clip_coefficient(want, max_norm)).epsilon(1e-12));
      for (size_t t = 0; t < n.size(); ++t) {
        const std::vector<float> got = g1[t].vec();
        if (max_norm > 1e8) {
          check_bitwise(got, g2[t], "unclipped gradient " + std::to_string(t));  // coefficient 1: untouched
        } else {
          for (size_t i = 0; i < got.size(); ++i)
            REQUIRE(std::fabs(got[i] - g2[t][i]) <= 1e-6f * std::fabs(g2[t][i]) + 1e-30f);
        }
        REQUIRE((g1[t].guards_intact() && partials.guards_intact() && norm.guards_intact()));
      }
    }
  }
}

TEST_CASE("emu optim: a NaN gradient makes the clip norm NaN, and the multi-tensor clamp keeps NaN as the CPU does") {
  const auto n = sizes();
  for (double p : {2.0, double(INFINITY)}) {
    std::vector<Guarded<float>> g;
    for (size_t t = 0; t < n.size(); ++t) g.emplace_back(random_floats(size_t(n[t]), 900 + t));
    g[7][3] = NAN;
    std::vector<cuda::GradTensor> list;
    for (size_t t = 0; t < n.size(); ++t) list.push_back({g[t].data(), n[t]});
    const int64_t np = cuda::grad_norm_partial_count(list.data(), int64_t(list.size()));
    Guarded<double> partials(size_t(np + 1));
    Guarded<float> norm(1);
    cuda::grad_norm_multi(list.data(), int64_t(list.size()), p, 1.0, partials.data(), norm.data(), partials.data() + np,
                          nullptr);
    CHECK(std::isnan(norm[0]));
    cuda::scale_grads_multi(list.data(), int64_t(list.size()), partials.data() + np, nullptr);
    CHECK(std::isnan(g[0][0]));
  }
  std::vector<Guarded<float>> g1;
  std::vector<std::vector<float>> g2;
  for (size_t t = 0; t < n.size(); ++t) {
    g2.push_back(random_floats(size_t(n[t]), 950 + t, -2.f, 2.f));
    g2.back()[0] = NAN;
    g1.emplace_back(g2.back());
  }
  std::vector<cuda::GradTensor> list;
  for (size_t t = 0; t < n.size(); ++t) list.push_back({g1[t].data(), n[t]});
  cuda::clamp_grads_multi(list.data(), int64_t(list.size()), 0.75f, nullptr);
  for (size_t t = 0; t < n.size(); ++t) {
    cpu::clamp_grads(n[t], g2[t].data(), 0.75f);
    REQUIRE(std::isnan(g1[t][0]));
    check_bitwise(g1[t].vec(), g2[t], "clamped gradient " + std::to_string(t));
    REQUIRE(g1[t].guards_intact());
  }
}
