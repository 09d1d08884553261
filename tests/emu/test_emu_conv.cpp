// Volt's own tensor-core convolution kernels (kernels/cuda/conv_igemm.cu: forward, and the weight
// gradient with the bias gradient in the same pass), run by the CPU emulator
// (with its warp matrix operations) against the CPU convolution, in float16 and bfloat16: partial
// pixel and channel tiles, padding, strides, no bias, and the largest reduction it takes.
#include "engine/error.h"
#include "kernels/batch_norm.h"
#include "kernels/conv2d.h"
#include "tests/emu/emu_util.h"

using namespace volt;
using namespace volt::emu_test;

namespace {

Conv2dShape shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S, int64_t sh,
                  int64_t sw, int64_t ph, int64_t pw) {
  Conv2dShape s{N, C, H, W, K, R, S, sh, sw, ph, pw, 0, 0};
  s.P = (H + 2 * ph - R) / sh + 1;
  s.Q = (W + 2 * pw - S) / sw + 1;
  return s;
}

// A named convolution shape with the one more parameter a test varies.
template <class Arg>
struct ConvCase {
  const char* name;
  Conv2dShape s;
  Arg arg;
};

}  // namespace

TEST_CASE("emu conv2d_forward_own: the tensor-core implicit GEMM matches the CPU convolution") {
  using Case = ConvCase<bool>;  // arg: with a bias
  const Case cases[] = {
      {"seed CNN first layer, 3 images of 9x11 (a partial pixel tile)", shape(3, 3, 9, 11, 64, 5, 5, 1, 1, 2, 2), true},
      {"one grey channel 5x5, stride 2, pad 1, 6 filters (MNIST-like)", shape(2, 1, 13, 12, 6, 5, 5, 2, 2, 1, 1),
       false},
      {"3x3, stride 2x1, pad 0x1, 70 filters (two channel tiles)", shape(2, 2, 7, 9, 70, 3, 3, 2, 1, 0, 1), true},
      {"reduction 96 (6 channels, 4x4), 16 filters", shape(1, 6, 6, 7, 16, 4, 4, 1, 1, 0, 0), true},
      {"the kernel covers the input: one pixel per image", shape(5, 2, 3, 3, 5, 3, 3, 1, 1, 0, 0), true},
      {"1x1, 4 channels, 130 pixels per image", shape(1, 4, 10, 13, 3, 1, 1, 1, 1, 0, 0), false},
  };
  for (FType t : {FType::F16, FType::BF16})
    for (const Case& c : cases) {
      INFO(ftype_name(t) << ": " << c.name);
      const Conv2dShape& s = c.s;
      REQUIRE(cuda::conv2d_forward_own_supported(t, s));
      const size_t nx = size_t(s.N * s.C * s.H * s.W), nw = size_t(s.K * s.C * s.R * s.S), nk = size_t(s.K);
      const size_t ny = size_t(s.N * s.K * s.P * s.Q);
      const auto x = round_to(t, random_floats(nx, 61, -2.f, 2.f)), w = round_to(t, random_floats(nw, 62, -0.5f, 0.5f));
      const auto b = round_to(t, random_floats(nk, 63, -1.f, 1.f));
      TypedBuf gx(t, x), gw(t, w), gb(t, b), gy(t, std::vector<float>(ny, 1234.f));
      cuda::conv2d_forward_own(t, s, gx.data(), gw.data(), c.arg ? gb.data() : nullptr, gy.data(), nullptr);
      std::vector<float> want(ny);
      cpu::conv2d_forward(s, x.data(), w.data(), c.arg ? b.data() : nullptr, want.data());
      // One rounding to the 16-bit type apart (the sums' order differs), absolute near zero.
      const double atol = t == FType::F16 ? 2e-3 : 2e-2, rtol = t == FType::F16 ? 1e-3 : 8e-3;
      check_near(gy.values(), round_to(t, want), atol, rtol, "y");
      CHECK(gx.guards_intact());
      CHECK(gy.guards_intact());
    }
}

