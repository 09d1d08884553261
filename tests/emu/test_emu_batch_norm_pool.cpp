// The CUDA batch-norm (alone, fused with ReLU, and with ReLU and max pooling) and max-pool kernels,
// run by the CPU emulator, against the CPU kernels, in every storage type of the activations.
#include "kernels/batch_norm.h"
#include "kernels/conv2d.h"
#include "kernels/elementwise.h"
#include "kernels/pool.h"
#include "tests/emu/emu_util.h"

using namespace volt;
using namespace volt::emu_test;

namespace {
// Tolerances of a kernel that accumulates in another order than the CPU: a few float ulps for
// float32, one rounding step of the 16-bit type otherwise.
double atol_for(FType t) { return t == FType::F32 ? 1e-5 : (t == FType::F16 ? 4e-3 : 3e-2); }
double rtol_for(FType t) { return t == FType::F32 ? 1e-4 : (t == FType::F16 ? 2e-3 : 1.6e-2); }
}  // namespace

TEST_CASE("emu batch_norm: training forward (+ReLU), running statistics and backward match the CPU") {
  struct Case {
    int64_t N, C, HW;
  };
  for (FType t : all_ftypes())
    for (bool relu : {false, true})
      for (const Case c : {Case{2, 3, 5}, Case{7, 4, 33}, Case{3, 2, 700}, Case{13, 3, 1601}}) {  // last: chunks
        INFO(std::string(ftype_name(t)) << (relu ? " +relu " : " ") << c.N << "x" << c.C << "x" << c.HW);
        const size_t n = size_t(c.N * c.C * c.HW), C = size_t(c.C);
        const auto x = round_to(t, random_floats(n, 31, -3.f, 5.f)), dy = round_to(t, random_floats(n, 32));
        const auto gamma = random_floats(C, 33, 0.5f, 1.5f), beta = random_floats(C, 34);
        TypedBuf gx(t, x), gdy(t, dy), y1(t, n);
        Guarded<float> gg(gamma), gbt(beta), m1{C}, s1{C}, v1{C};
        std::vector<float> y2(n), m2(C), s2(C), v2(C);
        Guarded<uint8_t> ws{cuda::batch_norm_workspace_bytes(c.N, c.C, c.HW)};
        Guarded<float> rm1(C, 0.1f), rv1(C, 0.9f);
        Guarded<int64_t> tracked(1, int64_t(41));
        cuda::BnRunning run;
        run.mean = rm1.data();
        run.var = rv1.data();
        run.momentum = 0.1;
        run.batches_tracked = tracked.data();
        cuda::batch_norm_forward_train(t, c.N, c.C, c.HW, gx.data(), gg.data(), gbt.data(), 1e-5, relu, y1.data(),
                                       m1.data(), s1.data(), v1.data(), run, ws.data(), nullptr);
        cpu::batch_norm_forward_train(c.N, c.C, c.HW, x.data(), gamma.data(), beta.data(), 1e-5, relu, y2.data(),
                                      m2.data(), s2.data(), v2.data());
        check_near(m1.vec(), m2, 1e-6, 1e-6, "save_mean");
        check_near(s1.vec(), s2, 1e-6, 1e-5, "save_invstd");
        check_near(v1.vec(), v2, 1e-6, 1e-5, "unbiased variance");
        check_near(y1.values(), round_to(t, y2), atol_for(t), rtol_for(t), "y");
        // The running statistics, updated in the statistics' launch from the kernel's own batch statistics,
        // as the CPU updates them; the batch count advanced once.
        std::vector<float> rm2(C, 0.1f), rv2(C, 0.9f);
        const std::vector<float> kernel_mean = m1.vec(), kernel_var = v1.vec();
        cpu::batch_norm_update_running(c.C, rm2.data(), rv2.data(), kernel_mean.data(), kernel_var.data(), 0.1);
        check_bitwise(rm1.vec(), rm2, "running_mean");
        check_bitwise(rv1.vec(), rv2, "running_var");
        CHECK(tracked[0] == 42);
        CHECK((rm1.guards_intact() && rv1.guards_intact() && tracked.guards_intact()));
        // Backward from the CPU's statistics, so that both recompute the same ReLU mask.
        Guarded<float> gm(m2), gs(s2);
        for (bool with_dx : {true, false}) {
          TypedBuf dx1(t, n);
          Guarded<float> dg1{C}, db1{C};
          std::vector<float> dx2(n), dg2(C), db2(C);
          cuda::batch_norm_backward(t, c.N, c.C, c.HW, gdy.data(), gx.data(), gg.data(), gbt.data(), gm.data(),
                                    gs.data(), true, relu, with_dx ? dx1.data() : nullptr, dg1.data(), db1.data(),
                                    ws.data(), nullptr);
          CHECK(ws.guards_intact());
          cpu::batch_norm_backward(c.N, c.C, c.HW, dy.data(), x.data(), gamma.data(), beta.data(), m2.data(), s2.data(),
                                   true, relu, with_dx ? dx2.data() : nullptr, dg2.data(), db2.data());
          // The CPU sums each (n, c) row in float before adding rows in double: ~1e-4 relative at HW = 1601.
          check_near(dg1.vec(), dg2, 1e-5, 1e-4, "dgamma");
          check_near(db1.vec(), db2, 1e-5, 1e-4, "dbeta");
          if (with_dx) check_near(dx1.values(), round_to(t, dx2), atol_for(t), rtol_for(t), "dx");
          CHECK((dx1.guards_intact() && dg1.guards_intact() && db1.guards_intact()));
        }
        CHECK((y1.guards_intact() && m1.guards_intact() && s1.guards_intact() && v1.guards_intact()));
      }
}

