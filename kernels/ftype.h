// The floating-point storage types a kernel can read and write: float32, and the 16-bit formats of
// mixed precision (IEEE half, bfloat16). Arithmetic is float32 in every case; a 16-bit value is
// widened on load and rounded to nearest even on store. engine/ maps DType onto this.
#pragma once
#include <cstddef>
#include <cstdint>

namespace volt {

enum class FType : uint8_t { F32, F16, BF16 };

inline size_t ftype_size(FType t) { return t == FType::F32 ? 4 : 2; }
inline const char* ftype_name(FType t) { return t == FType::F32 ? "float32" : (t == FType::F16 ? "float16" : "bfloat16"); }

}  // namespace volt
