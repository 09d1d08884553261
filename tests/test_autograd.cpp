// Autograd engine behaviour: accumulation, requires_grad propagation, NoGradGuard, graph freeing,
// diamonds, branches without gradient, view backward, explicit output gradients, non-leaf grads,
// the release of saved tensors after backward, and the gradient-ready hook (saved tensors changed in
// place: test_autograd_versions.cpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "tests/test_util.h"

using namespace volt;

namespace {

Tensor leaf(const Shape& shape, const std::vector<float>& values) {
  Tensor t = Tensor::from_vector(shape, values);
  t.requires_grad_();
  return t;
}

void check_close(const std::vector<float>& got, const std::vector<double>& want, double tol = 1e-5) {
  REQUIRE(got.size() == want.size());
  std::string where;
  const double v = test::max_rel_violation(got, want, tol, tol, &where);
  INFO(where);
  CHECK(v <= 1.0);
}

// A non-differentiable op for tests: forwards x unchanged but returns no gradient for it.
Tensor stop_gradient_op(const Tensor& x) {
  Tensor y = x.clone();
  autograd::record("stop_gradient", y, {x}, [](const Tensor&, const std::vector<bool>&) {
    return std::vector<Tensor>{Tensor()};
  });
  return y;
}

}  // namespace

TEST_CASE("gradients accumulate across backward calls until cleared") {
  Tensor x = leaf({3}, {1.f, -2.f, 0.5f});
  sum(mul(x, x)).backward();
  check_close(x.grad().to_vector(), {2.0, -4.0, 1.0});
  const Tensor first = x.grad();
  sum(mul(x, 3.f)).backward();
  check_close(x.grad().to_vector(), {5.0, -1.0, 4.0});
  CHECK(x.grad().same_storage(first));  // accumulated in place
  x.set_grad(Tensor());
  CHECK_FALSE(x.grad().defined());
  sum(mul(x, 3.f)).backward();
  check_close(x.grad().to_vector(), {3.0, 3.0, 3.0});
}

TEST_CASE("a leaf's first gradient becomes its .grad without a copy only when nothing else holds it") {
  // An op of two inputs whose backward returns fresh gradients, one tensor for both inputs when
  // `shared` is set. It notes where they are (`where`) and, with `held`, keeps handles to them.
  struct Seen {
    std::vector<const void*> where;
    std::vector<Tensor> held;
  };
  auto two_input_op = [](const Tensor& a, const Tensor& b, bool shared, bool hold, Seen* seen) {
    Tensor y = add(a, b).detach();
    autograd::record("two_input", y, {a, b}, [=](const Tensor& g, const std::vector<bool>&) {
      Tensor ga = g.clone(), gb = shared ? ga : g.clone();
      seen->where = {ga.raw_data(), gb.raw_data()};
      if (hold) seen->held = {ga, gb};
      return std::vector<Tensor>{ga, gb};
    });
    return y;
  };
  // Nothing else holds the gradients: each leaf takes its own, no copy.
  Seen seen;
  Tensor a = leaf({2}, {1, 2}), b = leaf({2}, {3, 4});
  sum(two_input_op(a, b, false, false, &seen)).backward();
  REQUIRE(seen.where.size() == 2);
  CHECK(a.grad().raw_data() == seen.where[0]);
  CHECK(b.grad().raw_data() == seen.where[1]);
  check_close(a.grad().to_vector(), {1.0, 1.0});

  // One tensor is the gradient of both inputs: the leaves must not share it, or accumulating into
  // one would change the other.
  Tensor c = leaf({2}, {1, 2}), d = leaf({2}, {3, 4});
  sum(two_input_op(c, d, true, false, &seen)).backward();
  CHECK_FALSE(c.grad().same_storage(d.grad()));
  sum(mul(two_input_op(c, d, true, false, &seen), 2.f)).backward();
  check_close(c.grad().to_vector(), {3.0, 3.0});
  check_close(d.grad().to_vector(), {3.0, 3.0});

  // A gradient someone else still holds (here the op's own record of it) is copied.
  Tensor e = leaf({2}, {1, 2}), f = leaf({2}, {3, 4});
  sum(two_input_op(e, f, false, true, &seen)).backward();
  REQUIRE(seen.held.size() == 2);
  CHECK_FALSE(e.grad().same_storage(seen.held[0]));
  seen.held[0].fill_(100.f);
  check_close(e.grad().to_vector(), {1.0, 1.0});
}

