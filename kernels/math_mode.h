// Whether the CUDA backend's float32 convolutions and matrix products may use TF32 tensor-core math
// (inputs rounded to a 10-bit mantissa in the products, float32 sums), as PyTorch's
// set_float32_matmul_precision("high") allows. Off unless asked (engine/gpu.h's
// set_float32_matmul_precision): float32 is plain FP32 math by default. Float16/bfloat16 storage
// always uses the tensor cores; the CPU backend has no TF32.
#pragma once
#include <atomic>

namespace volt {

inline std::atomic<bool>& float32_tf32_allowed() {
  static std::atomic<bool> allowed{false};
  return allowed;
}

}  // namespace volt
