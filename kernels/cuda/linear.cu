// CUDA linear layer over cuBLAS (see kernels/linear.h): GEMMs with float32 accumulation for float32,
// float16 and bfloat16 storage (float32 stays plain FP32 math unless TF32 was asked for:
// kernels/math_mode.h). With a bias, cuBLASLt adds it in the forward GEMM's epilogue and sums its
// gradient in the weight-gradient GEMM's, one launch each instead of two; where cuBLASLt has no
// algorithm for a product (or VOLT_LINEAR_LT=0), cublasGemmEx and Volt's bias kernels do it. cuBLAS is
// column-major: a row-major [rows, cols] matrix is, to cuBLAS, its transpose [cols, rows] with leading
// dimension cols.
//   y[M, out]  = x[M, in] w[out, in]^T   ->  y^T [out, M]  = op_T(w as [in, out]) * x^T [in, M]
//   dx[M, in]  = dy[M, out] w[out, in]   ->  dx^T [in, M]  = w^T [in, out] * dy^T [out, M]
//   dw[out, in] = dy^T[out, M] x[M, in]  ->  dw^T [in, out] = x^T [in, M] * op_T(dy^T as [out, M])
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

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

// cuBLASLt: VOLT_LINEAR_LT=0 never, otherwise (unset or 1) wherever it has an algorithm; set_linear_fused_bias
// overrides the variable.
std::atomic<int> g_lt_override{-1};
bool lt_enabled() {
  const int o = g_lt_override.load(std::memory_order_relaxed);
  if (o >= 0) return o == 1;
  static const bool env = [] {
    const char* v = std::getenv("VOLT_LINEAR_LT");
    if (!v || !*v || std::strcmp(v, "1") == 0) return true;
    if (std::strcmp(v, "0") == 0) return false;
    VOLT_FAIL("VOLT_LINEAR_LT=", v, ": expected 0 (cublasGemmEx and separate bias kernels) or 1 (the bias and its "
              "gradient in cuBLASLt's GEMM epilogues, the default)");
  }();
  return env;
}

// The largest power of two up to `cap` that divides p's address. cuBLASLt's algorithms differ in the
// alignment they need: a plan is chosen for the alignments its pointers have (up to 16 bytes for the
// matrices, as the preferences say; the heuristics read the bias pointer itself, up to 256).
int alignment(const void* p, int cap = 16) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  int al = cap;
  while (al > 1 && a % uintptr_t(al) != 0) al /= 2;
  return al;
}

// A cuBLASLt product's descriptors and algorithm, chosen once per shape, type and alignment; ok is false
// where cuBLASLt has no algorithm for it (its descriptors are then gone). Plans live as long as the
// process, like the handles.
struct LtPlan {
  bool ok = false;
  cublasLtHandle_t handle = nullptr;  // the device's, and its workspace
  BlasWorkspace workspace{nullptr, 0};
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  void destroy() {
    if (desc) cublasLtMatmulDescDestroy(desc);
    for (cublasLtMatrixLayout_t l : {a, b, d})
      if (l) cublasLtMatrixLayoutDestroy(l);
    *this = LtPlan{};
  }
};
using LtKey = std::tuple<int, int, bool, int, int, int, int, int, int, int, int, int, int, int, int, int>;

// What cuBLASLt answers for a product it will not run (the heuristics, or a call after them: "success
// doesn't fully guarantee algo will run", as its header says): the caller then takes cublasGemmEx.
bool refused(cublasStatus_t st) {
  return st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE || st == CUBLAS_STATUS_ARCH_MISMATCH;
}

LtPlan make_lt_plan(cublasLtHandle_t h, size_t workspace_bytes, FType t, bool tf32, cublasOperation_t ta,
                    cublasOperation_t tb, int m, int n, int k, int lda, int ldb, int ldd, cublasLtEpilogue_t epilogue,
                    const void* A, const void* B, const void* D, const void* bias) {
  const cudaDataType_t dt = data_type(t);
  LtPlan p;
  try {
    CUBLAS_CHECK(
        cublasLtMatmulDescCreate(&p.desc, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const int32_t ta32 = ta, tb32 = tb;
    const uint32_t epi = epilogue;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta32, sizeof(ta32)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb32, sizeof(tb32)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    // The heuristics read the bias pointer's alignment (the call sets the pointer of the day).
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, dt, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, dt, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, dt, m, n, ldd));
    cublasLtMatmulPreference_t pref = nullptr;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    struct Drop {
      cublasLtMatmulPreference_t p;
      ~Drop() { cublasLtMatmulPreferenceDestroy(p); }
    } drop{pref};
    const uint64_t ws = workspace_bytes;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    const uint32_t align[3] = {uint32_t(alignment(A)), uint32_t(alignment(B)), uint32_t(alignment(D))};
    for (auto [attr, v] : {std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align[0]},
                           std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align[1]},
                           std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align[2]},
                           std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align[2]}})
      CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &v, sizeof(v)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, p.desc, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
    if (st != CUBLAS_STATUS_SUCCESS && !refused(st))
      VOLT_FAIL("cuBLAS error: cublasLtMatmulAlgoGetHeuristic failed: ", detail::cublas_status_string(st));
    p.ok = st == CUBLAS_STATUS_SUCCESS && found > 0;
    p.algo = result.algo;
  } catch (...) {
    p.destroy();
    throw;
  }
  if (!p.ok) p.destroy();
  return p;
}

