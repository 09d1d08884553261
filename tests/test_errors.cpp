// Bad input gives volt::Error with a message naming the op and the offending shapes or values;
// nothing crashes or reads out of bounds (this suite also runs under ASan and UBSan).
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/gpu.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "tests/test_util.h"

using namespace volt;
using doctest::Contains;

namespace {

using volt::test::error_of;

// Checks that the message contains every one of `parts`.
void check_message(const std::string& msg, const std::vector<std::string>& parts) {
  INFO("message: " << msg);
  for (const std::string& p : parts) {
    INFO("expected to contain: " << p);
    CHECK(msg.find(p) != std::string::npos);
  }
}

#define CHECK_ERROR(expr, ...) check_message(error_of([&] { (void)(expr); }), {__VA_ARGS__})

Tensor ones(const Shape& s) { return Tensor::ones(s); }
Tensor rand(const Shape& s, uint64_t seed = 1) { return volt::test::rand_tensor(s, seed); }

}  // namespace

TEST_CASE("conv2d: channel mismatch names both shapes") {
  const Tensor x = ones({2, 4, 5, 5}), w = ones({8, 3, 3, 3});
  CHECK_THROWS_WITH_AS(conv2d(x, w, Tensor()), Contains("conv2d: input has 4 channels but weight expects 3"),
                       volt::Error);
  CHECK_ERROR(conv2d(x, w, Tensor()), "[2, 4, 5, 5]", "[8, 3, 3, 3]");
  // The location of the check is attached.
  CHECK_ERROR(conv2d(x, w, Tensor()), "engine/ops/conv2d.cpp:");
}

TEST_CASE("conv2d out of host memory for its work buffers: a volt::Error, not an abort") {
  // The CPU kernel allocates its im2col buffers inside an OpenMP region, where an exception used to
  // terminate the process. The address-space limit makes that allocation fail.
#if defined(__SANITIZE_ADDRESS__)
  volt::test::skip("AddressSanitizer reserves its shadow memory: an address-space limit would stop it");
#endif
  const Tensor x = Tensor::zeros({1, 64, 512, 512}), w = Tensor::zeros({4, 64, 3, 3});
  (void)conv2d(Tensor::zeros({2, 64, 16, 16}), w, Tensor(), {1, 1}, {1, 1});  // the thread team and arenas exist
  long pages = 0;
  std::ifstream("/proc/self/statm") >> pages;
  REQUIRE(pages > 0);
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_AS, &old) == 0);
  rlimit lim = old;
  lim.rlim_cur = rlim_t(pages) * rlim_t(::sysconf(_SC_PAGESIZE)) + (rlim_t(256) << 20);  // 256 MiB more
  REQUIRE(::setrlimit(RLIMIT_AS, &lim) == 0);
  // im2col of one 512x512 image with a 64x3x3 kernel: 576 x 262144 floats, 604 MB.
  const std::string e = error_of([&] { (void)conv2d(x, w, Tensor(), {1, 1}, {1, 1}); });
  ::setrlimit(RLIMIT_AS, &old);
  CHECK(volt::test::contains(e, "conv2d: out of host memory for the CPU kernel's work buffers"));
}

