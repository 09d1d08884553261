// Module bookkeeping: PyTorch names and order (the seed CNN and a hand-made module), train/eval,
// state_dict and load_state_dict with its errors, zero_grad, shared (tied) parameters, and printing
// the module tree.
#include <doctest/doctest.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "layers/layers.h"
#include "layers/models/seed_cnn.h"
#include "layers/module.h"
#include "layers/optim/optimizer.h"
#include "tests/test_util.h"

using namespace volt;

namespace {

using test::contains;
using test::error_of;
using test::names_of;
using test::same_state;
using test::same_values;
using test::snapshot;

// Every module in the tree, depth first, the root included.
void all_modules(const Module& m, std::vector<const Module*>& out) {
  out.push_back(&m);
  for (const auto& c : m.children()) all_modules(*c.second, out);
}

const std::vector<std::string> kSeedCnnParams = {
    "block1.0.weight",    "block1.0.bias",      "block1.1.weight",    "block1.1.bias",    "block2.0.weight",
    "block2.0.bias",      "block2.1.weight",    "block2.1.bias",      "fc_layers.0.weight", "fc_layers.0.bias",
    "fc_layers.3.weight", "fc_layers.3.bias",   "fc_layers.6.weight", "fc_layers.6.bias"};

// torch: [k for k in model.state_dict()] for the same model in PyTorch.
const std::vector<std::string> kSeedCnnState = {
    "block1.0.weight",       "block1.0.bias",        "block1.1.weight",
    "block1.1.bias",         "block1.1.running_mean", "block1.1.running_var",
    "block1.1.num_batches_tracked", "block2.0.weight", "block2.0.bias",
    "block2.1.weight",       "block2.1.bias",        "block2.1.running_mean",
    "block2.1.running_var",  "block2.1.num_batches_tracked", "fc_layers.0.weight",
    "fc_layers.0.bias",      "fc_layers.3.weight",   "fc_layers.3.bias",
    "fc_layers.6.weight",    "fc_layers.6.bias"};

}  // namespace

// ---------------------------------------------------------------------------------------------
TEST_CASE("SeedCNN names, order and shapes match PyTorch") {
  manual_seed(0);
  SeedCNN m;
  CHECK(names_of(m.named_parameters()) == kSeedCnnParams);
  CHECK(names_of(m.named_buffers()) ==
        std::vector<std::string>{"block1.1.running_mean", "block1.1.running_var", "block1.1.num_batches_tracked",
                                 "block2.1.running_mean", "block2.1.running_var", "block2.1.num_batches_tracked"});
  StateDict sd = m.state_dict();
  CHECK(names_of(sd.items()) == kSeedCnnState);

  auto shape_of = [&](const std::string& n) {
    const Tensor* t = sd.find(n);
    REQUIRE(t != nullptr);
    return t->shape();
  };
  CHECK(shape_of("block1.0.weight") == Shape{64, 3, 5, 5});
  CHECK(shape_of("block1.0.bias") == Shape{64});
  CHECK(shape_of("block1.1.running_var") == Shape{64});
  CHECK(shape_of("block1.1.num_batches_tracked") == Shape{});
  CHECK(sd.find("block1.1.num_batches_tracked")->dtype() == DType::I64);
  CHECK(shape_of("block2.0.weight") == Shape{32, 64, 5, 5});
  CHECK(shape_of("fc_layers.0.weight") == Shape{64, 800});
  CHECK(shape_of("fc_layers.3.weight") == Shape{32, 64});
  CHECK(shape_of("fc_layers.6.weight") == Shape{10, 32});
  CHECK(shape_of("fc_layers.6.bias") == Shape{10});
  CHECK(sd.find("block1.2.weight") == nullptr);

  // Parameters require grad and are leaves; buffers do not.
  for (const auto& [n, p] : m.named_parameters()) {
    INFO(n);
    CHECK(p.requires_grad());
    CHECK(p.is_leaf());
  }
  for (const auto& [n, b] : m.named_buffers()) {
    INFO(n);
    CHECK_FALSE(b.requires_grad());
  }
  // The accessors agree with the named lists and share storage with the module.
  CHECK(m.parameters().size() == kSeedCnnParams.size());
  CHECK(m.parameters()[0].same_storage(*sd.find("block1.0.weight")));
  REQUIRE(m.block1->size() == 4);
  REQUIRE(m.fc_layers->size() == 7);
  CHECK((*m.block1)[0].type_name() == "Conv2d");
  CHECK((*m.block1)[1].type_name() == "BatchNorm2d");
  CHECK((*m.fc_layers)[2].type_name() == "Dropout");
  CHECK_THROWS_AS((*m.fc_layers)[7], volt::Error);
  auto* lin = dynamic_cast<Linear*>(&(*m.fc_layers)[0]);
  REQUIRE(lin != nullptr);
  CHECK(lin->weight.same_storage(*sd.find("fc_layers.0.weight")));
}

