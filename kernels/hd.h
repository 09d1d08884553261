// VOLT_HD marks a function that the CPU kernels and the CUDA kernels share (one definition of an
// arithmetic both backends must agree on bit for bit).
#pragma once

#if defined(__CUDACC__)
#define VOLT_HD __host__ __device__ __forceinline__
#else
#define VOLT_HD inline
#endif
