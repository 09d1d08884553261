// CPU linear layer over GEMM (see linear.h).
#include "kernels/linear.h"

#include "kernels/cpu/blas.h"

namespace volt::cpu {

void linear_forward(int64_t M, int64_t in, int64_t out, const float* x, const float* w, const float* b, float* y) {
  if (b) {
#pragma omp parallel for schedule(static) if (M * out > 65536)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t o = 0; o < out; ++o) y[m * out + o] = b[o];
  }
  gemm_parallel(false, true, M, out, in, 1.f, x, in, w, in, b ? 1.f : 0.f, y, out);
}

void linear_backward(int64_t M, int64_t in, int64_t out, const float* dy, const float* x, const float* w, float* dx,
                     float* dw, float* db) {
  if (dx) gemm_parallel(false, false, M, in, out, 1.f, dy, out, w, in, 0.f, dx, in);   // dx = dy w
  if (dw) gemm_parallel(true, false, out, in, M, 1.f, dy, out, x, in, 0.f, dw, in);    // dw = dy^T x
  if (db) {
#pragma omp parallel for schedule(static) if (M * out > 65536)
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0;
      for (int64_t m = 0; m < M; ++m) acc += dy[m * out + o];
      db[o] = float(acc);
    }
  }
}

}  // namespace volt::cpu
