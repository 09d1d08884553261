// CUDA fused gather + augmentation (see kernels/augment.h): one launch per batch, one block per
// (image, channel) plane. The block draws the image's Philox choices once, stages the channel's
// 256-entry table in shared memory, then each thread writes consecutive output pixels (coalesced
// stores) from byte loads of the resident store. No float arithmetic: values come from the table,
// so float32 output equals cpu::augment_image bit for bit.
#include "kernels/augment.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/num.cuh"

namespace volt::cuda {

using detail::kThreads;
using detail::launch;
using detail::store_f;

namespace {

template <class T>
__global__ void augment_batch_kernel(AugmentSpec s, const float* lut, const uint8_t* images, const int64_t* labels,
                                     int64_t n, const int64_t* order, int64_t begin, uint64_t key_base,
                                     uint64_t key_stride, T* out, int64_t* out_labels) {
  __shared__ float table[256];
  __shared__ AugmentDraw draw;
  __shared__ int64_t src;
  const int64_t k = blockIdx.x;
  const int c = int(blockIdx.y);
  for (int v = threadIdx.x; v < 256; v += blockDim.x) table[v] = lut[c * 256 + v];
  if (threadIdx.x == 0) {
    const int64_t o = order[begin + k];
    src = o >= 0 && o < n ? o : -1;  // an index outside the store reads nothing (see kernels/augment.h)
    draw = augment_draw(s, key_base + uint64_t(begin + k) * key_stride);
    if (c == 0) out_labels[k] = src < 0 ? -1 : labels[src];
  }
  __syncthreads();
  const int H = int(s.height), W = int(s.width), plane = H * W;
  T* dst = out + (k * s.channels + c) * int64_t(plane);
  if (src < 0) {
    for (int i = threadIdx.x; i < plane; i += blockDim.x) dst[i] = store_f<T>(0.f);
    return;
  }
  const AugmentDraw d = draw;
  const uint8_t* in = images + (src * s.channels + c) * int64_t(plane);
  const float pad = table[0];
  for (int i = threadIdx.x; i < plane; i += blockDim.x) {
    const int y = i / W, x = i - y * W;
    const int sy = y + d.dy, sx = (d.flip ? W - 1 - x : x) + d.dx;
    float v = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? table[__ldg(in + sy * W + sx)] : pad;
    if (y >= d.cut_y0 && y < d.cut_y1 && x >= d.cut_x0 && x < d.cut_x1) v = 0.f;
    dst[i] = store_f<T>(v);
  }
}

}  // namespace

void augment_batch(const AugmentSpec& s, const float* lut, const uint8_t* images, const int64_t* labels, int64_t n,
                   const int64_t* order, int64_t begin, int64_t count, uint64_t key_base, uint64_t key_stride,
                   FType out_type, void* out_images, int64_t* out_labels, void* stream) {
  if (count <= 0) return;
  VOLT_CHECK(s.channels >= 1 && s.channels <= 65535 && s.height >= 1 && s.width >= 1 &&
                 s.height * s.width < (int64_t(1) << 31) - 1024,  // a thread's i + blockDim.x stays an int
             "augment_batch: unsupported image shape [", s.channels, ", ", s.height, ", ", s.width, "]");
  VOLT_CHECK(count < (int64_t(1) << 31), "augment_batch: ", count, " images is too many for one launch");
  const dim3 grid(unsigned(count), unsigned(s.channels));
  detail::dispatch_ftype(out_type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(augment_batch_kernel<T>, grid, dim3(kThreads), 0, stream, s, lut, images, labels, n, order, begin,
           key_base, key_stride, static_cast<T*>(out_images), out_labels);
  });
}

}  // namespace volt::cuda
