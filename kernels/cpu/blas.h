// Row-major single-precision GEMM over OpenBLAS's CBLAS interface. Volt's own OpenMP loops call it
// from inside parallel regions, so OpenBLAS is kept at one thread (blas_init); gemm_parallel splits
// one large product across Volt's threads instead.
#pragma once
#include <cstdint>

namespace volt::cpu {

void blas_init();  // idempotent: pins OpenBLAS to one thread

// C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, row-major, leading dimensions as stored.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The same product with rows of C (or columns, when M is small) shared out over OpenMP threads.
void gemm_parallel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                   int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace volt::cpu
