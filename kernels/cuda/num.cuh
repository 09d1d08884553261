// Loads and stores of the kernels' storage types (kernels/ftype.h) as float, and a dispatch from a
// run-time FType to the C++ type: dispatch_ftype(t, [&](auto tag) { using T = typename decltype(tag)::type; }).
#pragma once
#if !VOLT_CUDA_EMU
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

#include "engine/error.h"
#include "kernels/ftype.h"

namespace volt::cuda::detail {

__device__ __forceinline__ float load_f(float v) { return v; }
__device__ __forceinline__ float load_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float load_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
__device__ __forceinline__ T store_f(float v);
template <>
__device__ __forceinline__ float store_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half store_f<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 store_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <class T>
struct TypeTag {
  using type = T;
};

template <class F>
void dispatch_ftype(FType t, F&& f) {
  switch (t) {
    case FType::F32: f(TypeTag<float>{}); return;
    case FType::F16: f(TypeTag<__half>{}); return;
    case FType::BF16: f(TypeTag<__nv_bfloat16>{}); return;
  }
  VOLT_FAIL("unknown floating-point type ", int(t));
}

}  // namespace volt::cuda::detail

// Runs the statements with T bound to the C++ storage type of FType t:
// VOLT_FTYPE_T(t, launch(kernel<T>, grid, block, 0, stream, args...));
#define VOLT_FTYPE_T(t, ...)                                    \
  ::volt::cuda::detail::dispatch_ftype(t, [&](auto volt_tag_) { \
    using T = typename decltype(volt_tag_)::type;               \
    __VA_ARGS__;                                                \
  })