TEST_CASE("requires_grad propagates through ops and views") {
  Tensor a = leaf({2, 2}, {1, 2, 3, 4});
  Tensor b = Tensor::from_vector({2, 2}, {5, 6, 7, 8});
  CHECK(a.requires_grad());
  CHECK(a.is_leaf());
  CHECK_FALSE(a.grad_fn());
  CHECK_FALSE(b.requires_grad());

  Tensor c = add(a, b);
  CHECK(c.requires_grad());
  CHECK_FALSE(c.is_leaf());
  REQUIRE(c.grad_fn());
  CHECK(c.grad_fn()->name() == "add");

  Tensor d = mul(b, b);
  CHECK_FALSE(d.requires_grad());
  CHECK(d.is_leaf());
  CHECK_FALSE(d.grad_fn());
  Tensor e = mul(d, c);  // one input needs grad -> the output does
  CHECK(e.requires_grad());
  REQUIRE(e.grad_fn());
  CHECK(e.grad_fn()->needs() == std::vector<bool>{false, true});

  CHECK(a.reshape({4}).requires_grad());
  CHECK(a.flatten().requires_grad());
  CHECK(a.narrow(0, 1).requires_grad());
  CHECK(a.reshape({4}).grad_fn()->name() == "reshape");
  CHECK_FALSE(a.detach().requires_grad());
  CHECK_FALSE(a.clone().requires_grad());
  CHECK_FALSE(c.detach().requires_grad());
  CHECK_FALSE(b.reshape({4}).requires_grad());

  // Only leaves can change the flag; only floating-point tensors can require grad.
  CHECK_THROWS_AS(c.requires_grad_(false), volt::Error);
  Tensor labels = Tensor::from_labels({1, 2});
  CHECK_THROWS_AS(labels.requires_grad_(), volt::Error);
  a.requires_grad_(false);
  CHECK_FALSE(a.requires_grad());
  CHECK_FALSE(add(a, b).requires_grad());
}

TEST_CASE("NoGradGuard records nothing and restores the previous mode") {
  Tensor x = leaf({3}, {1, 2, 3});
  CHECK(autograd::grad_enabled());
  {
    NoGradGuard g;
    CHECK_FALSE(autograd::grad_enabled());
    Tensor y = mul(relu(x), 2.f);
    CHECK_FALSE(y.requires_grad());
    CHECK_FALSE(y.grad_fn());
    CHECK_FALSE(x.reshape({3}).grad_fn());
    CHECK_THROWS_AS(sum(y).backward(), volt::Error);
    {
      NoGradGuard inner;
      CHECK_FALSE(autograd::grad_enabled());
    }
    CHECK_FALSE(autograd::grad_enabled());  // the inner guard restores "off", not "on"
  }
  CHECK(autograd::grad_enabled());
  Tensor z = mul(x, 2.f);
  CHECK(z.grad_fn());
  // A leaf that requires grad stays one under the guard.
  {
    NoGradGuard g;
    CHECK(x.requires_grad());
  }
}

TEST_CASE("the graph is freed by backward - a second backward throws") {
  Tensor x = leaf({2}, {1.5f, -0.5f});
  Tensor h = mul(x, x);
  Tensor loss = sum(mul(h, 2.f));
  std::weak_ptr<Node> h_node = h.grad_fn();
  loss.backward();
  check_close(x.grad().to_vector(), {6.0, -2.0});
  REQUIRE(loss.grad_fn());
  CHECK(loss.grad_fn()->released());
  CHECK(loss.grad_fn()->next().empty());
  REQUIRE(h.grad_fn());
  CHECK(h.grad_fn()->released());
  CHECK_THROWS_AS(loss.backward(), volt::Error);
  CHECK_THROWS_AS(sum(h).backward(), volt::Error);  // a new node on top of a freed one
  // The failed calls changed nothing.
  check_close(x.grad().to_vector(), {6.0, -2.0});
  // A fresh forward pass works again.
  sum(mul(x, x)).backward();
  check_close(x.grad().to_vector(), {9.0, -3.0});
}

