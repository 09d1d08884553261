// CUDA elementwise kernels (see kernels/elementwise.h). Arithmetic uses __fadd_rn / __fmul_rn where the
// CPU kernel has a multiply-add, so the GPU rounds exactly like the CPU (no FMA contraction).
#include "kernels/cuda/launch.cuh"
#include "kernels/elementwise.h"
#include "kernels/philox.h"

namespace volt::cuda {

using detail::grid_for;
using detail::launch;
using detail::kThreads;

namespace {

constexpr int kMaxDims = 8;

struct BroadcastArgs {
  int ndim;
  int64_t shape[kMaxDims];
  int64_t as[kMaxDims];
  int64_t bs[kMaxDims];
};

struct AddF { __device__ float operator()(float x, float y) const { return __fadd_rn(x, y); } };
struct SubF { __device__ float operator()(float x, float y) const { return __fsub_rn(x, y); } };
struct MulF { __device__ float operator()(float x, float y) const { return __fmul_rn(x, y); } };

template <class F>
__global__ void binary_same_kernel(int64_t n, const float* a, const float* b, float* out, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = f(a[i], b[i]);
}

template <class F>
__global__ void binary_broadcast_kernel(int64_t n, BroadcastArgs args, const float* a, const float* b, float* out,
                                        F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, ao = 0, bo = 0;
    for (int d = args.ndim - 1; d >= 0; --d) {
      const int64_t idx = rem % args.shape[d];
      rem /= args.shape[d];
      ao += idx * args.as[d];
      bo += idx * args.bs[d];
    }
    out[i] = f(a[ao], b[bo]);
  }
}

template <class Run>
void dispatch(BinaryOp op, Run&& run) {
  switch (op) {
    case BinaryOp::Add: run(AddF{}); break;
    case BinaryOp::Sub: run(SubF{}); break;
    case BinaryOp::Mul: run(MulF{}); break;
  }
}

__global__ void scale_kernel(int64_t n, const float* x, float alpha, float beta, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __fadd_rn(__fmul_rn(alpha, x[i]), beta);
}

__global__ void axpy_kernel(int64_t n, float alpha, const float* x, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __fadd_rn(y[i], __fmul_rn(alpha, x[i]));
}

__global__ void relu_forward_kernel(int64_t n, const float* x, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    y[i] = v > 0.f ? v : (v != v ? v : 0.f);  // NaN propagates
  }
}

__global__ void relu_backward_kernel(int64_t n, const float* dy, const float* x, float* dx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = x[i] > 0.f ? dy[i] : 0.f;
}

// One thread per Philox block: element i uses word i % 4 of block offset + i / 4 (kernels/philox.h),
// so a thread computes the four elements 4j .. 4j+3 from one Philox call.
__global__ void dropout_forward_kernel(int64_t n, const float* x, float p, float s, uint64_t seed, uint64_t stream_id,
                                       uint64_t offset, uint8_t* keep, float* y) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < blocks; j += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t block = offset + uint64_t(j);
    const Philox4 r = philox4x32_10(uint32_t(block), uint32_t(block >> 32), uint32_t(stream_id),
                                    uint32_t(stream_id >> 32), uint32_t(seed), uint32_t(seed >> 32));
    for (int w = 0; w < 4; ++w) {
      const int64_t i = 4 * j + w;
      if (i >= n) break;
      const bool k = philox_uniform(r.v[w]) >= p;
      keep[i] = k;
      y[i] = k ? __fmul_rn(x[i], s) : 0.f;
    }
  }
}

__global__ void dropout_backward_kernel(int64_t n, const float* dy, const uint8_t* keep, float s, float* dx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float d = __fmul_rn(dy[i], s);
    dx[i] = keep[i] ? d : 0.f;
  }
}

__global__ void fill_kernel(int64_t n, float value, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = value;
}

__global__ void add_i64_kernel(int64_t* value, int64_t delta) { *value += delta; }

}  // namespace

void binary_broadcast(BinaryOp op, int64_t ndim, const int64_t* shape, const float* a, const int64_t* a_strides,
                      const float* b, const int64_t* b_strides, float* out, void* stream) {
  VOLT_CHECK(ndim >= 0 && ndim <= kMaxDims, "broadcasting on CUDA supports at most ", kMaxDims, " dims, got ", ndim);
  BroadcastArgs args{};
  args.ndim = int(ndim);
  int64_t n = 1;
  for (int64_t d = 0; d < ndim; ++d) {
    args.shape[d] = shape[d];
    args.as[d] = a_strides[d];
    args.bs[d] = b_strides[d];
    n *= shape[d];
  }
  if (n == 0) return;
  dispatch(op, [&](auto f) {
    launch(binary_broadcast_kernel<decltype(f)>, grid_for(n), kThreads, 0, stream, n, args, a, b, out, f);
  });
}

void binary_same(BinaryOp op, int64_t n, const float* a, const float* b, float* out, void* stream) {
  if (n == 0) return;
  dispatch(op,
           [&](auto f) { launch(binary_same_kernel<decltype(f)>, grid_for(n), kThreads, 0, stream, n, a, b, out, f); });
}

void scale(int64_t n, const float* x, float alpha, float beta, float* out, void* stream) {
  if (n == 0) return;
  launch(scale_kernel, grid_for(n), kThreads, 0, stream, n, x, alpha, beta, out);
}

void axpy(int64_t n, float alpha, const float* x, float* y, void* stream) {
  if (n == 0) return;
  launch(axpy_kernel, grid_for(n), kThreads, 0, stream, n, alpha, x, y);
}

void relu_forward(int64_t n, const float* x, float* y, void* stream) {
  if (n == 0) return;
  launch(relu_forward_kernel, grid_for(n), kThreads, 0, stream, n, x, y);
}

void relu_backward(int64_t n, const float* dy, const float* x, float* dx, void* stream) {
  if (n == 0) return;
  launch(relu_backward_kernel, grid_for(n), kThreads, 0, stream, n, dy, x, dx);
}

void dropout_forward(int64_t n, const float* x, float p, uint64_t seed, uint64_t stream_id, uint64_t offset,
                     uint8_t* keep, float* y, void* stream) {
  if (n == 0) return;
  const float s = p < 1.f ? 1.f / (1.f - p) : 0.f;  // exactly as cpu::dropout_forward
  launch(dropout_forward_kernel, grid_for((n + 3) / 4), kThreads, 0, stream, n, x, p, s, seed, stream_id, offset, keep,
         y);
}

void dropout_backward(int64_t n, const float* dy, const uint8_t* keep, float p, float* dx, void* stream) {
  if (n == 0) return;
  const float s = p < 1.f ? 1.f / (1.f - p) : 0.f;
  launch(dropout_backward_kernel, grid_for(n), kThreads, 0, stream, n, dy, keep, s, dx);
}

void fill(int64_t n, float value, float* out, void* stream) {
  if (n == 0) return;
  launch(fill_kernel, grid_for(n), kThreads, 0, stream, n, value, out);
}

void add_i64(int64_t* value, int64_t delta, void* stream) {
  launch(add_i64_kernel, 1, 1, 0, stream, value, delta);
}

}  // namespace volt::cuda
