// Volt's own forward convolution for 16-bit storage when the reduction C*R*S is small (a network's
// first layer on RGB or grey images: 3x5x5 = 75), see kernels/conv2d.h. cuDNN's kernels for three
// input channels run far below the tensor cores' rate (PyTorch's profile: the first layer's forward
// was the largest convolution row of a step), and its bias is a second pass over the output.
//
// An implicit GEMM on the tensor cores (WMMA 16x16x16, float accumulation): a block computes 128
// output pixels x 64 output channels. It gathers its pixels' receptive fields (im2col, zero padding,
// the reduction padded to a multiple of 16) and the weights into shared memory, multiplies them with
// 8 warps of 32x32 each, stages the float results in shared memory (reusing the same bytes) and
// writes y in NCHW, with the bias added, one coalesced store per element.
#include "kernels/conv2d.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/num.cuh"

#if !VOLT_CUDA_EMU
#include <mma.h>
#endif

namespace volt::cuda {

using detail::launch;
using detail::load_f;
using detail::store_f;

namespace {

namespace wmma = nvcuda::wmma;

constexpr int kTileM = 128;   // output pixels per block
constexpr int kTileN = 64;    // output channels per block
constexpr int kThreads = 256;  // 8 warps: 4 along the pixels x 2 along the channels, 32x32 each
constexpr int kMaxReduction = 96;
constexpr int kLdc = kTileM + 4;  // the float staging tile [channel][pixel]: 16-byte rows, fewer bank conflicts

struct IgemmDims {
  Conv2dShape s;
  int red;      // C * R * S
  int red_pad;  // red rounded up to a multiple of 16 (the tensor cores' k)
  int lda;      // shared-memory row length of the gathered tiles: red_pad + 8 halves (conflict-free rows)
  int64_t pixels;  // N * P * Q
};

size_t smem_bytes(const IgemmDims& d) {
  const size_t tiles = size_t(kTileM + kTileN) * d.lda * 2 + size_t(3) * kMaxReduction * sizeof(int);
  const size_t staging = size_t(kTileN) * kLdc * sizeof(float);
  return tiles > staging ? tiles : staging;
}

template <class T>
__global__ void __launch_bounds__(kThreads, 4) conv_igemm_forward_kernel(IgemmDims d, const T* x, const T* w, const T* b,
                                                                        T* y) {
#if VOLT_CUDA_EMU
  unsigned char* smem = static_cast<unsigned char*>(::volt_emu::dynamic_smem());
#else
  extern __shared__ __align__(128) unsigned char volt_igemm_smem_[];
  unsigned char* smem = volt_igemm_smem_;
#endif
  const Conv2dShape& s = d.s;
  const int lda = d.lda;
  T* As = reinterpret_cast<T*>(smem);  // [pixel][reduction]
  T* Bs = As + kTileM * lda;           // [channel][reduction]
  int* k_off = reinterpret_cast<int*>(Bs + kTileN * lda);  // reduction index -> offset in the image
  int* k_r = k_off + kMaxReduction;
  int* k_s = k_r + kMaxReduction;
  float* Cs = reinterpret_cast<float*>(smem);  // [channel][pixel], after the products (aliases As, Bs)

  const int tid = threadIdx.x;
  const int n0 = blockIdx.y * kTileN;
  const int RS = int(s.R * s.S), H = int(s.H), W = int(s.W), K = int(s.K);
  const T zero = store_f<T>(0.f);

  for (int kk = tid; kk < d.red; kk += kThreads) {
    const int c = kk / RS, rs = kk - c * RS, r = rs / int(s.S), sc = rs - r * int(s.S);
    k_off[kk] = (c * H + r) * W + sc;
    k_r[kk] = r;
    k_s[kk] = sc;
  }
  for (int i = tid; i < kTileN * d.red_pad; i += kThreads) {
    const int n = i / d.red_pad, kk = i - n * d.red_pad, k = n0 + n;
    Bs[n * lda + kk] = (k < K && kk < d.red) ? w[int64_t(k) * d.red + kk] : zero;
  }

  // This thread's output pixel (the same one in the gather and in the epilogue).
  const int ml = tid & (kTileM - 1);
  const int64_t m = int64_t(blockIdx.x) * kTileM + ml;
  const bool valid = m < d.pixels;
  const int64_t PQ = s.P * s.Q;
  int64_t img = 0, pq = 0;
  int h0 = 0, w0 = 0;
  if (valid) {
    img = m / PQ;
    pq = m - img * PQ;
    const int p = int(pq / s.Q), q = int(pq - int64_t(p) * s.Q);
    h0 = p * int(s.stride_h) - int(s.pad_h);
    w0 = q * int(s.stride_w) - int(s.pad_w);
  }
  const int64_t x0 = img * s.C * s.H * s.W + int64_t(h0) * W + w0;  // + k_off[kk]: x's index (when in bounds)
  __syncthreads();
  for (int kk = tid / kTileM; kk < d.red_pad; kk += kThreads / kTileM) {
    T v = zero;
    if (valid && kk < d.red) {
      const int h = h0 + k_r[kk], ww = w0 + k_s[kk];
      if (h >= 0 && h < H && ww >= 0 && ww < W) v = x[x0 + k_off[kk]];
    }
    As[ml * lda + kk] = v;
  }
  __syncthreads();

  const int warp = tid / 32, wm = (warp & 3) * 32, wn = (warp >> 2) * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);
  for (int k0 = 0; k0 < d.red_pad; k0 += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[2];
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> bm[2];
    for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], As + (wm + 16 * i) * lda + k0, lda);
    for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(bm[j], Bs + (wn + 16 * j) * lda + k0, lda);
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], bm[j], acc[i][j]);
  }
  __syncthreads();  // every warp is done with As and Bs: Cs takes their place
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(Cs + (wn + 16 * j) * kLdc + wm + 16 * i, acc[i][j], kLdc, wmma::mem_col_major);
  __syncthreads();

  if (!valid) return;
  T* yp = y + img * K * PQ + pq;
  for (int nl = tid / kTileM; nl < kTileN; nl += kThreads / kTileM) {
    const int k = n0 + nl;
    if (k >= K) break;
    float v = Cs[nl * kLdc + ml];
    if (b) v += load_f(b[k]);
    yp[int64_t(k) * PQ] = store_f<T>(v);
  }
}

}  // namespace