TEST_CASE("emu conv2d_backward_weight_own: weight and bias gradients in one pass match the CPU") {
  using Case = ConvCase<int>;  // arg: the most blocks (0: the default, 256)
  const Case cases[] = {
      {"seed CNN first layer, 2 images of 13x11, 3 tiles in one block", shape(2, 3, 13, 11, 64, 5, 5, 1, 1, 2, 2), 1},
      {"one grey channel, stride 2, pad 1, 6 filters", shape(2, 1, 13, 12, 6, 5, 5, 2, 2, 1, 1), 0},
      {"3x3, stride 2x1, pad 0x1, 70 filters (two channel tiles), 3 tiles in 2 blocks",
       shape(3, 2, 21, 9, 70, 3, 3, 2, 1, 0, 1), 2},
      {"reduction 95 (5 channels, 19x1): the bias column is the 96th", shape(1, 5, 21, 6, 16, 19, 1, 1, 1, 0, 0), 0},
      {"1x1, 4 channels, 130 pixels", shape(1, 4, 10, 13, 3, 1, 1, 1, 1, 0, 0), 0},
      {"3x3, 22 tiles in 11 blocks: the finishing sum's 8 parts of 1 or 2 blocks",
       shape(3, 3, 30, 31, 8, 3, 3, 1, 1, 1, 1), 11},
      {"3x3, 22 tiles in 5 blocks: parts with no block", shape(3, 3, 30, 31, 8, 3, 3, 1, 1, 1, 1), 5},
  };
  for (FType t : {FType::F16, FType::BF16})
    for (const Case& c : cases)
      for (bool bias : {true, false})
      for (int per_sm : {3, 4}) {  // the kernel's two builds (80 and 64 registers)
        INFO(ftype_name(t) << ": " << c.name << (bias ? ", with the bias gradient" : ", weight gradient only")
                           << ", the " << per_sm << "-blocks-an-SM build");
        const Conv2dShape& s = c.s;
        REQUIRE(cuda::conv2d_backward_weight_own_supported(t, s));
        const size_t nx = size_t(s.N * s.C * s.H * s.W), nw = size_t(s.K * s.C * s.R * s.S), nk = size_t(s.K);
        const size_t ny = size_t(s.N * s.K * s.P * s.Q);
        const auto x = round_to(t, random_floats(nx, 71, -2.f, 2.f)), dy = round_to(t, random_floats(ny, 72));
        TypedBuf gx(t, x), gdy(t, dy), gdw(t, std::vector<float>(nw, 99.f)), gdb(t, std::vector<float>(nk, 99.f));
        Guarded<float> ws(cuda::conv2d_backward_weight_own_workspace(s, c.arg) / sizeof(float), -1.f);
        cuda::conv2d_backward_weight_own(t, s, gdy.data(), gx.data(), gdw.data(), bias ? gdb.data() : nullptr,
                                         ws.data(), nullptr, c.arg, per_sm);
        std::vector<float> dw(nw), db(nk);
        cpu::conv2d_backward_weight(s, dy.data(), x.data(), dw.data());
        cpu::conv2d_backward_bias(s, dy.data(), db.data());
        const double atol = t == FType::F16 ? 4e-3 : 4e-2, rtol = t == FType::F16 ? 1e-3 : 8e-3;
        check_near(gdw.values(), round_to(t, dw), atol, rtol, "dw");
        if (bias) check_near(gdb.values(), round_to(t, db), atol, rtol, "db");
        else CHECK(gdb.values() == std::vector<float>(nk, 99.f));  // untouched
        CHECK(gdw.guards_intact());
        CHECK(gdb.guards_intact());
        CHECK(ws.guards_intact());
      }
}

TEST_CASE("emu conv2d_backward_weight_own_grid: the GPU's slots filled once, the 4-block build where it saves rounds") {
  const auto first_layer = [](int64_t n) { return shape(n, 3, 32, 32, 64, 5, 5, 1, 1, 0, 0); };  // 28x28 outputs
  // Batch 128: 784 tiles of 128 pixels; 132 SMs hold 396 blocks of the 3-block build: 2 rounds of 392
  // (the 4-block build's 528 would take 2 rounds too).
  cuda::ConvWgradGrid g = cuda::conv2d_backward_weight_own_grid(first_layer(128), 132);
  CHECK(g.per_sm == 3);
  CHECK(g.blocks == 392);
  // Batch 2048: 12,544 tiles, 32 rounds of 396 or 24 of 528: the 4-block build, 523 blocks of 24 tiles or 23.
  g = cuda::conv2d_backward_weight_own_grid(first_layer(2048), 132);
  CHECK(g.per_sm == 4);
  CHECK(g.blocks == 523);
  // Fewer tiles than slots: one block a tile.
  g = cuda::conv2d_backward_weight_own_grid(first_layer(2), 132);
  CHECK(g.blocks == 13);
  // No build for 2 blocks an SM.
  std::vector<uint16_t> buf(64);
  CHECK_THROWS_WITH_AS(cuda::conv2d_backward_weight_own(FType::F16, first_layer(2), buf.data(), buf.data(), buf.data(),
                                                        nullptr, buf.data(), nullptr, 0, 2),
                       doctest::Contains("no build for 2 blocks an SM"), Error);
}