TEST_CASE("conv2d: ranks, bias, kernel size, stride and padding") {
  const Tensor w = ones({4, 3, 3, 3});
  CHECK_ERROR(conv2d(ones({3, 5, 5}), w, Tensor()), "conv2d", "input", "4 dims", "[3, 5, 5]");
  CHECK_ERROR(conv2d(ones({1, 2, 3, 5, 5}), w, Tensor()), "conv2d", "input", "[1, 2, 3, 5, 5]");
  CHECK_ERROR(conv2d(ones({2, 3, 5, 5}), ones({4, 3, 3}), Tensor()), "conv2d", "weight", "[4, 3, 3]");
  CHECK_ERROR(conv2d(ones({2, 3, 5, 5}), w, ones({5})), "conv2d", "bias has 5 elements", "[5]", "[4, 3, 3, 3]");
  CHECK_ERROR(conv2d(ones({2, 3, 5, 5}), w, ones({4, 1})), "conv2d", "bias", "[4, 1]");
  CHECK_ERROR(conv2d(ones({2, 3, 2, 5}), w, Tensor()), "conv2d", "kernel 3x3 is larger", "[2, 3, 2, 5]");
  CHECK_ERROR(conv2d(ones({2, 3, 5, 2}), w, Tensor()), "conv2d", "larger", "[2, 3, 5, 2]");
  CHECK_ERROR(conv2d(ones({2, 3, 5, 5}), w, Tensor(), {0, 1}), "conv2d", "stride");
  CHECK_ERROR(conv2d(ones({2, 3, 5, 5}), w, Tensor(), {1, -2}), "conv2d", "stride");
  CHECK_ERROR(conv2d(ones({2, 3, 5, 5}), w, Tensor(), {1, 1}, {-1, 0}), "conv2d", "padding");
  CHECK_ERROR(conv2d(Tensor(), w, Tensor()), "conv2d", "input", "undefined");
  CHECK_ERROR(conv2d(ones({2, 3, 5, 5}), Tensor(), Tensor()), "conv2d", "weight", "undefined");
  // Padding that makes the kernel fit is fine, as in PyTorch.
  CHECK(conv2d(ones({1, 3, 2, 2}), w, Tensor(), {1, 1}, {1, 1}).shape() == Shape{1, 4, 2, 2});
}

TEST_CASE("empty tensors are rejected by the ops") {
  CHECK_ERROR(conv2d(ones({0, 3, 5, 5}), ones({4, 3, 3, 3}), Tensor()), "conv2d", "input is empty", "[0, 3, 5, 5]");
  CHECK_ERROR(conv2d(ones({2, 3, 5, 5}), ones({0, 3, 3, 3}), Tensor()), "conv2d", "weight", "empty", "[0, 3, 3, 3]");
  CHECK_ERROR(relu(ones({0})), "relu", "empty", "[0]");
  CHECK_ERROR(sum(ones({3, 0})), "sum", "empty", "[3, 0]");
  CHECK_ERROR(mean(ones({3, 0}), 0), "mean", "empty", "[3, 0]");
  CHECK_ERROR(linear(ones({0, 4}), ones({2, 4}), Tensor()), "linear", "empty", "[0, 4]");
  CHECK_ERROR(max_pool2d(ones({1, 0, 4, 4}), {2, 2}, {2, 2}), "max_pool2d", "empty", "[1, 0, 4, 4]");
  CHECK_ERROR(batch_norm(ones({0, 3}), Tensor(), Tensor(), Tensor(), Tensor(), true), "batch_norm", "empty");
  CHECK_ERROR(add(ones({0, 2}), ones({0, 2})), "add", "empty", "[0, 2]");
  CHECK_ERROR(log_softmax(ones({2, 0})), "log_softmax", "empty", "[2, 0]");
  CHECK_ERROR(cross_entropy(ones({0, 3}), Tensor::from_labels({})), "cross_entropy", "empty", "[0, 3]");
  Generator g(1);
  CHECK_ERROR(dropout(ones({0}), 0.5, true, g), "dropout", "empty");
}

