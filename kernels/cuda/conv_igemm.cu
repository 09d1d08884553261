// Volt's own convolution kernels for 16-bit storage when the reduction C*R*S is small (a network's
// first layer on RGB or grey images: 3x5x5 = 75), see kernels/conv2d.h. cuDNN's kernels for three
// input channels run far below the tensor cores' rate (PyTorch's profile: the first layer's forward
// was the largest convolution row of a step), and its bias and bias gradient are extra passes over
// the layer's output and gradient, the largest activations of the network.
//
// Forward: an implicit GEMM on the tensor cores (WMMA 16x16x16, float accumulation); a block computes
// 128 output pixels x 64 output channels. It gathers its pixels' receptive fields (im2col, zero
// padding, the reduction padded to a multiple of 16) and the weights into shared memory, multiplies
// them with 8 warps of 32x32 each, stages the float results in shared memory (reusing the same bytes)
// and writes y in NCHW, with the bias added, one coalesced store per element.
// Weight gradient: the same gather, times the matching 64 x 128 tile of dy, accumulated over the
// block's pixel tiles; a column of ones in the gathered tile makes the bias gradient a by-product.
// The blocks' float partial sums are added in a fixed order by a second kernel. The grid fills the
// GPU's block slots once (conv2d_backward_weight_own_grid), each block walking its share of the tiles.
#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "kernels/conv2d.h"
#include "kernels/cuda/bn_grad.cuh"
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
constexpr int kLdd = kTileM + 8;  // the gradient's 16-bit tile [channel][pixel] in the weight gradient

struct IgemmDims {
  Conv2dShape s;
  int red;      // C * R * S
  int red_pad;  // red (+ 1: the weight gradient's bias column) rounded up to 16 (the tensor cores' k)
  int lda;      // shared-memory row length of the gathered tiles: red_pad + 8 halves (conflict-free rows)
  int64_t pixels;  // N * P * Q
};

size_t forward_smem_bytes(const IgemmDims& d) {
  const size_t tiles = size_t(kTileM + kTileN) * d.lda * 2 + size_t(3) * kMaxReduction * sizeof(int);
  const size_t staging = size_t(kTileN) * kLdc * sizeof(float);
  return tiles > staging ? tiles : staging;
}

__device__ __forceinline__ unsigned char* igemm_smem() {
#if VOLT_CUDA_EMU
  return static_cast<unsigned char*>(::volt_emu::dynamic_smem());
#else
  extern __shared__ __align__(128) unsigned char volt_igemm_smem_[];
  return volt_igemm_smem_;
#endif
}

// Reduction index kk = (c, r, s) -> its offset in an image, and r and s for the padding test.
struct ReductionTables {
  int* off;
  int* r;
  int* s;
};
__device__ __forceinline__ ReductionTables reduction_tables(const IgemmDims& d, int* store) {
  ReductionTables t{store, store + kMaxReduction, store + 2 * kMaxReduction};
  const Conv2dShape& s = d.s;
  const int RS = int(s.R * s.S);
  for (int kk = threadIdx.x; kk < d.red; kk += kThreads) {
    const int c = kk / RS, rs = kk - c * RS, r = rs / int(s.S), sc = rs - r * int(s.S);
    t.off[kk] = (c * int(s.H) + r) * int(s.W) + sc;
    t.r[kk] = r;
    t.s[kk] = sc;
  }
  return t;
}

// Output pixel m = (image, p, q): where its receptive field starts in x.
struct Pixel {
  bool valid;
  bool inside;  // the whole receptive field lies in the image (no padding to test for: pad 0 always)
  int64_t img, pq, x0;  // x0 + off[kk]: x's index of reduction element kk (when inside the image)
  int h0, w0;
};
__device__ __forceinline__ Pixel pixel_of(const IgemmDims& d, int64_t m) {
  const Conv2dShape& s = d.s;
  Pixel px{m < d.pixels, false, 0, 0, 0, 0, 0};
  if (px.valid) {
    const int64_t PQ = s.P * s.Q;
    px.img = m / PQ;
    px.pq = m - px.img * PQ;
    const int p = int(px.pq / s.Q), q = int(px.pq - int64_t(p) * s.Q);
    px.h0 = p * int(s.stride_h) - int(s.pad_h);
    px.w0 = q * int(s.stride_w) - int(s.pad_w);
    px.x0 = px.img * s.C * s.H * s.W + int64_t(px.h0) * s.W + px.w0;
    px.inside = px.h0 >= 0 && px.w0 >= 0 && px.h0 + int(s.R) <= int(s.H) && px.w0 + int(s.S) <= int(s.W);
  }
  return px;
}

