// CUDA linear layer over cuBLAS SGEMM (see kernels/linear.h). cuBLAS is column-major: a row-major
// [rows, cols] matrix is, to cuBLAS, its transpose [cols, rows] with leading dimension cols.
//   y[M, out]  = x[M, in] w[out, in]^T   ->  y^T [out, M]  = op_T(w as [in, out]) * x^T [in, M]
//   dx[M, in]  = dy[M, out] w[out, in]   ->  dx^T [in, M]  = w^T [in, out] * dy^T [out, M]
//   dw[out, in] = dy^T[out, M] x[M, in]  ->  dw^T [in, out] = x^T [in, M] * op_T(dy^T as [out, M])
#include "kernels/cuda/handles.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/linear.h"
#include "kernels/reduce.h"

namespace volt::cuda {

using detail::as_stream;
using detail::grid_for;
using detail::launch;
using detail::kThreads;

namespace {

__global__ void bias_rows_kernel(int64_t M, int64_t out, const float* b, float* y) {
  const int64_t total = M * out;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x)
    y[t] = b[t % out];
}

int to_int(int64_t v, const char* what) {
  VOLT_CHECK(v >= 0 && v <= 2147483647, "linear on CUDA: ", what, " = ", v, " does not fit cuBLAS's int");
  return int(v);
}

cublasHandle_t handle(void* stream) {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  return cublas_handle(device, as_stream(stream));
}

}  // namespace

void linear_forward(int64_t M, int64_t in, int64_t out, const float* x, const float* w, const float* b, float* y,
                    void* stream) {
  const int m = to_int(out, "out_features"), n = to_int(M, "batch"), k = to_int(in, "in_features");
  if (b) {
    launch(bias_rows_kernel, grid_for(M * out), kThreads, 0, stream, M, out, b, y);
  }
  const float alpha = 1.f, beta = b ? 1.f : 0.f;
  CUBLAS_CHECK(cublasSgemm(handle(stream), CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w, k, x, k, &beta, y, m));
}

void linear_backward(int64_t M, int64_t in, int64_t out, const float* dy, const float* x, const float* w, float* dx,
                     float* dw, float* db, void* stream) {
  const int iM = to_int(M, "batch"), iin = to_int(in, "in_features"), iout = to_int(out, "out_features");
  const float alpha = 1.f, beta = 0.f;
  if (dx)
    CUBLAS_CHECK(cublasSgemm(handle(stream), CUBLAS_OP_N, CUBLAS_OP_N, iin, iM, iout, &alpha, w, iin, dy, iout, &beta,
                             dx, iin));
  if (dw)
    CUBLAS_CHECK(cublasSgemm(handle(stream), CUBLAS_OP_N, CUBLAS_OP_T, iin, iout, iM, &alpha, x, iin, dy, iout, &beta,
                             dw, iin));
  if (db) sum_dim(1, M, out, dy, db, stream);  // db[o] = sum over rows of dy[m, o]
}

}  // namespace volt::cuda