TEST_CASE("wrong dtypes into the ops name the dtype") {
  const Tensor h = Tensor::ones({2, 3, 4, 4}, DType::F16);
  const Tensor l = Tensor::ones({2, 3}, DType::I64);
  CHECK_ERROR(relu(l), "relu", "float32, float16 or bfloat16", "int64", "[2, 3]");
  CHECK_ERROR(conv2d(h, ones({4, 3, 3, 3}), Tensor()), "conv2d", "input", "float16");
  CHECK_ERROR(conv2d(ones({2, 3, 4, 4}), Tensor::ones({4, 3, 3, 3}, DType::I64), Tensor()), "conv2d", "weight",
              "int64");
  CHECK_ERROR(conv2d(ones({2, 3, 4, 4}), ones({4, 3, 3, 3}), Tensor::zeros({4}, DType::BF16)), "conv2d", "bias",
              "bfloat16");
  CHECK_ERROR(add(l, ones({2, 3})), "add", "int64", "[2, 3]");
  CHECK_ERROR(mul(ones({2, 3}), l), "mul", "int64");
  CHECK_ERROR(mul(l, 2.f), "mul", "int64");
  CHECK_ERROR(sum(l), "sum", "int64");
  CHECK_ERROR(linear(Tensor::ones({2, 3}, DType::BF16), ones({4, 3}), Tensor()), "linear", "bfloat16");
  CHECK_ERROR(batch_norm(Tensor::ones({2, 3}, DType::U8), Tensor(), Tensor(), Tensor(), Tensor(), true), "batch_norm",
              "uint8");
  CHECK_ERROR(batch_norm(ones({2, 3}), Tensor::ones({3}, DType::F16), Tensor(), Tensor(), Tensor(), true), "batch_norm",
              "weight", "float16");
  CHECK_ERROR(max_pool2d(Tensor::ones({2, 3, 4, 4}, DType::I32), {2, 2}, {2, 2}), "max_pool2d", "int32");
  CHECK_ERROR(add(h, ones({2, 3, 4, 4})), "add", "float32", "float16");  // mixed types: cast one first
  CHECK_ERROR(log_softmax(l), "log_softmax", "int64");
  CHECK_ERROR(cross_entropy(Tensor::ones({2, 3}, DType::I64), Tensor::from_labels({0, 1})), "cross_entropy", "int64");
  CHECK_ERROR(argmax(l, 1), "argmax", "int64");
  Generator g(1);
  CHECK_ERROR(dropout(l, 0.5, true, g), "dropout", "int64");
  CHECK_ERROR(l.data<float>(), "int64", "float32");
  CHECK_ERROR(Tensor::ones({2}).data<int64_t>(), "float32", "int64");
}

TEST_CASE("Tensor factories and reshape reject negative sizes and wrong element counts") {
  CHECK_ERROR(Tensor::empty({2, -1}), "negative", "[2, -1]");
  CHECK_ERROR(Tensor::zeros({-3}), "negative", "[-3]");
  CHECK_ERROR(Tensor::ones({4, -2, 1}), "negative", "[4, -2, 1]");
  CHECK_ERROR(Tensor::full({-1}, 2.f), "negative");
  CHECK_ERROR(Tensor::from_vector({-1, 2}, {1, 2}), "negative");
  CHECK_ERROR(Tensor::from_vector({2, 2}, {1, 2, 3}), "from_vector", "3 values", "[2, 2]");
  // Sizes whose product does not fit are refused before anything is allocated.
  const int64_t big = int64_t(1) << 40;
  CHECK_ERROR(Tensor::empty({big, big}), "too large");
  CHECK_ERROR(Tensor::zeros({big, big, big}), "too large");
  // Empty, but its other sizes would overflow every view's arithmetic (flatten(1) gave [0, 0]).
  CHECK_ERROR(Tensor::empty({0, int64_t(1) << 62, int64_t(1) << 62}), "too large");
  CHECK(Tensor::empty({0, 1000, 7}).flatten(1).shape() == Shape{0, 7000});

  const Tensor x = Tensor::zeros({2, 3});
  CHECK_ERROR(x.reshape({4, 2}), "reshape", "[2, 3]", "6 elements", "[4, 2]");
  CHECK_ERROR(x.reshape({7}), "reshape", "[7]");
  CHECK_ERROR(x.reshape({-2, -3}), "reshape", "negative");
  CHECK_ERROR(x.reshape({-1, -1}), "reshape", "more than one -1");
  CHECK_ERROR(x.reshape({4, -1}), "reshape", "[4, -1]");
  CHECK_ERROR(x.reshape({0, -1}), "reshape", "[0, -1]");
  CHECK_ERROR(x.view({5}), "reshape", "[5]");
  // Element counts that overflow int64 are a wrong count too, not undefined behaviour.
  CHECK_ERROR(x.reshape({int64_t(1) << 32, int64_t(1) << 32}), "reshape");
  CHECK_ERROR(x.reshape({int64_t(1) << 62, 8, -1}), "reshape");
  CHECK_ERROR(x.flatten(2), "flatten", "[2, 3]");
  CHECK_ERROR(x.flatten(1, 0), "flatten");
  CHECK_ERROR(x.narrow(1, 2), "narrow", "[2, 3]");
  CHECK_ERROR(x.narrow(-1, 1), "narrow");
  CHECK_ERROR(x.size(2), "size", "[2, 3]");
  CHECK_ERROR(x.size(-3), "size");
  // A correct reshape still works (and -1 is inferred).
  CHECK(x.reshape({3, -1}).shape() == Shape{3, 2});
}

