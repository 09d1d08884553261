// Element-wise "map" kernels shared by the .cu files: y[i] = f(a[i]) or f(a[i], b[i]) over n
// elements of any storage types (kernels/ftype.h), computed in float. When every pointer is aligned
// to a whole pack, each thread moves 8 elements per iteration (16-byte loads for 16-bit types, two for
// float32); the remainder, or everything for unaligned views, goes element by element.
#pragma once
#include <cstdint>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/num.cuh"

namespace volt::cuda::detail {

constexpr int kPack = 8;

template <class T>
struct alignas(sizeof(T) * kPack) Pack {
  T v[kPack];
};

template <class T>
inline bool pack_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * kPack) == 0;
}

template <class TA, class TY, class F>
__global__ void map1_kernel(int64_t n, bool packed, const TA* a, TY* y, F f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x, first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t np = packed ? n / kPack : 0;
  for (int64_t p = first; p < np; p += stride) {
    const Pack<TA> pa = reinterpret_cast<const Pack<TA>*>(a)[p];
    Pack<TY> py;
#pragma unroll
    for (int k = 0; k < kPack; ++k) py.v[k] = store_f<TY>(f(load_f(pa.v[k])));
    reinterpret_cast<Pack<TY>*>(y)[p] = py;
  }
  for (int64_t i = np * kPack + first; i < n; i += stride) y[i] = store_f<TY>(f(load_f(a[i])));
}

template <class TA, class TB, class TY, class F>
__global__ void map2_kernel(int64_t n, bool packed, const TA* a, const TB* b, TY* y, F f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x, first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t np = packed ? n / kPack : 0;
  for (int64_t p = first; p < np; p += stride) {
    const Pack<TA> pa = reinterpret_cast<const Pack<TA>*>(a)[p];
    const Pack<TB> pb = reinterpret_cast<const Pack<TB>*>(b)[p];
    Pack<TY> py;
#pragma unroll
    for (int k = 0; k < kPack; ++k) py.v[k] = store_f<TY>(f(load_f(pa.v[k]), load_f(pb.v[k])));
    reinterpret_cast<Pack<TY>*>(y)[p] = py;
  }
  for (int64_t i = np * kPack + first; i < n; i += stride) y[i] = store_f<TY>(f(load_f(a[i]), load_f(b[i])));
}

// Blocks for n elements moved kPack at a time.
inline unsigned grid_for_packs(int64_t n) { return grid_for((n + kPack - 1) / kPack); }

template <class TA, class TY, class F>
void map1(int64_t n, const void* a, void* y, F f, void* stream) {
  if (n == 0) return;
  const bool packed = pack_aligned<TA>(a) && pack_aligned<TY>(y);
  launch(map1_kernel<TA, TY, F>, grid_for_packs(n), kThreads, 0, stream, n, packed, a, y, f);
}

template <class TA, class TB, class TY, class F>
void map2(int64_t n, const void* a, const void* b, void* y, F f, void* stream) {
  if (n == 0) return;
  const bool packed = pack_aligned<TA>(a) && pack_aligned<TB>(b) && pack_aligned<TY>(y);
  launch(map2_kernel<TA, TB, TY, F>, grid_for_packs(n), kThreads, 0, stream, n, packed, a, b, y, f);
}

}  // namespace volt::cuda::detail