TEST_CASE("emu batch_norm: evaluation forward (+ReLU) and backward with the running statistics") {
  const int64_t N = 3, C = 5, HW = 17;
  const size_t n = size_t(N * C * HW);
  for (FType t : all_ftypes())
    for (bool relu : {false, true}) {
      INFO(std::string(ftype_name(t)) << (relu ? " +relu" : ""));
      const auto x = round_to(t, random_floats(n, 41)), dy = round_to(t, random_floats(n, 42));
      const auto rm = random_floats(size_t(C), 43), rv = random_floats(size_t(C), 44, 0.2f, 2.f);
      Guarded<float> grm(rm), grv(rv), is1{size_t(C)};
      std::vector<float> is2(static_cast<size_t>(C));
      cuda::batch_norm_invstd(C, grv.data(), 1e-5, is1.data(), nullptr);
      cpu::batch_norm_invstd(C, rv.data(), 1e-5, is2.data());
      check_bitwise(is1.vec(), is2, "invstd");
      TypedBuf gx(t, x), gdy(t, dy), y1(t, n), dx1(t, n);
      std::vector<float> y2(n), dx2(n);
      Guarded<uint8_t> ws{cuda::batch_norm_workspace_bytes(N, C, HW)};
      cuda::batch_norm_forward_eval(t, N, C, HW, gx.data(), nullptr, nullptr, grm.data(), is1.data(), relu, y1.data(),
                                    ws.data(), nullptr);
      cpu::batch_norm_forward_eval(N, C, HW, x.data(), nullptr, nullptr, rm.data(), is2.data(), relu, y2.data());
      check_bitwise(y1.values(), round_to(t, y2), "eval forward without affine");
      const auto gamma = random_floats(size_t(C), 45, 0.5f, 1.5f), beta = random_floats(size_t(C), 46);
      Guarded<float> gg(gamma), gb(beta);
      cuda::batch_norm_forward_eval(t, N, C, HW, gx.data(), gg.data(), gb.data(), grm.data(), is1.data(), relu,
                                    y1.data(), ws.data(), nullptr);
      cpu::batch_norm_forward_eval(N, C, HW, x.data(), gamma.data(), beta.data(), rm.data(), is2.data(), relu,
                                   y2.data());
      check_bitwise(y1.values(), round_to(t, y2), "eval forward with affine");
      cuda::batch_norm_backward(t, N, C, HW, gdy.data(), gx.data(), nullptr, nullptr, grm.data(), is1.data(), false,
                                relu, dx1.data(), nullptr, nullptr, ws.data(), nullptr);
      cpu::batch_norm_backward(N, C, HW, dy.data(), x.data(), nullptr, nullptr, rm.data(), is2.data(), false, relu,
                               dx2.data(), nullptr, nullptr);
      check_bitwise(dx1.values(), round_to(t, dx2), "eval backward");
      CHECK((y1.guards_intact() && dx1.guards_intact() && is1.guards_intact()));
    }
}

