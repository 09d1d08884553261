// Element types of a tensor. f32 is the compute type on the CPU; f16 and bf16 are storage
// types (converted on copy), i64 holds class labels and indices, u8 holds masks and images.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "../kernels/ftype.h"

namespace volt {

enum class DType : uint8_t { F32, F16, BF16, I64, I32, U8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // "float32", "float16", ...
bool is_floating(DType t);        // f32, f16, bf16
// The kernels' storage type of a floating dtype (throws volt::Error for the integer types).
FType ftype_of(DType t);

// IEEE half and bfloat16 conversions (round to nearest even; NaN and Inf preserved), inline: the CPU's
// 16-bit tensors convert through them element by element.
namespace detail {
inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace detail

// Both written without branches (each case computed, one selected), so that loops over arrays of them
// vectorise; the same bits as the case-by-case definition, which tests/test_dtype.cpp keeps to check
// them against.
inline uint16_t float_to_half(float f) {
  const uint32_t x = detail::bits_of(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7fffffffu;  // |f|
  // |f| >= 2^-14: rebias the exponent and round the 13 dropped bits to nearest even (a carry into the
  // exponent is right, up to Inf); 2^16 and above overflows to Inf.
  const uint32_t normal = (a - (112u << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
  // |f| < 2^-14: |f| + 0.5 has an ulp of 2^-24, half's subnormal step, so the float addition rounds
  // |f| / 2^-24 to nearest even into the low mantissa bits.
  const uint32_t subnormal = detail::bits_of(detail::float_of(a) + 0.5f) - detail::bits_of(0.5f);
  const uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);  // quiet, with the payload's top bits
  // The case by masks (all ones where it holds), not ?: which compilers turn back into branches.
  const uint32_t is_nan = 0u - uint32_t(a > 0x7f800000u), is_inf = 0u - uint32_t(a >= (143u << 23));
  const uint32_t is_sub = 0u - uint32_t(a < (113u << 23));
  uint32_t h = (subnormal & is_sub) | (normal & ~is_sub);
  h = (0x7c00u & is_inf) | (h & ~is_inf);
  h = (nan & is_nan) | (h & ~is_nan);
  return uint16_t(sign | h);
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;  // exponent and mantissa
  const uint32_t exp = em >> 10;
  const uint32_t normal = (em << 13) + ((127u - 15u) << 23);
  const uint32_t inf_nan = (em << 13) + ((255u - 31u) << 23);
  // exponent 0: 2^-14 * (1 + m / 1024) - 2^-14 = m * 2^-24, exactly (zero for m = 0)
  const uint32_t subnormal =
      detail::bits_of(detail::float_of((113u << 23) | (em << 13)) - detail::float_of(113u << 23));
  const uint32_t is_sub = 0u - uint32_t(exp == 0), is_inf_nan = 0u - uint32_t(exp == 31);
  const uint32_t bits = (subnormal & is_sub) | (inf_nan & is_inf_nan) | (normal & ~(is_sub | is_inf_nan));
  return detail::float_of(sign | bits);
}

inline uint16_t float_to_bf16(float f) {
  uint32_t x = detail::bits_of(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // quiet NaN
  uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return uint16_t((x + rounding) >> 16);
}

inline float bf16_to_float(uint16_t b) { return detail::float_of(uint32_t(b) << 16); }

}  // namespace volt
