// The standard layers: SeedCNN parameter counts and shapes, BatchNorm2d and Dropout behaviour,
// initialisation statistics, seeding, and finite-difference gradient checks of every layer and a composite.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/random.h"
#include "layers/layers.h"
#include "layers/models/seed_cnn.h"
#include "layers/module.h"
#include "tests/test_util.h"

using namespace volt;

namespace {

using test::contains;
using test::error_of;
using test::names_of;
using test::same_state;
using test::same_values;
using test::snapshot;

struct Moments {
  double mean = 0, var = 0, max_abs = 0;
};
Moments moments(const Tensor& t) {
  const std::vector<float> v = t.to_vector();
  Moments m;
  double s = 0, sq = 0;
  for (float x : v) {
    s += x;
    sq += double(x) * x;
    m.max_abs = std::max(m.max_abs, double(std::fabs(x)));
  }
  const double n = double(v.size());
  m.mean = s / n;
  m.var = sq / n - m.mean * m.mean;
  return m;
}

// Parameters of a module as gradcheck inputs (they share storage with the module, so perturbing
// them perturbs the layer).
std::vector<Tensor> with_params(const Tensor& x, const Module& m) {
  std::vector<Tensor> in{x};
  for (const Tensor& p : m.parameters()) in.push_back(p);
  return in;
}

Tensor input(const Shape& s, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  Tensor x = test::rand_tensor(s, seed, lo, hi);
  x.requires_grad_();
  return x;
}

// Gradient check of m(x) with respect to x and every parameter of m.
test::GradcheckReport gradcheck_module(Module& m, const Tensor& x, const test::GradcheckOptions& o = {}) {
  auto fn = [&](const std::vector<Tensor>& in) { return m(in[0]); };
  return test::gradcheck(fn, with_params(x, m), o);
}

// The seed CNN for MNIST-sized inputs: 1 x 28 x 28, 10 classes.
SeedCNNOptions mnist_options() {
  SeedCNNOptions o;
  o.in_channels = 1;
  o.height = o.width = 28;
  return o;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
TEST_CASE("SeedCNN parameter counts") {
  manual_seed(0);
  SeedCNN cifar;  // 3 x 32 x 32, 10 classes
  const int64_t expected = 3 * 64 * 5 * 5 + 64   // block1.0 conv
                           + 64 + 64              // block1.1 bn
                           + 64 * 32 * 5 * 5 + 32  // block2.0 conv
                           + 32 + 32              // block2.1 bn
                           + 800 * 64 + 64        // fc_layers.0: 32*5*5 = 800 inputs
                           + 64 * 32 + 32         // fc_layers.3
                           + 32 * 10 + 10;        // fc_layers.6
  CHECK(expected == 4800 + 64 + 128 + 51200 + 32 + 64 + 51200 + 64 + 2048 + 32 + 320 + 10);
  CHECK(expected == 109962);
  CHECK(cifar.num_parameters() == 109962);
  CHECK(cifar.flat_features() == 800);

  SeedCNN mnist(mnist_options());
  CHECK(mnist.flat_features() == 512);  // 28 -> 24 -> 12 -> 8 -> 4; 32 * 4 * 4
  CHECK(mnist.num_parameters() == 1 * 64 * 25 + 64 + 128 + 51200 + 32 + 64 + 512 * 64 + 64 + 2048 + 32 + 320 + 10);

  SeedCNNOptions wide;
  wide.num_classes = 100;
  CHECK(SeedCNN(wide).num_parameters() == 109962 - 330 + 32 * 100 + 100);
}

TEST_CASE("SeedCNN forward on CIFAR, MNIST and non-square inputs - too-small inputs throw") {
  manual_seed(1);
  SeedCNN cifar;
  Tensor y = cifar(test::rand_tensor({3, 3, 32, 32}, 5));
  CHECK(y.shape() == Shape{3, 10});

  SeedCNN mnist(mnist_options());
  Tensor ym = mnist(test::rand_tensor({2, 1, 28, 28}, 6));
  CHECK(ym.shape() == Shape{2, 10});
  for (float v : ym.to_vector()) CHECK(std::isfinite(v));
  // The wrong input shape is an error naming the expected shape.
  const std::string msg = error_of([&] { mnist(test::rand_tensor({2, 3, 28, 28}, 6)); });
  CHECK(contains(msg, "[N, 1, 28, 28]"));
  CHECK_THROWS_AS(mnist(test::rand_tensor({2, 1, 32, 32}, 6)), volt::Error);
  CHECK_THROWS_AS(mnist(test::rand_tensor({1, 28, 28}, 6)), volt::Error);

  SeedCNNOptions odd;
  odd.height = 20;  // 20 -> 16 -> 8 -> 4 -> 2
  odd.width = 37;   // 37 -> 33 -> 16 -> 12 -> 6
  odd.num_classes = 7;
  SeedCNN ns(odd);
  CHECK(ns.flat_features() == 32 * 2 * 6);
  CHECK(ns(test::rand_tensor({3, 3, 20, 37}, 7)).shape() == Shape{3, 7});

  // The smallest size two conv5 + pool2 blocks accept is 16 (16 -> 12 -> 6 -> 2 -> 1).
  SeedCNNOptions tiny;
  tiny.height = tiny.width = 16;
  SeedCNN t16(tiny);
  CHECK(t16.flat_features() == 32);
  CHECK(t16(test::rand_tensor({2, 3, 16, 16}, 8)).shape() == Shape{2, 10});
  for (int64_t h : {15, 14, 13, 8, 4, 1}) {
    SeedCNNOptions o;
    o.height = h;
    o.width = 32;
    const std::string e = error_of([&] { SeedCNN bad(o); });
    INFO(e);
    CHECK(contains(e, std::to_string(h) + "x32"));
    CHECK(contains(e, "16x16"));
    o.height = 32;
    o.width = h;
    CHECK_THROWS_AS(SeedCNN{o}, volt::Error);
  }
  SeedCNNOptions zero_classes;
  zero_classes.num_classes = 0;
  CHECK_THROWS_AS(SeedCNN{zero_classes}, volt::Error);
}
TEST_CASE("BatchNorm2d: batch statistics and running updates in training, running statistics in eval") {
  BatchNorm2d bn(3);
  CHECK(bn.running_mean.to_vector() == std::vector<float>{0, 0, 0});
  CHECK(bn.running_var.to_vector() == std::vector<float>{1, 1, 1});
  CHECK(bn.num_batches_tracked.data<int64_t>()[0] == 0);
  // Channel c has values around c + 1 with spread growing with c.
  Tensor x = Tensor::empty({4, 3, 5, 3});
  {
    Tensor r = test::rand_tensor({4, 3, 5, 3}, 10);
    for (int64_t n = 0; n < 4; ++n)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t i = 0; i < 5; ++i)
          for (int64_t j = 0; j < 3; ++j) x.set({n, c, i, j}, float(c + 1) + float(c + 1) * r.at({n, c, i, j}));
  }
  // Per-channel batch mean and unbiased variance, in double.
  std::vector<double> mean(3, 0), var(3, 0);
  const double count = 4 * 5 * 3;
  for (int64_t c = 0; c < 3; ++c) {
    for (int64_t n = 0; n < 4; ++n)
      for (int64_t i = 0; i < 5; ++i)
        for (int64_t j = 0; j < 3; ++j) mean[size_t(c)] += x.at({n, c, i, j});
    mean[size_t(c)] /= count;
    for (int64_t n = 0; n < 4; ++n)
      for (int64_t i = 0; i < 5; ++i)
        for (int64_t j = 0; j < 3; ++j) {
          const double d = x.at({n, c, i, j}) - mean[size_t(c)];
          var[size_t(c)] += d * d;
        }
  }
  Tensor y = bn(x);
  for (int64_t c = 0; c < 3; ++c) {
    const double biased = var[size_t(c)] / count;
    for (int64_t n = 0; n < 4; ++n) {
      const double want = (x.at({n, c, 2, 1}) - mean[size_t(c)]) / std::sqrt(biased + 1e-5);
      CHECK(std::fabs(y.at({n, c, 2, 1}) - want) < 1e-4);
    }
    CHECK(std::fabs(bn.running_mean.at({c}) - 0.1 * mean[size_t(c)]) < 1e-5);
    CHECK(std::fabs(bn.running_var.at({c}) - (0.9 + 0.1 * var[size_t(c)] / (count - 1))) < 1e-5);
  }
  CHECK(bn.num_batches_tracked.data<int64_t>()[0] == 1);
  bn(x);
  CHECK(bn.num_batches_tracked.data<int64_t>()[0] == 2);
  CHECK(std::fabs(bn.running_mean.at({1}) - 0.19 * mean[1]) < 1e-5);

  bn.eval();
  const std::vector<float> rm = bn.running_mean.to_vector(), rv = bn.running_var.to_vector();
  Tensor ye = bn(x);
  CHECK(bn.running_mean.to_vector() == rm);  // no update in eval
  CHECK(bn.running_var.to_vector() == rv);
  CHECK(bn.num_batches_tracked.data<int64_t>()[0] == 2);
  for (int64_t c = 0; c < 3; ++c) {
    const double want = (x.at({1, c, 4, 2}) - rm[size_t(c)]) / std::sqrt(double(rv[size_t(c)]) + 1e-5);
    CHECK(std::fabs(ye.at({1, c, 4, 2}) - want) < 1e-4);
  }

  // Without tracked statistics eval uses the batch statistics, and there are no buffers.
  BatchNorm2d untracked(3, 1e-5, 0.1, true, false);
  CHECK(untracked.named_buffers().empty());
  CHECK(names_of(untracked.state_dict().items()) == std::vector<std::string>{"weight", "bias"});
  untracked.eval();
  Tensor yu = untracked(x);
  CHECK(std::fabs(yu.at({0, 2, 0, 0}) - y.at({0, 2, 0, 0})) < 1e-5);
  BatchNorm2d no_affine(3, 1e-5, 0.1, false, true);
  CHECK(no_affine.parameters().empty());
  CHECK(no_affine.named_buffers().size() == 3);
  CHECK_THROWS_AS(bn(Tensor::zeros({4, 3})), volt::Error);
  CHECK_THROWS_AS(bn(Tensor::zeros({2, 4, 3, 3})), volt::Error);
}

TEST_CASE("Dropout: scaled mask in training, identity in eval") {
  Dropout d(0.25);
  Generator g(77, kStreamDropout);
  d.set_generator(&g);
  Tensor x = Tensor::ones({100, 100});
  Tensor y = d(x);
  const std::vector<float> v = y.to_vector();
  int zeros = 0;
  for (float f : v) {
    if (f == 0.f) ++zeros;
    else REQUIRE(std::fabs(f - 1.f / 0.75f) < 1e-6);
  }
  CHECK(std::abs(zeros - 2500) < 250);  // binomial sd ~43
  CHECK(d(x).to_vector() != v);          // the stream moved on
  g.set_offset(0);
  CHECK(d(x).to_vector() == v);          // same offset, same mask
  d.eval();
  Tensor ye = d(x);
  CHECK(ye.to_vector() == x.to_vector());
  Dropout none(0.0);
  CHECK(none(x).to_vector() == x.to_vector());
  CHECK(d.p() == 0.25);
  CHECK_THROWS_AS(Dropout(1.5), volt::Error);
  CHECK_THROWS_AS(Dropout(-0.1), volt::Error);
}
// ---------------------------------------------------------------------------------------------
TEST_CASE("initialisation follows PyTorch's kaiming_uniform(a=sqrt(5)) and bias bounds") {
  manual_seed(4);
  struct Case {
    std::string name;
    Tensor weight, bias;
    int64_t fan_in;
  };
  Conv2d conv(16, 32, 3);
  Linear lin(300, 50);
  SeedCNN m;
  auto& fc0 = dynamic_cast<Linear&>((*m.fc_layers)[0]);
  auto& c2 = dynamic_cast<Conv2d&>((*m.block2)[0]);
  const std::vector<Case> cases = {{"Conv2d(16, 32, 3)", conv.weight, conv.bias, 16 * 9},
                                   {"Linear(300, 50)", lin.weight, lin.bias, 300},
                                   {"fc_layers.0", fc0.weight, fc0.bias, 800},
                                   {"block2.0", c2.weight, c2.bias, 64 * 25}};
  for (const Case& c : cases) {
    INFO(c.name);
    // gain = sqrt(2 / (1 + a^2)) = sqrt(1/3); bound = sqrt(3) * gain / sqrt(fan_in) = 1 / sqrt(fan_in)
    const double bound = 1.0 / std::sqrt(double(c.fan_in));
    const Moments w = moments(c.weight);
    const double n = double(c.weight.numel());
    CHECK(w.max_abs <= bound);
    CHECK(w.max_abs > 0.98 * bound);  // fills the range
    CHECK(std::fabs(w.mean) < 5 * bound / std::sqrt(3 * n));
    // Var of U(-b, b) is b^2/3; the sample variance's relative sd is ~0.9/sqrt(n).
    CHECK(std::fabs(w.var / (bound * bound / 3) - 1) < 5 * 0.9 / std::sqrt(n));
    const Moments b = moments(c.bias);
    CHECK(b.max_abs <= bound);
    CHECK(b.max_abs > 0.5 * bound);
  }
  for (const std::string bn_name : {"block1.1", "block2.1"}) {
    INFO(bn_name);
    StateDict sd = m.state_dict();
    for (float v : sd.find(bn_name + ".weight")->to_vector()) CHECK(v == 1.f);
    for (float v : sd.find(bn_name + ".bias")->to_vector()) CHECK(v == 0.f);
    for (float v : sd.find(bn_name + ".running_mean")->to_vector()) CHECK(v == 0.f);
    for (float v : sd.find(bn_name + ".running_var")->to_vector()) CHECK(v == 1.f);
    CHECK(sd.find(bn_name + ".num_batches_tracked")->data<int64_t>()[0] == 0);
  }
  // The helpers themselves.
  Tensor t = Tensor::empty({64, 100});
  Generator g(8);
  kaiming_uniform_(t, 0.0, 100, g);  // a = 0: bound = sqrt(6 / fan_in)
  CHECK(moments(t).max_abs <= std::sqrt(6.0 / 100));
  CHECK(moments(t).max_abs > 0.98 * std::sqrt(6.0 / 100));
  CHECK_THROWS_AS(kaiming_uniform_(t, 0.0, 0, g), volt::Error);
  Tensor bias = Tensor::empty({1000});
  uniform_bias_(bias, 25, g);
  CHECK(moments(bias).max_abs <= 0.2);
  CHECK(moments(bias).max_abs > 0.19);
}

TEST_CASE("the same seed gives the same weights - another seed different ones") {
  manual_seed(5);
  SeedCNN a;
  manual_seed(5);
  SeedCNN b;
  manual_seed(6);
  SeedCNN c;
  CHECK(same_state(b, snapshot(a)));
  const auto pa = a.named_parameters(), pc = c.named_parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    INFO(pa[i].first);
    const bool is_bn = pa[i].first.find(".1.") != std::string::npos;
    if (is_bn) CHECK(same_values(pa[i].second, pc[i].second));  // constants
    else CHECK(pa[i].second.to_vector() != pc[i].second.to_vector());
  }
  // Within one model layers draw different values (the stream moves on).
  CHECK(a.parameters()[0].to_vector() != c.parameters()[0].to_vector());
  manual_seed(5);
  Conv2d c1(3, 4, 3);
  Conv2d c2(3, 4, 3);
  CHECK(c1.weight.to_vector() != c2.weight.to_vector());
  // An explicit generator.
  Generator g1(42), g2(42);
  Linear l1(10, 5, true, &g1), l2(10, 5, true, &g2);
  CHECK(l1.weight.to_vector() == l2.weight.to_vector());
  CHECK(l1.bias.to_vector() == l2.bias.to_vector());
  CHECK(g1.offset() > 0);
  Linear l3(10, 5, false, &g1);
  CHECK_FALSE(l3.bias.defined());
  CHECK(l3.parameters().size() == 1);
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("gradcheck: Conv2d on awkward shapes") {
  manual_seed(30);
  SUBCASE("stride 2, padding 1, odd non-square input, batch 3") {
    Conv2d conv(3, 4, 3, 2, 1);
    VOLT_CHECK_GRADCHECK(gradcheck_module(conv, input({3, 3, 7, 5}, 31)));
  }
  SUBCASE("kernel 5 without bias, single output channel") {
    Conv2d conv(2, 1, 5, 1, 0, false);
    VOLT_CHECK_GRADCHECK(gradcheck_module(conv, input({3, 2, 9, 6}, 32)));
  }
}

TEST_CASE("gradcheck: Linear") {
  manual_seed(33);
  Linear lin(7, 5);
  VOLT_CHECK_GRADCHECK(gradcheck_module(lin, input({3, 7}, 34)));
  Linear nb(5, 1, false);
  VOLT_CHECK_GRADCHECK(gradcheck_module(nb, input({1, 5}, 35)));
}

TEST_CASE("gradcheck: BatchNorm2d in training and in eval") {
  SUBCASE("training, no running statistics") {
    BatchNorm2d bn(4, 1e-5, 0.1, true, false);
    bn.weight.copy_(Tensor::from_vector({4}, {1.5f, -0.5f, 2.f, 0.75f}));
    bn.bias.copy_(Tensor::from_vector({4}, {0.1f, -0.2f, 0.3f, 0.f}));
    test::GradcheckOptions o;
    o.eps = 1e-3;
    VOLT_CHECK_GRADCHECK(gradcheck_module(bn, input({3, 4, 5, 3}, 36, -2.f, 2.f), o));
  }
  SUBCASE("eval with running statistics") {
    BatchNorm2d bn(3);
    bn.running_mean.copy_(Tensor::from_vector({3}, {0.5f, -1.f, 0.f}));
    bn.running_var.copy_(Tensor::from_vector({3}, {2.f, 0.5f, 1.5f}));
    bn.weight.copy_(Tensor::from_vector({3}, {1.2f, 0.8f, -1.f}));
    bn.eval();
    VOLT_CHECK_GRADCHECK(gradcheck_module(bn, input({3, 3, 4, 5}, 37)));
  }
}

TEST_CASE("gradcheck: ReLU, MaxPool2d, Flatten, Dropout") {
  SUBCASE("ReLU") {
    // Values at least 0.05 away from the kink at 0 (the perturbation is 0.01).
    ReLU relu;
    Tensor x = test::rand_tensor({3, 5, 7}, 38);
    float* xd = x.data<float>();
    for (int64_t i = 0; i < x.numel(); ++i) xd[i] = xd[i] < 0 ? xd[i] - 0.05f : xd[i] + 0.05f;
    x.requires_grad_();
    VOLT_CHECK_GRADCHECK(gradcheck_module(relu, x));
  }
  SUBCASE("MaxPool2d") {
    // Distinct values at least 0.05 apart, so no window has a near-tie inside the perturbation.
    const Shape s{3, 2, 7, 5};
    Generator g(39);
    const std::vector<int64_t> perm = randperm(shape_numel(s), g);
    std::vector<float> vals;
    for (int64_t p : perm) vals.push_back(float(p) * 0.05f - 5.f);
    Tensor x = Tensor::from_vector(s, vals);
    x.requires_grad_();
    for (auto [k, st, pad] : std::vector<std::array<int64_t, 3>>{{2, 2, 0}, {3, 2, 1}, {3, 1, 0}, {2, 3, 1}}) {
      INFO("kernel " << k << " stride " << st << " padding " << pad);
      MaxPool2d pool(k, st, pad);
      VOLT_CHECK_GRADCHECK(gradcheck_module(pool, x));
    }
  }
  SUBCASE("Flatten") {
    Flatten flat;
    Tensor x = input({3, 2, 3, 5}, 40);
    CHECK(flat(x).shape() == Shape{3, 30});
    VOLT_CHECK_GRADCHECK(gradcheck_module(flat, x));
    CHECK(Flatten(2, 3)(x).shape() == Shape{3, 2, 15});
  }
  SUBCASE("Dropout with a fixed mask") {
    Dropout d(0.3);
    Generator g(41, kStreamDropout);
    d.set_generator(&g);
    Tensor x = input({3, 17}, 42);
    auto fn = [&](const std::vector<Tensor>& in) {
      g.set_offset(0);  // the same mask on every call
      return d(in[0]);
    };
    VOLT_CHECK_GRADCHECK(test::gradcheck(fn, {x}));
  }
}

namespace {
// A module that fuses a following ReLU (and pool) and records which fused entry Sequential called.
struct FusingProbe : Module {
  std::string called;
  int64_t pool_k = 0;
  Tensor forward(const Tensor& x) override {
    called += "forward ";
    return x;
  }
  bool fuses_relu() const override { return true; }
  Tensor forward_relu(const Tensor& x) override {
    called += "relu ";
    return relu(x);
  }
  Tensor forward_relu_max_pool(const Tensor& x, int64_t k) override {
    called += "relu+pool ";
    pool_k = k;
    return max_pool2d(relu(x), {k, k}, {k, k});
  }
  std::string type_name() const override { return "FusingProbe"; }
};
}  // namespace

TEST_CASE("Sequential fuses BatchNorm2d + ReLU + a non-overlapping MaxPool2d, and only that") {
  const Tensor x = test::rand_tensor({2, 3, 6, 6}, 61, -1.f, 1.f);
  auto run = [&](std::shared_ptr<Module> pool) {
    auto probe = std::make_shared<FusingProbe>();
    std::vector<std::shared_ptr<Module>> mods{probe, std::make_shared<ReLU>()};
    if (pool) mods.push_back(pool);
    Sequential net(mods);
    Tensor y = net(x);
    return std::make_pair(probe->called + std::to_string(probe->pool_k), y);
  };
  CHECK(run(std::make_shared<MaxPool2d>(2)).first == "relu+pool 2");
  CHECK(run(std::make_shared<MaxPool2d>(3)).first == "relu+pool 3");
  CHECK(run(std::make_shared<MaxPool2d>(3, 2)).first == "relu 0");     // overlapping windows
  CHECK(run(std::make_shared<MaxPool2d>(2, 2, 1)).first == "relu 0");  // padding
  CHECK(run(nullptr).first == "relu 0");

  // BatchNorm2d's fused pass gives what the three layers give one by one, forward and backward, in
  // training and in eval (the CUDA kernel behind it is checked against this in test_cuda).
  for (bool training : {true, false}) {
    INFO((training ? "training" : "eval"));
    manual_seed(62);
    auto bn1 = std::make_shared<BatchNorm2d>(3), bn2 = std::make_shared<BatchNorm2d>(3);
    bn1->running_var.fill_(0.7f);
    bn2->running_var.fill_(0.7f);
    Sequential fused({bn1, std::make_shared<ReLU>(), std::make_shared<MaxPool2d>(2)});
    fused.train(training);
    bn2->train(training);
    Tensor a = x.clone(), b = x.clone();
    a.requires_grad_(true);
    b.requires_grad_(true);
    Tensor ya = fused(a), yb = max_pool2d(relu((*bn2)(b)), {2, 2}, {2, 2});
    CHECK(ya.shape() == Shape{2, 3, 3, 3});
    CHECK(test::same_values(ya, yb));
    sum(ya * ya).backward();
    sum(yb * yb).backward();
    CHECK(test::same_values(a.grad(), b.grad()));
    CHECK(test::same_values(bn1->weight.grad(), bn2->weight.grad()));
    CHECK(test::same_values(bn1->running_mean, bn2->running_mean));
  }
}

TEST_CASE("Sequential runs ReLU + Dropout as relu_dropout: the two layers' values, gradients and masks") {
  const Tensor x = test::rand_tensor({6, 33}, 63, -1.f, 1.f);
  for (bool training : {true, false}) {
    INFO((training ? "training" : "eval"));
    auto drop1 = std::make_shared<Dropout>(0.3), drop2 = std::make_shared<Dropout>(0.3);
    Generator g1(5, kStreamDropout), g2(5, kStreamDropout);
    drop1->set_generator(&g1);
    drop2->set_generator(&g2);
    Sequential fused({std::make_shared<ReLU>(), drop1});
    fused.train(training);
    drop2->train(training);
    Tensor a = x.clone(), b = x.clone();
    a.requires_grad_(true);
    b.requires_grad_(true);
    Tensor ya = fused(a), yb = (*drop2)(relu(b));
    CHECK(test::same_values(ya, yb));
    CHECK(g1.offset() == g2.offset());  // the same Philox offsets reserved
    sum(ya * ya).backward();
    sum(yb * yb).backward();
    CHECK(test::same_values(a.grad(), b.grad()));
  }
}

namespace {
// Subclasses of the fusable layers with forwards of their own, which Sequential must call.
struct NegatedConv2d : Conv2d {
  using Conv2d::Conv2d;
  Tensor forward(const Tensor& x) override { return Conv2d::forward(x) * -1.f; }
};
struct ShiftedBatchNorm2d : BatchNorm2d {
  using BatchNorm2d::BatchNorm2d;
  Tensor forward(const Tensor& x) override { return add(BatchNorm2d::forward(x), 0.5f); }
};
struct LeakyReLU : ReLU {
  Tensor forward(const Tensor& x) override { return relu(x) + relu(x * -1.f) * -0.1f; }
};
struct HalvedMaxPool2d : MaxPool2d {
  using MaxPool2d::MaxPool2d;
  Tensor forward(const Tensor& x) override { return MaxPool2d::forward(x) * 0.5f; }
};
struct DoubledDropout : Dropout {
  using Dropout::Dropout;
  Tensor forward(const Tensor& x) override { return Dropout::forward(x) * 2.f; }
};
}  // namespace

TEST_CASE("Sequential fuses only the layers themselves: a subclass runs its own forward") {
  manual_seed(65);
  const Tensor x = test::rand_tensor({2, 3, 6, 6}, 66, -1.f, 1.f);
  using Mods = std::vector<std::shared_ptr<Module>>;
  auto conv = [] { return std::make_shared<Conv2d>(3, 4, 3, 1, 1); };
  auto bn = [] { return std::make_shared<BatchNorm2d>(4); };
  auto pool = [] { return std::make_shared<MaxPool2d>(2); };
  const std::vector<std::pair<const char*, Mods>> cases = {
      {"NegatedConv2d, BatchNorm2d, ReLU, MaxPool2d",
       {std::make_shared<NegatedConv2d>(3, 4, 3, 1, 1), bn(), std::make_shared<ReLU>(), pool()}},
      {"Conv2d, BatchNorm2d, LeakyReLU, MaxPool2d", {conv(), bn(), std::make_shared<LeakyReLU>(), pool()}},
      {"Conv2d, BatchNorm2d, ReLU, HalvedMaxPool2d",
       {conv(), bn(), std::make_shared<ReLU>(), std::make_shared<HalvedMaxPool2d>(2)}},
      {"Conv2d, ShiftedBatchNorm2d, ReLU, MaxPool2d",
       {conv(), std::make_shared<ShiftedBatchNorm2d>(4), std::make_shared<ReLU>(), pool()}},
      {"Conv2d, ShiftedBatchNorm2d, ReLU", {conv(), std::make_shared<ShiftedBatchNorm2d>(4), std::make_shared<ReLU>()}},
      {"Conv2d, LeakyReLU, Dropout", {conv(), std::make_shared<LeakyReLU>(), std::make_shared<Dropout>(0.3)}},
      {"Conv2d, ReLU, DoubledDropout", {conv(), std::make_shared<ReLU>(), std::make_shared<DoubledDropout>(0.3)}}};
  for (const auto& [name, mods] : cases) {
    INFO(std::string(name));
    Sequential net(mods);
    net.eval();  // running statistics and no dropout masks: a second run gives the same values
    Tensor want = x;
    for (const auto& m : mods) want = m->forward(want);
    CHECK(test::same_values(net(x), want));
  }
}

TEST_CASE("gradcheck: Conv2d -> BatchNorm2d -> ReLU -> MaxPool2d -> Flatten -> Linear") {
  manual_seed(50);
  auto conv = std::make_shared<Conv2d>(3, 4, 3, 1, 1);
  auto bn = std::make_shared<BatchNorm2d>(4, 1e-5, 0.1, true, false);
  Sequential net({conv, bn, std::make_shared<ReLU>(), std::make_shared<MaxPool2d>(2),
                  std::make_shared<Flatten>(), std::make_shared<Linear>(4 * 3 * 2, 5)});
  Tensor x = input({3, 3, 7, 5}, 51);
  CHECK(net(x).shape() == Shape{3, 5});
  CHECK(net.parameters().size() == 6);
  // A small perturbation: moving one conv weight shifts every pooled window of its channel, and
  // the max-pool / ReLU switches this causes at ~1e-3 are symmetric, so gradcheck's one-sided
  // kink test cannot spot them. 3e-4 stays clear of them and well above float32 noise.
  test::GradcheckOptions o;
  o.eps = 3e-4;
  o.rtol = 3e-2;
  o.atol = 3e-3;
  VOLT_CHECK_GRADCHECK(gradcheck_module(net, x, o));
}