TEST_CASE("emu max_pool2d: forward indices and backward gathers match the CPU, with padding and overlap") {
  struct Case {
    int64_t planes, H, W, k, stride, pad;
  };
  for (FType t : all_ftypes())
    for (const Case c :
         {Case{6, 28, 28, 2, 2, 0}, Case{3, 7, 9, 3, 2, 1}, Case{2, 5, 5, 3, 1, 1}, Case{1, 1, 1, 1, 1, 0}}) {
      INFO(std::string(ftype_name(t)) << " " << c.planes << "x" << c.H << "x" << c.W << " k" << c.k);
      cpu::Pool2dShape s{c.planes, c.H, c.W, c.k, c.k, c.stride, c.stride, c.pad, c.pad, 0, 0};
      s.P = (c.H + 2 * c.pad - c.k) / c.stride + 1;
      s.Q = (c.W + 2 * c.pad - c.k) / c.stride + 1;
      const size_t n = size_t(c.planes * c.H * c.W), m = size_t(c.planes * s.P * s.Q);
      auto x = round_to(t, random_floats(n, 51));
      if (n > 1) x[0] = x[1];  // a tie inside the first window
      if (n > 4) x[4] = NAN;
      const auto dy = round_to(t, random_floats(m, 52));
      TypedBuf gx(t, x), gdy(t, dy), y1(t, m), d1(t, n);
      std::vector<float> y2(m), d2(n);
      Guarded<int32_t> i1{m}, i2{m};
      cuda::max_pool2d_forward(t, s, gx.data(), y1.data(), i1.data(), nullptr);
      cpu::max_pool2d_forward(s, x.data(), y2.data(), i2.data());
      check_bitwise(y1.values(), y2, "max_pool forward");
      CHECK(i1.vec() == i2.vec());
      cuda::max_pool2d_backward(t, s, gdy.data(), i2.data(), d1.data(), nullptr);
      cpu::max_pool2d_backward(s, dy.data(), i2.data(), d2.data());
      check_bitwise(d1.values(), round_to(t, d2), "max_pool backward");
      CHECK((y1.guards_intact() && i1.guards_intact() && d1.guards_intact()));
    }
}

namespace {
// The CPU's max_pool2d indices (flat h * W + w in the plane) as positions in their windows.
std::vector<uint8_t> window_positions(const cpu::Pool2dShape& s, const std::vector<int32_t>& flat) {
  std::vector<uint8_t> out(flat.size());
  for (size_t e = 0; e < flat.size(); ++e) {
    const int64_t q = int64_t(e) % s.Q, p = (int64_t(e) / s.Q) % s.P, h = flat[e] / s.W, w = flat[e] % s.W;
    out[e] = uint8_t((h - p * s.kh) * s.kw + (w - q * s.kw));
  }
  return out;
}
}  // namespace

