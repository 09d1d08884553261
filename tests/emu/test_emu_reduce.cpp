// The CUDA reductions, log-softmax, cross-entropy and argmax kernels, run by the CPU emulator, against
// the CPU kernels (bitwise where the CUDA kernel keeps the CPU's order of additions; otherwise within
// a float ulp or two of the double-accumulated result), in every storage type.
#include <limits>

#include "kernels/reduce.h"
#include "tests/emu/emu_util.h"

using namespace volt;
using namespace volt::emu_test;

TEST_CASE("emu reduce: sum over a dimension, one thread per output and one block per long row") {
  struct Case {
    int64_t outer, R, inner;
  };
  for (FType t : all_ftypes())
    for (const Case c : {Case{3, 5, 7}, Case{1, 1, 1}, Case{2, 300, 1}, Case{3, 2500, 1}, Case{1, 4096, 3}}) {
      INFO(std::string(ftype_name(t)) << " " << c.outer << "x" << c.R << "x" << c.inner);
      const size_t n = size_t(c.outer * c.R * c.inner), m = size_t(c.outer * c.inner);
      const auto x = round_to(t, random_floats(n, 11));
      TypedBuf gx(t, x), got(t, m);
      std::vector<float> want(m);
      cuda::sum_dim(t, c.outer, c.R, c.inner, gx.data(), got.data(), nullptr);
      cpu::sum_dim(c.outer, c.R, c.inner, x.data(), want.data());
      // Both accumulate in double and round once; only the long-row path adds in another order.
      check_near(got.values(), round_to(t, want), t == FType::F32 ? 1e-6 : 1e-3, 1e-6, "sum_dim");
      if (!(c.inner == 1 && c.R >= 1024)) check_bitwise(got.values(), round_to(t, want), "sum_dim, CPU order");
      CHECK(got.guards_intact());
    }
}

TEST_CASE("emu reduce: sum of everything with a divisor, and the broadcasts back") {
  for (FType t : all_ftypes()) {
    for (int64_t n : {int64_t(1), int64_t(1000), int64_t(5000)}) {
      const auto x = round_to(t, random_floats(size_t(n), 12));
      TypedBuf gx(t, x), out(t, 1);
      cuda::sum_all(t, n, gx.data(), 4.0, out.data(), nullptr);
      CHECK(out.values()[0] == round_to(t, float(cpu::sum_all(n, x.data()) / 4.0)));
      CHECK(out.guards_intact());
    }
    const auto dy = round_to(t, random_floats(6, 13));
    TypedBuf gdy(t, dy), got(t, 6 * 4);
    std::vector<float> want(6 * 4);
    cuda::broadcast_dim(t, 2, 4, 3, gdy.data(), 0.5f, got.data(), nullptr);
    cpu::broadcast_dim(2, 4, 3, dy.data(), 0.5f, want.data());
    check_bitwise(got.values(), round_to(t, want), "broadcast_dim");
    TypedBuf g(t, std::vector<float>{3.f}), dx(t, 37);
    cuda::broadcast_scalar(t, 37, g.data(), 0.25f, dx.data(), nullptr);
    for (float v : dx.values()) REQUIRE(v == 0.75f);
    CHECK((got.guards_intact() && dx.guards_intact()));
  }
}

TEST_CASE("emu reduce: log-softmax forward and backward over the middle dimension") {
  const int64_t outer = 3, R = 11, inner = 5;
  const size_t n = size_t(outer * R * inner);
  for (FType t : all_ftypes()) {
    INFO(std::string(ftype_name(t)));
    const auto x = round_to(t, random_floats(n, 14, -20.f, 20.f));
    const auto dy = round_to(t, random_floats(n, 15));
    TypedBuf gx(t, x), gdy(t, dy), y1(t, n), d1(t, n);
    std::vector<float> y2(n), d2(n);
    cuda::log_softmax_forward(t, outer, R, inner, gx.data(), y1.data(), nullptr);
    cpu::log_softmax_forward(outer, R, inner, x.data(), y2.data());
    check_bitwise(y1.values(), round_to(t, y2), "log_softmax forward");
    const auto y2r = round_to(t, y2);
    TypedBuf gy(t, y2r);
    cuda::log_softmax_backward(t, outer, R, inner, gdy.data(), gy.data(), d1.data(), nullptr);
    cpu::log_softmax_backward(outer, R, inner, dy.data(), y2r.data(), d2.data());
    check_bitwise(d1.values(), round_to(t, d2), "log_softmax backward");
    CHECK((y1.guards_intact() && d1.guards_intact()));
  }
}