TEST_CASE("cross_entropy: targets out of range, of the wrong dtype or length") {
  const Tensor logits = rand({3, 5});
  CHECK_ERROR(cross_entropy(logits, Tensor::from_labels({0, 5, 1})), "cross_entropy", "target[1] = 5", "[0, 5)");
  CHECK_ERROR(cross_entropy(logits, Tensor::from_labels({0, 1, -1})), "cross_entropy", "target[2] = -1");
  CHECK_ERROR(cross_entropy(logits, Tensor::from_vector({3}, {0, 1, 2})), "cross_entropy", "int64", "float32");
  CHECK_ERROR(cross_entropy(logits, Tensor::zeros({3}, DType::I32)), "cross_entropy", "int64", "int32");
  CHECK_ERROR(cross_entropy(logits, Tensor::from_labels({0, 1})), "cross_entropy", "[2]", "[3, 5]", "expected [3]");
  CHECK_ERROR(cross_entropy(logits, Tensor::from_labels({0, 1, 2, 3})), "cross_entropy", "[4]", "[3, 5]");
  CHECK_ERROR(cross_entropy(logits, Tensor::zeros({3, 1}, DType::I64)), "cross_entropy", "[3, 1]");
  CHECK_ERROR(cross_entropy(logits, Tensor::zeros({}, DType::I64)), "cross_entropy", "[]");
  CHECK_ERROR(cross_entropy(logits, Tensor()), "cross_entropy", "target", "undefined");
  CHECK_ERROR(cross_entropy(rand({15}), Tensor::from_labels({0})), "cross_entropy", "logits", "[15]");
  CHECK_ERROR(cross_entropy(rand({3, 5, 2}), Tensor::from_labels({0, 1, 2})), "cross_entropy", "[3, 5, 2]");
  CHECK_ERROR(cross_entropy(logits, Tensor::from_labels({0, 1, 2}), Reduction::Mean, 1.5), "cross_entropy",
              "label_smoothing", "1.5");
  CHECK_ERROR(cross_entropy(logits, Tensor::from_labels({0, 1, 2}), Reduction::Mean, -0.1), "cross_entropy",
              "label_smoothing");
  CHECK_ERROR(cross_entropy(logits, Tensor::from_labels({0, 1, 2}), Reduction::Mean, std::nan("")), "cross_entropy",
              "label_smoothing");
  CHECK_ERROR(accuracy(logits, Tensor::from_labels({0, 7, 1})), "accuracy", "target[1] = 7");
  CHECK_ERROR(accuracy(logits, Tensor::from_labels({0})), "accuracy", "[1]", "[3, 5]");
}

TEST_CASE("linear: feature mismatch, bias and ranks") {
  CHECK_ERROR(linear(ones({4, 6}), ones({3, 5}), Tensor()), "linear: input has 6 features but weight expects 5",
              "[4, 6]", "[3, 5]");
  CHECK_ERROR(linear(ones({4, 5}), ones({3, 5}), ones({4})), "linear", "bias has 4 elements", "[4]", "[3, 5]");
  CHECK_ERROR(linear(ones({4, 5}), ones({3, 5}), ones({3, 1})), "linear", "bias", "[3, 1]");
  CHECK_ERROR(linear(ones({2, 4, 5}), ones({3, 5}), Tensor()), "linear", "input", "2 dims", "[2, 4, 5]");
  CHECK_ERROR(linear(ones({5}), ones({3, 5}), Tensor()), "linear", "input", "[5]");
  CHECK_ERROR(linear(ones({4, 5}), ones({15}), Tensor()), "linear", "weight", "[15]");
}