namespace {
// A module with its own parameter and buffer and two children, one of which has a buffer.
struct Block : Module {
  Block() {
    scale = register_parameter("scale", Tensor::ones({3}));
    register_module("inner", std::make_shared<Linear>(3, 2));
    count = register_buffer("count", Tensor::zeros({}, DType::I64));
    register_module("norm", std::make_shared<BatchNorm2d>(2));
  }
  Tensor forward(const Tensor& x) override { return x; }
  std::string type_name() const override { return "Block"; }
  Tensor scale, count;
};
}  // namespace

TEST_CASE("state_dict order: each module's parameters, then its buffers, then its children") {
  // PyTorch: module._save_to_state_dict (own parameters, own buffers), then children in order.
  Block b;
  CHECK(names_of(b.state_dict().items()) ==
        std::vector<std::string>{"scale", "count", "inner.weight", "inner.bias", "norm.weight", "norm.bias",
                                 "norm.running_mean", "norm.running_var", "norm.num_batches_tracked"});
  CHECK(names_of(b.named_parameters()) ==
        std::vector<std::string>{"scale", "inner.weight", "inner.bias", "norm.weight", "norm.bias"});
  CHECK(names_of(b.named_buffers()) ==
        std::vector<std::string>{"count", "norm.running_mean", "norm.running_var", "norm.num_batches_tracked"});
  CHECK(b.num_parameters() == 3 + 6 + 2 + 2 + 2);
  CHECK(b.scale.requires_grad());
  CHECK_FALSE(b.count.requires_grad());
}
TEST_CASE("train() and eval() propagate and change BatchNorm and Dropout") {
  manual_seed(2);
  SeedCNN m;
  std::vector<const Module*> mods;
  all_modules(m, mods);
  CHECK(mods.size() == 1 + 3 + 4 + 4 + 7);
  for (const Module* x : mods) CHECK(x->is_training());
  m.eval();
  for (const Module* x : mods) CHECK_FALSE(x->is_training());
  m.train();
  for (const Module* x : mods) CHECK(x->is_training());
  m.train(false);
  for (const Module* x : mods) CHECK_FALSE(x->is_training());
  m.block1->train(true);  // a subtree only
  CHECK((*m.block1)[1].is_training());
  CHECK_FALSE(m.is_training());
  CHECK_FALSE((*m.block2)[1].is_training());

  // The whole model: eval is deterministic, training (dropout) is not.
  m.eval();
  Tensor x = test::rand_tensor({4, 3, 32, 32}, 9);
  const std::vector<float> e1 = m(x).to_vector(), e2 = m(x).to_vector();
  CHECK(e1 == e2);
  m.train();
  const std::vector<float> t1 = m(x).to_vector(), t2 = m(x).to_vector();
  CHECK(t1 != t2);
  CHECK(t1 != e1);
}
// ---------------------------------------------------------------------------------------------
TEST_CASE("load_state_dict round trip") {
  manual_seed(10);
  SeedCNN a;
  manual_seed(11);
  SeedCNN b;
  // Give a's buffers non-default values.
  a(test::rand_tensor({2, 3, 32, 32}, 12));
  CHECK(a.block1->named_buffers()[2].second.data<int64_t>()[0] == 1);
  CHECK_FALSE(same_state(b, snapshot(a)));
  const StateDict sa = snapshot(a);
  b.load_state_dict(a.state_dict());
  CHECK(same_state(b, sa));
  CHECK(same_state(a, sa));
  // Loading copies: b does not share a's storage.
  CHECK_FALSE(b.parameters()[0].same_storage(a.parameters()[0]));
  a.parameters()[0].set({0, 0, 0, 0}, 123.f);
  CHECK(b.parameters()[0].at({0, 0, 0, 0}) != 123.f);
  // Parameters stay leaves that require grad.
  for (const Tensor& p : b.parameters()) CHECK((p.requires_grad() && p.is_leaf()));
  // state_dict shares storage with the module.
  StateDict sb = b.state_dict();
  Tensor w = *sb.find("fc_layers.6.bias");
  w.set({3}, -9.f);
  CHECK(dynamic_cast<Linear&>((*b.fc_layers)[6]).bias.at({3}) == -9.f);
}