TEST_CASE("emu reduce: fused cross-entropy (loss and gradient base in one pass) with label smoothing") {
  const int64_t N = 37, C = 10;
  const auto t_lab = random_labels(size_t(N), C, 17);
  for (FType t : all_ftypes())
    for (float eps : {0.f, 0.1f}) {
      INFO(std::string(ftype_name(t)) << " eps=" << eps);
      const auto z = round_to(t, random_floats(size_t(N * C), 16, -8.f, 8.f));
      TypedBuf gz(t, z);
      Guarded<float> l1{size_t(N)}, gb1{size_t(N * C)};
      Guarded<int64_t> gt(t_lab), bad{3, 0};
      std::vector<float> l2(static_cast<size_t>(N)), gb2(static_cast<size_t>(N * C));
      cuda::cross_entropy_forward(t, N, C, gz.data(), gt.data(), eps, l1.data(), gb1.data(), bad.data(), nullptr);
      cpu::cross_entropy_forward(N, C, z.data(), t_lab.data(), eps, l2.data(), gb2.data());
      check_bitwise(l1.vec(), l2, "cross_entropy loss");
      check_bitwise(gb1.vec(), gb2, "cross_entropy gradient base");
      CHECK(bad[0] == 0);
      // Per-row incoming gradients (stride 1, divisor 1) and one device scalar for the mean (stride 0).
      const auto dl = random_floats(size_t(N), 18);
      Guarded<float> gdl(dl), one(std::vector<float>{1.f});
      for (int64_t stride : {int64_t(1), int64_t(0)}) {
        const float div = stride ? 1.f : float(N);
        TypedBuf d1(t, size_t(N * C));
        std::vector<float> d2(static_cast<size_t>(N * C));
        const float* dloss = stride ? gdl.data() : one.data();
        cuda::cross_entropy_backward(t, N, C, gb1.data(), dloss, stride, div, d1.data(), nullptr);
        cpu::cross_entropy_backward(N, C, gb2.data(), dloss, stride, div, d2.data());
        check_bitwise(d1.values(), round_to(t, d2), stride ? "backward, per-row dloss" : "backward, mean");
        CHECK(d1.guards_intact());
      }
      CHECK((l1.guards_intact() && gb1.guards_intact() && bad.guards_intact()));
    }
}

TEST_CASE("emu reduce: a -inf logit gives the CPU's finite loss without smoothing, +inf with it") {
  const int64_t N = 3, C = 5;
  const std::vector<int64_t> lab = {1, 4, 0};
  auto z = random_floats(size_t(N * C), 19, -4.f, 4.f);
  z[3] = z[5 + 2] = -std::numeric_limits<float>::infinity();  // never a target
  for (FType t : all_ftypes())
    for (float eps : {0.f, 0.1f}) {
      INFO(std::string(ftype_name(t)) << " eps=" << eps);
      const auto zt = round_to(t, z);
      TypedBuf gz(t, zt);
      Guarded<float> l1{size_t(N)}, gb1{size_t(N * C)};
      Guarded<int64_t> gt(lab), bad{3, 0};
      std::vector<float> l2(static_cast<size_t>(N)), gb2(static_cast<size_t>(N * C));
      cuda::cross_entropy_forward(t, N, C, gz.data(), gt.data(), eps, l1.data(), gb1.data(), bad.data(), nullptr);
      cpu::cross_entropy_forward(N, C, zt.data(), lab.data(), eps, l2.data(), gb2.data());
      check_bitwise(l1.vec(), l2, "cross_entropy loss");
      check_bitwise(gb1.vec(), gb2, "cross_entropy gradient base");
      CHECK(std::isfinite(l1[0]) == (eps == 0.f));  // rows 0 and 1 hold a -inf logit
      CHECK(std::isfinite(l1[1]) == (eps == 0.f));
      CHECK(std::isfinite(l1[2]));
      for (float g : gb1.vec()) CHECK(std::isfinite(g));
    }
}