bool conv2d_forward_own_supported(FType t, const Conv2dShape& s) {
  const int64_t red = s.C * s.R * s.S;
  return t != FType::F32 && red >= 1 && red <= kMaxReduction && s.C * s.H * s.W <= 2147483647 && s.K >= 1 &&
         (s.K + kTileN - 1) / kTileN <= 65535 && s.N * s.P * s.Q >= 1 && s.H <= 65535 && s.W <= 65535 &&
         s.P * s.stride_h <= 65535 && s.Q * s.stride_w <= 65535;
}

void conv2d_forward_own(FType t, const Conv2dShape& s, const void* x, const void* w, const void* b, void* y,
                        void* stream) {
  VOLT_CHECK(conv2d_forward_own_supported(t, s), "conv2d_forward_own: unsupported shape or type (", ftype_name(t),
             ", reduction ", s.C * s.R * s.S, ")");
  IgemmDims d;
  d.s = s;
  d.red = int(s.C * s.R * s.S);
  d.red_pad = (d.red + 15) / 16 * 16;
  d.lda = d.red_pad + 8;
  d.pixels = s.N * s.P * s.Q;
  const dim3 grid(unsigned((d.pixels + kTileM - 1) / kTileM), unsigned((s.K + kTileN - 1) / kTileN));
  if (t == FType::F16)
    launch(conv_igemm_forward_kernel<__half>, grid, dim3(kThreads), smem_bytes(d), stream, d,
           static_cast<const __half*>(x), static_cast<const __half*>(w), static_cast<const __half*>(b),
           static_cast<__half*>(y));
  else
    launch(conv_igemm_forward_kernel<__nv_bfloat16>, grid, dim3(kThreads), smem_bytes(d), stream, d,
           static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(w),
           static_cast<const __nv_bfloat16*>(b), static_cast<__nv_bfloat16*>(y));
}

}  // namespace volt::cuda
