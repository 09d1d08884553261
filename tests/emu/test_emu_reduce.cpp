// The CUDA reductions, log-softmax, cross-entropy, argmax and count kernels, run by the CPU
// emulator, against the CPU kernels (bitwise where the CUDA kernel keeps the CPU's order of
// additions; otherwise within a float ulp or two of the double-accumulated result).
#include "kernels/reduce.h"
#include "tests/emu/emu_util.h"

using namespace volt;
using namespace volt::emu_test;

TEST_CASE("emu reduce: sum over a dimension, one thread per output and one block per long row") {
  struct Case {
    int64_t outer, R, inner;
  };
  for (const Case c : {Case{3, 5, 7}, Case{1, 1, 1}, Case{2, 300, 1}, Case{3, 2500, 1}, Case{1, 4096, 3}}) {
    const size_t n = size_t(c.outer * c.R * c.inner), m = size_t(c.outer * c.inner);
    const auto x = random_floats(n, 11);
    Guarded<float> gx(x), got(m), want(m);
    cuda::sum_dim(c.outer, c.R, c.inner, gx.data(), got.data(), nullptr);
    cpu::sum_dim(c.outer, c.R, c.inner, gx.data(), want.data());
    // Both accumulate in double and round once; only the long-row path adds in another order.
    check_near(got.vec(), want.vec(), 1e-6, 1e-6, "sum_dim");
    if (!(c.inner == 1 && c.R >= 1024)) check_bitwise(got.vec(), want.vec(), "sum_dim, CPU order");
    CHECK(got.guards_intact());
  }
}

TEST_CASE("emu reduce: sum of everything with a divisor, and the broadcasts back") {
  for (int64_t n : {int64_t(1), int64_t(1000), int64_t(5000)}) {
    const auto x = random_floats(size_t(n), 12);
    Guarded<float> gx(x), out(1);
    cuda::sum_all(n, gx.data(), 4.0, out.data(), nullptr);
    CHECK(out[0] == doctest::Approx(float(cpu::sum_all(n, gx.data()) / 4.0)).epsilon(1e-6));
    CHECK(out.guards_intact());
  }
  const auto dy = random_floats(6, 13);
  Guarded<float> gdy(dy), got(6 * 4), want(6 * 4);
  cuda::broadcast_dim(2, 4, 3, gdy.data(), 0.5f, got.data(), nullptr);
  cpu::broadcast_dim(2, 4, 3, gdy.data(), 0.5f, want.data());
  check_bitwise(got.vec(), want.vec(), "broadcast_dim");
  Guarded<float> g(std::vector<float>{3.f}), dx(37);
  cuda::broadcast_scalar(37, g.data(), 0.25f, dx.data(), nullptr);
  for (size_t i = 0; i < 37; ++i) REQUIRE(dx[i] == 0.75f);
  CHECK((got.guards_intact() && dx.guards_intact()));
}

TEST_CASE("emu reduce: log-softmax forward and backward over the middle dimension") {
  const int64_t outer = 3, R = 11, inner = 5;
  const size_t n = size_t(outer * R * inner);
  auto x = random_floats(n, 14, -20.f, 20.f);
  const auto dy = random_floats(n, 15);
  Guarded<float> gx(x), gdy(dy), y1(n), y2(n), d1(n), d2(n);
  cuda::log_softmax_forward(outer, R, inner, gx.data(), y1.data(), nullptr);
  cpu::log_softmax_forward(outer, R, inner, gx.data(), y2.data());
  check_bitwise(y1.vec(), y2.vec(), "log_softmax forward");
  cuda::log_softmax_backward(outer, R, inner, gdy.data(), y2.data(), d1.data(), nullptr);
  cpu::log_softmax_backward(outer, R, inner, gdy.data(), y2.data(), d2.data());
  check_bitwise(d1.vec(), d2.vec(), "log_softmax backward");
  CHECK((y1.guards_intact() && d1.guards_intact()));
}

TEST_CASE("emu reduce: cross-entropy with label smoothing, and a target out of range gives NaN") {
  const int64_t N = 37, C = 10;
  const auto z = random_floats(size_t(N * C), 16, -8.f, 8.f);
  auto t = random_labels(size_t(N), C, 17);
  for (float eps : {0.f, 0.1f}) {
    Guarded<float> gz(z), l1{size_t(N)}, l2{size_t(N)};
    Guarded<int64_t> gt(t);
    cuda::cross_entropy_forward(N, C, gz.data(), gt.data(), eps, l1.data(), nullptr);
    cpu::cross_entropy_forward(N, C, gz.data(), gt.data(), eps, l2.data());
    check_bitwise(l1.vec(), l2.vec(), "cross_entropy forward");
    // Per-row incoming gradients (stride 1, divisor 1) and one device scalar for the mean (stride 0).
    const auto dl = random_floats(size_t(N), 18);
    Guarded<float> gdl(dl), d1{size_t(N * C)}, d2{size_t(N * C)};
    cuda::cross_entropy_backward(N, C, gz.data(), gt.data(), eps, gdl.data(), 1, 1.f, d1.data(), nullptr);
    cpu::cross_entropy_backward(N, C, gz.data(), gt.data(), eps, gdl.data(), d2.data());
    check_bitwise(d1.vec(), d2.vec(), "cross_entropy backward, per-row dloss");
    std::vector<float> same(size_t(N), 1.f / float(N));
    Guarded<float> one(std::vector<float>{1.f}), gsame(same), d3{size_t(N * C)}, d4{size_t(N * C)};
    cuda::cross_entropy_backward(N, C, gz.data(), gt.data(), eps, one.data(), 0, float(N), d3.data(), nullptr);
    cpu::cross_entropy_backward(N, C, gz.data(), gt.data(), eps, gsame.data(), d4.data());
    check_bitwise(d3.vec(), d4.vec(), "cross_entropy backward, mean");
    CHECK((l1.guards_intact() && d1.guards_intact() && d3.guards_intact()));
  }
  t[3] = C;
  Guarded<float> gz(z), l{size_t(N)};
  Guarded<int64_t> gt(t);
  cuda::cross_entropy_forward(N, C, gz.data(), gt.data(), 0.f, l.data(), nullptr);
  CHECK(std::isnan(l[3]));
  CHECK_FALSE(std::isnan(l[2]));
}

TEST_CASE("emu reduce: argmax (first maximum, NaN wins) and counting equal labels") {
  const int64_t outer = 4, R = 9, inner = 3;
  auto x = random_floats(size_t(outer * R * inner), 19);
  x[5] = NAN;
  x[20] = x[23];  // a tie
  Guarded<float> gx(x);
  Guarded<int64_t> a1{size_t(outer * inner)}, a2{size_t(outer * inner)};
  cuda::argmax_dim(outer, R, inner, gx.data(), a1.data(), nullptr);
  cpu::argmax_dim(outer, R, inner, gx.data(), a2.data());
  CHECK(a1.vec() == a2.vec());
  for (int64_t n : {int64_t(1), int64_t(77), int64_t(3000)}) {
    const auto a = random_labels(size_t(n), 3, 20), b = random_labels(size_t(n), 3, 21);
    int64_t want = 0;
    for (size_t i = 0; i < size_t(n); ++i) want += a[i] == b[i];
    Guarded<int64_t> ga(a), gb(b), out(1);
    cuda::count_equal(n, ga.data(), gb.data(), out.data(), nullptr);
    CHECK(out[0] == want);
    CHECK(out.guards_intact());
  }
}