TEST_CASE("emu batch_norm_relu_pool: the fused pass matches batch_norm_relu then max_pool2d on the CPU") {
  struct Case {
    int64_t N, C, H, W, kh, kw;
  };
  for (FType t : all_ftypes())
    for (bool training : {true, false})
      for (const Case c : {Case{2, 3, 6, 8, 2, 2}, Case{3, 2, 7, 5, 2, 2}, Case{2, 2, 9, 7, 3, 3},
                           Case{2, 3, 6, 9, 2, 3}, Case{13, 3, 40, 41, 2, 2}, Case{13, 3, 41, 40, 2, 2}}) {
        // (odd sizes; chunks in the last two; 2x2 windows on rows of even length take the pairs kernel)
        INFO(std::string(ftype_name(t)) << (training ? " train " : " eval ") << c.N << "x" << c.C << "x" << c.H << "x"
                                        << c.W << " window " << c.kh << "x" << c.kw);
        const int64_t HW = c.H * c.W;
        const cpu::Pool2dShape ps{c.N * c.C, c.H, c.W, c.kh, c.kw, c.kh, c.kw, 0, 0, c.H / c.kh, c.W / c.kw};
        const cuda::BnPoolShape bs{c.N, c.C, c.H, c.W, c.kh, c.kw};
        const size_t n = size_t(c.N * c.C * HW), m = size_t(c.N * c.C * ps.P * ps.Q), C = size_t(c.C);
        auto x = round_to(t, random_floats(n, 71, -3.f, 5.f));
        x[1] = x[0];  // a tie inside the first window
        if (!training) x[size_t(HW) + 1] = NAN;  // a NaN in the second plane's first window (in training it
                                                 // would make the whole channel NaN)
        const auto dy = round_to(t, random_floats(m, 72));
        const auto gamma = random_floats(C, 73, -1.5f, 1.5f), beta = random_floats(C, 74);  // negative gammas too
        TypedBuf gx(t, x), gdy(t, dy), y1(t, m), xmax(t, m);
        Guarded<float> gg(gamma), gbt(beta);
        Guarded<uint8_t> win1{m}, ws{cuda::batch_norm_workspace_bytes(c.N, c.C, HW)};
        std::vector<float> mean(C), invstd(C);
        if (training) {
          Guarded<float> m1{C}, s1{C}, v1{C};
          std::vector<float> yfull(n), m2(C), s2(C), v2(C);
          cuda::batch_norm_relu_pool_forward_train(t, bs, gx.data(), gg.data(), gbt.data(), 1e-5, y1.data(),
                                                   win1.data(), m1.data(), s1.data(), v1.data(), cuda::BnRunning{},
                                                   ws.data(), nullptr, xmax.data());
          cpu::batch_norm_forward_train(c.N, c.C, HW, x.data(), gamma.data(), beta.data(), 1e-5, true, yfull.data(),
                                        m2.data(), s2.data(), v2.data());
          check_near(m1.vec(), m2, 1e-6, 1e-6, "save_mean");
          check_near(s1.vec(), s2, 1e-6, 1e-5, "save_invstd");
          check_near(v1.vec(), v2, 1e-6, 1e-5, "unbiased variance");
          mean = m1.vec();  // the reference below normalises with the kernel's own statistics
          invstd = s1.vec();
          CHECK((m1.guards_intact() && s1.guards_intact() && v1.guards_intact()));
        } else {
          const auto rv = random_floats(C, 75, 0.2f, 2.f);
          mean = random_floats(C, 76);
          cpu::batch_norm_invstd(c.C, rv.data(), 1e-5, invstd.data());
          Guarded<float> grm(mean), gis(invstd);
          cuda::batch_norm_relu_pool_forward_eval(t, bs, gx.data(), gg.data(), gbt.data(), grm.data(), gis.data(),
                                                  y1.data(), win1.data(), ws.data(), nullptr, xmax.data());
        }
        // The reference: batch_norm_relu with the same statistics, stored in the type, then max_pool2d.
        std::vector<float> yfull(n), y2(m);
        std::vector<int32_t> idx2(m);
        cpu::batch_norm_forward_eval(c.N, c.C, HW, x.data(), gamma.data(), beta.data(), mean.data(), invstd.data(),
                                     true, yfull.data());
        yfull = round_to(t, yfull);
        cpu::max_pool2d_forward(ps, yfull.data(), y2.data(), idx2.data());
        check_bitwise(y1.values(), y2, "pooled output");
        CHECK(win1.vec() == window_positions(ps, idx2));
        std::vector<float> at_max(m);  // x at each window's maximum, kept by the forward for backward
        for (size_t i = 0; i < m; ++i) at_max[i] = x[(i / size_t(ps.P * ps.Q)) * size_t(HW) + size_t(idx2[i])];
        check_bitwise(xmax.values(), at_max, "x at the maxima");
        // Backward from the reference's windows: max_pool2d's backward, then batch_norm_relu's.
        Guarded<float> gm(mean), gs(invstd);
        Guarded<uint8_t> gwin(window_positions(ps, idx2));
        for (bool with_dx : {true, false}) {
          TypedBuf dx1(t, n);
          Guarded<float> dg1{C}, db1{C};
          std::vector<float> dfull(n), dx2(n), dg2(C), db2(C);
          cuda::batch_norm_relu_pool_backward(t, bs, gdy.data(), gwin.data(), gx.data(), gg.data(), gbt.data(),
                                              gm.data(), gs.data(), training, with_dx ? dx1.data() : nullptr,
                                              dg1.data(), db1.data(), ws.data(), nullptr);
          cpu::max_pool2d_backward(ps, dy.data(), idx2.data(), dfull.data());
          cpu::batch_norm_backward(c.N, c.C, HW, dfull.data(), x.data(), gamma.data(), beta.data(), mean.data(),
                                   invstd.data(), training, true, with_dx ? dx2.data() : nullptr, dg2.data(),
                                   db2.data());
          check_near(dg1.vec(), dg2, 1e-5, 1e-4, "dgamma");
          check_near(db1.vec(), db2, 1e-5, 1e-4, "dbeta");
          if (with_dx) check_near(dx1.values(), round_to(t, dx2), atol_for(t), rtol_for(t), "dx");
          // Reading x at the maxima from the forward's copy instead of gathering it: the same bits.
          TypedBuf dx3(t, n);
          Guarded<float> dg3{C}, db3{C};
          cuda::batch_norm_relu_pool_backward(t, bs, gdy.data(), gwin.data(), gx.data(), gg.data(), gbt.data(),
                                              gm.data(), gs.data(), training, with_dx ? dx3.data() : nullptr,
                                              dg3.data(), db3.data(), ws.data(), nullptr, xmax.data());
          check_bitwise(dg3.vec(), dg1.vec(), "dgamma from x_at_max");
          check_bitwise(db3.vec(), db1.vec(), "dbeta from x_at_max");
          if (with_dx) check_bitwise(dx3.values(), dx1.values(), "dx from x_at_max");
          CHECK((dx1.guards_intact() && dg1.guards_intact() && db1.guards_intact() && ws.guards_intact()));
        }
        CHECK((y1.guards_intact() && win1.guards_intact() && xmax.guards_intact()));
      }
}