// D = op(A) op(B) in storage type t (column-major, as gemm) with cuBLASLt's `epilogue` (BIAS: bias added to
// each column; BGRADB: bias = the sums of op(B) over k). False, with nothing enqueued, where cuBLASLt
// refuses it (no algorithm, or the call itself; the shape's plan is then dropped for good).
bool lt_gemm(void* stream, FType t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void* A,
             int lda, const void* B, int ldb, void* D, int ldd, cublasLtEpilogue_t epilogue, const void* bias) {
  static std::mutex mu;
  static std::map<LtKey, LtPlan> plans;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  const bool tf32 = t == FType::F32 && float32_tf32_allowed().load(std::memory_order_relaxed);
  const LtKey key{device, int(t), tf32, int(ta), int(tb), m, n, k, lda, ldb, ldd, int(epilogue),
                  alignment(A), alignment(B), alignment(D), alignment(bias, 256)};
  std::lock_guard<std::mutex> lock(mu);  // the descriptor's bias pointer is set per call
  auto it = plans.find(key);
  if (it == plans.end()) {  // the first call for this key: the device's handle and workspace, and a plan
    const cublasLtHandle_t h = cublaslt_handle(device);
    const BlasWorkspace ws = blas_workspace(device);
    LtPlan plan = make_lt_plan(h, ws.bytes, t, tf32, ta, tb, m, n, k, lda, ldb, ldd, epilogue, A, B, D, bias);
    plan.handle = h;
    plan.workspace = ws;
    it = plans.emplace(key, plan).first;
  }
  LtPlan& p = it->second;
  if (!p.ok) return false;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  const float one = 1.f, zero = 0.f;
  const cublasStatus_t st = cublasLtMatmul(p.handle, p.desc, &one, A, p.a, B, p.b, &zero, D, p.d, D, p.d, &p.algo,
                                           p.workspace.ptr, p.workspace.bytes, as_stream(stream));
  if (refused(st)) {
    p.destroy();  // ok = false: this shape takes cublasGemmEx from now on
    return false;
  }
  if (st != CUBLAS_STATUS_SUCCESS) VOLT_FAIL("cuBLAS error: cublasLtMatmul failed: ", detail::cublas_status_string(st));
  return true;
}

}  // namespace

void set_linear_fused_bias(bool on) { g_lt_override.store(on ? 1 : 0, std::memory_order_relaxed); }
bool linear_fused_bias() { return lt_enabled(); }

void linear_forward(FType t, int64_t M, int64_t in, int64_t out, const void* x, const void* w, const void* b, void* y,
                    void* stream) {
  const int m = to_int(out, "out_features"), n = to_int(M, "batch"), k = to_int(in, "in_features");
  if (b && M * out > 0 && in > 0 && lt_enabled() &&
      lt_gemm(stream, t, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, w, k, x, k, y, m, CUBLASLT_EPILOGUE_BIAS, b))
    return;
  if (b && M * out > 0)
    VOLT_FTYPE_T(t, launch(bias_rows_kernel<T>, grid_for(M * out), kThreads, 0, stream, M * out, FastDiv(out), b, y));
  gemm(stream, t, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, w, k, x, k, b ? 1.f : 0.f, y, m);
}

void linear_backward(FType t, int64_t M, int64_t in, int64_t out, const void* dy, const void* x, const void* w,
                     void* dx, void* dw, void* db, void* stream) {
  const int iM = to_int(M, "batch"), iin = to_int(in, "in_features"), iout = to_int(out, "out_features");
  if (dx) gemm(stream, t, CUBLAS_OP_N, CUBLAS_OP_N, iin, iM, iout, w, iin, dy, iout, 0.f, dx, iin);
  // dw and db in one product: db[o] = the sum over rows of dy[m, o], the columns of op(B) summed over k
  if (dw && db && M > 0 && in > 0 && out > 0 && lt_enabled() &&
      lt_gemm(stream, t, CUBLAS_OP_N, CUBLAS_OP_T, iin, iout, iM, x, iin, dy, iout, dw, iin, CUBLASLT_EPILOGUE_BGRADB,
              db))
    return;
  if (dw) gemm(stream, t, CUBLAS_OP_N, CUBLAS_OP_T, iin, iout, iM, x, iin, dy, iout, 0.f, dw, iin);
  if (db) sum_dim(t, 1, M, out, dy, db, stream);  // db[o] = sum over rows of dy[m, o]
}

}  // namespace volt::cuda