// Row ml of the im2col tile (lda per row): pixel px's receptive field, zeros for the padding, the
// columns past the reduction and an invalid pixel; column `ones` (if < red_pad) is 1 for a valid
// pixel, so that a product with it sums the other operand (the bias gradient).
// kBatch elements at a time, their loads before their stores, so that kBatch loads are in flight at
// once. The forward kernel takes 1: held to 64 registers (4 blocks an SM), it spills in bfloat16 with
// 4, and its 4 blocks an SM hide the loads' latency (a batch of 8 changed nothing there, 535 us at 2048).
// A pixel whose receptive field lies inside the image (every pixel when the padding is 0) skips the
// bounds test and its two table reads per element.
template <int kBatch, class T>
__device__ __forceinline__ void gather_row(const IgemmDims& d, const T* x, const Pixel& px, const ReductionTables& t,
                                           T* row, int first, int step, int ones) {
  const T zero = store_f<T>(0.f), one = store_f<T>(1.f);
  for (int kk0 = first; kk0 < d.red_pad; kk0 += step * kBatch) {
    T v[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int kk = kk0 + step * j;
      v[j] = zero;
      if (px.valid && kk < d.red) {
        if (px.inside) {
          v[j] = x[px.x0 + t.off[kk]];
        } else {
          const int h = px.h0 + t.r[kk], w = px.w0 + t.s[kk];
          if (h >= 0 && h < int(d.s.H) && w >= 0 && w < int(d.s.W)) v[j] = x[px.x0 + t.off[kk]];
        }
      } else if (px.valid && kk == ones) {
        v[j] = one;
      }
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j)
      if (kk0 + step * j < d.red_pad) row[kk0 + step * j] = v[j];
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads, 4)
    conv_igemm_forward_kernel(IgemmDims d, const T* x, const T* w, const T* b, T* y, double* sums) {
  unsigned char* smem = igemm_smem();
  const Conv2dShape& s = d.s;
  const int lda = d.lda;
  T* As = reinterpret_cast<T*>(smem);  // [pixel][reduction]
  T* Bs = As + kTileM * lda;           // [channel][reduction]
  const ReductionTables tab = reduction_tables(d, reinterpret_cast<int*>(Bs + kTileN * lda));
  float* Cs = reinterpret_cast<float*>(smem);  // [channel][pixel], after the products (aliases As, Bs)

  const int tid = threadIdx.x;
  const int n0 = blockIdx.y * kTileN;
  const int K = int(s.K);
  const T zero = store_f<T>(0.f);
  for (int i = tid; i < kTileN * d.red_pad; i += kThreads) {
    const int n = i / d.red_pad, kk = i - n * d.red_pad, k = n0 + n;
    Bs[n * lda + kk] = (k < K && kk < d.red) ? w[int64_t(k) * d.red + kk] : zero;
  }

  // This thread's output pixel (the same one in the gather and in the epilogue).
  const int ml = tid & (kTileM - 1);
  const Pixel px = pixel_of(d, int64_t(blockIdx.x) * kTileM + ml);
  __syncthreads();
  gather_row<1>(d, x, px, tab, As + ml * lda, tid / kTileM, kThreads / kTileM, d.red_pad);
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

  if (sums) {
    // Batch norm's statistics of y as stored (rounded to T): per channel, 4 threads x 32 pixels, then
    // the 4 threads' sums added (sums[k][blockIdx.x] = (sum of y, sum of y^2), double).
    const int nl = tid / 4, sub = tid % 4, k = n0 + nl;
    const int64_t valid = d.pixels - int64_t(blockIdx.x) * kTileM;  // this block's pixels (> 0)
    double s1 = 0, s2 = 0;
    if (k < K) {
      const float bk = b ? load_f(b[k]) : 0.f;
      for (int i = sub; i < kTileM && i < valid; i += 4) {
        const double v = load_f(store_f<T>(Cs[nl * kLdc + i] + bk));
        s1 += v;
        s2 += v * v;
      }
    }
    for (int o = 1; o < 4; o <<= 1) {
      s1 += __shfl_xor_sync(0xffffffffu, s1, o);
      s2 += __shfl_xor_sync(0xffffffffu, s2, o);
    }
    if (sub == 0 && k < K) {
      sums[(int64_t(k) * gridDim.x + blockIdx.x) * 2] = s1;
      sums[(int64_t(k) * gridDim.x + blockIdx.x) * 2 + 1] = s2;
    }
  }

  if (!px.valid) return;
  const int64_t PQ = s.P * s.Q;
  T* yp = y + px.img * K * PQ + px.pq;
  for (int nl = tid / kTileM; nl < kTileN; nl += kThreads / kTileM) {
    const int k = n0 + nl;
    if (k >= K) break;
    float v = Cs[nl * kLdc + ml];
    if (b) v += load_f(b[k]);
    yp[int64_t(k) * PQ] = store_f<T>(v);
  }
}

// Where the weight gradient's dy tile comes from. Each source fetches an element's inputs (fetch:
// loads only, independent of one another, so that the kernel has a batch of them in flight at once;
// until they were, its tile's loads ran one dependent round trip after another, about 50 us a tile
// at batch 2048) and then forms the element (value). stage() copies per-channel constants of the
// block's 64 channels into shared memory (kStageBytes) once, instead of reloading them per element.
// dy itself ...
template <class T>
struct DyDirect {
  const T* dy;
  static constexpr size_t kStageBytes = 0;
  struct At {
    int64_t base, plane;  // dy's index of the pixel in channel 0, and the distance between channels
  };
  struct Fetched {
    T v;
  };
  __device__ __forceinline__ void stage(unsigned char*, int, int) const {}
  __device__ __forceinline__ At prepare(const IgemmDims& d, const Pixel& px) const {
    return At{px.img * d.s.K * d.s.P * d.s.Q + px.pq, d.s.P * d.s.Q};
  }
  __device__ __forceinline__ Fetched fetch(const At& at, int k) const { return Fetched{dy[at.base + k * at.plane]}; }
  __device__ __forceinline__ T value(const At&, const Fetched& f, int, const unsigned char*) const { return f.v; }
};

// ... or formed from the pooled gradient of the batch norm + ReLU + max pool that consumed the
// convolution's output y, exactly as that op's dx kernel would have stored it (bn_grad.cuh: the same
// operations, so the same bits).
template <class T>
struct DyFromPool {
  const T* dy;  // the pooled gradient [N, K, P / kh, Q / kw]
  const uint8_t* window;
  const T* y;  // the convolution's output, the batch norm's input
  const float* mean;
  const detail::BnBackCoef* coef;
  bool training;
  int64_t kh, kw;
  static constexpr size_t kStageBytes = kTileN * (sizeof(detail::BnBackCoef) + sizeof(float));
  struct At {
    int64_t y0, y_plane;  // y's index of the pixel in channel 0, and the distance between channels
    int64_t e0, e_plane;  // the same in the pooled gradient and the window positions
    int pos;              // the pixel's position in its pool window
    bool inside;          // whether a pool window covers the pixel (a partial last row or column does not)
  };
  struct Fetched {
    float xv, dyv;
    int win;
  };
  // The coefficients and means of channels n0 .. n0 + 63 (those below K).
  __device__ __forceinline__ void stage(unsigned char* st, int n0, int K) const {
    auto* c = reinterpret_cast<detail::BnBackCoef*>(st);
    auto* m = reinterpret_cast<float*>(c + kTileN);
    for (int i = threadIdx.x; i < kTileN && n0 + i < K; i += kThreads) {
      c[i] = coef[n0 + i];
      m[i] = mean[n0 + i];
    }
  }
  __device__ __forceinline__ At prepare(const IgemmDims& d, const Pixel& px) const {
    const int64_t h = px.pq / d.s.Q, w = px.pq - h * d.s.Q, pp = h / kh, pq = w / kw;
    const int64_t Pp = d.s.P / kh, Qp = d.s.Q / kw;
    At at;
    at.y_plane = d.s.P * d.s.Q;
    at.y0 = px.img * d.s.K * at.y_plane + px.pq;
    at.e_plane = Pp * Qp;
    at.e0 = (px.img * d.s.K * Pp + pp) * Qp + pq;
    at.pos = int((h - pp * kh) * kw + (w - pq * kw));
    at.inside = pp < Pp && pq < Qp;
    return at;
  }
  __device__ __forceinline__ Fetched fetch(const At& at, int k) const {
    Fetched f{load_f(y[at.y0 + k * at.y_plane]), 0.f, -1};
    if (at.inside) {
      f.win = window[at.e0 + k * at.e_plane];
      f.dyv = load_f(dy[at.e0 + k * at.e_plane]);
    }
    return f;
  }
  // Channel n0 + kl's element (st: what stage() wrote).
  __device__ __forceinline__ T value(const At& at, const Fetched& f, int kl, const unsigned char* st) const {
    const auto* c = reinterpret_cast<const detail::BnBackCoef*>(st);
    const auto* m = reinterpret_cast<const float*>(c + kTileN);
    const detail::BnBackCoef q = c[kl];
    const float d = detail::bn_pool_routes(q, f.xv, f.win, at.pos) ? f.dyv : 0.f;
    return store_f<T>(detail::bn_dx_value(q, d, f.xv, m[kl], training));
  }
};

// Weight (and bias) gradient: dw[k][kk] = sum over pixels m of dy[k][m] * im2col[m][kk], and with the
// column of ones at kk = red, db[k] = sum of dy[k][m]. Block (bx, by) takes 64 channels (by) and the
// 128-pixel tiles bx, bx + gridDim.x, ...; 8 warps each own 16 channels x 3 column blocks of 16. Its
// float sums go to part[by][bx][64][red_pad]; conv_igemm_wgrad_finish adds the blocks in order.
template <class T, class Src, int kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    conv_igemm_wgrad_kernel(IgemmDims d, const T* x, Src src, float* part, int ones) {
  unsigned char* smem = igemm_smem();
  const int lda = d.lda;
  T* As = reinterpret_cast<T*>(smem);  // [pixel][reduction]
  T* Ds = As + kTileM * lda;           // [channel][pixel]: dy
  int* tables = reinterpret_cast<int*>(Ds + kTileN * kLdd);
  const ReductionTables tab = reduction_tables(d, tables);
  unsigned char* staged = reinterpret_cast<unsigned char*>(tables + 3 * kMaxReduction);  // Src::stage's

  const int tid = threadIdx.x, warp = tid / 32, kr = (warp & 3) * 16, cb = warp >> 2;
  const int n0 = blockIdx.y * kTileN, K = int(d.s.K), ncol = d.red_pad / 16;
  src.stage(staged, n0, K);  // (read after the loop's first __syncthreads)
  const int64_t tiles = (d.pixels + kTileM - 1) / kTileM;
  const T zero = store_f<T>(0.f);
  const int ml = tid & (kTileM - 1);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[3];
  for (int j = 0; j < 3; ++j) wmma::fill_fragment(acc[j], 0.f);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    __syncthreads();  // the tables are written; the previous tile's fragments are loaded
    const Pixel px = pixel_of(d, tile * kTileM + ml);
    gather_row<8>(d, x, px, tab, As + ml * lda, tid / kTileM, kThreads / kTileM, ones);
    if (px.valid) {
      // This thread's 32 channels of its pixel, 8 at a time: the 8 elements' loads first, then the values.
      const typename Src::At at = src.prepare(d, px);
      constexpr int kStep = kThreads / kTileM, kBatch = kMinBlocks >= 4 ? 4 : 8;
      static_assert(kTileN % (kStep * kBatch) == 0, "whole batches of channels");
      for (int nl0 = tid / kTileM; nl0 < kTileN; nl0 += kStep * kBatch) {
        typename Src::Fetched f[kBatch] = {};
#pragma unroll
        for (int j = 0; j < kBatch; ++j)
          if (n0 + nl0 + kStep * j < K) f[j] = src.fetch(at, n0 + nl0 + kStep * j);
#pragma unroll
        for (int j = 0; j < kBatch; ++j) {
          const int nl = nl0 + kStep * j;
          Ds[nl * kLdd + ml] = n0 + nl < K ? src.value(at, f[j], nl, staged) : zero;
        }
      }
    } else {
      for (int nl = tid / kTileM; nl < kTileN; nl += kThreads / kTileM) Ds[nl * kLdd + ml] = zero;
    }
    __syncthreads();
    for (int m0 = 0; m0 < kTileM; m0 += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
      wmma::load_matrix_sync(a, Ds + kr * kLdd + m0, kLdd);
      for (int j = 0; j < 3; ++j) {
        const int col = cb + 2 * j;
        if (col >= ncol) break;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> bm;
        wmma::load_matrix_sync(bm, As + m0 * lda + col * 16, lda);
        wmma::mma_sync(acc[j], a, bm, acc[j]);
      }
    }
  }
  float* pb = part + (int64_t(blockIdx.y) * gridDim.x + blockIdx.x) * kTileN * d.red_pad;
  for (int j = 0; j < 3; ++j) {
    const int col = cb + 2 * j;
    if (col >= ncol) break;
    wmma::store_matrix_sync(pb + kr * d.red_pad + col * 16, acc[j], d.red_pad, wmma::mem_row_major);
  }
}

