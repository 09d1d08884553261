// Tests for the ops in engine/ops.h: every entry of the op table (tests/ops/) checked against its
// double-precision reference and by central differences, then golden values worked out by hand.
#include <doctest/doctest.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "tests/ops/op_table.h"
#include "tests/ops/reference.h"
#include "tests/test_util.h"

extern char** environ;

using namespace volt;
namespace vt = volt::test;
using vt::InputSpec;
using vt::make_inputs;
using vt::OpCase;
using vt::op_table;
using vt::Reference;
using vt::ref::dropout_keeps;
using vt::ref::dvec;
using vt::ref::ref_batch_norm;
using vt::ref::ref_bn_stats;

namespace {

// ---------------------------------------------------------------- checks run over the table

void check_forward(const OpCase& c) {
  INFO("case: " << c.op << " " << c.name);
  REQUIRE(c.reference);
  const std::vector<Tensor> in = make_inputs(c, /*with_grad=*/true);
  const Tensor y = c.run(in);
  const Reference ref = c.reference(in);
  REQUIRE(y.defined());
  CHECK(shape_str(y.shape()) == shape_str(ref.shape));
  CHECK(y.dtype() == DType::F32);
  if (y.shape() != ref.shape) return;
  std::string where;
  const double v = vt::max_rel_violation(y.to_vector(), ref.values, c.atol, c.rtol, &where);
  INFO("worst element: " << where << " (violation " << v << ", atol " << c.atol << ", rtol " << c.rtol << ")");
  CHECK(v <= 1.0);
  // The same inputs give the same output (a backend's output must not depend on leftover state).
  CHECK(c.run(in).to_vector() == y.to_vector());
}

void check_gradients(const OpCase& c) {
  INFO("case: " << c.op << " " << c.name);
  bool any = false;
  for (const InputSpec& s : c.inputs) any = any || s.differentiable;
  REQUIRE(any);
  const std::vector<Tensor> in = make_inputs(c, /*with_grad=*/true);
  const vt::GradcheckReport rep = vt::gradcheck(c.run, in, c.grad);
  VOLT_CHECK_GRADCHECK(rep);
  // Every differentiable input received a gradient of its own shape.
  for (size_t k = 0; k < in.size(); ++k) {
    if (!c.inputs[k].differentiable) continue;
    INFO("input " << k);
    REQUIRE(in[k].grad().defined());
    CHECK(in[k].grad().shape() == in[k].shape());
  }
}

int run_table(const std::string& op, void (*check)(const OpCase&)) {
  int n = 0;
  for (const OpCase& c : op_table())
    if (c.op == op) {
      check(c);
      ++n;
    }
  CHECK(n > 0);
  return n;
}

void check_half(const OpCase& c) { vt::check_low_precision(c, DType::F16, Device::cpu()); }
void check_bfloat16(const OpCase& c) { vt::check_low_precision(c, DType::BF16, Device::cpu()); }

}  // namespace

TEST_CASE("op table covers every op declared in engine/ops.h, or names where it is tested instead") {
  std::set<std::string> ops;
  for (const OpCase& c : op_table()) ops.insert(c.op);
  // Ops outside the table (not differentiable, in place, or checked against a table op), and where.
  const std::map<std::string, std::string> elsewhere = {
      {"sync_batch_norm", "test_sync_batch_norm: against batch_norm over the ranks' concatenated batch"},
      {"cast_many", "cast_many and cast_into golden, test_cuda against the CPU"},
      {"cast_into", "cast_many and cast_into golden, test_cuda against the CPU, test_cuda_training"},
      {"add_", "add_ and add_int_ golden, test_errors, test_cuda against the CPU"},
      {"add_int_", "add_ and add_int_ golden, test_layers (num_batches_tracked), test_cuda against the CPU"},
      {"argmax", "argmax and accuracy golden, test_cuda against the CPU"},
      {"accuracy", "argmax and accuracy golden, test_cuda against the CPU"},
      {"batch_accuracy", "argmax and accuracy golden, test_cuda against the CPU"},
      {"check_deferred_errors", "test_cuda (a label out of range on the GPU)"},
  };
  // Every function declared at namespace scope in engine/ops.h, read from the source: a new op
  // fails this until it has table entries or a line above.
  const std::string header = vt::source_dir() + "/engine/ops.h";
  std::ifstream in(header);
  if (!in) vt::skip("no " + header + " (a test binary away from its source tree)");
  const std::regex decl(R"(^(?:Tensor|void|double|std::vector<Tensor>) ([a-z_0-9]+)\()");
  std::set<std::string> declared;
  for (std::string line; std::getline(in, line);)
    if (std::smatch m; std::regex_search(line, m, decl)) declared.insert(m[1]);
  CHECK(declared.size() >= 20);
  for (const std::string& op : declared) {
    INFO(op);
    CHECK(ops.count(op) + elsewhere.count(op) == 1);
  }
  for (const auto& [op, where] : elsewhere) {
    INFO(op << " is listed as tested in " << where << " but is not declared in engine/ops.h");
    CHECK(declared.count(op) == 1);
  }
  for (const std::string& op : ops) {
    INFO(op << " has table entries but is not declared in engine/ops.h");
    CHECK(declared.count(op) == 1);
  }
  // Names identify entries (a CUDA run reports failures by them).
  std::set<std::string> names;
  for (const OpCase& c : op_table()) names.insert(c.op + "/" + c.name);
  CHECK(names.size() == op_table().size());
}