TEST_CASE("diamonds: gradients from several paths are summed") {
  SUBCASE("a leaf used twice by one op") {
    Tensor x = leaf({3}, {1.f, -2.f, 3.f});
    sum(mul(x, x)).backward();
    check_close(x.grad().to_vector(), {2.0, -4.0, 6.0});
  }
  SUBCASE("a leaf used by two ops") {
    // y = (2x) * (x*x) = 2x^3, dy/dx = 6x^2
    Tensor x = leaf({3}, {1.f, -2.f, 0.5f});
    Tensor a = mul(x, 2.f);
    Tensor b = mul(x, x);
    sum(mul(a, b)).backward();
    check_close(x.grad().to_vector(), {6.0, 24.0, 1.5});
  }
  SUBCASE("an intermediate node reached by two paths") {
    // h = relu(x); y = h + 3h*h, dy/dx = (1 + 6h) for x > 0, else 0
    Tensor x = leaf({4}, {0.5f, -1.f, 2.f, 0.25f});
    Tensor h = relu(x);
    Tensor y = add(h, mul(mul(h, h), 3.f));
    sum(y).backward();
    check_close(x.grad().to_vector(), {4.0, 0.0, 13.0, 2.5});
  }
  SUBCASE("a long chain with a skip connection") {
    // y = x + f(f(f(x))) with f(v) = 2v, dy/dx = 1 + 8
    Tensor x = leaf({2}, {1.f, 2.f});
    Tensor h = x;
    for (int i = 0; i < 3; ++i) h = mul(h, 2.f);
    sum(add(x, h)).backward();
    check_close(x.grad().to_vector(), {9.0, 9.0});
  }
}

TEST_CASE("branches without a gradient do not break backward") {
  SUBCASE("an unused branch") {
    Tensor x = leaf({2}, {1.f, 2.f});
    Tensor unused = mul(x, 5.f);
    sum(mul(x, 2.f)).backward();
    check_close(x.grad().to_vector(), {2.0, 2.0});
    REQUIRE(unused.grad_fn());
    CHECK_FALSE(unused.grad_fn()->released());  // not reachable from the loss: untouched
    sum(unused).backward();
    check_close(x.grad().to_vector(), {7.0, 7.0});
  }
  SUBCASE("a constant operand and a detached branch") {
    Tensor x = leaf({3}, {1.f, -1.f, 2.f});
    Tensor c = Tensor::from_vector({3}, {4.f, 5.f, 6.f});
    Tensor loss = add(sum(mul(x, c)), sum(mul(x.detach(), 10.f)));
    loss.backward();
    check_close(x.grad().to_vector(), {4.0, 5.0, 6.0});
    CHECK_FALSE(c.grad().defined());
  }
  SUBCASE("a node that returns no gradient: its upstream graph is freed, other paths still flow") {
    Tensor x = leaf({3}, {1.f, 2.f, 3.f});
    Tensor h1 = mul(x, 3.f);
    Tensor h2 = mul(h1, 2.f);
    std::weak_ptr<Node> h2_node = h2.grad_fn();
    Tensor stopped = stop_gradient_op(h2);
    Tensor loss = add(sum(stopped), sum(h1));  // only sum(h1) carries a gradient to x
    h2 = Tensor();
    loss.backward();
    check_close(x.grad().to_vector(), {3.0, 3.0, 3.0});
    CHECK((h2_node.expired() || h2_node.lock()->released()));
    CHECK(h1.grad_fn()->released());
  }
  SUBCASE("nothing reaches any leaf") {
    Tensor x = leaf({2}, {1.f, 2.f});
    Tensor loss = sum(stop_gradient_op(mul(x, 2.f)));
    loss.backward();
    CHECK_FALSE(x.grad().defined());
  }
  SUBCASE("an op input that does not need grad gets none") {
    Tensor w = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
    Tensor in = Tensor::from_vector({1, 3}, {1.f, 0.f, -1.f});
    sum(linear(in, w, Tensor())).backward();
    check_close(w.grad().to_vector(), {1, 0, -1, 1, 0, -1});
    CHECK_FALSE(in.grad().defined());
  }
}