TEST_CASE("set_float32_matmul_precision: PyTorch's two exact names, anything else named with the choices") {
  CHECK(float32_matmul_precision() == "highest");  // the default: float32 is plain FP32 math
  set_float32_matmul_precision("high");
  CHECK(float32_matmul_precision() == "high");
  CHECK_ERROR(set_float32_matmul_precision("medium"),
              "float32 matmul precision 'medium': expected 'highest' (FP32 products) or 'high'");
  CHECK(float32_matmul_precision() == "high");  // a refused value changes nothing
  set_float32_matmul_precision("highest");
  CHECK(float32_matmul_precision() == "highest");
}

TEST_CASE("max_pool2d: kernel larger than the input, bad kernel, stride, padding, rank") {
  CHECK_ERROR(max_pool2d(ones({1, 2, 3, 3}), {4, 4}, {1, 1}), "max_pool2d", "kernel [4, 4] is larger", "[1, 2, 3, 3]");
  CHECK_ERROR(max_pool2d(ones({1, 2, 8, 3}), {2, 4}, {2, 2}), "max_pool2d", "larger", "[1, 2, 8, 3]");
  CHECK_ERROR(max_pool2d(ones({1, 2, 4, 4}), {0, 2}, {2, 2}), "max_pool2d", "kernel");
  CHECK_ERROR(max_pool2d(ones({1, 2, 4, 4}), {2, 2}, {0, 2}), "max_pool2d", "stride");
  CHECK_ERROR(max_pool2d(ones({1, 2, 4, 4}), {2, 2}, {2, 2}, {2, 0}), "max_pool2d", "padding", "half the kernel");
  CHECK_ERROR(max_pool2d(ones({1, 2, 4, 4}), {3, 3}, {2, 2}, {-1, 0}), "max_pool2d", "padding");
  CHECK_ERROR(max_pool2d(ones({2, 4, 4}), {2, 2}, {2, 2}), "max_pool2d", "4 dims", "[2, 4, 4]");
  // Padding up to half the kernel that makes a small input fit is allowed.
  CHECK(max_pool2d(ones({1, 1, 1, 1}), {2, 2}, {2, 2}, {1, 1}).shape() == Shape{1, 1, 1, 1});
  CHECK(max_pool2d(ones({1, 1, 1, 1}), {2, 2}, {1, 1}, {1, 1}).shape() == Shape{1, 1, 2, 2});
}

TEST_CASE("batch_norm: channel mismatch and other bad arguments") {
  const Tensor x = rand({4, 3, 2, 2});
  CHECK_ERROR(batch_norm(x, ones({4}), ones({3}), Tensor(), Tensor(), true), "batch_norm", "weight has 4 elements",
              "3 channels", "[4, 3, 2, 2]", "[4]");
  CHECK_ERROR(batch_norm(x, ones({3}), ones({2}), Tensor(), Tensor(), true), "batch_norm", "bias has 2 elements");
  CHECK_ERROR(batch_norm(x, Tensor(), Tensor(), Tensor::zeros({5}), ones({3}), true), "batch_norm", "running_mean",
              "[5]");
  CHECK_ERROR(batch_norm(x, Tensor(), Tensor(), Tensor::zeros({3}), ones({2}), false), "batch_norm", "running_var",
              "[2]");
  CHECK_ERROR(batch_norm(x, ones({3, 1}), Tensor(), Tensor(), Tensor(), true), "batch_norm", "weight", "[3, 1]");
  CHECK_ERROR(batch_norm(x, Tensor(), Tensor(), Tensor::zeros({3}), Tensor(), true), "batch_norm", "running_mean",
              "running_var");
  CHECK_ERROR(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), false), "batch_norm", "eval", "running");
  CHECK_ERROR(batch_norm(ones({1, 3}), Tensor(), Tensor(), Tensor(), Tensor(), true), "batch_norm",
              "more than one value per channel", "[1, 3]");
  CHECK_ERROR(batch_norm(ones({1, 3, 1, 1}), Tensor(), Tensor(), Tensor(), Tensor(), true), "batch_norm",
              "[1, 3, 1, 1]");
  CHECK_ERROR(batch_norm(ones({6}), Tensor(), Tensor(), Tensor(), Tensor(), true), "batch_norm", "[N, C, ...]", "[6]");
  CHECK_ERROR(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true, 1.5), "batch_norm", "momentum", "1.5");
  CHECK_ERROR(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 0.0), "batch_norm", "eps");
  CHECK_ERROR(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, std::nan("")), "batch_norm", "eps");
  // Eval with one value per channel is fine (running statistics need no batch).
  CHECK(batch_norm(ones({1, 3}), Tensor(), Tensor(), Tensor::zeros({3}), ones({3}), false).shape() == Shape{1, 3});
}

