// CUDA elementwise kernels (see kernels/elementwise.h) for float32, float16 and bfloat16 storage,
// computed in float32. Arithmetic uses __fadd_rn / __fmul_rn where the CPU kernel has a multiply-add,
// so the GPU rounds exactly like the CPU (no FMA contraction); a 16-bit result is the float32 result
// rounded once, as the CPU reference does it.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/map.cuh"
#include "kernels/cuda/num.cuh"
#include "kernels/fast_div.h"
#include "kernels/elementwise.h"
#include "kernels/philox.h"

namespace volt::cuda {

using detail::dispatch_ftype;
using detail::grid_for;
using detail::launch;
using detail::kThreads;
using detail::load_f;
using detail::store_f;

namespace {

constexpr int kMaxDims = 8;

struct BroadcastArgs {
  int ndim;
  FastDiv shape[kMaxDims];  // the output's sizes, as divisors (no integer division per element)
  int64_t as[kMaxDims];
  int64_t bs[kMaxDims];
};

struct AddF {
  __device__ float operator()(float x, float y) const { return __fadd_rn(x, y); }
};
struct SubF {
  __device__ float operator()(float x, float y) const { return __fsub_rn(x, y); }
};
struct MulF {
  __device__ float operator()(float x, float y) const { return __fmul_rn(x, y); }
};
struct AffineF {  // alpha * x + beta
  float alpha, beta;
  __device__ float operator()(float x) const { return __fadd_rn(__fmul_rn(alpha, x), beta); }
};
struct AxpyF {  // y + alpha * x, with (y, x) as (a, b)
  float alpha;
  __device__ float operator()(float y, float x) const { return __fadd_rn(y, __fmul_rn(alpha, x)); }
};
struct ReluF {
  __device__ float operator()(float v) const { return v > 0.f ? v : (v != v ? v : 0.f); }  // NaN propagates
};
struct ReluGradF {  // (dy, x) -> dx
  __device__ float operator()(float dy, float x) const { return x > 0.f ? dy : 0.f; }
};
struct IdentityF {
  __device__ float operator()(float v) const { return v; }
};

template <class T, class F>
__global__ void binary_broadcast_kernel(int64_t n, BroadcastArgs args, const T* a, const T* b, T* out, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, ao = 0, bo = 0;
    for (int d = args.ndim - 1; d >= 0; --d) {
      const int64_t next = args.shape[d].div(rem), idx = rem - next * args.shape[d].divisor();
      rem = next;
      ao += idx * args.as[d];
      bo += idx * args.bs[d];
    }
    out[i] = store_f<T>(f(load_f(a[ao]), load_f(b[bo])));
  }
}

template <class Run>
void dispatch_op(BinaryOp op, Run&& run) {
  switch (op) {
    case BinaryOp::Add: run(AddF{}); break;
    case BinaryOp::Sub: run(SubF{}); break;
    case BinaryOp::Mul: run(MulF{}); break;
  }
}

// One thread per Philox block: element i uses word i % 4 of block offset + i / 4 (kernels/philox.h),
// so a thread computes the four elements 4j .. 4j+3 from one Philox call.
template <class T>
__global__ void dropout_forward_kernel(int64_t n, const T* x, float p, float s, uint64_t stream_id,
                                       const uint64_t* seed_offset, uint8_t* keep, T* y, bool relu) {
  const uint64_t seed = seed_offset[0], offset = seed_offset[1];
  const int64_t blocks = (n + 3) / 4;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < blocks; j += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t block = offset + uint64_t(j);
    const Philox4 r = philox4x32_10(uint32_t(block), uint32_t(block >> 32), uint32_t(stream_id),
                                    uint32_t(stream_id >> 32), uint32_t(seed), uint32_t(seed >> 32));
    for (int w = 0; w < 4; ++w) {
      const int64_t i = 4 * j + w;
      if (i >= n) break;
      const bool k = philox_uniform(r.v[w]) >= p;
      const float xv = load_f(x[i]), v = relu ? ReluF{}(xv) : xv;
      keep[i] = k && (!relu || xv > 0.f);
      y[i] = store_f<T>(k ? __fmul_rn(v, s) : 0.f);
    }
  }
}

template <class T>
__global__ void dropout_backward_kernel(int64_t n, const T* dy, const uint8_t* keep, float s, T* dx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float d = __fmul_rn(load_f(dy[i]), s);
    dx[i] = store_f<T>(keep[i] ? d : 0.f);
  }
}

template <class T>
__global__ void fill_kernel(int64_t n, float value, T* out) {
  const T v = store_f<T>(value);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = v;
}

__global__ void add_i64_kernel(int64_t* value, int64_t delta) { *value += delta; }

// The channel of element t is (t / HW) % C, by FastDiv (no integer division per element).
template <class T>
__global__ void add_channel_bias_kernel(int64_t total, FastDiv hw, FastDiv c, const T* bias, T* y) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x)
    y[t] = store_f<T>(__fadd_rn(load_f(y[t]), load_f(bias[c.mod(hw.div(t))])));
}

}  // namespace