// dw (and db, when ones < red_pad) from the blocks' partial sums, in a fixed order (deterministic): a
// block takes 32 consecutive outputs (kk fastest, so that a warp's loads are consecutive); each of
// its 8 warps adds its eighth of the blocks' sums in block order, then one warp adds the 8 in order.
constexpr int kFinishOutputs = 32, kFinishParts = kThreads / kFinishOutputs;
template <class T>
__global__ void __launch_bounds__(kThreads) conv_igemm_wgrad_finish(IgemmDims d, int blocks, int ones,
                                                                    const float* part, T* dw, T* db) {
  __shared__ float parts[kFinishParts][kFinishOutputs];
  const int cols = d.red + (ones < d.red_pad ? 1 : 0), lane = threadIdx.x % kFinishOutputs,
            seg = threadIdx.x / kFinishOutputs;
  const int64_t total = d.s.K * cols, t = int64_t(blockIdx.x) * kFinishOutputs + lane;
  const int b0 = int(int64_t(blocks) * seg / kFinishParts), b1 = int(int64_t(blocks) * (seg + 1) / kFinishParts);
  float sum = 0.f;
  int k = 0, kk = 0;
  if (t < total) {
    k = int(t / cols);
    kk = int(t - int64_t(k) * cols);
    const int by = k / kTileN, kl = k - by * kTileN;
    const float* p = part + (int64_t(by) * blocks * kTileN + kl) * d.red_pad + kk;
    for (int b = b0; b < b1; ++b) sum += p[int64_t(b) * kTileN * d.red_pad];
  }
  parts[seg][lane] = sum;
  __syncthreads();
  if (seg != 0 || t >= total) return;
  sum = 0.f;
  for (int i = 0; i < kFinishParts; ++i) sum += parts[i][lane];
  if (kk < d.red) dw[int64_t(k) * d.red + kk] = store_f<T>(sum);
  else db[k] = store_f<T>(sum);
}

}  // namespace

