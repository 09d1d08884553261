// The CUDA elementwise, cast and collective-helper kernels, run by the CPU emulator, against the CPU
// kernels: float32 bit for bit, and float16/bfloat16 equal to the CPU's float32 result of the same
// (rounded) inputs rounded once; odd sizes that leave partial blocks and packs, aligned and unaligned
// starts (the 8-element vector path and the element path), guard zones checked after every launch.
#include "kernels/comm.h"
#include "kernels/elementwise.h"
#include "tests/emu/emu_util.h"

using namespace volt;
using namespace volt::emu_test;

namespace {

const std::vector<int64_t> kSizes = {1, 3, 8, 255, 257, 1000};

// The CPU kernel's result on the rounded inputs, rounded to t: what the t kernel must write.
std::vector<float> want_rounded(FType t, std::vector<float> f32_result) { return round_to(t, std::move(f32_result)); }

}  // namespace

TEST_CASE("emu elementwise: binary ops, scale and axpy match the CPU in every storage type") {
  for (FType t : all_ftypes())
    for (int64_t n : kSizes)
      for (size_t off : {size_t(0), size_t(1)}) {  // off 1: the unaligned (element-by-element) path
        INFO(std::string(ftype_name(t)) << " n=" << n << " offset=" << off);
        const size_t m = size_t(n) + off;
        const auto a = round_to(t, random_floats(m, 1)), b = round_to(t, random_floats(m, 2));
        for (cpu::BinaryOp op : {cpu::BinaryOp::Add, cpu::BinaryOp::Sub, cpu::BinaryOp::Mul}) {
          TypedBuf ga(t, a), gb(t, b), got(t, m);
          std::vector<float> want(m);
          cuda::binary_same(t, op, n, ga.ptr(off), gb.ptr(off), got.ptr(off), nullptr);
          cpu::binary_same(op, n, a.data() + off, b.data() + off, want.data() + off);
          check_bitwise(got.values(), want_rounded(t, want), "binary_same");
          CHECK(got.guards_intact());
        }
        TypedBuf gx(t, a), got(t, m);
        std::vector<float> want(m);
        cuda::scale(t, n, gx.ptr(off), 0.37f, -1.25f, got.ptr(off), nullptr);
        cpu::scale(n, a.data() + off, 0.37f, -1.25f, want.data() + off);
        check_bitwise(got.values(), want_rounded(t, want), "scale");
        TypedBuf y1(t, b);
        std::vector<float> y2 = b;
        cuda::axpy(t, n, -0.6f, gx.ptr(off), y1.ptr(off), nullptr);
        cpu::axpy(n, -0.6f, a.data() + off, y2.data() + off);
        check_bitwise(y1.values(), want_rounded(t, y2), "axpy");
        CHECK((got.guards_intact() && y1.guards_intact()));
      }
}

TEST_CASE("emu elementwise: broadcasting over awkward shapes matches the CPU") {
  // out [3, 5, 7] from a [3, 1, 7] and b [1, 5, 1] (strides 0 on broadcast dims).
  const int64_t shape[3] = {3, 5, 7};
  const int64_t as[3] = {7, 0, 1}, bs[3] = {0, 1, 0};
  for (FType t : all_ftypes()) {
    const auto a = round_to(t, random_floats(21, 3)), b = round_to(t, random_floats(5, 4));
    for (cpu::BinaryOp op : {cpu::BinaryOp::Add, cpu::BinaryOp::Sub, cpu::BinaryOp::Mul}) {
      TypedBuf ga(t, a), gb(t, b), got(t, 105);
      std::vector<float> want(105);
      cuda::binary_broadcast(t, op, 3, shape, ga.data(), as, gb.data(), bs, got.data(), nullptr);
      cpu::binary_broadcast(op, 3, shape, a.data(), as, b.data(), bs, want.data());
      check_bitwise(got.values(), want_rounded(t, want), std::string("binary_broadcast ") + ftype_name(t));
      CHECK(got.guards_intact());
    }
  }
}

TEST_CASE("emu elementwise: relu forward and backward, NaN propagating, match the CPU") {
  for (FType t : all_ftypes())
    for (size_t off : {size_t(0), size_t(1)}) {
      INFO(std::string(ftype_name(t)) << " offset=" << off);
      auto x = round_to(t, random_floats(1002, 5));
      x[7] = NAN;
      x[8] = 0.f;
      x[9] = -0.f;
      const auto dy = round_to(t, random_floats(1002, 6));
      const int64_t n = 1001;
      TypedBuf gx(t, x), gdy(t, dy), y1(t, 1002), d1(t, 1002);
      std::vector<float> y2(1002), d2(1002);
      cuda::relu_forward(t, n, gx.ptr(off), y1.ptr(off), nullptr);
      cpu::relu_forward(n, x.data() + off, y2.data() + off);
      check_bitwise(y1.values(), want_rounded(t, y2), "relu forward");
      CHECK(std::isnan(y1.values()[7]));
      cuda::relu_backward(t, n, gdy.ptr(off), gx.ptr(off), d1.ptr(off), nullptr);
      cpu::relu_backward(n, dy.data() + off, x.data() + off, d2.data() + off);
      check_bitwise(d1.values(), want_rounded(t, d2), "relu backward");
      CHECK((y1.guards_intact() && d1.guards_intact()));
    }
}

