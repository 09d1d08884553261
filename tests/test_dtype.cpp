// Dtype conversions: float16 and bfloat16 bit patterns (rounding, subnormals, overflow, NaN, every
// 16-bit value round trip) and Tensor::to between dtypes.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/dtype.h"
#include "engine/tensor.h"

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

// The case-by-case definitions of the float16 conversions, which engine/dtype.h computes without
// branches (so that arrays of them vectorise): the reference they are checked against below.
uint16_t float_to_half_by_cases(float f) {
  const uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u, exp = (x >> 23) & 0xffu;
  uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) return uint16_t(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0u));  // Inf, quiet NaN
  const int32_t e = int32_t(exp) - 127 + 15;
  if (e >= 0x1f) return uint16_t(sign | 0x7c00u);  // overflow
  if (e <= 0) {                                    // a subnormal half, or zero
    if (e < -10) return uint16_t(sign);
    mant |= 0x800000u;
    const uint32_t shift = uint32_t(14 - e), halfway = 1u << (shift - 1);
    uint32_t half_mant = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    if (rem > halfway || (rem == halfway && (half_mant & 1u))) ++half_mant;
    return uint16_t(sign | half_mant);
  }
  uint32_t h = sign | (uint32_t(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
  return uint16_t(h);
}

float half_to_float_by_cases(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return bits_to_float(sign);
    int e = -1;  // a subnormal: normalise
    do {
      mant <<= 1;
      ++e;
    } while (!(mant & 0x400u));
    return bits_to_float(sign | (uint32_t(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13));
  }
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (mant << 13));
  return bits_to_float(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

}  // namespace

// Every half; and for floats, every sign and exponent with mantissas swept at a stride and with the 13
// bits that rounding drops at and around each boundary (0, the tie 0x1000, either side), under random
// upper bits.
TEST_CASE("float16 conversions: the branch-free forms give the case-by-case bits") {
  for (uint32_t h = 0; h <= 0xffffu; ++h) {
    INFO("half bits " << h);
    REQUIRE(float_bits(half_to_float(uint16_t(h))) == float_bits(half_to_float_by_cases(uint16_t(h))));
  }
  uint64_t state = 12345;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return uint32_t(state >> 33);
  };
  int64_t checked = 0;
  auto check = [&](uint32_t bits) {
    const float f = bits_to_float(bits);
    if (float_to_half(f) != float_to_half_by_cases(f)) {
      INFO("float bits " << bits);
      REQUIRE(float_to_half(f) == float_to_half_by_cases(f));
    }
    ++checked;
  };
  const uint32_t low[] = {0u, 1u, 0xfffu, 0x1000u, 0x1001u, 0x1fffu};
  for (uint32_t sign = 0; sign < 2; ++sign)
    for (uint32_t exp = 0; exp < 256; ++exp) {
      const uint32_t top = (sign << 31) | (exp << 23);
      for (uint32_t m = 0; m < (1u << 23); m += 97) check(top | m);
      for (uint32_t r = 0; r < 256; ++r)
        for (uint32_t l : low) check(top | ((next() << 13) & 0x7fe000u) | l | (r & 1u ? 0u : 0x2000u));
    }
  CHECK(checked > 44000000);
}

// ---------------------------------------------------------------------------------------------
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