bool conv2d_forward_own_supported(FType t, const Conv2dShape& s) {
  const int64_t red = s.C * s.R * s.S;
  return t != FType::F32 && red >= 1 && red <= kMaxReduction && s.C * s.H * s.W <= 2147483647 && s.K >= 1 &&
         (s.K + kTileN - 1) / kTileN <= 65535 && s.N * s.P * s.Q >= 1 && s.H <= 65535 && s.W <= 65535 &&
         s.P * s.stride_h <= 65535 && s.Q * s.stride_w <= 65535;
}

bool conv2d_backward_weight_own_supported(FType t, const Conv2dShape& s) {
  return conv2d_forward_own_supported(t, s) && s.C * s.R * s.S < kMaxReduction;  // room for the bias column
}

namespace {

// The kernels' dimensions; `columns` is the reduction plus the bias gradient's column of ones (if any).
IgemmDims igemm_dims(const Conv2dShape& s, int64_t columns) {
  IgemmDims d;
  d.s = s;
  d.red = int(s.C * s.R * s.S);
  d.red_pad = int((columns + 15) / 16 * 16);
  d.lda = d.red_pad + 8;
  d.pixels = s.N * s.P * s.Q;
  return d;
}

// At most max_blocks (0: 256), at most one a pixel tile, then as few as take the same number of rounds
// (each block leaves a partial sum: fewer to add), so that every block takes the same number of
// tiles, give or take one.
int wgrad_blocks(const IgemmDims& d, int max_blocks) {
  const int64_t tiles = (d.pixels + kTileM - 1) / kTileM, most = max_blocks > 0 ? max_blocks : 256;
  const int64_t rounds = (tiles + most - 1) / most;
  return int((tiles + rounds - 1) / rounds);
}

// Runs f(TypeTag<T>) for the 16-bit storage type t (the WMMA kernels have no float32 twin).
template <class F>
void dispatch_16bit(FType t, F&& f) {
  if (t == FType::F16) f(detail::TypeTag<__half>{});
  else f(detail::TypeTag<__nv_bfloat16>{});
}

// stage_bytes: the dy source's per-channel constants (its kStageBytes).
size_t wgrad_smem_bytes(const IgemmDims& d, size_t stage_bytes) {
  return size_t(kTileM) * d.lda * 2 + size_t(kTileN) * kLdd * 2 + size_t(3) * kMaxReduction * sizeof(int) +
         stage_bytes;
}

}  // namespace