// The 16-bit check on the CPU, where a 16-bit op is its float32 op between casts, covers the cast
// path, the output's rounding and the gradients' types; the kernels' own 16-bit arithmetic is
// checked the same way on the GPU (test_cuda).
#define VOLT_OP_TABLE_TESTS(OP)                                                                             \
  TEST_CASE(OP " table: forward matches the double-precision reference") { run_table(OP, check_forward); } \
  TEST_CASE(OP " table: gradients match central differences") { run_table(OP, check_gradients); }         \
  TEST_CASE(OP " table: float16 and bfloat16 (the CPU: float32 between casts) match float32 (NMSE)") {      \
    run_table(OP, check_half);                                                                              \
    run_table(OP, check_bfloat16);                                                                          \
  }

VOLT_OP_TABLE_TESTS("conv2d")
VOLT_OP_TABLE_TESTS("batch_norm")
VOLT_OP_TABLE_TESTS("batch_norm_relu")
VOLT_OP_TABLE_TESTS("batch_norm_relu_max_pool2d")
VOLT_OP_TABLE_TESTS("conv2d_batch_norm_relu_max_pool2d")
VOLT_OP_TABLE_TESTS("cast")
VOLT_OP_TABLE_TESTS("relu")
VOLT_OP_TABLE_TESTS("max_pool2d")
VOLT_OP_TABLE_TESTS("linear")
VOLT_OP_TABLE_TESTS("dropout")
VOLT_OP_TABLE_TESTS("relu_dropout")
VOLT_OP_TABLE_TESTS("add")
VOLT_OP_TABLE_TESTS("sub")
VOLT_OP_TABLE_TESTS("mul")
VOLT_OP_TABLE_TESTS("sum")
VOLT_OP_TABLE_TESTS("mean")
VOLT_OP_TABLE_TESTS("log_softmax")
VOLT_OP_TABLE_TESTS("cross_entropy")

// =====================================================================================================
// Golden values worked out by hand on tiny inputs.
// =====================================================================================================

namespace {

void check_values(const Tensor& t, const Shape& shape, const std::vector<double>& want, double tol = 1e-5) {
  REQUIRE(t.defined());
  REQUIRE(shape_str(t.shape()) == shape_str(shape));
  const std::vector<float> got = t.to_vector();
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", expected " << want[i]);
    CHECK(std::fabs(double(got[i]) - want[i]) <= tol * (1.0 + std::fabs(want[i])));
  }
}

Tensor leaf(const Shape& s, const std::vector<float>& v) {
  Tensor t = Tensor::from_vector(s, v);
  t.requires_grad_(true);
  return t;
}

}  // namespace

