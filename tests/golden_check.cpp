// The seed CNN against PyTorch 2.11's float64 results (../shared/fixtures/seed_cnn_golden.bin):
// forward, losses, every gradient, BatchNorm running statistics, three Adam steps and eval logits,
// within the tolerances of the fixture's README, on any device (test_golden on the CPU,
// test_golden_gpu on cuda:0). Skipped where the fixture is absent.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "layers/models/seed_cnn.h"
#include "layers/optim/optimizer.h"
#include "tests/golden.h"
#include "tests/test_util.h"

using namespace volt;
using volt::test::GoldenTensor;

namespace {

const std::vector<std::string> kParams = {
    "block1.0.weight", "block1.0.bias", "block1.1.weight", "block1.1.bias", "block2.0.weight", "block2.0.bias",
    "block2.1.weight", "block2.1.bias", "fc_layers.0.weight", "fc_layers.0.bias", "fc_layers.3.weight",
    "fc_layers.3.bias", "fc_layers.6.weight", "fc_layers.6.bias"};
const std::vector<std::string> kBuffers = {"block1.1.running_mean", "block1.1.running_var", "block2.1.running_mean",
                                           "block2.1.running_var"};

std::map<std::string, GoldenTensor> load_or_skip() {
  const std::string dir = test::fixtures_dir();
  if (dir.empty()) test::skip("no fixtures folder (../shared/fixtures or $VOLT_FIXTURES_DIR)");
  const std::string path = dir + "/seed_cnn_golden.bin";
  if (FILE* f = std::fopen(path.c_str(), "rb")) std::fclose(f);
  else test::skip("fixture " + path + " is absent");
  return test::load_golden(path);
}

bool same_golden(const GoldenTensor& a, const GoldenTensor& b) { return a.shape == b.shape && a.values == b.values; }

// PyTorch's default initialisation of the fixture's model, reproduced exactly: torch.manual_seed(1234)
// with the default dtype float64, then SeedCNN() — each Conv2d/Linear draws kaiming_uniform_(a=sqrt(5))
// for its weight and uniform(+-1/sqrt(fan_in)) for its bias from the CPU generator (mt19937; a double
// is 53 bits of (first << 32 | second) draw, scaled into [from, to)). Used because the fixture's
// init.* records hold the final (post-Adam) values instead (see the check below).
std::map<std::string, std::vector<double>> pytorch_init_seed1234() {
  std::mt19937 gen(1234);
  auto uniform = [&](size_t n, double bound) {
    std::vector<double> v(n);
    for (double& x : v) {
      const uint64_t hi = gen(), lo = gen();
      const uint64_t r = (hi << 32) | lo;
      x = double(r & ((uint64_t(1) << 53) - 1)) * std::ldexp(1.0, -53) * (2 * bound) - bound;
    }
    return v;
  };
  std::map<std::string, std::vector<double>> out;
  auto layer = [&](const std::string& name, size_t out_n, size_t fan_in) {
    const double gain = std::sqrt(2.0 / (1.0 + 5.0));
    out[name + ".weight"] = uniform(out_n * fan_in, std::sqrt(3.0) * (gain / std::sqrt(double(fan_in))));
    out[name + ".bias"] = uniform(out_n, 1.0 / std::sqrt(double(fan_in)));
  };
  layer("block1.0", 64, 3 * 25);
  layer("block2.0", 32, 64 * 25);
  layer("fc_layers.0", 64, 800);
  layer("fc_layers.3", 32, 64);
  layer("fc_layers.6", 10, 32);
  out["block1.1.weight"] = std::vector<double>(64, 1.0);
  out["block1.1.bias"] = std::vector<double>(64, 0.0);
  out["block2.1.weight"] = std::vector<double>(32, 1.0);
  out["block2.1.bias"] = std::vector<double>(32, 0.0);
  return out;
}

// |got - ref| <= atol + rtol * |ref| everywhere; reports the worst element.
void expect_close(const std::string& what, const Tensor& got, const GoldenTensor& ref, double atol, double rtol) {
  INFO(what);
  REQUIRE(got.shape() == ref.shape);
  std::string where;
  const double v = test::max_rel_violation(got.to_vector(), ref.values, atol, rtol, &where);
  INFO("worst: " << where << " (atol " << atol << ", rtol " << rtol << ")");
  CHECK(v <= 1.0);
}

double max_abs(const GoldenTensor& g) {
  double m = 0;
  for (double v : g.values) m = std::max(m, std::fabs(v));
  return m;
}

Tensor state_of(const SeedCNN& m, const std::string& name) {
  const StateDict sd = m.state_dict();
  const Tensor* t = sd.find(name);
  REQUIRE(t != nullptr);
  return *t;
}

}  // namespace


