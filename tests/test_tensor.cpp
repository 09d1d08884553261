// Tensor basics: shapes, factories, views, copies, dtype conversions (f16/bf16 bit patterns),
// element access, printing, the caching host allocator, Philox and the Generator, and the
// tensor file format (round trip and every way loading or saving can fail).
#include <doctest/doctest.h>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/allocator.h"
#include "engine/error.h"
#include "engine/random.h"
#include "engine/serialize.h"
#include "engine/tensor.h"
#include "engine/threads.h"
#include "kernels/philox.h"
#include "tests/test_util.h"

using namespace volt;

namespace {

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

using test::contains;
using test::error_of;

// A fresh directory under /tmp, removed (with its files) at scope exit.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/volt_test_tensor_XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    REQUIRE(p != nullptr);
    path = p;
  }
  ~TempDir() {
    for (const std::string& f : files()) {
      const std::string full = path + "/" + f;
      if (::unlink(full.c_str()) != 0) ::rmdir(full.c_str());
    }
    ::rmdir(path.c_str());
  }
  std::set<std::string> files() const {
    std::set<std::string> out;
    if (DIR* d = ::opendir(path.c_str())) {
      while (dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) out.insert(e->d_name);
      ::closedir(d);
    }
    return out;
  }
};

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

std::string read_all(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_all(const std::string& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string raw_bytes(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw_data()), t.nbytes());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
TEST_CASE("shape, numel, dim and size with negative dims") {
  Tensor t = Tensor::zeros({2, 3, 5});
  CHECK(t.defined());
  CHECK(t.dim() == 3);
  CHECK(t.numel() == 30);
  CHECK(t.nbytes() == 120);
  CHECK(t.shape() == Shape{2, 3, 5});
  CHECK(t.size(0) == 2);
  CHECK(t.size(2) == 5);
  CHECK(t.size(-1) == 5);
  CHECK(t.size(-3) == 2);
  CHECK_THROWS_AS(t.size(3), volt::Error);
  CHECK_THROWS_AS(t.size(-4), volt::Error);
  CHECK(t.dtype() == DType::F32);
  CHECK(t.device() == Device::cpu());
  CHECK(shape_str(t.shape()) == "[2, 3, 5]");
  CHECK(shape_str({}) == "[]");
  CHECK(shape_numel({}) == 1);
  CHECK(shape_numel({4, 0, 3}) == 0);

  Tensor s = Tensor::scalar(2.5f);
  CHECK(s.dim() == 0);
  CHECK(s.numel() == 1);
  CHECK(s.item() == 2.5f);

  Tensor e = Tensor::empty({0, 4});
  CHECK(e.numel() == 0);
  CHECK(e.size(1) == 4);

  Tensor undef;
  CHECK_FALSE(undef.defined());
  CHECK_THROWS_AS(undef.shape(), volt::Error);
}

TEST_CASE("factories fill values and check their shapes") {
  Tensor z = Tensor::zeros({3, 4});
  for (float v : z.to_vector()) CHECK(v == 0.f);
  Tensor o = Tensor::ones({2, 2}, DType::F16);
  CHECK(o.dtype() == DType::F16);
  CHECK(o.nbytes() == 8);
  for (float v : o.to_vector()) CHECK(v == 1.f);
  CHECK(o.data<uint16_t>()[0] == 0x3C00);
  Tensor f = Tensor::full({5}, -1.75f);
  for (float v : f.to_vector()) CHECK(v == -1.75f);
  Tensor fi = Tensor::full({3}, 7.f, DType::I64);
  CHECK(fi.data<int64_t>()[2] == 7);
  Tensor fu = Tensor::full({3}, 200.f, DType::U8);
  CHECK(fu.data<uint8_t>()[1] == 200);

  Tensor v = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(v.at({0, 0}) == 1.f);
  CHECK(v.at({1, 2}) == 6.f);
  CHECK(v.at({1, 0}) == 4.f);
  CHECK(v.to_vector() == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK_THROWS_AS(Tensor::from_vector({2, 3}, {1, 2, 3}), volt::Error);

  Tensor l = Tensor::from_labels({3, 0, 9, 1});
  CHECK(l.dtype() == DType::I64);
  CHECK(l.shape() == Shape{4});
  CHECK(l.to_int_vector() == std::vector<int64_t>{3, 0, 9, 1});

  CHECK_THROWS_AS(Tensor::empty({2, -1}), volt::Error);
  CHECK_THROWS_AS(Tensor::zeros({-3}), volt::Error);
  CHECK_THROWS_AS(Tensor::empty({int64_t(1) << 40, int64_t(1) << 20}), volt::Error);  // too large
}

TEST_CASE("typed data access checks the dtype") {
  Tensor f = Tensor::zeros({3});
  CHECK(f.data<float>() != nullptr);
  CHECK_THROWS_AS(f.data<int64_t>(), volt::Error);
  CHECK_THROWS_AS(f.data<uint16_t>(), volt::Error);
  Tensor b = Tensor::zeros({3}, DType::BF16);
  CHECK(b.data<uint16_t>() != nullptr);  // f16 and bf16 are both read as raw bits
  CHECK_THROWS_AS(b.data<float>(), volt::Error);
  Tensor i = Tensor::zeros({3}, DType::I32);
  CHECK(i.data<int32_t>() != nullptr);
  CHECK_THROWS_AS(i.data<int64_t>(), volt::Error);
}

TEST_CASE("reshape with -1, flatten and narrow are views sharing storage") {
  std::vector<float> vals(24);
  for (int i = 0; i < 24; ++i) vals[size_t(i)] = float(i) * 0.5f - 3.f;
  Tensor t = Tensor::from_vector({2, 3, 4}, vals);

  Tensor r = t.reshape({-1, 4});
  CHECK(r.shape() == Shape{6, 4});
  CHECK(r.same_storage(t));
  CHECK(r.raw_data() == t.raw_data());
  CHECK(t.reshape({4, -1}).shape() == Shape{4, 6});
  CHECK(t.reshape({2, -1, 2}).shape() == Shape{2, 6, 2});
  CHECK(t.view({24}).shape() == Shape{24});
  CHECK_THROWS_AS(t.reshape({-1, -1}), volt::Error);
  CHECK_THROWS_AS(t.reshape({5, -1}), volt::Error);
  CHECK_THROWS_AS(t.reshape({5, 5}), volt::Error);
  CHECK_THROWS_AS(t.reshape({-2, 12}), volt::Error);

  // A write through the view is visible in the base and vice versa.
  r.set({5, 3}, 100.f);
  CHECK(t.at({1, 2, 3}) == 100.f);
  t.set({0, 1, 0}, -42.f);
  CHECK(r.at({1, 0}) == -42.f);

  CHECK(t.flatten().shape() == Shape{24});
  CHECK(t.flatten(1).shape() == Shape{2, 12});
  CHECK(t.flatten(0, 1).shape() == Shape{6, 4});
  CHECK(t.flatten(-2, -1).shape() == Shape{2, 12});
  CHECK(t.flatten(1, 1).shape() == Shape{2, 3, 4});
  CHECK(t.flatten(1).same_storage(t));
  CHECK(Tensor::scalar(3.f).flatten().shape() == Shape{1});
  CHECK_THROWS_AS(t.flatten(2, 1), volt::Error);
  CHECK_THROWS_AS(t.flatten(0, 3), volt::Error);

  Tensor m = Tensor::from_vector({5, 3}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14});
  Tensor n = m.narrow(1, 3);
  CHECK(n.shape() == Shape{3, 3});
  CHECK(n.same_storage(m));
  CHECK(n.to_vector() == std::vector<float>{3, 4, 5, 6, 7, 8, 9, 10, 11});
  n.set({2, 1}, -1.f);
  CHECK(m.at({3, 1}) == -1.f);
  // A narrow of a narrow and a reshape of a narrow keep the offset.
  Tensor nn = n.narrow(1, 2);
  CHECK(nn.to_vector() == std::vector<float>{6, 7, 8, 9, -1, 11});
  CHECK(nn.reshape({-1}).to_vector() == std::vector<float>{6, 7, 8, 9, -1, 11});
  CHECK(m.narrow(5, 0).numel() == 0);
  CHECK_THROWS_AS(m.narrow(4, 2), volt::Error);
  CHECK_THROWS_AS(m.narrow(-1, 1), volt::Error);
  CHECK_THROWS_AS(Tensor::scalar(1.f).narrow(0, 1), volt::Error);
}

TEST_CASE("detach shares storage - clone copies") {
  Tensor x = Tensor::from_vector({2, 2}, {1, 2, 3, 4});
  x.requires_grad_();
  Tensor d = x.detach();
  CHECK(d.same_storage(x));
  CHECK_FALSE(d.requires_grad());
  CHECK(d.is_leaf());
  d.set({0, 0}, 9.f);
  CHECK(x.at({0, 0}) == 9.f);

  Tensor c = x.clone();
  CHECK_FALSE(c.same_storage(x));
  CHECK_FALSE(c.requires_grad());
  CHECK(c.to_vector() == x.to_vector());
  c.set({1, 1}, -5.f);
  CHECK(x.at({1, 1}) == 4.f);

  // Cloning a view copies only the view's elements.
  Tensor big = Tensor::from_vector({3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor cv = big.narrow(1, 2).clone();
  CHECK(cv.shape() == Shape{2, 2});
  CHECK(cv.to_vector() == std::vector<float>{3, 4, 5, 6});
  Tensor h = Tensor::from_vector({2}, {0.5f, -2.f}).to(DType::F16).clone();
  CHECK(h.dtype() == DType::F16);
  CHECK(h.to_vector() == std::vector<float>{0.5f, -2.f});
}

TEST_CASE("copy_ converts between dtypes and checks shapes") {
  Tensor src = Tensor::from_vector({4}, {1.5f, -2.75f, 65504.f, 3.0e-5f});
  Tensor h = Tensor::empty({4}, DType::F16);
  h.copy_(src);
  const uint16_t* hb = h.data<uint16_t>();
  CHECK(hb[0] == 0x3E00);
  CHECK(hb[1] == 0xC180);
  CHECK(hb[2] == 0x7BFF);
  CHECK(hb[3] == float_to_half(3.0e-5f));

  Tensor bf = Tensor::empty({4}, DType::BF16);
  bf.copy_(src);
  CHECK(bf.data<uint16_t>()[0] == 0x3FC0);
  CHECK(bf.data<uint16_t>()[1] == 0xC030);

  Tensor i = Tensor::empty({4}, DType::I64);
  i.copy_(Tensor::from_vector({4}, {3.9f, -2.9f, 0.f, 1000.f}));
  CHECK(i.to_int_vector() == std::vector<int64_t>{3, -2, 0, 1000});  // truncation toward zero

  Tensor u = Tensor::empty({3}, DType::U8);
  u.copy_(Tensor::from_vector({3}, {0.f, 17.f, 255.f}));
  CHECK(u.data<uint8_t>()[1] == 17);
  CHECK(u.data<uint8_t>()[2] == 255);

  // f16 -> f32 and integer -> integer (exact through int64).
  Tensor back = Tensor::empty({4});
  back.copy_(h);
  CHECK(back.at({0}) == 1.5f);
  CHECK(back.at({2}) == 65504.f);
  Tensor big = Tensor::empty({1}, DType::I64);
  big.data<int64_t>()[0] = (int64_t(1) << 40) + 1;  // not representable in float
  Tensor big2 = Tensor::empty({1}, DType::I64);
  big2.copy_(big);
  CHECK(big2.data<int64_t>()[0] == (int64_t(1) << 40) + 1);
  Tensor i32 = Tensor::empty({1}, DType::I32);
  Tensor i64 = Tensor::empty({1}, DType::I64);
  i32.data<int32_t>()[0] = 16777217;  // 2^24 + 1: would be rounded by a trip through float
  i64.copy_(i32);
  CHECK(i64.data<int64_t>()[0] == 16777217);

  // Into a view: only the view's rows change.
  Tensor dst = Tensor::zeros({3, 2});
  Tensor rows = dst.narrow(1, 1);
  rows.copy_(Tensor::from_vector({1, 2}, {7, 8}));
  CHECK(dst.to_vector() == std::vector<float>{0, 0, 7, 8, 0, 0});

  CHECK_THROWS_AS(dst.copy_(Tensor::zeros({2, 3})), volt::Error);
  CHECK_THROWS_AS(dst.copy_(Tensor()), volt::Error);
}

TEST_CASE("float16 conversions match IEEE binary16 bit patterns") {
  CHECK(float_to_half(1.0f) == 0x3C00);
  CHECK(float_to_half(-2.0f) == 0xC000);
  CHECK(float_to_half(0.5f) == 0x3800);
  CHECK(float_to_half(0.0f) == 0x0000);
  CHECK(float_to_half(-0.0f) == 0x8000);
  CHECK(float_to_half(65504.f) == 0x7BFF);              // largest finite half
  CHECK(float_to_half(std::ldexp(1.f, -14)) == 0x0400);  // smallest normal
  CHECK(float_to_half(std::ldexp(1.f, -24)) == 0x0001);  // smallest subnormal
  CHECK(float_to_half(-std::ldexp(1.f, -24)) == 0x8001);
  CHECK(float_to_half(std::ldexp(1023.f, -24)) == 0x03FF);  // largest subnormal
  CHECK(float_to_half(1.f / 3.f) == 0x3555);

  // Round to nearest, ties to even.
  CHECK(float_to_half(1.f + std::ldexp(1.f, -11)) == 0x3C00);      // tie between 0x3C00 and 0x3C01 -> even
  CHECK(float_to_half(1.f + 3 * std::ldexp(1.f, -11)) == 0x3C02);  // tie between 0x3C01 and 0x3C02 -> even
  CHECK(float_to_half(1.f + std::ldexp(1.f, -11) + std::ldexp(1.f, -20)) == 0x3C01);  // just above the tie
  CHECK(float_to_half(std::ldexp(1.f, -25)) == 0x0000);          // tie between 0 and the smallest subnormal
  CHECK(float_to_half(std::ldexp(3.f, -25)) == 0x0002);          // tie between 1 and 2 subnormal units
  CHECK(float_to_half(std::ldexp(1.5f, -25)) == 0x0001);         // above the tie
  CHECK(float_to_half(std::ldexp(1.f, -26)) == 0x0000);          // underflow
  CHECK(float_to_half(std::ldexp(2047.f, -25)) == 0x0400);       // rounds up out of the subnormals
  CHECK(float_to_half(2049.f) == 0x6800);                        // 2048 + 1: tie -> even (2048)
  CHECK(float_to_half(2051.f) == 0x6802);                        // 2050 + 1: tie -> even (2052)

  // Overflow, infinities and NaN.
  CHECK(float_to_half(65519.f) == 0x7BFF);  // below the midpoint to 65536: rounds down
  CHECK(float_to_half(65520.f) == 0x7C00);  // the midpoint: ties to even, which is inf
  CHECK(float_to_half(1e6f) == 0x7C00);
  CHECK(float_to_half(-1e6f) == 0xFC00);
  CHECK(float_to_half(std::numeric_limits<float>::max()) == 0x7C00);
  CHECK(float_to_half(std::numeric_limits<float>::infinity()) == 0x7C00);
  CHECK(float_to_half(-std::numeric_limits<float>::infinity()) == 0xFC00);
  const uint16_t qnan = float_to_half(std::numeric_limits<float>::quiet_NaN());
  CHECK((qnan & 0x7C00) == 0x7C00);
  CHECK((qnan & 0x03FF) != 0);
  // A NaN whose payload sits only in the low float bits must stay a NaN (not become inf).
  const uint16_t low_nan = float_to_half(bits_to_float(0x7F800001u));
  CHECK((low_nan & 0x7C00) == 0x7C00);
  CHECK((low_nan & 0x03FF) != 0);
  CHECK(float_to_half(std::numeric_limits<float>::denorm_min()) == 0x0000);

  // half -> float.
  CHECK(half_to_float(0x3C00) == 1.0f);
  CHECK(half_to_float(0x7BFF) == 65504.f);
  CHECK(half_to_float(0x0001) == std::ldexp(1.f, -24));
  CHECK(half_to_float(0x03FF) == std::ldexp(1023.f, -24));
  CHECK(half_to_float(0x0400) == std::ldexp(1.f, -14));
  CHECK(half_to_float(0x3555) == 0.333251953125f);
  CHECK(half_to_float(0xC000) == -2.f);
  CHECK(float_bits(half_to_float(0x8000)) == 0x80000000u);  // -0
  CHECK(std::isinf(half_to_float(0x7C00)));
  CHECK(half_to_float(0xFC00) < 0);
  CHECK(std::isnan(half_to_float(0x7E00)));
  CHECK(std::isnan(half_to_float(0x7C01)));

  // Every non-NaN half survives half -> float -> half, and the float is exactly the half's value.
  int mismatches = 0;
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const bool is_nan = (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu) != 0;
    const float f = half_to_float(uint16_t(h));
    if (is_nan) {
      if (!std::isnan(f) || !std::isnan(half_to_float(float_to_half(f)))) ++mismatches;
      continue;
    }
    if (float_to_half(f) != h) ++mismatches;
    // Reference value: sign * 2^(e-15) * (1 + m/1024), or 2^-14 * m/1024 for subnormals.
    const uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    double ref = e == 0 ? std::ldexp(double(m), -24) : e == 31 ? INFINITY : std::ldexp(1.0 + m / 1024.0, int(e) - 15);
    if (h & 0x8000u) ref = -ref;
    if (double(f) != ref) ++mismatches;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("bfloat16 conversions match the bit patterns") {
  CHECK(float_to_bf16(1.0f) == 0x3F80);
  CHECK(float_to_bf16(-2.0f) == 0xC000);
  CHECK(float_to_bf16(3.0f) == 0x4040);
  CHECK(float_to_bf16(0.0f) == 0x0000);
  CHECK(float_to_bf16(-0.0f) == 0x8000);
  CHECK(float_to_bf16(1.f + std::ldexp(1.f, -8)) == 0x3F80);       // tie -> even
  CHECK(float_to_bf16(1.f + 3 * std::ldexp(1.f, -8)) == 0x3F82);   // tie -> even (up)
  CHECK(float_to_bf16(1.f + std::ldexp(1.f, -8) + std::ldexp(1.f, -20)) == 0x3F81);
  CHECK(float_to_bf16(std::numeric_limits<float>::infinity()) == 0x7F80);
  CHECK(float_to_bf16(-std::numeric_limits<float>::infinity()) == 0xFF80);
  CHECK(float_to_bf16(std::numeric_limits<float>::max()) == 0x7F80);  // rounds up to inf
  CHECK(float_to_bf16(bits_to_float(0x7F7F0000u)) == 0x7F7F);         // largest finite bf16
  const uint16_t nan = float_to_bf16(bits_to_float(0x7F800001u));     // payload only in dropped bits
  CHECK((nan & 0x7F80) == 0x7F80);
  CHECK((nan & 0x007F) != 0);
  CHECK(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(bf16_to_float(0x3F80) == 1.f);
  CHECK(bf16_to_float(0x4049) == 3.140625f);
  CHECK(float_to_bf16(3.14159265f) == 0x4049);
  CHECK(float_to_bf16(std::ldexp(1.f, -133)) == 0x0001);  // float subnormals pass through (2^-133 = 0x00010000)
  int mismatches = 0;
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    const float f = bf16_to_float(uint16_t(b));
    if (float_bits(f) != (b << 16)) ++mismatches;
    if (std::isnan(f)) {
      if (!std::isnan(bf16_to_float(float_to_bf16(f)))) ++mismatches;
    } else if (float_to_bf16(f) != b) {
      ++mismatches;
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("to(DType) round trips and rounding") {
  const std::vector<float> exact = {1.f, -0.5f, 0.25f, 1024.f, -61440.f, 3.f, 0.f, 2.5f};  // exact in f16 and bf16
  Tensor x = Tensor::from_vector({2, 4}, exact);
  CHECK(x.to(DType::F32).same_storage(x));  // same dtype: no copy
  for (DType dt : {DType::F16, DType::BF16}) {
    Tensor y = x.to(dt);
    CHECK(y.dtype() == dt);
    CHECK(y.shape() == x.shape());
    CHECK_FALSE(y.same_storage(x));
    CHECK(y.to(DType::F32).to_vector() == exact);
  }
  // Values not representable round to nearest.
  Tensor v = Tensor::from_vector({3}, {0.1f, 1000.3f, -7.77f});
  const std::vector<float> h = v.to(DType::F16).to(DType::F32).to_vector();
  CHECK(h[0] == half_to_float(float_to_half(0.1f)));
  CHECK(h[1] == 1000.5f);
  CHECK(std::fabs(h[2] + 7.77f) < 0.004f);
  const std::vector<float> b = v.to(DType::BF16).to(DType::F32).to_vector();
  CHECK(b[1] == 1000.f);
  CHECK(std::fabs(b[0] - 0.1f) < 0.001f);

  Tensor ints = Tensor::from_vector({4}, {0.f, 5.f, -3.f, 250.f});
  CHECK(ints.to(DType::I64).to_int_vector() == std::vector<int64_t>{0, 5, -3, 250});
  CHECK(ints.to(DType::I32).to(DType::F32).to_vector() == std::vector<float>{0.f, 5.f, -3.f, 250.f});
  CHECK(ints.narrow(1, 2).to(DType::I64).to_int_vector() == std::vector<int64_t>{5, -3});
  Tensor lbl = Tensor::from_labels({1, 2, 3});
  CHECK(lbl.to(DType::U8).to(DType::I64).to_int_vector() == std::vector<int64_t>{1, 2, 3});
  CHECK(lbl.to(DType::F32).to_vector() == std::vector<float>{1.f, 2.f, 3.f});
}

TEST_CASE("element access: at, set, item, to_vector") {
  Tensor t = Tensor::zeros({2, 3});
  t.set({1, 2}, 4.5f);
  t.set({0, 1}, -1.f);
  CHECK(t.at({1, 2}) == 4.5f);
  CHECK(t.at({0, 1}) == -1.f);
  CHECK(t.to_vector() == std::vector<float>{0, -1, 0, 0, 0, 4.5f});
  CHECK_THROWS_AS(t.at({2, 0}), volt::Error);
  CHECK_THROWS_AS(t.at({0, 3}), volt::Error);
  CHECK_THROWS_AS(t.at({0, -1}), volt::Error);
  CHECK_THROWS_AS(t.at({0}), volt::Error);
  CHECK_THROWS_AS(t.set({0, 0, 0}, 1.f), volt::Error);
  CHECK_THROWS_AS(t.item(), volt::Error);
  CHECK(Tensor::full({1, 1}, 3.f).item() == 3.f);

  Tensor h = Tensor::zeros({2}, DType::F16);
  h.set({1}, 0.333333f);
  CHECK(h.data<uint16_t>()[1] == 0x3555);
  CHECK(h.at({1}) == half_to_float(0x3555));
  Tensor i = Tensor::zeros({2}, DType::I64);
  i.set({0}, 12.f);
  CHECK(i.data<int64_t>()[0] == 12);
  CHECK(i.at({0}) == 12.f);
  Tensor s = Tensor::scalar(-8.f);
  CHECK(s.item() == -8.f);

  Tensor f = Tensor::empty({3});
  f.fill_(2.f);
  CHECK(f.to_vector() == std::vector<float>{2, 2, 2});
  f.zero_();
  CHECK(f.to_vector() == std::vector<float>{0, 0, 0});
  Tensor fb = Tensor::empty({2}, DType::BF16);
  fb.fill_(1.f);
  CHECK(fb.data<uint16_t>()[1] == 0x3F80);
}

TEST_CASE("printing shows values, shape and dtype - large tensors are elided") {
  Tensor t = Tensor::from_vector({2, 3}, {1.5f, -2.25f, 3.f, 4.f, 5.125f, 6.f});
  std::ostringstream os;
  os << t;
  const std::string s = os.str();
  INFO(s);
  CHECK(contains(s, "1.5"));
  CHECK(contains(s, "-2.25"));
  CHECK(contains(s, "5.125"));
  CHECK(contains(s, "[2, 3]"));
  CHECK(contains(s, "float32"));
  CHECK_FALSE(contains(s, "..."));
  CHECK_FALSE(contains(s, "requires_grad"));

  std::ostringstream hs;
  hs << Tensor::from_vector({2}, {0.5f, 8.f}).to(DType::F16);
  CHECK(contains(hs.str(), "float16"));
  CHECK(contains(hs.str(), "0.5"));

  std::ostringstream gs;
  Tensor g = Tensor::ones({2});
  g.requires_grad_();
  gs << g;
  CHECK(contains(gs.str(), "requires_grad"));

  std::ostringstream ss;
  ss << Tensor::scalar(7.25f);
  CHECK(contains(ss.str(), "7.25"));
  CHECK(contains(ss.str(), "shape=[]"));

  std::vector<float> vals(1000);
  for (int i = 0; i < 1000; ++i) vals[size_t(i)] = float(i);
  std::ostringstream ls;
  ls << Tensor::from_vector({1000}, vals);
  const std::string l = ls.str();
  INFO(l);
  CHECK(contains(l, "..."));
  CHECK(contains(l, "[1000]"));
  CHECK(contains(l, "999"));
  CHECK(contains(l, "0, 1, 2"));
  CHECK_FALSE(contains(l, "500"));
  CHECK(l.size() < 200);

  std::vector<float> grid(40 * 50);
  for (size_t i = 0; i < grid.size(); ++i) grid[i] = float(i);
  std::ostringstream gr;
  gr << Tensor::from_vector({40, 50}, grid);
  const std::string g2 = gr.str();
  CHECK(contains(g2, "..."));
  CHECK(contains(g2, "1999"));  // last element
  CHECK_FALSE(contains(g2, "1000"));  // row 20, elided
  CHECK(g2.size() < 1000);

  std::ostringstream us;
  us << Tensor();
  CHECK(contains(us.str(), "undefined"));
}

TEST_CASE("caching host allocator reuses a freed block") {
  CachingHostAllocator alloc;
  AllocatorStats s0 = alloc.stats();
  CHECK(s0.system_allocs == 0);
  void* p = alloc.allocate(1000);
  REQUIRE(p != nullptr);
  CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
  AllocatorStats s1 = alloc.stats();
  CHECK(s1.system_allocs == 1);
  CHECK(s1.bytes_in_use >= 1000);
  CHECK(s1.bytes_cached == 0);
  alloc.deallocate(p, 1000);
  AllocatorStats s2 = alloc.stats();
  CHECK(s2.bytes_in_use == 0);
  CHECK(s2.bytes_cached == s1.bytes_in_use);
  void* q = alloc.allocate(1000);
  CHECK(q == p);
  AllocatorStats s3 = alloc.stats();
  CHECK(s3.system_allocs == 1);
  CHECK(s3.bytes_cached == 0);
  // A different size does not take the cached block of another size.
  void* r = alloc.allocate(5000);
  CHECK(r != q);
  CHECK(alloc.stats().system_allocs == 2);
  alloc.deallocate(q, 1000);
  alloc.deallocate(r, 5000);
  alloc.empty_cache();
  CHECK(alloc.stats().bytes_cached == 0);
  CHECK(alloc.stats().bytes_in_use == 0);

  // Tensors go through the process-wide allocator: a freed tensor's block comes back.
  const Shape odd{3, 7, 11, 13};  // an unusual size, so no other block of it is cached
  host_allocator().empty_cache();
  void* first;
  {
    Tensor a = Tensor::empty(odd);
    first = a.raw_data();
  }
  const AllocatorStats before = host_allocator().stats();
  CHECK(before.bytes_cached >= size_t(3 * 7 * 11 * 13 * 4));
  Tensor b = Tensor::empty(odd);
  CHECK(b.raw_data() == first);
  CHECK(host_allocator().stats().system_allocs == before.system_allocs);
}

TEST_CASE("Philox 4x32-10 matches the Random123 known-answer vectors") {
  const Philox4 a = philox4x32_10(0, 0, 0, 0, 0, 0);
  CHECK(a.v[0] == 0x6627e8d5u);
  CHECK(a.v[1] == 0xe169c58du);
  CHECK(a.v[2] == 0xbc57ac4cu);
  CHECK(a.v[3] == 0x9b00dbd8u);
  const Philox4 b = philox4x32_10(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu);
  CHECK(b.v[0] == 0x408f276du);
  CHECK(b.v[1] == 0x41c83b0eu);
  CHECK(b.v[2] == 0xa20bc7c6u);
  CHECK(b.v[3] == 0x6d5451fdu);
  const Philox4 c = philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  CHECK(c.v[0] == 0xd16cfe09u);
  CHECK(c.v[1] == 0x94fdccebu);
  CHECK(c.v[2] == 0x5001e420u);
  CHECK(c.v[3] == 0x24126ea1u);

  // Volt's stream layout: counter = (block lo, block hi, stream lo, stream hi), key = seed.
  const uint64_t seed = 0x299f31d0a4093822ull, stream = 0x0370734413198a2eull, block = 0x85a308d3243f6a88ull;
  for (uint64_t i = 0; i < 8; ++i)
    CHECK(philox_u32(seed, stream, block - (i >> 2), i) == c.v[i & 3]);
  CHECK(philox_u32(0, 0, 0, 2) == 0xbc57ac4cu);
  CHECK(philox_u32(0, 0, 0, 5) == philox4x32_10(1, 0, 0, 0, 0, 0).v[1]);
  CHECK(philox_uniform(0xffffffffu) < 1.0f);
  CHECK(philox_uniform(0) == 0.0f);
  CHECK(philox_uniform(0x80000000u) == 0.5f);
}

TEST_CASE("Generator streams, offsets and reserve") {
  Generator a(42, 1), b(42, 1), c(42, 2), d(43, 1);
  std::vector<uint32_t> va, vb, vc, vd;
  for (int i = 0; i < 16; ++i) {
    va.push_back(a.next_u32());
    vb.push_back(b.next_u32());
    vc.push_back(c.next_u32());
    vd.push_back(d.next_u32());
  }
  CHECK(va == vb);
  CHECK(va != vc);
  CHECK(va != vd);
  CHECK(std::set<uint32_t>(va.begin(), va.end()).size() == va.size());
  CHECK(a.offset() == 16);  // each next_u32 takes a whole block
  CHECK(va[0] == philox4x32_10(0, 0, 1, 0, 42, 0).v[0]);
  CHECK(va[3] == philox4x32_10(3, 0, 1, 0, 42, 0).v[0]);

  Generator g(7);
  CHECK(g.seed() == 7);
  CHECK(g.stream() == 0);
  CHECK(g.offset() == 0);
  CHECK(g.reserve(1) == 0);
  CHECK(g.offset() == 1);
  CHECK(g.reserve(4) == 1);
  CHECK(g.offset() == 2);
  CHECK(g.reserve(5) == 2);
  CHECK(g.offset() == 4);
  CHECK(g.reserve(0) == 4);
  CHECK(g.offset() == 4);
  CHECK(g.reserve(8) == 4);
  CHECK(g.offset() == 6);
  g.set_offset(100);
  CHECK(g.offset() == 100);
  g.manual_seed(9);
  CHECK(g.seed() == 9);
  CHECK(g.offset() == 0);

  Generator u(5);
  for (int i = 0; i < 1000; ++i) {
    const float f = u.next_uniform();
    REQUIRE(f >= 0.f);
    REQUIRE(f < 1.f);
    const uint64_t k = u.next_below(7);
    REQUIRE(k < 7);
  }
  CHECK(u.next_below(1) == 0);
  CHECK_THROWS_AS(u.next_below(0), volt::Error);

  // The default generator's streams are independent and manual_seed resets them all.
  manual_seed(123);
  const uint32_t i0 = default_generator(kStreamInit).next_u32();
  const uint32_t s0 = default_generator(kStreamShuffle).next_u32();
  CHECK(i0 != s0);
  CHECK(default_generator(kStreamInit).seed() == 123);
  CHECK(default_generator(kStreamDropout).stream() == kStreamDropout);
  manual_seed(123);
  CHECK(default_generator(kStreamInit).offset() == 0);
  CHECK(default_generator(kStreamInit).next_u32() == i0);
  CHECK(default_generator(kStreamShuffle).next_u32() == s0);
  CHECK_THROWS_AS(default_generator(4), volt::Error);
}

TEST_CASE("uniform_ stays in range with the right mean and variance") {
  Tensor t = Tensor::empty({200, 500});
  Generator g(2024, 3);
  uniform_(t, -2.f, 3.f, g);
  CHECK(g.offset() == 100000 / 4);
  const std::vector<float> v = t.to_vector();
  double sum = 0, sq = 0;
  float lo = 1e9f, hi = -1e9f;
  for (float x : v) {
    sum += x;
    sq += double(x) * x;
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  const double n = double(v.size());
  const double mean = sum / n, var = sq / n - mean * mean;
  CHECK(lo >= -2.f);
  CHECK(hi < 3.f);
  CHECK(lo < -1.99f);
  CHECK(hi > 2.99f);
  CHECK(std::fabs(mean - 0.5) < 0.02);            // sem = 1.44 / sqrt(1e5) = 0.0046
  CHECK(std::fabs(var - 25.0 / 12.0) < 0.05);     // 25/12 = 2.083
  // Each of 10 equal bins holds about a tenth.
  std::vector<int> bins(10, 0);
  for (float x : v) bins[size_t(std::min(9, int((x + 2.f) / 0.5f)))]++;
  for (int c : bins) CHECK(std::abs(c - 10000) < 600);

  // Same generator state -> same values; the next draw continues the stream.
  Tensor a = Tensor::empty({37}), b = Tensor::empty({37}), c = Tensor::empty({37});
  Generator ga(11), gb(11);
  uniform_(a, 0.f, 1.f, ga);
  uniform_(b, 0.f, 1.f, gb);
  uniform_(c, 0.f, 1.f, ga);
  CHECK(a.to_vector() == b.to_vector());
  CHECK(a.to_vector() != c.to_vector());
  CHECK(ga.offset() == 2 * 10);  // ceil(37 / 4) blocks per call
  // Element i of the draw is word i % 4 of block offset + i / 4.
  CHECK(a.at({5}) == philox_uniform(philox_u32(11, 0, 0, 5)));
  CHECK(c.at({0}) == philox_uniform(philox_u32(11, 0, 10, 0)));

  Tensor wrong = Tensor::empty({3}, DType::F16);
  CHECK_THROWS_AS(uniform_(wrong, 0.f, 1.f, g), volt::Error);
  CHECK_THROWS_AS(uniform_(t, 1.f, 0.f, g), volt::Error);
}

TEST_CASE("randperm is a deterministic permutation") {
  Generator g1(99, kStreamShuffle), g2(99, kStreamShuffle), g3(100, kStreamShuffle);
  const std::vector<int64_t> p1 = randperm(1000, g1), p2 = randperm(1000, g2), p3 = randperm(1000, g3);
  CHECK(p1 == p2);
  CHECK(p1 != p3);
  std::vector<int64_t> sorted = p1;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) REQUIRE(sorted[size_t(i)] == i);
  int fixed = 0;
  for (int64_t i = 0; i < 1000; ++i) fixed += p1[size_t(i)] == i;
  CHECK(fixed < 10);  // a random permutation has ~1 fixed point
  CHECK(randperm(1000, g1) != p1);  // the generator moved on
  CHECK(randperm(0, g1).empty());
  CHECK(randperm(1, g1) == std::vector<int64_t>{0});
  CHECK_THROWS_AS(randperm(-1, g1), volt::Error);

  // Every position is equally likely: where element 0 lands over many shuffles of 4.
  Generator g(5);
  std::vector<int> where(4, 0);
  for (int k = 0; k < 4000; ++k) {
    const auto p = randperm(4, g);
    for (int i = 0; i < 4; ++i)
      if (p[size_t(i)] == 0) where[size_t(i)]++;
  }
  for (int c : where) CHECK(std::abs(c - 1000) < 150);
}

TEST_CASE("set_num_threads validates and round trips") {
  const int before = get_num_threads();
  CHECK(before >= 1);
  set_num_threads(1);
  CHECK(get_num_threads() == 1);
  CHECK_THROWS_AS(set_num_threads(0), volt::Error);
  set_num_threads(before);
  CHECK(get_num_threads() == before);
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("save_tensors / load_tensors round trip every dtype") {
  TempDir dir;
  const std::string path = dir.path + "/all.vt";

  Tensor f32 = test::rand_tensor({2, 3, 4}, 1);
  Tensor f16 = test::rand_tensor({5}, 2).to(DType::F16);
  Tensor bf16 = test::rand_tensor({3, 2}, 3).to(DType::BF16);
  Tensor i64 = Tensor::from_labels({-5, 0, int64_t(1) << 40});
  Tensor i32 = Tensor::empty({2, 2}, DType::I32);
  for (int i = 0; i < 4; ++i) i32.data<int32_t>()[i] = -100000 + 77777 * i;
  Tensor u8 = Tensor::empty({7}, DType::U8);
  for (int i = 0; i < 7; ++i) u8.data<uint8_t>()[i] = uint8_t(i * 40);
  Tensor scalar = Tensor::scalar(-3.5f);
  Tensor empty = Tensor::empty({0, 3});
  Tensor base = test::rand_tensor({6, 2}, 4);
  Tensor view = base.narrow(2, 3);  // a view with an offset: only its rows are written

  const NamedTensors in = {{"f32", f32},     {"f16", f16},       {"layer.bf16", bf16}, {"i64", i64},
                           {"i32", i32},     {"u8", u8},         {"scalar", scalar},   {"empty", empty},
                           {"view", view},   {"", Tensor::ones({1})}};
  save_tensors(path, in);
  CHECK(dir.files() == std::set<std::string>{"all.vt"});  // no temporary left behind

  const NamedTensors out = load_tensors(path);
  REQUIRE(out.size() == in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    INFO("tensor " << in[i].first);
    CHECK(out[i].first == in[i].first);
    CHECK(out[i].second.dtype() == in[i].second.dtype());
    CHECK(out[i].second.shape() == in[i].second.shape());
    CHECK(raw_bytes(out[i].second) == raw_bytes(in[i].second));
  }
  const std::vector<float> base_values = base.to_vector();
  CHECK(out[8].second.to_vector() == std::vector<float>(base_values.begin() + 4, base_values.begin() + 10));

  // The layout is the documented one: magic, version 1, count, ..., crc32 of the rest.
  const std::string bytes = read_all(path);
  CHECK(bytes.compare(0, 8, "VOLTTENS") == 0);
  uint32_t version, count, crc;
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&count, bytes.data() + 12, 4);
  std::memcpy(&crc, bytes.data() + bytes.size() - 4, 4);
  CHECK(version == 1);
  CHECK(count == in.size());
  CHECK(crc == crc32(bytes.data(), bytes.size() - 4));
  CHECK(crc32("123456789", 9) == 0xCBF43926u);  // the CRC-32 (IEEE) check value

  // Overwriting replaces the contents; an empty list is a valid file.
  save_tensors(path, {{"only", Tensor::full({2}, 4.f)}});
  const NamedTensors again = load_tensors(path);
  REQUIRE(again.size() == 1);
  CHECK(again[0].first == "only");
  CHECK(again[0].second.to_vector() == std::vector<float>{4.f, 4.f});
  save_tensors(path, {});
  CHECK(load_tensors(path).empty());
}

TEST_CASE("load_tensors errors name the file") {
  TempDir dir;
  const std::string good = dir.path + "/good.vt";
  save_tensors(good, {{"w", test::rand_tensor({4, 5}, 7)}, {"b", Tensor::from_labels({1, 2, 3})}});
  const std::string bytes = read_all(good);
  REQUIRE(bytes.size() > 100);

  SUBCASE("missing file") {
    const std::string p = dir.path + "/does_not_exist.vt";
    const std::string msg = error_of([&] { load_tensors(p); });
    CHECK(contains(msg, p));
  }
  SUBCASE("truncated file") {
    const std::string p = dir.path + "/truncated.vt";
    for (size_t keep : {bytes.size() - 1, bytes.size() / 2, size_t(30), size_t(12), size_t(0)}) {
      write_all(p, bytes.substr(0, keep));
      const std::string msg = error_of([&] { load_tensors(p); });
      INFO("kept " << keep << " bytes: " << msg);
      CHECK(contains(msg, p));
    }
  }
  SUBCASE("a flipped byte fails the checksum") {
    const std::string p = dir.path + "/flipped.vt";
    for (size_t at : {size_t(13), size_t(40), bytes.size() - 20, bytes.size() - 2}) {
      std::string bad = bytes;
      bad[at] = char(bad[at] ^ 0x10);
      write_all(p, bad);
      const std::string msg = error_of([&] { load_tensors(p); });
      INFO("flipped byte " << at << ": " << msg);
      CHECK(contains(msg, p));
      CHECK(contains(msg, "checksum"));
    }
  }
  SUBCASE("wrong magic") {
    const std::string p = dir.path + "/magic.vt";
    std::string bad = bytes;
    bad[0] = 'X';
    write_all(p, bad);
    const std::string msg = error_of([&] { load_tensors(p); });
    CHECK(contains(msg, p));
    CHECK(contains(msg, "magic"));
    write_all(p, std::string("not a tensor file at all, just some text\n"));
    CHECK(contains(error_of([&] { load_tensors(p); }), p));
  }
  SUBCASE("a directory is not a tensor file") {
    CHECK(contains(error_of([&] { load_tensors(dir.path); }), dir.path));
  }
}

TEST_CASE("save_tensors failures leave no file under the real name") {
  TempDir dir;
  SUBCASE("into a directory that does not exist") {
    const std::string p = dir.path + "/no_such_dir/out.vt";
    const std::string msg = error_of([&] { save_tensors(p, {{"x", Tensor::ones({3})}}); });
    CHECK(contains(msg, p));
    CHECK_FALSE(file_exists(p));
    CHECK(dir.files().empty());
  }
  SUBCASE("when the final rename fails, the temporary is removed") {
    const std::string p = dir.path + "/taken";
    REQUIRE(::mkdir(p.c_str(), 0755) == 0);  // a directory sits at the target name
    const std::string msg = error_of([&] { save_tensors(p, {{"x", Tensor::ones({3})}}); });
    CHECK(contains(msg, p));
    CHECK(dir.files() == std::set<std::string>{"taken"});
  }
  SUBCASE("an undefined tensor fails before anything is written; an existing file is untouched") {
    const std::string p = dir.path + "/keep.vt";
    save_tensors(p, {{"a", Tensor::full({2}, 1.f)}});
    const std::string before = read_all(p);
    CHECK_THROWS_AS(save_tensors(p, {{"a", Tensor::ones({2})}, {"undef", Tensor()}}), volt::Error);
    CHECK(read_all(p) == before);
    CHECK(dir.files() == std::set<std::string>{"keep.vt"});
  }
}