TEST_CASE("batch_norm_relu_max_pool2d: a window that does not fit, a bad rank, batch norm's own checks") {
  const char* op = "batch_norm_relu_max_pool2d";
  const Tensor x = rand({4, 3, 5, 4});
  CHECK_ERROR(batch_norm_relu_max_pool2d(x, Tensor(), Tensor(), Tensor(), Tensor(), true, {2, 5}), op,
              "pool window [2, 5]", "[4, 3, 5, 4]");
  CHECK_ERROR(batch_norm_relu_max_pool2d(x, Tensor(), Tensor(), Tensor(), Tensor(), true, {0, 2}), op, "pool window");
  CHECK_ERROR(batch_norm_relu_max_pool2d(rand({4, 3, 5}), Tensor(), Tensor(), Tensor(), Tensor(), true, {2, 2}), op,
              "[N, C, H, W]", "[4, 3, 5]");
  CHECK_ERROR(batch_norm_relu_max_pool2d(x, ones({4}), Tensor(), Tensor(), Tensor(), true, {2, 2}), op,
              "weight has 4 elements");
  CHECK(batch_norm_relu_max_pool2d(x, Tensor(), Tensor(), Tensor(), Tensor(), true, {2, 3}).shape() ==
        Shape{4, 3, 2, 1});
}

TEST_CASE("dropout: p outside [0, 1]") {
  Generator g(3);
  const Tensor x = ones({4, 4});
  CHECK_ERROR(dropout(x, -0.1, true, g), "dropout", "[0, 1]", "-0.1");
  CHECK_ERROR(dropout(x, 1.5, true, g), "dropout", "1.5");
  CHECK_ERROR(dropout(x, std::nan(""), true, g), "dropout");
  CHECK_ERROR(dropout(x, -0.1, false, g), "dropout");  // checked in eval too
  CHECK(g.offset() == 0);                               // a refused call draws nothing
}

TEST_CASE("broadcasting mismatch names both shapes") {
  CHECK_ERROR(add(ones({3, 4}), ones({5})), "add: shapes [3, 4] and [5] cannot be broadcast together");
  CHECK_ERROR(sub(ones({2, 3, 4}), ones({3, 5})), "sub", "[2, 3, 4]", "[3, 5]");
  CHECK_ERROR(mul(ones({2, 1}), ones({3, 3})), "mul", "[2, 1]", "[3, 3]");
  CHECK_ERROR(ones({4}) + ones({3, 2}), "add", "[4]", "[3, 2]");
  Tensor a = ones({3});
  CHECK_ERROR(add_(a, ones({3, 1})), "add_", "[3]", "[3, 1]");
  CHECK_ERROR(add(Tensor(), ones({3})), "add", "undefined");
}

TEST_CASE("dims out of range for reductions, log_softmax and argmax") {
  const Tensor x = ones({2, 3});
  CHECK_ERROR(sum(x, 2), "sum", "dim 2", "2 dims");
  CHECK_ERROR(mean(x, -3), "mean", "dim -3");
  CHECK_ERROR(log_softmax(x, 5), "log_softmax", "dim 5");
  CHECK_ERROR(argmax(x, -3), "argmax", "dim -3");
  CHECK_ERROR(sum(Tensor::scalar(1.f), 0), "sum", "0-dim");
  CHECK_ERROR(log_softmax(Tensor::scalar(1.f)), "log_softmax");
  CHECK_ERROR(argmax(Tensor::scalar(1.f), 0), "argmax");
}