TEST_CASE("emu reduce: a cross-entropy target out of range gives NaN and is recorded for the host") {
  const int64_t N = 37, C = 10;
  const auto z = random_floats(size_t(N * C), 16, -8.f, 8.f);
  auto t = random_labels(size_t(N), C, 17);
  t[3] = C;
  t[9] = -1;
  Guarded<float> gz(z), l{size_t(N)}, gb{size_t(N * C)};
  Guarded<int64_t> gt(t), bad{3, 0};
  cuda::cross_entropy_forward(FType::F32, N, C, gz.data(), gt.data(), 0.f, l.data(), gb.data(), bad.data(), nullptr);
  CHECK(std::isnan(l[3]));
  CHECK(std::isnan(gb[size_t(3 * C)]));
  CHECK_FALSE(std::isnan(l[2]));
  CHECK(bad[0] == 2);
  const BadTarget first = decode_bad_target(uint64_t(bad[1]));  // the lowest row, in any schedule
  CHECK(first.row == 3);
  CHECK(first.value == C);
  // A second batch with a bad row further down keeps the lowest row; one further up replaces it.
  cuda::cross_entropy_forward(FType::F32, N, C, gz.data(), gt.data(), 0.f, l.data(), gb.data(), bad.data(), nullptr);
  CHECK(bad[0] == 4);
  CHECK(decode_bad_target(uint64_t(bad[1])).row == 3);
  t = random_labels(size_t(N), C, 17);
  t[1] = -5;
  Guarded<int64_t> gt2(t);
  cuda::cross_entropy_forward(FType::F32, N, C, gz.data(), gt2.data(), 0.f, l.data(), gb.data(), bad.data(), nullptr);
  CHECK(bad[0] == 5);
  CHECK(decode_bad_target(uint64_t(bad[1])).row == 1);
  CHECK(decode_bad_target(uint64_t(bad[1])).value == -5);
}

TEST_CASE("emu reduce: argmax (first maximum, NaN wins)") {
  const int64_t outer = 4, R = 9, inner = 3;
  for (FType t : all_ftypes()) {
    auto x = round_to(t, random_floats(size_t(outer * R * inner), 19));
    x[5] = NAN;
    x[20] = x[23];  // a tie
    TypedBuf gx(t, x);
    Guarded<int64_t> a1{size_t(outer * inner)}, a2{size_t(outer * inner)};
    cuda::argmax_dim(t, outer, R, inner, gx.data(), a1.data(), nullptr);
    cpu::argmax_dim(outer, R, inner, x.data(), a2.data());
    CHECK(a1.vec() == a2.vec());
  }
}

TEST_CASE("emu reduce: the bad-target code orders by row (lowest wins under atomicMax) and round-trips") {
  CHECK(encode_bad_target(0, -1) > encode_bad_target(1, 100));
  CHECK(encode_bad_target(41, 0) > encode_bad_target(42, 1));
  CHECK(encode_bad_target(int64_t(1) << 40, 3) != 0);  // saturated rows still read as recorded
  for (const auto& [row, value] : std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {7, -3}, {123456, 1000000}}) {
    const BadTarget b = decode_bad_target(encode_bad_target(row, value));
    CHECK(b.row == row);
    CHECK(b.value == value);
  }
  CHECK(decode_bad_target(encode_bad_target(3, int64_t(1) << 40)).value == 2147483647);
}