// The weight-gradient kernel comes in two builds: held to 80 registers (3 blocks an SM, 8 channels'
// loads in flight, no spills) and to 64 (4 blocks, 4 channels' loads, 8 bytes of spills). On an H200
// a round of blocks took the 4-block build (then with 8 channels' loads and 480 bytes of spills) 1.14x
// as long as the 3-block one (a tile: 42 against 37 us at batch 128, 40 against 35 at 2048), so it is
// chosen only where it saves rounds: batch 128's 784 tiles take 2 rounds either way, 2048's 12,544 take
// 24 instead of 32 (then 945 against 1,101 us; with 4 channels' loads, 882 us).
// VOLT_WGRAD_OCCUPANCY=3|4 forces one build (for measuring).
ConvWgradGrid conv2d_backward_weight_own_grid(const Conv2dShape& s, int multiprocessors) {
  const IgemmDims d = igemm_dims(s, s.C * s.R * s.S + 1);
  const int64_t tiles = (d.pixels + kTileM - 1) / kTileM, sm = multiprocessors > 0 ? multiprocessors : 1;
  const int64_t rounds3 = (tiles + 3 * sm - 1) / (3 * sm), rounds4 = (tiles + 4 * sm - 1) / (4 * sm);
  static const int forced = [] {
    const char* e = std::getenv("VOLT_WGRAD_OCCUPANCY");
    return e && (e[0] == '3' || e[0] == '4') && e[1] == 0 ? e[0] - '0' : 0;
  }();
  ConvWgradGrid g;
  g.per_sm = forced ? forced : rounds4 * 8 < rounds3 * 7 ? 4 : 3;
  g.blocks = wgrad_blocks(d, int(std::min<int64_t>(sm * g.per_sm, 1 << 20)));
  return g;
}