TEST_CASE("conv2d golden: 1x1x3x3 input with a 2x2 kernel") {
  Tensor x = leaf({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  Tensor w = leaf({1, 1, 2, 2}, {1, 2, 3, 4});
  Tensor b = leaf({1}, {0.5f});
  Tensor y = conv2d(x, w, b);
  // y[p][q] = sum_{r,s} x[p+r][q+s] w[r][s] + 0.5
  check_values(y, {1, 1, 2, 2}, {37.5, 47.5, 67.5, 77.5});
  sum(y).backward();
  // dw[r][s] = sum of x over the four windows' (r, s) positions; db = number of outputs.
  check_values(w.grad(), {1, 1, 2, 2}, {12, 16, 24, 28});
  check_values(b.grad(), {1}, {4});
  // dx[i][j] = sum of the kernel taps that touch (i, j).
  check_values(x.grad(), {1, 1, 3, 3}, {1, 3, 2, 4, 10, 6, 3, 7, 4});

  SUBCASE("stride 2 and padding 1") {
    Tensor y2 = conv2d(x.detach(), w.detach(), Tensor(), {2, 2}, {1, 1});
    // windows over the zero-padded 5x5 input at rows/cols {-1, 0} and {1, 2}
    check_values(y2, {1, 1, 2, 2}, {1 * 4, 2 * 3 + 3 * 4, 4 * 2 + 7 * 4, 5 * 1 + 6 * 2 + 8 * 3 + 9 * 4});
  }
  SUBCASE("two input channels add up") {
    Tensor x2 = Tensor::from_vector({1, 2, 2, 2}, {1, 2, 3, 4, 10, 20, 30, 40});
    Tensor w2 = Tensor::from_vector({2, 2, 1, 2}, {1, -1, 0.5f, 0, 0, 0, 0, 1});
    // out 0: x0[p][q] - x0[p][q+1] + 0.5 x1[p][q]; out 1: x1[p][q+1]
    check_values(conv2d(x2, w2, Tensor()), {1, 2, 2, 1}, {1 - 2 + 5, 3 - 4 + 15, 20, 40});
  }
}

TEST_CASE("max_pool2d golden: 2x2 and 3x3 windows, gradient to the maxima") {
  const std::vector<float> v = {1, 5, 2, 0, 3, 4, 8, 1, 0, -1, 6, 7, 2, 9, -3, 5};
  Tensor x = leaf({1, 1, 4, 4}, v);
  Tensor y = max_pool2d(x, {2, 2}, {2, 2});
  check_values(y, {1, 1, 2, 2}, {5, 8, 9, 7});
  sum(y).backward();
  check_values(x.grad(), {1, 1, 4, 4}, {0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0});

  Tensor x3 = leaf({1, 1, 4, 4}, v);
  Tensor y3 = max_pool2d(x3, {3, 3}, {2, 2}, {1, 1});
  // windows rows/cols {-1..1} and {1..3}; the 9 at (3, 1) wins two windows and gets both gradients
  check_values(y3, {1, 1, 2, 2}, {5, 8, 9, 9});
  sum(y3).backward();
  check_values(x3.grad(), {1, 1, 4, 4}, {0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0});

  // All-negative input with padding: padding never wins.
  Tensor neg = Tensor::from_vector({1, 1, 2, 2}, {-4, -3, -2, -1});
  check_values(max_pool2d(neg, {2, 2}, {1, 1}, {1, 1}), {1, 1, 3, 3}, {-4, -3, -3, -2, -1, -1, -2, -1, -1});
}

TEST_CASE("NaN propagates through max_pool2d and relu") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = Tensor::from_vector({1, 1, 2, 4}, {1, nan, 3, 4, 5, 6, 7, 8});
  const Tensor y = max_pool2d(x, {2, 2}, {2, 2});  // the 2x2 fast path
  CHECK(std::isnan(y.at({0, 0, 0, 0})));
  CHECK(y.at({0, 0, 0, 1}) == 8.f);
  const Tensor y3 = max_pool2d(x, {2, 3}, {1, 1});  // the general path
  CHECK(std::isnan(y3.at({0, 0, 0, 0})));
  CHECK(std::isnan(y3.at({0, 0, 0, 1})));
  // Two NaNs in a window: the first one takes the gradient, on the fast path and the general one alike.
  for (int64_t stride : {2, 1}) {
    INFO("stride " << stride);
    Tensor x2 = leaf({1, 1, 2, 4}, {1, nan, 3, 4, nan, 6, 7, 8});
    sum(max_pool2d(x2, {2, 2}, {stride, stride})).backward();
    const std::vector<float> g = x2.grad().to_vector();
    CHECK(g[1] > 0.f);
    CHECK(g[4] == 0.f);
  }
  const Tensor r = relu(Tensor::from_vector({2}, {nan, -1}));
  CHECK(std::isnan(r.at({0})));
  CHECK(r.at({1}) == 0.f);
}

TEST_CASE("relu golden: values and the gradient at zero") {
  Tensor x = leaf({5}, {-2, -0.f, 0, 0.5f, 3});
  Tensor y = relu(x);
  check_values(y, {5}, {0, 0, 0, 0.5, 3});
  sum(y).backward();
  check_values(x.grad(), {5}, {0, 0, 0, 1, 1});  // the subgradient at 0 is 0, as in PyTorch
}

TEST_CASE("log_softmax golden: [0, ln 2, ln 3] gives [-ln 6, -ln 3, -ln 2]") {
  const float l2 = float(std::log(2.0)), l3 = float(std::log(3.0));
  Tensor x = leaf({1, 3}, {0, l2, l3});
  Tensor y = log_softmax(x, 1);
  check_values(y, {1, 3}, {-std::log(6.0), -std::log(3.0), -std::log(2.0)});
  // d/dx of y[0][0]: onehot - softmax = [1 - 1/6, -2/6, -3/6]
  y.backward(Tensor::from_vector({1, 3}, {1, 0, 0}));
  check_values(x.grad(), {1, 3}, {5.0 / 6, -2.0 / 6, -3.0 / 6});

  // Along dim 0 and shifted by 1000 (no overflow: the row maximum is subtracted first).
  Tensor xc = Tensor::from_vector({3, 1}, {1000.f, 1000.f + l2, 1000.f + l3});
  check_values(log_softmax(xc, 0), {3, 1}, {-std::log(6.0), -std::log(3.0), -std::log(2.0)}, 2e-4);
  // Equal logits: log(1/C) everywhere, and -1000 offsets do not underflow to -inf.
  check_values(log_softmax(Tensor::full({2, 4}, -1000.f)), {2, 4}, std::vector<double>(8, -std::log(4.0)));
  // Large logits (exact in float32): the answer depends only on the differences, to float32's
  // precision of the answer, not of the logits (x - float(max + log(sum)) was 2% off at 1e6).
  const double lse = std::log(std::exp(-0.5) + 1.0 + std::exp(-1.5));
  for (const float b : {1e4f, 1e6f, -1e6f}) {
    CAPTURE(b);
    check_values(log_softmax(Tensor::from_vector({1, 3}, {b, b + 0.5f, b - 1.f})), {1, 3},
                 {-0.5 - lse, -lse, -1.5 - lse}, 2e-7);
  }
}

TEST_CASE("cross_entropy golden: reductions and label smoothing by hand") {
  const float l2 = float(std::log(2.0)), l3 = float(std::log(3.0));
  // row 0: softmax [1/6, 2/6, 3/6], target 2 -> -log(1/2) = ln 2; row 1: uniform, target 0 -> ln 3
  const std::vector<float> z = {0, l2, l3, 1, 1, 1};
  const Tensor target = Tensor::from_labels({2, 0});
  const double ln2 = std::log(2.0), ln3 = std::log(3.0), ln6 = std::log(6.0);

  check_values(cross_entropy(Tensor::from_vector({2, 3}, z), target, Reduction::None), {2}, {ln2, ln3});
  check_values(cross_entropy(Tensor::from_vector({2, 3}, z), target, Reduction::Sum), {}, {ln2 + ln3});
  check_values(cross_entropy(Tensor::from_vector({2, 3}, z), target, Reduction::Mean), {}, {(ln2 + ln3) / 2});

  // Smoothing 0.1: (1 - 0.1) * nll + 0.1 * mean over classes of -log p.
  // row 0: 0.9 ln2 + 0.1 (ln6 + ln3 + ln2) / 3; row 1: every -log p is ln 3.
  const double r0 = 0.9 * ln2 + 0.1 * (ln6 + ln3 + ln2) / 3, r1 = ln3;
  check_values(cross_entropy(Tensor::from_vector({2, 3}, z), target, Reduction::None, 0.1), {2}, {r0, r1});
  Tensor logits = leaf({2, 3}, z);
  Tensor loss = cross_entropy(logits, target, Reduction::Mean, 0.1);
  check_values(loss, {}, {(r0 + r1) / 2});
  loss.backward();
  // d/dz = (softmax - q) / N with q = 0.9 onehot + 0.1/3
  const double o = 0.1 / 3;
  check_values(logits.grad(), {2, 3},
               {(1.0 / 6 - o) / 2, (2.0 / 6 - o) / 2, (3.0 / 6 - 0.9 - o) / 2, (1.0 / 3 - 0.9 - o) / 2,
                (1.0 / 3 - o) / 2, (1.0 / 3 - o) / 2});

  // Huge logits stay finite: the row max is subtracted.
  const Tensor big = Tensor::from_vector({1, 2}, {1000.f, 0.f});
  check_values(cross_entropy(big, Tensor::from_labels({0})), {}, {0.0});
  check_values(cross_entropy(big, Tensor::from_labels({1})), {}, {1000.0}, 1e-6);
}

TEST_CASE("cross_entropy: a -inf logit (a masked class) has probability 0, a finite loss and a 0 gradient") {
  const float l2 = float(std::log(2.0)), l3 = float(std::log(3.0)), inf = std::numeric_limits<float>::infinity();
  // softmax [1/6, 2/6, 0, 3/6], target 3 -> -log(1/2) = ln 2
  const std::vector<float> z = {0, l2, -inf, l3};
  const Tensor target = Tensor::from_labels({3});
  Tensor logits = leaf({1, 4}, z);
  Tensor loss = cross_entropy(logits, target);
  check_values(loss, {}, {std::log(2.0)});
  loss.backward();
  check_values(logits.grad(), {1, 4}, {1.0 / 6, 2.0 / 6, 0, 3.0 / 6 - 1});
  // With smoothing its -log p (+inf) enters the loss: +inf, as in PyTorch.
  CHECK(cross_entropy(Tensor::from_vector({1, 4}, z), target, Reduction::Mean, 0.1).item() == inf);
}

TEST_CASE("batch_norm golden: batch statistics, running update with the unbiased variance, eval") {
  // x [2, 2, 2]: channel 0 holds 1, 2, 3, 4 and channel 1 holds 10, 20, 30, 40.
  Tensor x = Tensor::from_vector({2, 2, 2}, {1, 2, 10, 20, 3, 4, 30, 40});
  Tensor w = Tensor::from_vector({2}, {2, -1});
  Tensor b = Tensor::from_vector({2}, {0.5f, 3});
  Tensor rm = Tensor::from_vector({2}, {0, 0});
  Tensor rv = Tensor::from_vector({2}, {1, 1});
  const double eps = 1e-5;
  // channel 0: mean 2.5, biased variance (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25, unbiased 5/3
  // channel 1: mean 25, biased variance 125, unbiased 500/3
  const double s0 = 1 / std::sqrt(1.25 + eps), s1 = 1 / std::sqrt(125 + eps);
  Tensor y = batch_norm(x, w, b, rm, rv, /*training=*/true, 0.1, eps);
  check_values(y, {2, 2, 2},
               {2 * -1.5 * s0 + 0.5, 2 * -0.5 * s0 + 0.5, -1 * -15 * s1 + 3, -1 * -5 * s1 + 3, 2 * 0.5 * s0 + 0.5,
                2 * 1.5 * s0 + 0.5, -1 * 5 * s1 + 3, -1 * 15 * s1 + 3});
  // running = 0.9 running + 0.1 batch, with the unbiased variance
  check_values(rm, {2}, {0.25, 2.5});
  check_values(rv, {2}, {0.9 + 0.1 * 5.0 / 3, 0.9 + 0.1 * 500.0 / 3});

  SUBCASE("a second step compounds the momentum") {
    batch_norm(x, w, b, rm, rv, true, 0.1, eps);
    check_values(rm, {2}, {0.9 * 0.25 + 0.25, 0.9 * 2.5 + 2.5});
    check_values(rv, {2}, {0.9 * (0.9 + 0.5 / 3) + 0.5 / 3, 0.9 * (0.9 + 50.0 / 3) + 50.0 / 3});
  }
  SUBCASE("eval normalises with the running statistics and leaves them alone") {
    const double m0 = 0.25, v0 = 0.9 + 0.5 / 3, m1 = 2.5, v1 = 0.9 + 50.0 / 3;
    Tensor ye = batch_norm(x, w, b, rm, rv, /*training=*/false, 0.1, eps);
    auto e0 = [&](double v) { return 2 * (v - m0) / std::sqrt(v0 + eps) + 0.5; };
    auto e1 = [&](double v) { return -1 * (v - m1) / std::sqrt(v1 + eps) + 3; };
    check_values(ye, {2, 2, 2}, {e0(1), e0(2), e1(10), e1(20), e0(3), e0(4), e1(30), e1(40)});
    check_values(rm, {2}, {m0, m1});
    check_values(rv, {2}, {v0, v1});
    // The eval gradient is the affine map's: weight / sqrt(running_var + eps).
    Tensor xl = x.clone();
    xl.requires_grad_(true);
    sum(batch_norm(xl, w, b, rm, rv, false, 0.1, eps)).backward();
    const double g0 = 2 / std::sqrt(v0 + eps), g1 = -1 / std::sqrt(v1 + eps);
    check_values(xl.grad(), {2, 2, 2}, {g0, g0, g1, g1, g0, g0, g1, g1});
  }
  SUBCASE("momentum 1 copies the batch statistics, momentum 0 keeps the old ones") {
    Tensor rm1 = Tensor::from_vector({2}, {7, 7}), rv1 = Tensor::from_vector({2}, {7, 7});
    batch_norm(x, Tensor(), Tensor(), rm1, rv1, true, 1.0, eps);
    check_values(rm1, {2}, {2.5, 25});
    check_values(rv1, {2}, {5.0 / 3, 500.0 / 3});
    batch_norm(x, Tensor(), Tensor(), rm1, rv1, true, 0.0, eps);
    check_values(rm1, {2}, {2.5, 25});
    check_values(rv1, {2}, {5.0 / 3, 500.0 / 3});
  }
  SUBCASE("no affine, 2-D [4, 1]: plain standardisation of [1, 2, 3, 4]") {
    Tensor x2 = Tensor::from_vector({4, 1}, {1, 2, 3, 4});
    check_values(batch_norm(x2, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, eps), {4, 1},
                 {-1.5 * s0, -0.5 * s0, 0.5 * s0, 1.5 * s0});
  }
  SUBCASE("the output does not depend on the running statistics in training") {
    Tensor y2 = batch_norm(x, w, b, Tensor(), Tensor(), true, 0.1, eps);
    CHECK(y2.to_vector() == y.to_vector());
  }
}

TEST_CASE("batch_norm running statistics follow the double reference on a random batch") {
  // Mean far from zero so that a one-pass variance formula without a shift would lose digits.
  const Tensor x = vt::rand_tensor({4, 3, 5, 7}, 11, 99.f, 101.f);
  Tensor rm = vt::rand_tensor({3}, 12, -1.f, 1.f), rv = vt::rand_tensor({3}, 13, 0.5f, 2.f);
  const std::vector<double> rm0 = dvec(rm), rv0 = dvec(rv);
  const double momentum = 0.3;
  const Tensor y = batch_norm(x, Tensor(), Tensor(), rm, rv, true, momentum, 1e-5);
  std::vector<double> mean, var;
  ref_bn_stats(x, mean, var);
  const double M = 4 * 5 * 7;
  std::vector<double> want_m(3), want_v(3);
  for (size_t c = 0; c < 3; ++c) {
    want_m[c] = (1 - momentum) * rm0[c] + momentum * mean[c];
    want_v[c] = (1 - momentum) * rv0[c] + momentum * var[c] * M / (M - 1);
  }
  std::string where;
  CHECK_MESSAGE(vt::max_rel_violation(rm.to_vector(), want_m, 1e-5, 1e-5, &where) <= 1, where);
  CHECK_MESSAGE(vt::max_rel_violation(rv.to_vector(), want_v, 1e-5, 1e-4, &where) <= 1, where);
  const Reference ref = ref_batch_norm(x, nullptr, nullptr, nullptr, nullptr, true, 1e-5);
  CHECK_MESSAGE(vt::max_rel_violation(y.to_vector(), ref.values, 1e-4, 1e-3, &where) <= 1, where);
}

TEST_CASE("linear golden") {
  Tensor x = leaf({2, 3}, {1, 2, 3, -1, 0, 1});
  Tensor w = leaf({2, 3}, {1, 0, -1, 0.5f, 0.5f, 0.5f});
  Tensor b = leaf({2}, {10, 20});
  Tensor y = linear(x, w, b);
  check_values(y, {2, 2}, {1 - 3 + 10, 3 + 20, -1 - 1 + 10, 0 + 20});
  sum(y).backward();
  check_values(x.grad(), {2, 3}, {1.5, 0.5, -0.5, 1.5, 0.5, -0.5});  // column sums of w
  check_values(w.grad(), {2, 3}, {0, 2, 4, 0, 2, 4});                // column sums of x
  check_values(b.grad(), {2}, {2, 2});
  check_values(linear(x.detach(), w.detach(), Tensor()), {2, 2}, {-2, 3, -2, 0});
}

TEST_CASE("broadcasting golden: shapes, values and gradients summed back") {
  Tensor a = leaf({2, 1}, {1, 2});
  Tensor b = leaf({3}, {10, 20, 30});
  Tensor y = a + b;
  check_values(y, {2, 3}, {11, 21, 31, 12, 22, 32});
  sum(y).backward();
  check_values(a.grad(), {2, 1}, {3, 3});
  check_values(b.grad(), {3}, {2, 2, 2});

  Tensor p = leaf({2, 1}, {1, 2});
  Tensor q = leaf({3}, {10, 20, 30});
  Tensor z = p * q - q;  // (p - 1) q
  check_values(z, {2, 3}, {0, 0, 0, 10, 20, 30});
  sum(z).backward();
  check_values(p.grad(), {2, 1}, {60, 60});  // sum of q per row
  check_values(q.grad(), {3}, {1, 1, 1});    // sum over rows of (p - 1)

  // [3, 1, 5] with [4, 1] -> [3, 4, 5]
  Tensor u = Tensor::ones({3, 1, 5}), v = Tensor::from_vector({4, 1}, {0, 1, 2, 3});
  Tensor uv = u * v;
  REQUIRE(uv.shape() == Shape{3, 4, 5});
  CHECK(uv.at({2, 3, 4}) == 3.f);
  CHECK(uv.at({1, 2, 0}) == 2.f);
  check_values(add(Tensor::from_vector({2}, {1, 2}), 0.5f), {2}, {1.5, 2.5});
  check_values(mul(Tensor::from_vector({2}, {1, 2}), -3.f), {2}, {-3, -6});
  check_values(Tensor::scalar(2.f) * Tensor::scalar(4.f), {}, {8});
}

TEST_CASE("sum and mean golden") {
  Tensor x = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
  check_values(sum(x), {}, {21});
  check_values(mean(x), {}, {3.5});
  check_values(sum(x, 0), {3}, {5, 7, 9});
  check_values(sum(x, -1, true), {2, 1}, {6, 15});
  check_values(mean(x, 1, true), {2, 1}, {2, 5});
  check_values(mean(x, 0), {3}, {2.5, 3.5, 4.5});
  Tensor m = mean(x, 1);
  m.backward(Tensor::from_vector({2}, {3, 6}));
  check_values(x.grad(), {2, 3}, {1, 1, 1, 2, 2, 2});
  Tensor x2 = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
  mean(x2).backward();
  check_values(x2.grad(), {2, 3}, std::vector<double>(6, 1.0 / 6));
}

TEST_CASE("argmax and accuracy golden") {
  const Tensor x = Tensor::from_vector({4, 3}, {1, 3, 2, 5, 0, 5, -1, -2, -3, 0.5f, 0.25f, 0.75f});
  const Tensor am = argmax(x, 1);
  CHECK(am.dtype() == DType::I64);
  CHECK(am.shape() == Shape{4});
  CHECK(am.to_int_vector() == std::vector<int64_t>{1, 0, 0, 2});  // a tie goes to the first index
  CHECK(argmax(x, 0).to_int_vector() == std::vector<int64_t>{1, 0, 1});
  CHECK(argmax(x, -1).to_int_vector() == std::vector<int64_t>{1, 0, 0, 2});
  // 3-D along the middle dim: [2, 3, 2]
  const Tensor x3 = Tensor::from_vector({2, 3, 2}, {0, 9, 5, 1, 2, 3, 7, 0, 8, 0, 9, 1});
  const Tensor a3 = argmax(x3, 1);
  CHECK(a3.shape() == Shape{2, 2});
  CHECK(a3.to_int_vector() == std::vector<int64_t>{1, 0, 2, 2});

  CHECK(accuracy(x, Tensor::from_labels({1, 2, 0, 2})) == doctest::Approx(0.75));
  CHECK(accuracy(x, Tensor::from_labels({1, 0, 0, 2})) == doctest::Approx(1.0));
  CHECK(accuracy(x, Tensor::from_labels({0, 1, 1, 0})) == doctest::Approx(0.0));
  CHECK(accuracy(Tensor::from_vector({1, 2}, {0, 1}), Tensor::from_labels({1})) == doctest::Approx(1.0));
  // batch_accuracy: the same fraction, as a one-element float32 tensor (what a step logs).
  const Tensor ba = batch_accuracy(x, Tensor::from_labels({1, 2, 0, 2}));
  CHECK(ba.dtype() == DType::F32);
  CHECK(ba.numel() == 1);
  CHECK(ba.to_vector() == std::vector<float>{0.75f});
  CHECK(batch_accuracy(x, Tensor::from_labels({0, 1, 1, 0})).to_vector() == std::vector<float>{0.f});
}

TEST_CASE("add_ and add_int_ golden, and their shape and type errors") {
  Tensor a = Tensor::from_vector({2, 2}, {1, 2, 3, 4});
  add_(a, Tensor::from_vector({2, 2}, {8, 4, 2, 1}), -0.5f);
  CHECK(a.to_vector() == std::vector<float>{-3, 0, 2, 3.5f});
  add_(a, Tensor::ones({2, 2}));
  CHECK(a.to_vector() == std::vector<float>{-2, 1, 3, 4.5f});
  Tensor counter = Tensor::from_labels({5}).reshape({});
  add_int_(counter);
  add_int_(counter, int64_t(1) << 40);
  CHECK(counter.to_int_vector() == std::vector<int64_t>{6 + (int64_t(1) << 40)});
  CHECK(vt::contains(vt::error_of([&] { add_(a, Tensor::ones({4})); }), "add_"));
  CHECK_FALSE(vt::error_of([&] { add_int_(a); }).empty());
}

TEST_CASE("cast_many and cast_into golden") {
  const Tensor x = Tensor::from_vector({4}, {1.f / 3, 65504.f, 70000.f, -1e-7f});
  const std::vector<Tensor> lo = cast_many({x, Tensor(), x}, DType::F16);
  REQUIRE(lo.size() == 3);
  CHECK_FALSE(lo[1].defined());
  CHECK(lo[0].dtype() == DType::F16);
  // Round to nearest even: 1/3 -> 0.333251953125, 65504 kept, 70000 -> inf, -1e-7 -> the subnormal -2^-23 (1.19e-7).
  const std::vector<float> want = {0.333251953125f, 65504.f, INFINITY, -std::ldexp(1.f, -23)};
  CHECK(lo[0].to(DType::F32).to_vector() == want);
  CHECK(lo[2].to(DType::F32).to_vector() == want);
  std::vector<Tensor> dst = {Tensor::zeros({4}), Tensor::zeros({4}, DType::BF16)};
  cast_into({lo[0], x}, dst);
  CHECK(dst[0].dtype() == DType::F32);
  CHECK(dst[0].to_vector() == want);
  CHECK(dst[1].dtype() == DType::BF16);
  CHECK(dst[1].to(DType::F32).to_vector() == x.to(DType::BF16).to(DType::F32).to_vector());
  CHECK(vt::contains(vt::error_of([&] { cast_into({x}, {Tensor::zeros({3})}); }), "cast_into"));
}

TEST_CASE("dropout: fraction kept, scaling, eval identity") {
  const int64_t n = 100000;
  const double p = 0.2;
  const Tensor x = Tensor::ones({n});
  Generator gen(123, kStreamDropout);
  const Tensor y = dropout(x, p, true, gen);
  const std::vector<float> v = y.to_vector();
  int64_t kept = 0;
  bool scaled = true;
  for (float e : v) {
    if (e != 0.f) {
      ++kept;
      scaled = scaled && std::fabs(e - 1.25f) <= 1e-6f;
    }
  }
  const double frac = double(kept) / double(n);
  INFO("fraction kept " << frac);
  CHECK(std::fabs(frac - (1 - p)) <= 0.01);
  CHECK(scaled);  // kept values are x / (1 - p)
  CHECK(gen.offset() == uint64_t((n + 3) / 4));  // the call reserved n values

  SUBCASE("eval mode is the identity and draws nothing") {
    Generator g(5, kStreamDropout);
    const Tensor xr = vt::rand_tensor({3, 7}, 3);
    const Tensor ye = dropout(xr, 0.5, false, g);
    CHECK(ye.to_vector() == xr.to_vector());
    CHECK(g.offset() == 0);
  }
  SUBCASE("p 0 keeps everything, p 1 drops everything") {
    Generator g(5, kStreamDropout);
    const Tensor xr = vt::rand_tensor({3, 7}, 3);
    CHECK(dropout(xr, 0.0, true, g).to_vector() == xr.to_vector());
    const std::vector<float> z = dropout(xr, 1.0, true, g).to_vector();
    CHECK(std::all_of(z.begin(), z.end(), [](float e) { return e == 0.f; }));
  }
}

TEST_CASE("dropout: the mask is the documented Philox formula and is reproducible") {
  const int64_t n = 1001;  // not a multiple of four: the last block is partial
  const double p = 0.35;
  const uint64_t seed = 20240607;
  const Tensor x = Tensor::full({7, 11, 13}, 2.f);
  REQUIRE(x.numel() == n);
  auto mask_of = [](const Tensor& y) {
    std::vector<bool> m;
    for (float e : y.to_vector()) m.push_back(e != 0.f);
    return m;
  };
  Generator g1(seed, kStreamDropout);
  const std::vector<bool> m1 = mask_of(dropout(x, p, true, g1));
  const std::vector<bool> m1b = mask_of(dropout(x, p, true, g1));  // next draw from the same generator
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; ++i) {
    mismatches += m1[size_t(i)] != dropout_keeps(seed, kStreamDropout, 0, uint64_t(i), p);
    mismatches += m1b[size_t(i)] != dropout_keeps(seed, kStreamDropout, uint64_t((n + 3) / 4), uint64_t(i), p);
  }
  CHECK(mismatches == 0);
  CHECK(m1 != m1b);
  CHECK(g1.offset() == uint64_t(2 * ((n + 3) / 4)));

  Generator same(seed, kStreamDropout);
  CHECK(mask_of(dropout(x, p, true, same)) == m1);
  Generator other(seed + 1, kStreamDropout);
  const std::vector<bool> m2 = mask_of(dropout(x, p, true, other));
  int64_t differ = 0;
  for (int64_t i = 0; i < n; ++i) differ += m1[size_t(i)] != m2[size_t(i)];
  // Independent masks differ in 2 p (1 - p) = 45.5% of the elements.
  CHECK(differ > n / 4);
  Generator other_stream(seed, kStreamDropout + 1);
  CHECK(mask_of(dropout(x, p, true, other_stream)) != m1);

  // Backward applies the same mask and scale.
  Generator g3(seed, kStreamDropout);
  Tensor xl = x.clone();
  xl.requires_grad_(true);
  sum(dropout(xl, p, true, g3)).backward();
  const std::vector<float> gx = xl.grad().to_vector();
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i)
    bad += std::fabs(double(gx[size_t(i)]) - (m1[size_t(i)] ? 1 / (1 - p) : 0.0)) > 1e-6;
  CHECK(bad == 0);
}

// The conv2d weight gradient keeps one partial sum per thread; an OpenMP team can have fewer
// threads than omp_get_max_threads() says (OMP_THREAD_LIMIT, OMP_DYNAMIC, nested regions). The
// thread limit is read once at start-up, so the conv2d gradient table runs again in a child process.
TEST_CASE("conv2d gradients with an OpenMP thread limit below the thread count") {
  std::vector<std::string> env = {"OMP_NUM_THREADS=4", "OMP_THREAD_LIMIT=1"};
  for (char** e = environ; *e; ++e)
    if (std::string(*e).rfind("OMP_", 0) != 0) env.emplace_back(*e);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe", filter = "--test-case=conv2d table: gradients*", quiet = "--minimal";
  char* argv[] = {exe.data(), filter.data(), quiet.data(), nullptr};
  pid_t pid = 0;  // --minimal: the child prints only its failures
  const int rc = posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, envp.data());
  REQUIRE(rc == 0);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO("child status " << status << (WIFSIGNALED(status) ? " (killed by a signal)" : ""));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
