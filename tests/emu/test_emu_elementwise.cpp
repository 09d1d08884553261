// The CUDA elementwise and collective-helper kernels, run by the CPU emulator, against the CPU
// kernels: same results bit for bit (the CUDA kernels round exactly like the CPU ones), odd sizes
// that leave partial blocks, and guard zones checked after every launch.
#include "kernels/comm.h"
#include "kernels/elementwise.h"
#include "tests/emu/emu_util.h"

using namespace volt;
using namespace volt::emu_test;

namespace {
const std::vector<int64_t> kSizes = {1, 3, 255, 257, 1000};
}

TEST_CASE("emu elementwise: binary ops, scale and axpy match the CPU bit for bit") {
  for (int64_t n : kSizes) {
    const auto a = random_floats(size_t(n), 1), b = random_floats(size_t(n), 2);
    for (cpu::BinaryOp op : {cpu::BinaryOp::Add, cpu::BinaryOp::Sub, cpu::BinaryOp::Mul}) {
      Guarded<float> ga(a), gb(b), got{size_t(n)}, want{size_t(n)};
      cuda::binary_same(op, n, ga.data(), gb.data(), got.data(), nullptr);
      cpu::binary_same(op, n, ga.data(), gb.data(), want.data());
      check_bitwise(got.vec(), want.vec(), "binary_same n=" + std::to_string(n));
      CHECK(got.guards_intact());
    }
    Guarded<float> gx(a), got{size_t(n)}, want{size_t(n)};
    cuda::scale(n, gx.data(), 0.37f, -1.25f, got.data(), nullptr);
    cpu::scale(n, gx.data(), 0.37f, -1.25f, want.data());
    check_bitwise(got.vec(), want.vec(), "scale");
    Guarded<float> y1(b), y2(b);
    cuda::axpy(n, -0.6f, gx.data(), y1.data(), nullptr);
    cpu::axpy(n, -0.6f, gx.data(), y2.data());
    check_bitwise(y1.vec(), y2.vec(), "axpy");
    CHECK(y1.guards_intact());
  }
}

TEST_CASE("emu elementwise: broadcasting over awkward shapes matches the CPU") {
  // out [3, 1->5, 7] from a [3, 1, 7] and b [1, 5, 1] (strides 0 on broadcast dims).
  const int64_t shape[3] = {3, 5, 7};
  const int64_t as[3] = {7, 0, 1}, bs[3] = {0, 1, 0};
  const auto a = random_floats(21, 3), b = random_floats(5, 4);
  for (cpu::BinaryOp op : {cpu::BinaryOp::Add, cpu::BinaryOp::Sub, cpu::BinaryOp::Mul}) {
    Guarded<float> ga(a), gb(b), got(105), want(105);
    cuda::binary_broadcast(op, 3, shape, ga.data(), as, gb.data(), bs, got.data(), nullptr);
    cpu::binary_broadcast(op, 3, shape, ga.data(), as, gb.data(), bs, want.data());
    check_bitwise(got.vec(), want.vec(), "binary_broadcast");
    CHECK(got.guards_intact());
  }
}

TEST_CASE("emu elementwise: relu forward and backward, NaN propagating, match the CPU") {
  auto x = random_floats(1001, 5);
  x[7] = NAN;
  x[8] = 0.f;
  x[9] = -0.f;
  const auto dy = random_floats(1001, 6);
  Guarded<float> gx(x), gdy(dy), y1(1001), y2(1001), d1(1001), d2(1001);
  cuda::relu_forward(1001, gx.data(), y1.data(), nullptr);
  cpu::relu_forward(1001, gx.data(), y2.data());
  check_bitwise(y1.vec(), y2.vec(), "relu forward");
  CHECK(std::isnan(y1[7]));
  cuda::relu_backward(1001, gdy.data(), gx.data(), d1.data(), nullptr);
  cpu::relu_backward(1001, gdy.data(), gx.data(), d2.data());
  check_bitwise(d1.vec(), d2.vec(), "relu backward");
  CHECK((y1.guards_intact() && d1.guards_intact()));
}

TEST_CASE("emu elementwise: dropout masks are the CPU's Philox masks for every size and offset") {
  for (int64_t n : {int64_t(1), int64_t(5), int64_t(1023), int64_t(4099)}) {
    for (uint64_t offset : {uint64_t(0), uint64_t(13), uint64_t(1) << 33}) {
      const auto x = random_floats(size_t(n), 7), dy = random_floats(size_t(n), 8);
      Guarded<float> gx(x), gdy(dy), y1{size_t(n)}, y2{size_t(n)}, d1{size_t(n)}, d2{size_t(n)};
      Guarded<uint8_t> k1{size_t(n)}, k2{size_t(n)};
      cuda::dropout_forward(n, gx.data(), 0.3f, 1234, 7, offset, k1.data(), y1.data(), nullptr);
      cpu::dropout_forward(n, gx.data(), 0.3f, 1234, 7, offset, k2.data(), y2.data());
      CHECK(k1.vec() == k2.vec());
      check_bitwise(y1.vec(), y2.vec(), "dropout forward");
      cuda::dropout_backward(n, gdy.data(), k1.data(), 0.3f, d1.data(), nullptr);
      cpu::dropout_backward(n, gdy.data(), k2.data(), 0.3f, d2.data());
      check_bitwise(d1.vec(), d2.vec(), "dropout backward");
      CHECK((k1.guards_intact() && y1.guards_intact() && d1.guards_intact()));
    }
  }
}

TEST_CASE("emu elementwise: fill and the one-element int64 add") {
  Guarded<float> f(777);
  cuda::fill(777, 2.5f, f.data(), nullptr);
  for (size_t i = 0; i < 777; ++i) REQUIRE(f[i] == 2.5f);
  CHECK(f.guards_intact());
  Guarded<int64_t> c(1, int64_t(41));
  cuda::add_i64(c.data(), 1, nullptr);
  cuda::add_i64(c.data(), -3, nullptr);
  CHECK(c[0] == 39);
  CHECK(c.guards_intact());
}

TEST_CASE("emu comm: in-place scaling and integer division for the device all-reduce's average") {
  const auto x = random_floats(513, 9, -100.f, 100.f);
  Guarded<float> g(x);
  cuda::scale_inplace(513, g.data(), 0.25f, nullptr);
  for (size_t i = 0; i < 513; ++i) REQUIRE(g[i] == x[i] * 0.25f);
  Guarded<double> d(std::vector<double>{1.5, -3.0, 7.25});
  cuda::scale_inplace(3, d.data(), 1.0 / 3.0, nullptr);
  CHECK(d[1] == -3.0 * (1.0 / 3.0));
  Guarded<int64_t> i(std::vector<int64_t>{7, -7, 9, 0});
  cuda::divide_inplace(4, i.data(), 2, nullptr);
  CHECK(i.vec() == std::vector<int64_t>{3, -3, 4, 0});
  CHECK((g.guards_intact() && d.guards_intact() && i.guards_intact()));
}