int64_t conv2d_forward_own_sum_chunks(const Conv2dShape& s) { return (s.N * s.P * s.Q + kTileM - 1) / kTileM; }

void conv2d_forward_own(FType t, const Conv2dShape& s, const void* x, const void* w, const void* b, void* y,
                        void* stream, double* sums) {
  VOLT_CHECK(conv2d_forward_own_supported(t, s), "conv2d_forward_own: unsupported shape or type (", ftype_name(t),
             ", reduction ", s.C * s.R * s.S, ")");
  const IgemmDims d = igemm_dims(s, s.C * s.R * s.S);
  const dim3 grid(unsigned((d.pixels + kTileM - 1) / kTileM), unsigned((s.K + kTileN - 1) / kTileN));
  dispatch_16bit(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(conv_igemm_forward_kernel<T>, grid, dim3(kThreads), forward_smem_bytes(d), stream, d,
           static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), static_cast<T*>(y), sums);
  });
}

size_t conv2d_backward_weight_own_workspace(const Conv2dShape& s, int max_blocks) {
  const IgemmDims d = igemm_dims(s, s.C * s.R * s.S + 1);
  return size_t((s.K + kTileN - 1) / kTileN) * size_t(wgrad_blocks(d, max_blocks)) * kTileN * size_t(d.red_pad) *
         sizeof(float);
}

