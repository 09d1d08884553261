// The emulated SDK's element types (emu_sdk_blas.cpp, emu_sdk_libs.cpp): float32, float16 and bfloat16
// values in "device" memory read as floats and written back rounded once, as the libraries' float32
// accumulators store their results.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cuda_runtime_api.h"
#include "engine/dtype.h"
#include "kernels/cuda/emu/cuda_emu.h"

namespace volt_emu::sdk {
enum class Elem { F32, F16, BF16, Bad };

inline Elem elem_of(cudaDataType_t t) {
  return t == CUDA_R_32F ? Elem::F32 : t == CUDA_R_16F ? Elem::F16 : t == CUDA_R_16BF ? Elem::BF16 : Elem::Bad;
}
inline size_t elem_bytes(Elem e) { return e == Elem::F32 ? 4 : 2; }

// TF32: float32 with a 10-bit mantissa (round to nearest, ties away, as the tensor cores' conversion).
inline float to_tf32(float v) {
  if (!std::isfinite(v)) return v;
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u = (u + 0x1000u) & ~0x1FFFu;
  std::memcpy(&v, &u, 4);
  return v;
}

// n values of type e at p, as floats (optionally rounded to TF32).
inline std::vector<float> load(Elem e, const void* p, size_t n, bool tf32) {
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    float v;
    if (e == Elem::F32) std::memcpy(&v, static_cast<const char*>(p) + 4 * i, 4);
    else {
      uint16_t h;
      std::memcpy(&h, static_cast<const char*>(p) + 2 * i, 2);
      v = e == Elem::F16 ? volt_emu::half_bits_to_float(h) : volt::bf16_to_float(h);
    }
    out[i] = tf32 ? to_tf32(v) : v;
  }
  return out;
}

inline void store(Elem e, void* p, size_t i, float v) {
  if (e == Elem::F32) {
    std::memcpy(static_cast<char*>(p) + 4 * i, &v, 4);
  } else {
    const uint16_t h = e == Elem::F16 ? volt::float_to_half(v) : volt::float_to_bf16(v);
    std::memcpy(static_cast<char*>(p) + 2 * i, &h, 2);
  }
}
inline float load_one(Elem e, const void* p, size_t i) {
  return load(e, static_cast<const char*>(p) + elem_bytes(e) * i, 1, false)[0];
}

// out = alpha * sum + beta * out; with beta == 0 the old contents are never read (NaN there stays out).
inline void blend(Elem e, void* out, size_t i, double sum, float alpha, float beta) {
  double v = double(alpha) * sum;
  if (beta != 0.f) v += double(beta) * double(load_one(e, out, i));
  store(e, out, i, float(v));
}

}  // namespace volt_emu::sdk