TEST_CASE("emu elementwise: casts between every pair of storage types round to nearest even") {
  auto v = random_floats(1003, 10, -70000.f, 70000.f);
  const auto small = random_floats(500, 11, -1e-6f, 1e-6f);
  v.insert(v.end(), small.begin(), small.end());
  v.insert(v.end(), {NAN, INFINITY, -INFINITY, 0.f, -0.f, 65504.f, 65520.f});
  for (FType from : all_ftypes())
    for (FType to : all_ftypes())
      for (size_t off : {size_t(0), size_t(1)}) {
        INFO(std::string(ftype_name(from)) << " -> " << ftype_name(to) << " offset " << off);
        const auto x = round_to(from, v);
        TypedBuf gx(from, x), gy(to, x.size());
        cuda::cast(from, to, int64_t(x.size() - off), gx.ptr(off), gy.ptr(off), nullptr);
        auto want = round_to(to, x);
        if (off) want[0] = 0.f;
        check_bitwise(gy.values(), want, "cast");
        CHECK(gy.guards_intact());
      }
}

TEST_CASE("emu elementwise: cast_multi casts many tensors of any sizes in one launch, as cast() does each") {
  // 50 tensors (more than one launch holds), sizes 0..~1000, unaligned starts among them.
  for (FType from : all_ftypes())
    for (FType to : all_ftypes()) {
      INFO(ftype_name(from) << " -> " << ftype_name(to));
      std::vector<TypedBuf> xs, ys;
      std::vector<std::vector<float>> want;
      xs.reserve(50);
      ys.reserve(50);
      for (int j = 0; j < 50; ++j) {
        const size_t n = size_t(j * 37 % 1001);
        const auto x = round_to(from, random_floats(n + 1, 100 + uint64_t(j), -70000.f, 70000.f));
        xs.emplace_back(from, x);
        ys.emplace_back(to, x.size());
        auto w = round_to(to, x);
        w[0] = 0.f;  // element 0 is left out: the tensor starts at element 1 (unaligned)
        want.push_back(std::move(w));
      }
      std::vector<cuda::CastTensor> list;
      for (int j = 0; j < 50; ++j)
        list.push_back({xs[size_t(j)].ptr(1), ys[size_t(j)].ptr(1), int64_t(want[size_t(j)].size()) - 1});
      cuda::cast_multi(from, to, list.data(), int64_t(list.size()), nullptr);
      for (int j = 0; j < 50; ++j) {
        check_bitwise(ys[size_t(j)].values(), want[size_t(j)], "cast_multi");
        CHECK(ys[size_t(j)].guards_intact());
      }
    }
}

TEST_CASE("emu elementwise: dropout masks are the CPU's Philox masks for every size, offset and type (+ReLU)") {
  for (FType t : all_ftypes())
    for (bool relu : {false, true})
      for (int64_t n : {int64_t(1), int64_t(5), int64_t(1023), int64_t(4099)}) {
        for (uint64_t offset : {uint64_t(0), uint64_t(13), uint64_t(1) << 33}) {
          INFO(std::string(ftype_name(t)) << (relu ? " relu" : "") << " n=" << n << " offset=" << offset);
          auto x = round_to(t, random_floats(size_t(n), 7));
          if (n > 3) x[3] = NAN;
          const auto dy = round_to(t, random_floats(size_t(n), 8));
          TypedBuf gx(t, x), gdy(t, dy), y1(t, size_t(n)), d1(t, size_t(n));
          std::vector<float> y2(static_cast<size_t>(n)), d2(static_cast<size_t>(n));
          Guarded<uint8_t> k1{size_t(n)}, k2{size_t(n)};
          const uint64_t seed_offset[2] = {1234, offset};
          cuda::dropout_forward(t, n, gx.data(), 0.3f, 7, seed_offset, k1.data(), y1.data(), nullptr, relu);
          cpu::dropout_forward(n, x.data(), 0.3f, 1234, 7, offset, k2.data(), y2.data(), relu);
          CHECK(k1.vec() == k2.vec());
          if (relu) {  // the fused pass is relu_forward then dropout, and its mask is both masks
            std::vector<float> r(static_cast<size_t>(n)), y3(static_cast<size_t>(n));
            std::vector<uint8_t> k3(static_cast<size_t>(n));
            cpu::relu_forward(n, x.data(), r.data());
            cpu::dropout_forward(n, r.data(), 0.3f, 1234, 7, offset, k3.data(), y3.data());
            check_bitwise(y2, y3, "relu then dropout");
            for (size_t i = 0; i < size_t(n); ++i) REQUIRE(bool(k2[i]) == (k3[i] && x[i] > 0.f));
          }
          check_bitwise(y1.values(), want_rounded(t, y2), "dropout forward");
          cuda::dropout_backward(t, n, gdy.data(), k1.data(), 0.3f, d1.data(), nullptr);
          cpu::dropout_backward(n, dy.data(), k2.data(), 0.3f, d2.data());
          check_bitwise(d1.values(), want_rounded(t, d2), "dropout backward");
          CHECK((k1.guards_intact() && y1.guards_intact() && d1.guards_intact()));
        }
      }
}

TEST_CASE("emu elementwise: fill and the one-element int64 add") {
  for (FType t : all_ftypes()) {
    TypedBuf f(t, 777);
    cuda::fill(t, 777, 2.1f, f.data(), nullptr);
    for (float v : f.values()) REQUIRE(v == round_to(t, 2.1f));
    CHECK(f.guards_intact());
  }
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