TEST_CASE("load_state_dict errors leave the module unchanged") {
  manual_seed(20);
  SeedCNN m;
  manual_seed(21);
  SeedCNN other;
  const StateDict before = snapshot(m);
  const StateDict good = snapshot(other);

  auto without = [&](const std::string& skip) {
    StateDict sd;
    for (const auto& kv : good.items())
      if (kv.first != skip) sd.add(kv.first, kv.second);
    return sd;
  };

  SUBCASE("a missing key in strict mode") {
    const std::string msg = error_of([&] { m.load_state_dict(without("block2.1.running_var")); });
    CHECK(contains(msg, "block2.1.running_var"));
    CHECK(contains(msg, "Missing"));
    CHECK(same_state(m, before));
  }
  SUBCASE("a missing key is allowed when not strict; the rest is loaded") {
    m.load_state_dict(without("fc_layers.0.weight"), false);
    CHECK(same_values(*m.state_dict().find("fc_layers.0.weight"), *before.find("fc_layers.0.weight")));
    CHECK(same_values(*m.state_dict().find("fc_layers.0.bias"), *good.find("fc_layers.0.bias")));
    CHECK(same_values(*m.state_dict().find("block1.0.weight"), *good.find("block1.0.weight")));
  }
  SUBCASE("an unexpected key in strict mode") {
    StateDict sd = without("");
    sd.add("block3.0.weight", Tensor::zeros({2}));
    const std::string msg = error_of([&] { m.load_state_dict(sd); });
    CHECK(contains(msg, "block3.0.weight"));
    CHECK(contains(msg, "Unexpected"));
    CHECK(same_state(m, before));
    m.load_state_dict(sd, false);  // ignored when not strict
    CHECK(same_state(m, good));
  }
  SUBCASE("a shape mismatch names the key and both shapes, strict or not") {
    StateDict sd;
    for (const auto& kv : good.items())  // the bad entry comes last, after everything valid
      if (kv.first != "fc_layers.3.weight") sd.add(kv.first, kv.second);
    sd.add("fc_layers.3.weight", Tensor::zeros({32, 65}));
    for (bool strict : {true, false}) {
      const std::string msg = error_of([&] { m.load_state_dict(sd, strict); });
      INFO(msg);
      CHECK(contains(msg, "fc_layers.3.weight"));
      CHECK(contains(msg, "[32, 65]"));
      CHECK(contains(msg, "[32, 64]"));
      CHECK(same_state(m, before));
    }
  }
  SUBCASE("an undefined tensor") {
    StateDict sd = without("block1.0.bias");
    sd.add("block1.0.bias", Tensor());
    CHECK_THROWS_AS(m.load_state_dict(sd), volt::Error);
    CHECK(same_state(m, before));
  }
}

TEST_CASE("zero_grad clears or zeroes parameter gradients") {
  manual_seed(3);
  Linear lin(4, 3);
  Tensor x = test::rand_tensor({5, 4}, 13);
  sum(lin(x)).backward();
  REQUIRE(lin.weight.grad().defined());
  REQUIRE(lin.bias.grad().defined());
  CHECK(lin.bias.grad().to_vector() == std::vector<float>{5, 5, 5});
  lin.zero_grad(false);
  REQUIRE(lin.weight.grad().defined());
  for (float v : lin.weight.grad().to_vector()) CHECK(v == 0.f);
  for (float v : lin.bias.grad().to_vector()) CHECK(v == 0.f);
  sum(lin(x)).backward();
  CHECK(lin.bias.grad().to_vector() == std::vector<float>{5, 5, 5});
  lin.zero_grad();
  CHECK_FALSE(lin.weight.grad().defined());
  CHECK_FALSE(lin.bias.grad().defined());
  lin.zero_grad();  // no gradients: nothing to do

  manual_seed(3);
  SeedCNN m;
  sum(m(test::rand_tensor({2, 3, 32, 32}, 14))).backward();
  for (const auto& [n, p] : m.named_parameters()) {
    INFO(n);
    CHECK(p.grad().defined());
  }
  m.zero_grad();
  for (const Tensor& p : m.parameters()) CHECK_FALSE(p.grad().defined());
}