TEST_CASE("reshape, flatten and narrow backward") {
  SUBCASE("reshape with -1") {
    Tensor x = leaf({2, 6}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
    Tensor c = Tensor::from_vector({3, 4}, {1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6});
    Tensor r = x.reshape({3, -1});
    CHECK(r.shape() == Shape{3, 4});
    sum(mul(r, c)).backward();
    CHECK(x.grad().shape() == Shape{2, 6});
    check_close(x.grad().to_vector(), {1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6});
  }
  SUBCASE("flatten") {
    Tensor x = leaf({2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
    Tensor f = x.flatten(1);
    sum(mul(f, f)).backward();
    check_close(x.grad().to_vector(), {2, 4, 6, 8, 10, 12, 14, 16});
  }
  SUBCASE("narrow: rows outside the view get zero") {
    Tensor x = leaf({4, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
    Tensor w = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
    sum(mul(x.narrow(1, 2), w)).backward();
    check_close(x.grad().to_vector(), {0, 0, 0, 1, 2, 3, 4, 5, 6, 0, 0, 0});
  }
  SUBCASE("two overlapping narrows accumulate") {
    Tensor x = leaf({3, 2}, {1, 2, 3, 4, 5, 6});
    sum(add(x.narrow(0, 2), mul(x.narrow(1, 2), 10.f))).backward();
    check_close(x.grad().to_vector(), {1, 1, 11, 11, 10, 10});
  }
  SUBCASE("gradcheck through a view chain") {
    Tensor x = test::rand_tensor({5, 3, 2}, 31);
    x.requires_grad_();
    auto fn = [](const std::vector<Tensor>& in) {
      Tensor v = in[0].narrow(1, 3).reshape({-1, 2});
      return mul(v, v).flatten();
    };
    VOLT_CHECK_GRADCHECK(test::gradcheck(fn, {x}));
  }
}

TEST_CASE("gradcheck itself fails on a NaN or a wrong gradient") {
  // The checker under every op table: a point whose error is NaN must count as the worst, not vanish.
  for (const float factor : {NAN, 2.f}) {
    CAPTURE(factor);
    auto fn = [factor](const std::vector<Tensor>& in) {
      Tensor y = in[0].clone();  // the identity, with a backward scaled by factor
      autograd::record("scaled_backward", y, {in[0]},
                       [factor](const Tensor& g, const std::vector<bool>&) { return std::vector<Tensor>{mul(g, factor)}; });
      return y;
    };
    Tensor x = test::rand_tensor({4, 5}, 3);
    x.requires_grad_();
    const test::GradcheckReport rep = test::gradcheck(fn, {x});
    CHECK(rep.checked == 20);
    CHECK_FALSE(rep.worst_error <= 1.0);
    CHECK(test::contains(rep.worst, std::isnan(factor) ? "autograd nan" : "autograd"));
  }
}

TEST_CASE("backward with an explicit output gradient") {
  Tensor x = leaf({2, 2}, {1, 2, 3, 4});
  Tensor y = mul(x, 3.f);
  Tensor g = Tensor::from_vector({2, 2}, {1.f, -1.f, 0.5f, 2.f});
  y.backward(g);
  check_close(x.grad().to_vector(), {3.0, -3.0, 1.5, 6.0});

  // Without a gradient only one-element outputs work; a wrong-shaped gradient is rejected.
  Tensor y2 = mul(x, 3.f);
  CHECK_THROWS_AS(y2.backward(), volt::Error);
  CHECK_THROWS_AS(y2.backward(Tensor::ones({4})), volt::Error);
  Tensor undef;
  CHECK_THROWS_AS(undef.backward(), volt::Error);
  CHECK_THROWS_AS(Tensor::ones({1}).backward(), volt::Error);  // does not require grad

  // The accumulated gradient does not alias the caller's tensor (add(x, s) passes g through).
  Tensor x2 = leaf({2}, {1, 2});
  Tensor g2 = Tensor::from_vector({2}, {5.f, 6.f});
  add(x2, 1.f).backward(g2);
  CHECK_FALSE(x2.grad().same_storage(g2));
  g2.fill_(100.f);
  check_close(x2.grad().to_vector(), {5.0, 6.0});

  // backward on a leaf accumulates into it directly.
  Tensor x3 = leaf({2}, {1, 2});
  x3.backward(Tensor::from_vector({2}, {0.25f, 0.5f}));
  check_close(x3.grad().to_vector(), {0.25, 0.5});
  // A one-element non-scalar loss.
  Tensor x4 = leaf({1, 1}, {3.f});
  mul(x4, x4).backward();
  check_close(x4.grad().to_vector(), {6.0});
}

TEST_CASE("backward takes the output gradient in the output's dtype, as PyTorch does") {
  // A float16 gradient for a float32 leaf: its .grad stays float32 (the optimizers need that).
  Tensor a = leaf({2}, {1, 2});
  a.backward(Tensor::from_vector({2}, {0.5f, 2.f}).to(DType::F16));
  CHECK(a.grad().dtype() == DType::F32);
  check_close(a.grad().to_vector(), {0.5, 2.0});
  // A float32 gradient for a float16 output.
  Tensor x = Tensor::from_vector({4}, {1, -2, 3, 4}).to(DType::F16);
  x.requires_grad_();
  relu(x).backward(Tensor::ones({4}));
  CHECK(x.grad().dtype() == DType::F16);
  check_close(x.grad().to(DType::F32).to_vector(), {1, 0, 1, 1});
  // Integers are no gradient.
  Tensor b = leaf({2}, {1, 2});
  CHECK(test::contains(test::error_of([&] { mul(b, 2.f).backward(Tensor::from_labels({1, 1})); }),
                       "not a floating-point tensor"));
}

TEST_CASE("non-leaf tensors do not get .grad") {
  Tensor x = leaf({3}, {1, 2, 3});
  Tensor h = mul(x, 2.f);
  Tensor loss = sum(mul(h, h));
  loss.backward();
  CHECK_FALSE(h.grad().defined());
  CHECK_FALSE(loss.grad().defined());
  check_close(x.grad().to_vector(), {8, 16, 24});
}

TEST_CASE("a deep graph dropped without backward is freed without recursing once per node") {
  // Each node owned its parents (edges, and the inputs its backward captured), so freeing the newest
  // freed the chain recursively: 175,000 nodes overflowed an 8 MB stack.
  Tensor x = Tensor::full({1}, 0.5f);
  x.requires_grad_();
  for (const bool captures : {false, true}) {  // add keeps edges only; mul also captures its inputs
    CAPTURE(captures);
    Tensor acc = x;
    for (int i = 0; i < 300000; ++i) acc = captures ? mul(acc, x) : add(acc, x);
    CHECK(acc.requires_grad());
    acc = Tensor();  // the whole chain goes here
  }
  CHECK(x.impl_ptr().use_count() == 1);  // nothing of it kept x alive
}

TEST_CASE("saved tensors and nodes are released after backward") {
  Tensor x = leaf({64, 32}, std::vector<float>(64 * 32, 0.5f));
  std::weak_ptr<TensorImpl> saved;  // the relu output, saved by the mul that squares it
  std::weak_ptr<Node> mul_node, relu_node;
  Tensor loss;
  {
    Tensor h = relu(mul(x, 2.f));
    Tensor sq = mul(h, h);
    saved = h.impl_ptr();
    mul_node = sq.grad_fn();
    relu_node = h.grad_fn();
    loss = sum(sq);
  }
  // Only the graph keeps them now.
  CHECK_FALSE(saved.expired());
  CHECK_FALSE(mul_node.expired());
  CHECK_FALSE(relu_node.expired());
  loss.backward();
  CHECK(saved.expired());
  CHECK(mul_node.expired());
  CHECK(relu_node.expired());
  check_close(x.grad().narrow(0, 1).to_vector(), std::vector<double>(32, 4.0));  // d(4x^2)/dx = 8x

  // The leaf itself is not released: the graph dropped its reference but the caller's remains.
  CHECK(x.defined());
  CHECK(x.impl_ptr().use_count() == 1);
}

TEST_CASE("a node kept alive by its output still drops its saved tensors after backward") {
  // The caller keeps the op outputs (as a training step keeps its logits); their nodes stay, but
  // what they saved for backward must go.
  Tensor x = leaf({16, 8}, std::vector<float>(16 * 8, -0.25f));
  std::weak_ptr<TensorImpl> saved_h, saved_in;
  Tensor sq, h_out;
  {
    Tensor in = mul(x, 2.f);
    Tensor h = relu(in);       // relu saves its input `in`
    sq = mul(h, h);            // mul saves h twice
    h_out = mul(h, 1.f);       // a second consumer, not part of the loss
    saved_h = h.impl_ptr();
    saved_in = in.impl_ptr();
  }
  CHECK_FALSE(saved_h.expired());
  CHECK_FALSE(saved_in.expired());
  sum(sq).backward();
  REQUIRE(sq.grad_fn());
  CHECK(sq.grad_fn()->released());
  CHECK(saved_h.expired());   // only sq's node held it
  // relu's node is shared with h_out's graph, which keeps the node alive; backward ran and freed it
  // anyway (as PyTorch without retain_graph), so its saved input is gone and h_out's graph is spent.
  CHECK(saved_in.expired());
  REQUIRE(h_out.grad_fn());
  CHECK_FALSE(h_out.grad_fn()->released());
  CHECK_THROWS_AS(sum(h_out).backward(), volt::Error);
  CHECK(x.grad().defined());
  for (float g : x.grad().to_vector()) CHECK(g == 0.f);  // relu(-0.5) = 0: no gradient flows
}

TEST_CASE("a node's backward must return one gradient per input of the right shape") {
  Tensor x = leaf({2}, {1, 2});
  Tensor y = x.clone();
  autograd::record("bad_shape", y, {x}, [](const Tensor&, const std::vector<bool>&) {
    return std::vector<Tensor>{Tensor::ones({3})};
  });
  CHECK_THROWS_AS(sum(y).backward(), volt::Error);
  Tensor z = x.clone();
  autograd::record("bad_count", z, {x}, [](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{g, g};
  });
  CHECK_THROWS_AS(z.backward(Tensor::ones({2})), volt::Error);
}

TEST_CASE("profiling hooks: nodes carry the tag set when they were recorded, and the observer sees each pass") {
  struct Count : autograd::BackwardObserver {
    int begins = 0, ends = 0, befores = 0, afters = 0;
    std::vector<std::string> names;
    std::vector<const void*> tags;
    void pass_begin() override { ++begins; }
    void pass_end() override { ++ends; }
    void before(const Node& n) override {
      ++befores;
      names.push_back(n.name());
      tags.push_back(n.tag());
    }
    void after(const Node&) override { ++afters; }
  } obs;
  const int layer = 0;
  Tensor x = Tensor::from_vector({3}, {1.f, -2.f, 3.f}).requires_grad_();
  autograd::set_current_tag(&layer);
  Tensor y = relu(x);
  autograd::set_current_tag(nullptr);
  Tensor loss = sum(mul(y, y));
  CHECK(y.grad_fn()->tag() == &layer);
  CHECK(loss.grad_fn()->tag() == nullptr);
  autograd::set_backward_observer(&obs);
  loss.backward();
  autograd::set_backward_observer(nullptr);
  CHECK(obs.begins == 1);
  CHECK(obs.ends == 1);
  CHECK(obs.befores == 3);  // sum, mul, relu
  CHECK(obs.afters == 3);
  CHECK(obs.names.back() == "relu");
  CHECK(obs.tags.back() == &layer);
  CHECK(x.grad().to_vector() == std::vector<float>{2.f, 0.f, 6.f});
}

// ---- the gradient-ready hook (autograd::GradReadyListener) ----
namespace {
// Records, per reported leaf, how often it was reported and its .grad at that moment.
struct ReadyLog : autograd::GradReadyListener {
  std::vector<const TensorImpl*> order;
  std::vector<std::vector<float>> grads;  // empty where .grad was undefined
  void grad_ready(const Tensor& leaf) override {
    order.push_back(leaf.impl());
    grads.push_back(leaf.grad().defined() ? leaf.grad().to_vector() : std::vector<float>{});
  }
  int count(const Tensor& t) const { return int(std::count(order.begin(), order.end(), t.impl())); }
  std::vector<float> grad_when_ready(const Tensor& t) const {
    for (size_t i = 0; i < order.size(); ++i)
      if (order[i] == t.impl()) return grads[i];
    return {};
  }
  size_t position(const Tensor& t) const {
    return size_t(std::find(order.begin(), order.end(), t.impl()) - order.begin());
  }
};

struct ListenerScope {
  autograd::GradReadyListener* prev;
  explicit ListenerScope(autograd::GradReadyListener* l) : prev(autograd::set_grad_ready_listener(l)) {}
  ~ListenerScope() { autograd::set_grad_ready_listener(prev); }
};
}  // namespace

TEST_CASE("grad-ready hook: a shared weight is reported once, after its last contribution, with its final gradient") {
  // w is used near the loss and again deep below it (like a tied embedding); u only near the loss.
  Tensor w = leaf({3}, {0.5f, -1.5f, 2.f}), u = leaf({3}, {1.f, 2.f, -0.5f});
  const Tensor a = Tensor::from_vector({3}, {0.3f, 0.7f, -1.1f});
  Tensor deep = relu(mul(mul(w, a), 1.7f));               // w's first use, far from the loss
  Tensor loss = add(sum(mul(deep, u)), sum(mul(w, w)));  // and twice more near it
  ReadyLog log;
  {
    ListenerScope scope(&log);
    loss.backward();
  }
  CHECK(log.count(w) == 1);
  CHECK(log.count(u) == 1);
  CHECK(log.order.size() == 2);
  CHECK(log.position(u) < log.position(w));  // u is final as soon as the near branch is done
  // At the moment it was reported, w's .grad already held every contribution: it is the final one.
  CHECK(log.grad_when_ready(w) == w.grad().to_vector());
  CHECK(log.grad_when_ready(u) == u.grad().to_vector());
  std::vector<double> want(3);
  for (size_t i = 0; i < 3; ++i) {
    const double wi = w.at({int64_t(i)}), ai = a.at({int64_t(i)}), ui = u.at({int64_t(i)});
    const double pre = wi * ai * 1.7;
    want[i] = 2 * wi + (pre > 0 ? ai * 1.7 * ui : 0.0);
  }
  check_close(w.grad().to_vector(), want);
}

TEST_CASE("grad-ready hook: leaves whose gradient never arrives are still reported, unreached leaves are not") {
  Tensor p = leaf({2}, {1.f, 2.f}), q = leaf({2}, {3.f, 4.f}), r = leaf({2}, {5.f, 6.f}), unused = leaf({2}, {0.f, 1.f});
  // "cut" returns no gradient for its first input (a node) nor for its second (the leaf q): the
  // branch below the node (which uses r) gets nothing, but its edges still count as processed.
  Tensor below = mul(r, 2.f);
  Tensor cut = add(below, q);
  autograd::record("cut", cut, {below, q}, [](const Tensor&, const std::vector<bool>&) {
    return std::vector<Tensor>{Tensor(), Tensor()};
  });
  Tensor loss = sum(add(mul(p, p), cut));
  ReadyLog log;
  {
    ListenerScope scope(&log);
    loss.backward();
  }
  CHECK(log.count(p) == 1);
  CHECK(log.count(q) == 1);
  CHECK(log.count(r) == 1);
  CHECK(log.count(unused) == 0);
  CHECK(log.order.size() == 3);
  CHECK(!q.grad().defined());
  CHECK(!r.grad().defined());
  CHECK(log.grad_when_ready(q).empty());
  CHECK(p.grad().to_vector() == std::vector<float>{2.f, 4.f});
}

TEST_CASE("grad-ready hook: a leaf root, accumulation over passes, uninstalling, and the previous listener") {
  ReadyLog log, other;
  Tensor x = leaf({2}, {1.f, -1.f});
  CHECK(autograd::grad_ready_listener() == nullptr);
  {
    ListenerScope scope(&log);
    CHECK(autograd::set_grad_ready_listener(&other) == &log);  // returns the previous one
    autograd::set_grad_ready_listener(&log);
    x.backward(Tensor::from_vector({2}, {0.5f, 0.25f}));  // the root is the leaf itself
    CHECK(log.count(x) == 1);
    sum(mul(x, 3.f)).backward();  // a second pass: reported again, with the accumulated gradient
    CHECK(log.count(x) == 2);
    CHECK(log.grads.back() == std::vector<float>{3.5f, 3.25f});
  }
  CHECK(autograd::grad_ready_listener() == nullptr);
  sum(x).backward();  // no listener: nothing is told
  CHECK(log.count(x) == 2);
  CHECK(other.order.empty());
}