namespace {

// The weight-gradient kernel over make_src(TypeTag<T>)'s dy, then the ordered sum of its blocks.
template <class MakeSrc>
void wgrad(FType t, const Conv2dShape& s, MakeSrc make_src, const void* x, void* dw, void* db, void* workspace,
           void* stream, int max_blocks, int per_sm) {
  VOLT_CHECK(per_sm == 0 || per_sm == 3 || per_sm == 4, "conv2d_backward_weight_own: no build for ", per_sm,
             " blocks an SM (3 or 4)");
  VOLT_CHECK(conv2d_backward_weight_own_supported(t, s), "conv2d_backward_weight_own: unsupported shape or type (",
             ftype_name(t), ", reduction ", s.C * s.R * s.S, ")");
  VOLT_CHECK(dw != nullptr, "conv2d_backward_weight_own: no weight gradient to write");
  const int64_t red = s.C * s.R * s.S;
  const IgemmDims d = igemm_dims(s, red + (db ? 1 : 0));
  const int ones = db ? d.red : d.red_pad;  // the column of ones, or none
  const int blocks = wgrad_blocks(d, max_blocks);
  const dim3 grid(unsigned(blocks), unsigned((s.K + kTileN - 1) / kTileN));
  float* part = static_cast<float*>(workspace);
  dispatch_16bit(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto src = make_src(tag);
    using Src = std::decay_t<decltype(src)>;
    const size_t smem = wgrad_smem_bytes(d, Src::kStageBytes);
    const auto launch_build = [&](auto kernel) {
      launch(kernel, grid, dim3(kThreads), smem, stream, d, static_cast<const T*>(x), src, part, ones);
    };
    if (per_sm == 4) launch_build(conv_igemm_wgrad_kernel<T, Src, 4>);
    else launch_build(conv_igemm_wgrad_kernel<T, Src, 3>);
    const int64_t outputs = s.K * (red + (db ? 1 : 0));
    launch(conv_igemm_wgrad_finish<T>, dim3(unsigned((outputs + kFinishOutputs - 1) / kFinishOutputs)),
           dim3(kThreads), 0, stream, d, blocks, ones, static_cast<const float*>(part), static_cast<T*>(dw),
           static_cast<T*>(db));
  });
}

}  // namespace

void conv2d_backward_weight_own(FType t, const Conv2dShape& s, const void* dy, const void* x, void* dw, void* db,
                                void* workspace, void* stream, int max_blocks, int per_sm) {
  wgrad(t, s, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return DyDirect<T>{static_cast<const T*>(dy)};
  }, x, dw, db, workspace, stream, max_blocks, per_sm);
}

void conv2d_backward_weight_own_from_pool(FType t, const Conv2dShape& s, const BnPoolGradSource& g, const void* x,
                                          void* dw, void* db, void* workspace, void* stream, int max_blocks,
                                          int per_sm) {
  VOLT_CHECK(g.kh >= 1 && g.kw >= 1 && g.kh <= s.P && g.kw <= s.Q && g.kh * g.kw <= 256,
             "conv2d_backward_weight_own_from_pool: a ", g.kh, "x", g.kw, " pool window does not fit the ", s.P, "x",
             s.Q, " output");
  wgrad(t, s, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return DyFromPool<T>{static_cast<const T*>(g.dy), g.window, static_cast<const T*>(g.y), g.mean,
                         static_cast<const detail::BnBackCoef*>(g.coef), g.training, g.kh, g.kw};
  }, x, dw, db, workspace, stream, max_blocks, per_sm);
}

}  // namespace volt::cuda