namespace {
// One tensor registered under two names (weight tying inside a module).
struct TwoNames : Module {
  Tensor a = register_parameter("a", test::param({1.f, -2.f, 3.f}));
  Tensor b = register_parameter("b", a);
  Tensor forward(const Tensor& x) override { return x; }
  std::string type_name() const override { return "TwoNames"; }
};
}  // namespace

TEST_CASE("a layer or tensor registered under two names is one parameter, stepped once") {
  manual_seed(4);
  auto lin = std::make_shared<Linear>(3, 3);
  Sequential net({lin, std::make_shared<ReLU>(), lin});  // the same layer twice
  // As PyTorch: each tensor once, under its first name; state_dict keeps every name.
  CHECK(names_of(net.named_parameters()) == std::vector<std::string>{"0.weight", "0.bias"});
  CHECK(net.parameters().size() == 2);
  CHECK(net.num_parameters() == 12);
  CHECK(names_of(net.state_dict().items()) == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
  net.load_state_dict(snapshot(net));
  auto bn = std::make_shared<BatchNorm2d>(2);
  CHECK(names_of(Sequential({bn, bn}).named_buffers()) ==
        std::vector<std::string>{"0.running_mean", "0.running_var", "0.num_batches_tracked"});

  // SGD moves the shared weight once by lr times its gradient (the sum over both uses).
  SGD sgd(net.parameters(), test::sgd_options(0.1));
  sum(net(test::rand_tensor({4, 3}, 5))).backward();
  const std::vector<float> w = lin->weight.to_vector(), g = lin->weight.grad().to_vector();
  sgd.step();
  std::vector<double> want;
  for (size_t i = 0; i < w.size(); ++i) want.push_back(double(w[i]) - 0.1 * double(g[i]));
  test::check_close(lin->weight, want);

  // Adam's first step moves each element by lr (times the sign of its gradient 2a), once.
  TwoNames two;
  CHECK(names_of(two.named_parameters()) == std::vector<std::string>{"a"});
  CHECK(two.num_parameters() == 3);
  CHECK(two.state_dict().size() == 2);
  Adam adam(two.parameters(), test::adam_options(0.1));
  sum(two.a * two.b).backward();
  adam.step();
  test::check_close(two.a, {0.9, -1.9, 2.9});
}

TEST_CASE("printing a module shows the tree") {
  manual_seed(0);
  SeedCNN m;
  std::ostringstream os;
  os << m;
  const std::string s = os.str();
  INFO(s);
  CHECK(s.rfind("SeedCNN(\n", 0) == 0);
  CHECK(contains(s, "\n  (block1): Sequential(\n    (0): Conv2d(3, 64, kernel_size=5, stride=1)\n"));
  CHECK(contains(s, "\n    (1): BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"));
  CHECK(contains(s, "\n    (2): ReLU()\n"));
  CHECK(contains(s, "\n    (3): MaxPool2d(kernel_size=2, stride=2, padding=0)\n  )\n"));
  CHECK(contains(s, "\n  (block2): Sequential(\n    (0): Conv2d(64, 32, kernel_size=5, stride=1)\n"));
  CHECK(contains(s, "\n  (fc_layers): Sequential(\n    (0): Linear(in_features=800, out_features=64, bias=True)\n"));
  CHECK(contains(s, "\n    (2): Dropout(p=0.2)\n"));
  CHECK(contains(s, "\n    (6): Linear(in_features=32, out_features=10, bias=True)\n  )\n)"));
  CHECK(s.back() == ')');

  std::ostringstream small;
  small << Sequential({std::make_shared<Conv2d>(3, 4, 3, 2, 1, false), std::make_shared<Flatten>()});
  CHECK(small.str() == "Sequential(\n  (0): Conv2d(3, 4, kernel_size=3, stride=2, padding=1, bias=False)\n  (1): Flatten()\n)");
  std::ostringstream leafp;
  leafp << Linear(2, 3, false);
  CHECK(leafp.str() == "Linear(in_features=2, out_features=3, bias=False)");
}
