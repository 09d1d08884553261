// Argument checks shared by the ops: every message starts with the op name and shows the shapes; and
// the CUDA dispatch helpers (a CUDA kernel call is written inside VOLT_CUDA_ONLY(...), which a
// CPU-only build replaces by an error, so the ops need no #if).
#pragma once
#include <array>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "../error.h"
#include "../tensor.h"
#include "volt/config.h"

namespace volt::detail {

// Defined, floating (float32, float16 or bfloat16), non-empty, on a device this build has kernels
// for, and (when rank >= 0) of that rank.
void check_input(const char* op, const char* what, const Tensor& t, int64_t rank = -1);
// float32 exactly: parameters and statistics that stay float32 under mixed precision.
void check_f32(const char* op, const char* what, const Tensor& t);
// Every defined tensor has the first one's dtype: "linear: weight is float32 but input is float16".
DType common_dtype(const char* op, const std::vector<std::pair<const char*, Tensor>>& named);
// A float16/bfloat16 tensor on the CPU: the op then runs as its float32 self between casts (float
// math, one rounding to 16 bits at the output: the reference the CUDA kernels are held to).
// Runs a CPU kernel that allocates work buffers: running out of host memory there is a volt::Error
// naming the op, as for a tensor's own allocation.
template <class F>
void cpu_kernel(const char* op, F&& kernel) {
  try {
    kernel();
  } catch (const std::bad_alloc&) {
    VOLT_FAIL(op, ": out of host memory for the CPU kernel's work buffers");
  }
}

inline bool cpu_low_precision(const Tensor& t) { return t.device().is_cpu() && t.dtype() != DType::F32; }
// The kernels' storage type of a floating tensor.
inline FType ft(const Tensor& t) { return ftype_of(t.dtype()); }
// All defined tensors share one device: "conv2d: input is on cuda:0 but weight is on cpu".
Device common_device(const char* op, const std::vector<std::pair<const char*, Tensor>>& named);
// Unnamed variant ("tensors are on different devices (cpu and cuda:0)").
Device common_device(const char* op, const std::vector<Tensor>& ts);
// dim in [-rank, rank) -> [0, rank)
int64_t wrap_dim(const char* op, int64_t dim, int64_t rank);

// The stream to run t's kernels on (makes t's device current). Only for CUDA tensors.
void* stream_of(const Tensor& t);
[[noreturn]] void no_cuda_kernels();

// conv2d (engine/ops.h) that, where Volt's own CUDA forward kernel runs, also leaves in *sums (U8 bytes
// of double [K][chunks][2]: kernels/conv2d.h) the sums of the output and of its square per channel and
// block of 128 pixels; elsewhere *sums is undefined.
Tensor conv2d_with_channel_sums(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                std::array<int64_t, 2> stride, std::array<int64_t, 2> padding, Tensor* sums);

}  // namespace volt::detail

#if VOLT_HAVE_CUDA
#define VOLT_CUDA_ONLY(...) __VA_ARGS__
#else
#define VOLT_CUDA_ONLY(...) ::volt::detail::no_cuda_kernels()
#endif
