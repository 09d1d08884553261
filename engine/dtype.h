// Element types of a tensor. f32 is the compute type on the CPU; f16 and bf16 are storage
// types (converted on copy), i64 holds class labels and indices, u8 holds masks and images.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/ftype.h"

namespace volt {

enum class DType : uint8_t { F32, F16, BF16, I64, I32, U8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // "float32", "float16", ...
bool is_floating(DType t);        // f32, f16, bf16
// The kernels' storage type of a floating dtype (throws volt::Error for the integer types).
FType ftype_of(DType t);

// IEEE half and bfloat16 conversions (round to nearest even; NaN and Inf preserved).
uint16_t float_to_half(float f);
float half_to_float(uint16_t h);
uint16_t float_to_bf16(float f);
float bf16_to_float(uint16_t b);

}  // namespace volt