TEST_CASE("emu convolution bias: the per-channel add and the per-channel sum (its gradient) match the CPU") {
  struct Case {
    int64_t N, C, HW;
  };
  for (FType t : all_ftypes())
    for (const Case c : {Case{3, 5, 7}, Case{1, 1, 1}, Case{17, 3, 900}}) {
      INFO(std::string(ftype_name(t)) << " " << c.N << "x" << c.C << "x" << c.HW);
      const size_t n = size_t(c.N * c.C * c.HW);
      const auto y0 = round_to(t, random_floats(n, 61)), b = round_to(t, random_floats(size_t(c.C), 62));
      TypedBuf gy(t, y0), gb(t, b);
      cuda::add_channel_bias(t, c.N, c.C, c.HW, gb.data(), gy.data(), nullptr);
      std::vector<float> want(n);
      for (size_t i = 0; i < n; ++i) want[i] = y0[i] + b[(i / size_t(c.HW)) % size_t(c.C)];
      check_bitwise(gy.values(), round_to(t, want), "bias add");
      // The sum per channel, against the CPU convolution's bias gradient.
      Conv2dShape s{c.N, 1, 1, 1, c.C, 1, 1, 1, 1, 0, 0, 1, c.HW};
      TypedBuf gx(t, y0), out(t, size_t(c.C));
      Guarded<uint8_t> ws{cuda::batch_norm_workspace_bytes(c.N, c.C, c.HW)};
      cuda::channel_sum(t, c.N, c.C, c.HW, gx.data(), out.data(), ws.data(), nullptr);
      std::vector<float> db(size_t(c.C));
      cpu::conv2d_backward_bias(s, y0.data(), db.data());
      check_near(out.values(), round_to(t, db), t == FType::F32 ? 1e-4 : 0.05, t == FType::F32 ? 1e-5 : 8e-3,
                 "channel sum");
      CHECK((gy.guards_intact() && out.guards_intact() && ws.guards_intact()));
    }
}