TEST_CASE("backward errors: freed graph, non-scalar output, wrong gradient shape, nothing to differentiate") {
  Tensor x = volt::test::rand_tensor({3, 4}, 5);
  x.requires_grad_(true);

  SUBCASE("backward twice through a freed graph") {
    Tensor loss = sum(relu(x) * 2.f);
    loss.backward();
    CHECK_ERROR(loss.backward(), "backward", "already freed", "sum");
  }
  SUBCASE("a second loss through an intermediate whose graph was freed") {
    Tensor h = relu(x);
    sum(h).backward();
    CHECK_ERROR(mean(h).backward(), "backward", "already freed", "relu");
  }
  SUBCASE("backward on a non-scalar without a gradient") {
    Tensor y = relu(x);
    CHECK_ERROR(y.backward(), "backward", "[3, 4]", "one-element");
  }
  SUBCASE("explicit gradient of the wrong shape") {
    Tensor y = relu(x);
    CHECK_ERROR(y.backward(Tensor::ones({4, 3})), "backward", "[4, 3]", "[3, 4]");
  }
  SUBCASE("nothing requires grad") {
    Tensor y = sum(volt::test::rand_tensor({3}, 6));
    CHECK_ERROR(y.backward(), "backward", "does not require grad");
    NoGradGuard guard;
    Tensor z = sum(x);
    CHECK_ERROR(z.backward(), "backward", "does not require grad");
  }
  SUBCASE("undefined tensor") {
    CHECK_ERROR(Tensor().backward(), "backward", "undefined");
  }
  SUBCASE("integer tensors cannot require grad") {
    Tensor l = Tensor::from_labels({1, 2});
    CHECK_ERROR(l.requires_grad_(true), "requires_grad_", "int64");
  }
}

TEST_CASE("element access: item() on many elements, at() and set() out of range") {
  const Tensor x = Tensor::zeros({2, 3});
  CHECK_ERROR(x.item(), "item", "[2, 3]", "6 elements");
  CHECK_ERROR(Tensor::zeros({0}).item(), "item", "[0]");
  CHECK_ERROR(x.at({2, 0}), "at", "index 2", "dim 0", "[2, 3]");
  CHECK_ERROR(x.at({0, 3}), "at", "index 3", "dim 1");
  CHECK_ERROR(x.at({-1, 0}), "at", "index -1");
  CHECK_ERROR(x.at({0}), "at", "1 indices", "[2, 3]");
  CHECK_ERROR(x.at({0, 0, 0}), "at", "3 indices");
  Tensor y = Tensor::zeros({2, 3});
  CHECK_ERROR(y.set({0, 3}, 1.f), "at", "index 3");
  CHECK_ERROR(Tensor().item(), "undefined");
  CHECK_ERROR(Tensor().shape(), "undefined");
  CHECK(x.at({1, 2}) == 0.f);
  CHECK(Tensor::scalar(4.f).item() == 4.f);
}

TEST_CASE("random helpers reject bad arguments") {
  Generator g(1);
  CHECK_ERROR(g.next_below(0), "next_below");
  CHECK_ERROR(default_generator(9), "default_generator", "9");
  CHECK_ERROR(randperm(-1, g), "randperm", "-1");
  Tensor l = Tensor::zeros({3}, DType::I64);
  CHECK_ERROR(uniform_(l, 0.f, 1.f, g), "uniform_", "int64");
  Tensor f = Tensor::zeros({3});
  CHECK_ERROR(uniform_(f, 1.f, 0.f, g), "uniform_", "low");
}

TEST_CASE("copies with mismatched shapes") {
  Tensor a = Tensor::zeros({2, 3});
  CHECK_ERROR(a.copy_(Tensor::zeros({3, 2})), "copy_", "[3, 2]", "[2, 3]");
  CHECK_ERROR(a.copy_(Tensor()), "copy_", "undefined");
  CHECK_ERROR(a.set_grad(Tensor::zeros({6})), "set_grad", "[6]", "[2, 3]");
}