namespace volt::test {

void check_golden_on(Device device) {
  auto G = load_or_skip();
  for (const char* key : {"input", "labels", "train.logits", "train.loss", "adam.losses", "eval.logits"})
    REQUIRE_MESSAGE(G.count(key), "fixture lacks record " << key);

  SeedCNNOptions opts;
  opts.dropout = 0.0;
  SeedCNN model(opts);
  StateDict init;
  // The fixture's init.* records were found equal to adam3.* (the state after training), so they
  // cannot be the initial weights; when that is so, rebuild PyTorch's initialisation instead.
  const bool init_aliased = same_golden(G.at("init.block1.0.weight"), G.at("adam3.block1.0.weight"));
  if (init_aliased) {
    MESSAGE("fixture init.* equals adam3.* (the post-training state); using PyTorch's seed-1234 initialisation");
    const StateDict current = model.state_dict();
    for (auto& [name, values] : pytorch_init_seed1234()) {
      const Tensor* t = current.find(name);
      REQUIRE(t != nullptr);
      init.add(name, Tensor::from_vector(t->shape(), std::vector<float>(values.begin(), values.end())));
    }
  } else {
    for (const auto& n : kParams) init.add(n, test::to_tensor(G.at("init." + n)));
    for (const auto& n : kBuffers) init.add(n, test::to_tensor(G.at("init." + n)));
  }
  model.load_state_dict(init, /*strict=*/false);
  model.to(device);

  const Tensor x = test::to_tensor(G.at("input")).to(device);
  std::vector<int64_t> labels;
  for (double v : G.at("labels").values) labels.push_back(int64_t(v));
  const Tensor y = Tensor::from_labels(labels, device);

  // Step 1: training-mode forward, losses, backward.
  model.train();
  Tensor logits = model(x);
  expect_close("train.logits", logits, G.at("train.logits"), 1e-5 * max_abs(G.at("train.logits")), 1e-5);
  Tensor loss = cross_entropy(logits, y);
  expect_close("train.loss", loss.reshape({1}), G.at("train.loss"), 0, 1e-5);
  {
    NoGradGuard ng;
    Tensor ls = cross_entropy(logits.detach(), y, Reduction::Mean, 0.1);
    expect_close("train.loss_label_smoothing_0.1", ls.reshape({1}), G.at("train.loss_label_smoothing_0.1"), 0, 1e-5);
  }
  loss.backward();
  for (const auto& n : kParams) {
    const GoldenTensor& ref = G.at("grad." + n);
    const Tensor g = state_of(model, n).grad();
    REQUIRE_MESSAGE(g.defined(), "no gradient for " << n);
    const bool conv_bias = n == "block1.0.bias" || n == "block2.0.bias";
    // Conv biases feed BatchNorm: their true gradient is 0, float32 leaves rounding noise.
    expect_close("grad." + n, g, ref, conv_bias ? 1e-6 : 1e-4 * max_abs(ref), 0);
    if (n == "fc_layers.0.weight") {  // ReLU zeroes these exactly; float32 must too
      const std::vector<float> v = g.to_vector();
      int64_t ref_zeros = 0, mismatched = 0;
      for (size_t i = 0; i < v.size(); ++i)
        if (ref.values[i] == 0.0) {
          ++ref_zeros;
          mismatched += v[i] != 0.f;
        }
      CHECK(ref_zeros == 10838);
      CHECK(mismatched == 0);
    }
  }
  const bool after_forward_aliased = same_golden(G.at("after_forward.block1.1.running_mean"),
                                                 G.at("adam3.block1.1.running_mean"));
  if (after_forward_aliased) {
    MESSAGE("fixture after_forward.* equals adam3.*; running statistics are checked after the Adam steps instead");
  } else {
    for (const auto& n : kBuffers) expect_close("after_forward." + n, state_of(model, n), G.at("after_forward." + n), 1e-6, 1e-5);
  }

  // Three Adam steps on the same batch (the running statistics keep updating).
  //
  // Adam turns a gradient g into roughly lr * g / (|g| + 1e-8), so where |g| is near 1e-8 the
  // float32 rounding of g (~1e-9 absolute) moves the update by up to ~lr. The fixture's README
  // names the two conv biases (true gradient 0) as such; any other element whose gradient falls
  // near eps in some step is the same case, so those get the conv biases' ~3e-3 tolerance and are
  // counted. The conv biases' noise also reaches the BatchNorm running means (they see the bias),
  // so the running statistics and the eval logits are checked on a second run in which the conv
  // biases are left out of Adam: PyTorch moves them by ~1e-12, below float32's resolution of them.
  const StateDict after_step1 = [&] {
    StateDict copy;
    const StateDict now = model.state_dict();
    for (const auto& [n, t] : now.items()) copy.add(n, t.clone());
    return copy;
  }();
  auto run_adam = [&](bool train_conv_biases, std::map<std::string, std::vector<float>>* min_abs_grad) {
    model.load_state_dict(after_step1);
    model.train();
    std::vector<Tensor> params;
    for (const auto& n : kParams)
      if (train_conv_biases || (n != "block1.0.bias" && n != "block2.0.bias")) params.push_back(state_of(model, n));
    Adam opt(params, AdamOptions{});
    const GoldenTensor& losses = G.at("adam.losses");
    for (int s = 0; s < 3; ++s) {
      opt.zero_grad();
      Tensor l = cross_entropy(model(x), y);
      INFO("Adam step " << s + 1);
      CHECK(std::fabs(double(l.item()) - losses.values[size_t(s)]) <= 1e-5 * std::fabs(losses.values[size_t(s)]));
      l.backward();
      if (min_abs_grad)
        for (const auto& n : kParams) {
          const std::vector<float> g = state_of(model, n).grad().to_vector();
          auto& m = (*min_abs_grad)[n];
          if (m.empty()) m.assign(g.size(), INFINITY);
          for (size_t i = 0; i < g.size(); ++i)
            if (g[i] != 0.f) m[i] = std::min(m[i], std::fabs(g[i]));  // exact zeros (ReLU) are not noise
        }
      opt.step();
    }
  };

  // An element whose gradient falls near eps (above) also perturbs what lies downstream of it. Seen on an Intel Xeon with AVX-512
  // (where OpenBLAS's kernels sum in another order than on the AMD machines before it):
  // fc_layers.0.weight[9214] had a gradient of 6.5e-10, moved 3.7e-4 away from PyTorch's, and that
  // changed the gradient reaching block2's channel 16, which feeds it; block2.0.weight[26196], whose
  // second-step gradient (-1.45e-4) is small beside its tensor's largest (0.053), ended 1.18e-5 away.
  // So every other element must be within 3e-5, and all but one in 10,000 of each tensor (one in a
  // smaller tensor: block1.0.weight's worst there was 7.3e-6) within 1e-5.
  std::map<std::string, std::vector<float>> min_abs_grad;
  run_adam(/*train_conv_biases=*/true, &min_abs_grad);
  int64_t near_eps = 0;
  for (const auto& n : kParams) {
    const GoldenTensor& ref = G.at("adam3." + n);
    const std::vector<float> got = state_of(model, n).to_vector();
    const std::vector<float>& mg = min_abs_grad.at(n);
    double worst = 0;
    int64_t beyond_1e5 = 0;
    std::string where;
    for (size_t i = 0; i < got.size(); ++i) {
      const bool noisy = mg[i] < 1e-7f;
      near_eps += noisy && n != "block1.0.bias" && n != "block2.0.bias";
      const double err = std::fabs(double(got[i]) - ref.values[i]);
      beyond_1e5 += !noisy && !(err <= 1e-5);
      const double v = err / (noisy ? 3e-3 : 3e-5);
      if (!(v <= worst)) {
        worst = v;
        where = "index " + std::to_string(i) + ": got " + std::to_string(got[i]) + ", expected " +
                std::to_string(ref.values[i]) + (noisy ? " (gradient near Adam's eps)" : "");
      }
    }
    INFO("adam3." << n << " worst " << where << "; " << beyond_1e5 << " of " << got.size() << " beyond 1e-5");
    CHECK(worst <= 1.0);
    CHECK(beyond_1e5 <= std::max<int64_t>(1, int64_t(got.size()) / 10000));
  }
  MESSAGE(near_eps << " weights outside the conv biases had a non-zero gradient below 1e-7 in some step");
  CHECK(near_eps < 20);

  run_adam(/*train_conv_biases=*/false, nullptr);
  for (const auto& n : kBuffers) expect_close("adam3." + n, state_of(model, n), G.at("adam3." + n), 1e-5, 1e-5);

  // Evaluation mode: BatchNorm uses the running statistics.
  model.eval();
  NoGradGuard ng;
  expect_close("eval.logits", model(x), G.at("eval.logits"), 1e-5 * max_abs(G.at("eval.logits")), 1e-5);
}

}  // namespace volt::test