TEST_CASE("emu conv2d_forward_own: which shapes it takes, and a clear error for the others") {
  const Conv2dShape first = shape(128, 3, 32, 32, 64, 5, 5, 1, 1, 0, 0);
  const Conv2dShape second = shape(128, 64, 14, 14, 32, 5, 5, 1, 1, 0, 0);
  CHECK(cuda::conv2d_forward_own_supported(FType::F16, first));
  CHECK(cuda::conv2d_forward_own_supported(FType::BF16, first));
  CHECK_FALSE(cuda::conv2d_forward_own_supported(FType::F32, first));  // float32 stays on cuDNN's FMA math (no TF32)
  CHECK_FALSE(cuda::conv2d_forward_own_supported(FType::F16, second));  // reduction 1600
  CHECK_FALSE(cuda::conv2d_forward_own_supported(FType::F16, shape(1, 97, 3, 3, 4, 1, 1, 1, 1, 0, 0)));
  CHECK(cuda::conv2d_backward_weight_own_supported(FType::F16, first));
  CHECK(cuda::conv2d_forward_own_supported(FType::F16, shape(1, 96, 3, 3, 4, 1, 1, 1, 1, 0, 0)));
  CHECK_FALSE(cuda::conv2d_backward_weight_own_supported(FType::F16, shape(1, 96, 3, 3, 4, 1, 1, 1, 1, 0, 0)));
  std::vector<uint16_t> buf(64 * 97 * 9);
  try {
    cuda::conv2d_forward_own(FType::F16, second, buf.data(), buf.data(), nullptr, buf.data(), nullptr);
    FAIL("an unsupported shape was accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("reduction 1600") != std::string::npos);
  }
}

TEST_CASE("emu conv2d_backward_weight_own_from_pool: batch norm's dx stored, then the weight gradient: same bits") {
  using Case = ConvCase<int64_t>;  // arg: the pool window's side
  const Case cases[] = {
      {"seed CNN first layer shape, 12x11 output (the last column in no window), 2x2 pool",
       shape(2, 3, 12, 11, 8, 5, 5, 1, 1, 2, 2), 2},
      {"12 filters, 3x3 pool, stride 2 (a partial pixel tile)", shape(2, 2, 17, 15, 12, 3, 3, 2, 2, 1, 1), 3},
      // Blocks of a second channel group read its batch-norm constants from shared memory at offset 64.
      {"70 filters (two channel groups, the second partial), 2x2 pool", shape(2, 3, 13, 11, 70, 5, 5, 1, 1, 2, 2), 2},
  };
  for (FType t : {FType::F16, FType::BF16})
    for (const Case& c : cases)
      for (int max_blocks : {0, 1})  // 1: one block a channel group walks every pixel tile with its staged constants
        for (bool training : {true, false}) {
          INFO(ftype_name(t) << ": " << c.name << (training ? ", training" : ", eval") << ", max_blocks "
                             << max_blocks);
          const Conv2dShape& s = c.s;
          const size_t nx = size_t(s.N * s.C * s.H * s.W), ny = size_t(s.N * s.K * s.P * s.Q), K = size_t(s.K);
          const cuda::BnPoolShape ps{s.N, s.K, s.P, s.Q, c.arg, c.arg};
          const size_t npool = size_t(s.N * s.K * (s.P / c.arg) * (s.Q / c.arg));
          const auto x = round_to(t, random_floats(nx, 81, -2.f, 2.f));
          const auto y = round_to(t, random_floats(ny, 82, -1.f, 3.f));
          const auto gamma = random_floats(K, 83, -1.5f, 1.5f), beta = random_floats(K, 84);
          const auto dyp = round_to(t, random_floats(npool, 85));
          TypedBuf gx(t, x), gy(t, y), gdy(t, dyp), pooled(t, npool), dx(t, ny);
          Guarded<float> gg(gamma), gb(beta), mean(K), invstd(K), var(K), dgamma(K), dbeta(K);
          Guarded<uint8_t> window(npool);
          Guarded<uint8_t> bn_ws(cuda::batch_norm_workspace_bytes(s.N, s.K, s.P * s.Q));
          cuda::batch_norm_relu_pool_forward_train(t, ps, gy.data(), gg.data(), gb.data(), 1e-5, pooled.data(),
                                                   window.data(), mean.data(), invstd.data(), var.data(),
                                                   cuda::BnRunning{}, bn_ws.data(), nullptr);
          cuda::batch_norm_relu_pool_backward(t, ps, gdy.data(), window.data(), gy.data(), gg.data(), gb.data(),
                                              mean.data(), invstd.data(), training, dx.data(), dgamma.data(),
                                              dbeta.data(), bn_ws.data(), nullptr);
          const size_t ws_floats = cuda::conv2d_backward_weight_own_workspace(s, max_blocks) / sizeof(float);
          const size_t nw = size_t(s.K * s.C * s.R * s.S);
          TypedBuf dw1(t, nw), db1(t, K), dw2(t, nw), db2(t, K);
          Guarded<float> ws1(ws_floats), ws2(ws_floats);
          cuda::conv2d_backward_weight_own(t, s, dx.data(), gx.data(), dw1.data(), db1.data(), ws1.data(), nullptr,
                                           max_blocks);
          cuda::BnPoolGradSource src{gdy.data(), window.data(), gy.data(), mean.data(),
                                     static_cast<const uint8_t*>(bn_ws.data()) +
                                         cuda::batch_norm_coef_offset(s.N, s.K, s.P * s.Q),
                                     training, c.arg, c.arg};
          cuda::conv2d_backward_weight_own_from_pool(t, s, src, gx.data(), dw2.data(), db2.data(), ws2.data(), nullptr,
                                                     max_blocks);
          check_bitwise(dw2.values(), dw1.values(), "dw");
          check_bitwise(db2.values(), db1.values(), "db");
          CHECK(dw2.guards_intact());
          CHECK(db2.guards_intact());
        }
}

TEST_CASE("emu conv2d_forward_own with sums: batch norm's sums of y and y^2 per channel and 128 pixels") {
  for (FType t : {FType::F16, FType::BF16})
    for (bool bias : {true, false}) {
      INFO(ftype_name(t) << (bias ? " with bias" : " no bias"));
      const Conv2dShape s = shape(2, 3, 13, 11, 70, 5, 5, 1, 1, 2, 2);  // 286 pixels: 3 chunks, 2 channel tiles
      const size_t nx = size_t(s.N * s.C * s.H * s.W), nw = size_t(s.K * s.C * s.R * s.S), K = size_t(s.K);
      const size_t ny = size_t(s.N * s.K * s.P * s.Q), chunks = size_t(cuda::conv2d_forward_own_sum_chunks(s));
      REQUIRE(chunks == 3);
      const auto x = round_to(t, random_floats(nx, 91, -2.f, 2.f)), w = round_to(t, random_floats(nw, 92, -.5f, .5f));
      const auto b = round_to(t, random_floats(K, 93));
      TypedBuf gx(t, x), gw(t, w), gb(t, b), gy(t, ny), gy2(t, ny);
      Guarded<double> sums(K * chunks * 2, -1.0);
      cuda::conv2d_forward_own(t, s, gx.data(), gw.data(), bias ? gb.data() : nullptr, gy.data(), nullptr,
                               sums.data());
      cuda::conv2d_forward_own(t, s, gx.data(), gw.data(), bias ? gb.data() : nullptr, gy2.data(), nullptr);
      const auto y = gy.values();
      check_bitwise(y, gy2.values(), "y with and without the sums");
      // The sums of the stored values, per channel and block of 128 pixels (m = n * P * Q + pixel).
      const int64_t PQ = s.P * s.Q;
      std::vector<double> want(K * chunks * 2, 0.0), got(sums.data(), sums.data() + K * chunks * 2);
      for (int64_t k = 0; k < s.K; ++k)
        for (int64_t m = 0; m < s.N * PQ; ++m) {
          const double v = y[size_t(((m / PQ) * s.K + k) * PQ + m % PQ)];
          want[size_t((k * int64_t(chunks) + m / 128) * 2)] += v;
          want[size_t((k * int64_t(chunks) + m / 128) * 2 + 1)] += v * v;
        }
      double worst = 0;
      for (size_t i = 0; i < want.size(); ++i)
        worst = std::max(worst, std::fabs(got[i] - want[i]) / (1e-9 + std::fabs(want[i])));
      CHECK(worst < 1e-12);
      CHECK(sums.guards_intact());
    }
}

TEST_CASE("emu batch_norm_relu_pool_forward_train_from_sums: the statistics of the sums, as from x") {
  for (FType t : {FType::F16, FType::BF16}) {
    INFO(ftype_name(t));
    const int64_t N = 3, C = 5, H = 9, W = 8, chunks = 4;
    const cuda::BnPoolShape ps{N, C, H, W, 2, 2};
    const size_t n = size_t(N * C * H * W), np = size_t(N * C * (H / 2) * (W / 2));
    const auto x = round_to(t, random_floats(n, 94, -1.f, 3.f));
    const auto gamma = random_floats(size_t(C), 95, 0.5f, 1.5f), beta = random_floats(size_t(C), 96);
    // Sums of x and x^2 per channel, split into `chunks` uneven runs of its N*H*W values.
    std::vector<double> sums(size_t(C * chunks * 2), 0.0);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t m = 0; m < N * H * W; ++m) {
        const double v = x[size_t(((m / (H * W)) * C + c) * H * W + m % (H * W))];
        const int64_t k = (m * 7) % chunks;  // any split: the sums are added whole
        sums[size_t((c * chunks + k) * 2)] += v;
        sums[size_t((c * chunks + k) * 2 + 1)] += v * v;
      }
    TypedBuf gx(t, x), y1(t, np), y2(t, np);
    Guarded<float> gg(gamma), gb(beta), m1{size_t(C)}, s1{size_t(C)}, v1{size_t(C)}, m2{size_t(C)}, s2{size_t(C)},
        v2{size_t(C)}, rm1(size_t(C), 0.1f), rv1(size_t(C), 0.9f), rm2(size_t(C), 0.1f), rv2(size_t(C), 0.9f);
    Guarded<uint8_t> w1(np), w2(np), ws1(cuda::batch_norm_workspace_bytes(N, C, H * W)),
        ws2(cuda::batch_norm_workspace_bytes(N, C, H * W));
    Guarded<double> gs(sums);
    Guarded<int64_t> tr1(1, int64_t(0)), tr2(1, int64_t(0));
    cuda::BnRunning r1{rm1.data(), rv1.data(), 0.1, tr1.data()}, r2{rm2.data(), rv2.data(), 0.1, tr2.data()};
    cuda::batch_norm_relu_pool_forward_train(t, ps, gx.data(), gg.data(), gb.data(), 1e-5, y1.data(), w1.data(),
                                             m1.data(), s1.data(), v1.data(), r1, ws1.data(), nullptr);
    cuda::batch_norm_relu_pool_forward_train_from_sums(t, ps, gx.data(), gs.data(), chunks, gg.data(), gb.data(),
                                                       1e-5, y2.data(), w2.data(), m2.data(), s2.data(), v2.data(), r2,
                                                       ws2.data(), nullptr);
    check_near(m2.vec(), m1.vec(), 1e-7, 1e-6, "save_mean");
    check_near(s2.vec(), s1.vec(), 1e-7, 1e-6, "save_invstd");
    check_near(v2.vec(), v1.vec(), 1e-7, 1e-6, "unbiased variance");
    check_near(rm2.vec(), rm1.vec(), 1e-7, 1e-6, "running_mean");
    check_near(rv2.vec(), rv1.vec(), 1e-7, 1e-6, "running_var");
    CHECK(tr2[0] == 1);
    const double atol = t == FType::F16 ? 4e-3 : 3e-2, rtol = t == FType::F16 ? 2e-3 : 1.6e-2;
    check_near(y2.values(), y1.values(), atol, rtol, "pooled y");
  }
}