void binary_broadcast(FType t, BinaryOp op, int64_t ndim, const int64_t* shape, const void* a, const int64_t* a_strides,
                      const void* b, const int64_t* b_strides, void* out, void* stream) {
  VOLT_CHECK(ndim >= 0 && ndim <= kMaxDims, "broadcasting on CUDA supports at most ", kMaxDims, " dims, got ", ndim);
  BroadcastArgs args{};
  args.ndim = int(ndim);
  int64_t n = 1;
  for (int64_t d = 0; d < ndim; ++d) {
    args.shape[d] = FastDiv(std::max<int64_t>(shape[d], 1));
    args.as[d] = a_strides[d];
    args.bs[d] = b_strides[d];
    n *= shape[d];
  }
  if (n == 0) return;
  dispatch_ftype(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_op(op, [&](auto f) {
      launch(binary_broadcast_kernel<T, decltype(f)>, grid_for(n), kThreads, 0, stream, n, args, a, b, out, f);
    });
  });
}

void binary_same(FType t, BinaryOp op, int64_t n, const void* a, const void* b, void* out, void* stream) {
  dispatch_ftype(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_op(op, [&](auto f) { detail::map2<T, T, T>(n, a, b, out, f, stream); });
  });
}

void scale(FType t, int64_t n, const void* x, float alpha, float beta, void* out, void* stream) {
  dispatch_ftype(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    detail::map1<T, T>(n, x, out, AffineF{alpha, beta}, stream);
  });
}

void axpy(FType t, int64_t n, float alpha, const void* x, void* y, void* stream) {
  dispatch_ftype(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    detail::map2<T, T, T>(n, y, x, y, AxpyF{alpha}, stream);
  });
}

void relu_forward(FType t, int64_t n, const void* x, void* y, void* stream) {
  dispatch_ftype(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    detail::map1<T, T>(n, x, y, ReluF{}, stream);
  });
}

void relu_backward(FType t, int64_t n, const void* dy, const void* x, void* dx, void* stream) {
  dispatch_ftype(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    detail::map2<T, T, T>(n, dy, x, dx, ReluGradF{}, stream);
  });
}

void cast(FType from, FType to, int64_t n, const void* x, void* y, void* stream) {
  dispatch_ftype(from, [&](auto from_tag) {
    dispatch_ftype(to, [&](auto to_tag) {
      using TA = typename decltype(from_tag)::type;
      using TY = typename decltype(to_tag)::type;
      detail::map1<TA, TY>(n, x, y, IdentityF{}, stream);
    });
  });
}

namespace {
struct CastList {  // by value in the kernel's parameters (kCastPerLaunch * 24 bytes, under the 4 KiB limit)
  const void* x[kCastPerLaunch];
  void* y[kCastPerLaunch];
  int64_t n[kCastPerLaunch];
};

// Tensor blockIdx.y of the list, grid-stride over its elements, converted as map1 with IdentityF does.
template <class TA, class TY>
__global__ void cast_multi_kernel(CastList l) {
  const int j = blockIdx.y;
  const TA* x = static_cast<const TA*>(l.x[j]);
  TY* y = static_cast<TY*>(l.y[j]);
  const int64_t n = l.n[j], stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride)
    y[i] = store_f<TY>(IdentityF{}(load_f(x[i])));
}
}  // namespace

void cast_multi(FType from, FType to, const CastTensor* tensors, int64_t count, void* stream) {
  for (int64_t start = 0; start < count; start += kCastPerLaunch) {
    const int64_t c = std::min<int64_t>(kCastPerLaunch, count - start);
    CastList l{};
    int64_t max_n = 0;
    for (int64_t j = 0; j < c; ++j) {
      l.x[j] = tensors[start + j].x;
      l.y[j] = tensors[start + j].y;
      l.n[j] = tensors[start + j].n;
      max_n = std::max(max_n, l.n[j]);
    }
    if (max_n == 0) continue;
    dispatch_ftype(from, [&](auto from_tag) {
      dispatch_ftype(to, [&](auto to_tag) {
        using TA = typename decltype(from_tag)::type;
        using TY = typename decltype(to_tag)::type;
        launch(cast_multi_kernel<TA, TY>, dim3(grid_for(max_n), unsigned(c)), kThreads, 0, stream, l);
      });
    });
  }
}

void dropout_forward(FType t, int64_t n, const void* x, float p, uint64_t stream_id, const uint64_t* seed_offset,
                     uint8_t* keep, void* y, void* stream, bool relu) {
  if (n == 0) return;
  const float s = p < 1.f ? 1.f / (1.f - p) : 0.f;  // exactly as cpu::dropout_forward
  dispatch_ftype(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(dropout_forward_kernel<T>, grid_for((n + 3) / 4), kThreads, 0, stream, n, x, p, s, stream_id, seed_offset,
           keep, y, relu);
  });
}

void dropout_backward(FType t, int64_t n, const void* dy, const uint8_t* keep, float p, void* dx, void* stream) {
  if (n == 0) return;
  const float s = p < 1.f ? 1.f / (1.f - p) : 0.f;
  dispatch_ftype(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(dropout_backward_kernel<T>, grid_for(n), kThreads, 0, stream, n, dy, keep, s, dx);
  });
}

void fill(FType t, int64_t n, float value, void* out, void* stream) {
  if (n == 0) return;
  dispatch_ftype(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(fill_kernel<T>, grid_for(n), kThreads, 0, stream, n, value, out);
  });
}

void add_i64(int64_t* value, int64_t delta, void* stream) { launch(add_i64_kernel, 1, 1, 0, stream, value, delta); }

void add_channel_bias(FType t, int64_t N, int64_t C, int64_t HW, const void* bias, void* y, void* stream) {
  const int64_t total = N * C * HW;
  if (total == 0) return;
  dispatch_ftype(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(add_channel_bias_kernel<T>, grid_for(total), kThreads, 0, stream, total, FastDiv(HW), FastDiv(C), bias, y);
  });
}

}  // namespace volt::cuda
