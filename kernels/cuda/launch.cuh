// Launch helpers shared by the .cu files: every kernel is started through launch(), which checks the
// launch (CUDA_CHECK_LAUNCH) and, in the emulated builds (VOLT_CUDA_EMU, kernels/cuda/emu/), runs the
// same kernel on the CPU: at once where only the kernels are emulated (the emulator tests), on its
// stream where the whole SDK is (VOLT_CUDA_EMU_SDK: VOLT_CUDA=EMULATED). Also grid sizes for
// grid-stride loops and a block-wide sum.
#pragma once
#if VOLT_CUDA_EMU && !VOLT_CUDA_EMU_SDK
#include "kernels/cuda/emu/cuda_emu.h"
#include "engine/error.h"
#else
#include <cuda_runtime.h>  // the toolkit's, or the emulated SDK's (kernels/cuda/emu/sdk/)

#include "kernels/cuda/check.h"
#endif

#include <algorithm>
#include <cstdint>
#include <utility>

#include "kernels/reduce.h"  // encode_bad_target

namespace volt::cuda::detail {

constexpr int kThreads = 256;

#if !VOLT_CUDA_EMU || VOLT_CUDA_EMU_SDK
inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }
#endif

// Starts kernel<<<grid, block, smem_bytes, stream>>>(args...) and checks the launch. The arguments
// are converted to the kernel's parameter types here, as a <<<>>> launch would.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes, void* stream, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "launch: wrong number of kernel arguments");
#if VOLT_CUDA_EMU_SDK
  ::volt_emu::launch_on(static_cast<cudaStream_t>(stream), kernel, grid, block, smem_bytes,
                        Params(std::forward<Args>(args))...);
#elif VOLT_CUDA_EMU
  (void)stream;
  ::volt_emu::launch(kernel, grid, block, smem_bytes, Params(std::forward<Args>(args))...);
#else
  kernel<<<grid, block, smem_bytes, static_cast<cudaStream_t>(stream)>>>(Params(std::forward<Args>(args))...);
  CUDA_CHECK_LAUNCH();
#endif
}

// The block's dynamic shared memory (launch()'s smem_bytes) as a T*: `VOLT_DYNAMIC_SMEM(float, buf);`.
#if VOLT_CUDA_EMU
#define VOLT_DYNAMIC_SMEM(T, name) T* name = static_cast<T*>(::volt_emu::dynamic_smem())
#else
#define VOLT_DYNAMIC_SMEM(T, name)                                \
  extern __shared__ __align__(16) unsigned char volt_dyn_smem_[]; \
  T* name = reinterpret_cast<T*>(volt_dyn_smem_)
#endif

// Blocks for a grid-stride loop over n elements (at least one, at most 65536: the loop covers the rest).
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(b, 65536)));
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024); the result is valid in thread 0.
// Fixed order for a fixed blockDim, so results are deterministic.
template <class T>
__device__ T block_sum(T v) {
  __shared__ T warp_sums[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = int(threadIdx.x) < warps ? warp_sums[threadIdx.x] : T(0);
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  __syncthreads();  // warp_sums may be reused by a following call
  return v;
}

// Records a target outside [0, C) in the deferred-error slot bad[3] (count; the lowest row and its
// value, see encode_bad_target in kernels/reduce.h) that check_deferred_errors() reads on the host.
// Null `bad`: not recorded.
__device__ __forceinline__ void note_bad_target(int64_t* bad, int64_t n, int64_t target) {
  if (!bad) return;
  atomicAdd(reinterpret_cast<unsigned long long*>(bad), 1ull);
  atomicMax(reinterpret_cast<unsigned long long*>(bad + 1), (unsigned long long)(encode_bad_target(n, target)));
}

}  // namespace volt::cuda::detail
