// CUDA classification counts (see kernels/metrics.h): one thread per row, integer atomics into the
// confusion matrix and hit counts; the batch accuracy as one block's sum.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/num.cuh"
#include "kernels/metrics.h"

namespace volt::cuda {

using detail::block_sum;
using detail::grid_for;
using detail::launch;
using detail::kThreads;
using detail::load_f;

namespace {

template <class T>
struct Row {
  const T* x;
  __device__ float operator()(int64_t j) const { return load_f(x[j]); }
};

using ull = unsigned long long;

template <class T>
__global__ void classification_kernel(int64_t N, int64_t C, const T* logits, const int64_t* target, TopK ks,
                                      int64_t* confusion, int64_t* hits, int64_t* bad) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = target[n];
    if (t < 0 || t >= C) {
      atomicAdd(reinterpret_cast<ull*>(bad), ull(1));
      continue;
    }
    const Row<T> row{logits + n * C};
    atomicAdd(reinterpret_cast<ull*>(confusion + t * C + metric_top1(row, C)), ull(1));
    const int64_t rank = metric_rank(row, C, t);
    for (int64_t i = 0; i < ks.n; ++i)
      if (rank < ks.k[i]) atomicAdd(reinterpret_cast<ull*>(hits + i), ull(1));
  }
}

template <class T>
__global__ void __launch_bounds__(1024) accuracy_kernel(int64_t N, int64_t C, const T* logits, const int64_t* target, float* out,
                                int64_t* bad) {
  long long correct = 0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    const int64_t t = target[n];
    if (t < 0 || t >= C) detail::note_bad_target(bad, n, t);  // counts as wrong
    else correct += metric_top1(Row<T>{logits + n * C}, C) == t;
  }
  correct = block_sum(correct);
  if (threadIdx.x == 0) out[0] = float(double(correct) / double(N));
}

}  // namespace

void classification_update(FType t, int64_t N, int64_t C, const void* logits, const int64_t* target, const TopK& ks,
                           int64_t* confusion, int64_t* hits, int64_t* bad, void* stream) {
  if (N == 0) return;
  VOLT_FTYPE_T(t, launch(classification_kernel<T>, grid_for(N), kThreads, 0, stream, N, C, logits, target, ks,
                         confusion, hits, bad));
}

void accuracy_fraction(FType t, int64_t N, int64_t C, const void* logits, const int64_t* target, float* out,
                       int64_t* bad, void* stream) {
  VOLT_FTYPE_T(t, launch(accuracy_kernel<T>, 1, 1024, 0, stream, N, C, logits, target, out, bad));
}

}  // namespace volt::cuda
