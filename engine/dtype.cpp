// Sizes and names of the element types (the f16/bf16 <-> f32 conversions are inline in dtype.h).
#include "engine/dtype.h"

#include "engine/error.h"

namespace volt {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I64: return 8;
    case DType::I32: return 4;
    case DType::U8: return 1;
  }
  VOLT_FAIL("unknown dtype ", int(t));
}

bool is_floating(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

FType ftype_of(DType t) {
  switch (t) {
    case DType::F32: return FType::F32;
    case DType::F16: return FType::F16;
    case DType::BF16: return FType::BF16;
    default: break;
  }
  VOLT_FAIL("no floating-point kernels for ", dtype_name(t), " tensors");
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::I64: return "int64";
    case DType::I32: return "int32";
    case DType::U8: return "uint8";
  }
  return "unknown";
}


}  // namespace volt
