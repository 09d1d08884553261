// The CUDA batch-norm and max-pool kernels, run by the CPU emulator, against the CPU kernels.
#include "kernels/batch_norm.h"
#include "kernels/pool.h"
#include "tests/emu/emu_util.h"

using namespace volt;
using namespace volt::emu_test;

TEST_CASE("emu batch_norm: training forward, running statistics and backward match the CPU") {
  struct Case {
    int64_t N, C, HW;
  };
  for (const Case c : {Case{2, 3, 5}, Case{7, 4, 33}, Case{1, 1, 1}, Case{3, 2, 700}}) {
    const size_t n = size_t(c.N * c.C * c.HW), C = size_t(c.C);
    const auto x = random_floats(n, 31, -3.f, 5.f), dy = random_floats(n, 32);
    const auto gamma = random_floats(C, 33, 0.5f, 1.5f), beta = random_floats(C, 34);
    Guarded<float> gx(x), gdy(dy), gg(gamma), gb(beta);
    Guarded<float> y1(n), y2(n), m1(C), m2(C), s1(C), s2(C), v1(C), v2(C);
    cuda::batch_norm_forward_train(c.N, c.C, c.HW, gx.data(), gg.data(), gb.data(), 1e-5, y1.data(), m1.data(),
                                   s1.data(), v1.data(), nullptr);
    cpu::batch_norm_forward_train(c.N, c.C, c.HW, gx.data(), gg.data(), gb.data(), 1e-5, y2.data(), m2.data(),
                                  s2.data(), v2.data());
    check_near(m1.vec(), m2.vec(), 1e-6, 1e-6, "save_mean");
    check_near(s1.vec(), s2.vec(), 1e-6, 1e-5, "save_invstd");
    check_near(v1.vec(), v2.vec(), 1e-6, 1e-5, "unbiased variance");
    check_near(y1.vec(), y2.vec(), 1e-5, 1e-5, "y");
    Guarded<float> rm1(C, 0.1f), rv1(C, 0.9f), rm2(C, 0.1f), rv2(C, 0.9f);
    cuda::batch_norm_update_running(c.C, rm1.data(), rv1.data(), m2.data(), v2.data(), 0.1, nullptr);
    cpu::batch_norm_update_running(c.C, rm2.data(), rv2.data(), m2.data(), v2.data(), 0.1);
    check_bitwise(rm1.vec(), rm2.vec(), "running_mean");
    check_bitwise(rv1.vec(), rv2.vec(), "running_var");
    for (bool with_dx : {true, false}) {
      Guarded<float> dx1(n), dx2(n), dg1(C), dg2(C), db1(C), db2(C);
      cuda::batch_norm_backward(c.N, c.C, c.HW, gdy.data(), gx.data(), gg.data(), m2.data(), s2.data(), true,
                                with_dx ? dx1.data() : nullptr, dg1.data(), db1.data(), nullptr);
      cpu::batch_norm_backward(c.N, c.C, c.HW, gdy.data(), gx.data(), gg.data(), m2.data(), s2.data(), true,
                               with_dx ? dx2.data() : nullptr, dg2.data(), db2.data());
      check_near(dg1.vec(), dg2.vec(), 1e-5, 1e-5, "dgamma");
      check_near(db1.vec(), db2.vec(), 1e-5, 1e-5, "dbeta");
      if (with_dx) check_near(dx1.vec(), dx2.vec(), 1e-5, 1e-4, "dx");
      CHECK((dx1.guards_intact() && dg1.guards_intact() && db1.guards_intact()));
    }
    CHECK((y1.guards_intact() && m1.guards_intact() && s1.guards_intact() && v1.guards_intact()));
  }
}

TEST_CASE("emu batch_norm: evaluation forward and backward with the running statistics") {
  const int64_t N = 3, C = 5, HW = 17;
  const size_t n = size_t(N * C * HW);
  const auto x = random_floats(n, 41), dy = random_floats(n, 42);
  const auto rm = random_floats(size_t(C), 43), rv = random_floats(size_t(C), 44, 0.2f, 2.f);
  Guarded<float> gx(x), gdy(dy), grm(rm), grv(rv), y1(n), y2(n), is1{size_t(C)};
  cuda::batch_norm_forward_eval(N, C, HW, gx.data(), nullptr, nullptr, grm.data(), grv.data(), 1e-5, y1.data(),
                                nullptr);
  cpu::batch_norm_forward_eval(N, C, HW, gx.data(), nullptr, nullptr, grm.data(), grv.data(), 1e-5, y2.data());
  check_bitwise(y1.vec(), y2.vec(), "eval forward without affine");
  cuda::batch_norm_invstd(C, grv.data(), 1e-5, is1.data(), nullptr);
  for (size_t c = 0; c < size_t(C); ++c) CHECK(is1[c] == float(1.0 / std::sqrt(double(rv[c]) + 1e-5)));
  Guarded<float> dx1(n), dx2(n);
  cuda::batch_norm_backward(N, C, HW, gdy.data(), gx.data(), nullptr, grm.data(), is1.data(), false, dx1.data(),
                            nullptr, nullptr, nullptr);
  cpu::batch_norm_backward(N, C, HW, gdy.data(), gx.data(), nullptr, grm.data(), is1.data(), false, dx2.data(), nullptr,
                           nullptr);
  check_bitwise(dx1.vec(), dx2.vec(), "eval backward");
  CHECK((y1.guards_intact() && dx1.guards_intact() && is1.guards_intact()));
}

TEST_CASE("emu max_pool2d: forward indices and backward gathers match the CPU, with padding and overlap") {
  struct Case {
    int64_t planes, H, W, k, stride, pad;
  };
  for (const Case c : {Case{6, 28, 28, 2, 2, 0}, Case{3, 7, 9, 3, 2, 1}, Case{2, 5, 5, 3, 1, 1}, Case{1, 1, 1, 1, 1, 0}}) {
    cpu::Pool2dShape s{c.planes, c.H, c.W, c.k, c.k, c.stride, c.stride, c.pad, c.pad, 0, 0};
    s.P = (c.H + 2 * c.pad - c.k) / c.stride + 1;
    s.Q = (c.W + 2 * c.pad - c.k) / c.stride + 1;
    const size_t n = size_t(c.planes * c.H * c.W), m = size_t(c.planes * s.P * s.Q);
    auto x = random_floats(n, 51);
    if (n > 1) x[0] = x[1];  // a tie inside the first window
    if (n > 4) x[4] = NAN;
    const auto dy = random_floats(m, 52);
    Guarded<float> gx(x), gdy(dy), y1(m), y2(m), d1(n), d2(n);
    Guarded<int32_t> i1(m), i2(m);
    cuda::max_pool2d_forward(s, gx.data(), y1.data(), i1.data(), nullptr);
    cpu::max_pool2d_forward(s, gx.data(), y2.data(), i2.data());
    check_bitwise(y1.vec(), y2.vec(), "max_pool forward");
    CHECK(i1.vec() == i2.vec());
    cuda::max_pool2d_backward(s, gdy.data(), i2.data(), d1.data(), nullptr);
    cpu::max_pool2d_backward(s, gdy.data(), i2.data(), d2.data());
    check_bitwise(d1.vec(), d2.vec(), "max_pool backward");
    CHECK((y1.guards_intact() && i1.guards_intact() && d1.guards_intact()));
  }
}
