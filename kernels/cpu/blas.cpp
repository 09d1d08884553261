// GEMM wrappers (see blas.h). CBLAS prototypes are declared here so no BLAS header is needed.
#include "kernels/cpu/blas.h"

#include <omp.h>

#include <algorithm>

extern "C" {
void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc);
void openblas_set_num_threads(int n);
}

namespace volt::cpu {

namespace {
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
}

void blas_init() {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  blas_init();
  cblas_sgemm(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, int(M), int(N), int(K), alpha, A,
              int(lda), B, int(ldb), beta, C, int(ldc));
}

void gemm_parallel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                   int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const double flops = 2.0 * double(M) * double(N) * double(K);
  if (threads <= 1 || flops < 2e6) {
    gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  blas_init();
  if (M >= N) {  // split rows of C: rows of op(A)
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t chunk = (M + nt - 1) / nt, m0 = std::min<int64_t>(M, chunk * t), m1 = std::min<int64_t>(M, m0 + chunk);
      if (m1 > m0) {
        const float* a = trans_a ? A + m0 : A + m0 * lda;
        gemm(trans_a, trans_b, m1 - m0, N, K, alpha, a, lda, B, ldb, beta, C + m0 * ldc, ldc);
      }
    }
  } else {  // split columns of C: columns of op(B)
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t chunk = (N + nt - 1) / nt, n0 = std::min<int64_t>(N, chunk * t), n1 = std::min<int64_t>(N, n0 + chunk);
      if (n1 > n0) {
        const float* b = trans_b ? B + n0 * ldb : B + n0;
        gemm(trans_a, trans_b, M, n1 - n0, K, alpha, A, lda, b, ldb, beta, C + n0, ldc);
      }
    }
  }
}

}  // namespace volt::cpu
