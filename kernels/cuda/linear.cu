// CUDA linear layer over cuBLAS (see kernels/linear.h): cublasGemmEx with float32 accumulation for
// float32, float16 and bfloat16 storage (float32 stays plain FP32 math unless TF32 was asked for:
// kernels/math_mode.h). cuBLAS is
// column-major: a row-major [rows, cols] matrix is, to cuBLAS, its transpose [cols, rows] with leading
// dimension cols.
//   y[M, out]  = x[M, in] w[out, in]^T   ->  y^T [out, M]  = op_T(w as [in, out]) * x^T [in, M]
//   dx[M, in]  = dy[M, out] w[out, in]   ->  dx^T [in, M]  = w^T [in, out] * dy^T [out, M]
//   dw[out, in] = dy^T[out, M] x[M, in]  ->  dw^T [in, out] = x^T [in, M] * op_T(dy^T as [out, M])
#include "kernels/cuda/handles.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/num.cuh"
#include "kernels/fast_div.h"
#include "kernels/linear.h"
#include "kernels/math_mode.h"
#include "kernels/reduce.h"

namespace volt::cuda {

using detail::as_stream;
using detail::grid_for;
using detail::launch;
using detail::kThreads;

namespace {

template <class T>
__global__ void bias_rows_kernel(int64_t total, FastDiv out, const T* b, T* y) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x)
    y[t] = b[out.mod(t)];
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

cudaDataType_t data_type(FType t) {
  return t == FType::F32 ? CUDA_R_32F : (t == FType::F16 ? CUDA_R_16F : CUDA_R_16BF);
}

// C = alpha * op(A) op(B) + beta * C in storage type t with float32 accumulation.
void gemm(void* stream, FType t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void* A,
          int lda, const void* B, int ldb, float beta, void* C, int ldc) {
  const float alpha = 1.f;
  const cudaDataType_t dt = data_type(t);
  // float32 with TF32 asked for (kernels/math_mode.h): TF32 tensor-core products, float32 sums.
  const bool tf32 = t == FType::F32 && float32_tf32_allowed().load(std::memory_order_relaxed);
  CUBLAS_CHECK(cublasGemmEx(handle(stream), ta, tb, m, n, k, &alpha, A, dt, lda, B, dt, ldb, &beta, C, dt, ldc,
                            tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace

void linear_forward(FType t, int64_t M, int64_t in, int64_t out, const void* x, const void* w, const void* b, void* y,
                    void* stream) {
  const int m = to_int(out, "out_features"), n = to_int(M, "batch"), k = to_int(in, "in_features");
  if (b && M * out > 0)
    VOLT_FTYPE_T(t, launch(bias_rows_kernel<T>, grid_for(M * out), kThreads, 0, stream, M * out, FastDiv(out), b, y));
  gemm(stream, t, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, w, k, x, k, b ? 1.f : 0.f, y, m);
}

void linear_backward(FType t, int64_t M, int64_t in, int64_t out, const void* dy, const void* x, const void* w,
                     void* dx, void* dw, void* db, void* stream) {
  const int iM = to_int(M, "batch"), iin = to_int(in, "in_features"), iout = to_int(out, "out_features");
  if (dx) gemm(stream, t, CUBLAS_OP_N, CUBLAS_OP_N, iin, iM, iout, w, iin, dy, iout, 0.f, dx, iin);
  if (dw) gemm(stream, t, CUBLAS_OP_N, CUBLAS_OP_T, iin, iout, iM, x, iin, dy, iout, 0.f, dw, iin);
  if (db) sum_dim(t, 1, M, out, dy, db, stream);  // db[o] = sum over rows of dy[m, o]
}

}  // namespace volt::cuda
