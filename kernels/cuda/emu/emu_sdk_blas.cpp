// The emulated SDK's cuBLAS and cuBLASLt (see emu_sdk.cpp): matrix products computed on the host,
// enqueued on the handle's (or call's) stream like any other work. Sums are taken in double and rounded
// once to the output type: a tighter result than the GPU's float32 sums, which is what the GPU tests'
// tolerances are measured against anyway (the CPU reference).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "cublasLt.h"
#include "cublas_v2.h"
#include "cuda_runtime_api.h"
#include "kernels/cuda/emu/cuda_emu.h"
#include "kernels/cuda/emu/emu_sdk_elem.h"

using namespace volt_emu::sdk;

// ---------------------------------------------------------------------------------------------
// cuBLAS
// ---------------------------------------------------------------------------------------------

struct volt_emu_cublas {
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new volt_emu_cublas;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  handle->workspace = nullptr;  // as the real one: back to cuBLAS's default pool
  handle->workspace_bytes = 0;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes && !volt_emu::is_device_range(workspace, bytes)) return CUBLAS_STATUS_INVALID_VALUE;
  handle->workspace = workspace;
  handle->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

namespace {

// One column-major product D = alpha op(A) op(B) + beta C in element type e, as both APIs describe it.
struct Gemm {
  Elem e;
  cublasOperation_t ta, tb;
  int m, n, k;
  const void* A;
  int lda;
  const void* B;
  int ldb;
  const void* C;
  int ldc;
  void* D;
  int ldd;
  bool tf32;

  // Stored shapes: op(A) is m x k, so A is m x k (N) or k x m (T); likewise B.
  int a_rows() const { return ta == CUBLAS_OP_N ? m : k; }
  int a_cols() const { return ta == CUBLAS_OP_N ? k : m; }
  int b_rows() const { return tb == CUBLAS_OP_N ? k : n; }
  int b_cols() const { return tb == CUBLAS_OP_N ? n : k; }
  size_t extent(int rows, int cols, int ld) const { return (size_t(cols - 1) * ld + rows) * elem_bytes(e); }

  // What is wrong with the arguments (given the pointers' type e), or CUBLAS_STATUS_SUCCESS.
  cublasStatus_t check() const {
    if (e == Elem::Bad) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (ta == CUBLAS_OP_C || tb == CUBLAS_OP_C) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (lda < std::max(1, a_rows()) || ldb < std::max(1, b_rows()) || ldc < std::max(1, m) || ldd < std::max(1, m))
      return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    if ((k > 0 && (!volt_emu::is_device_range(A, extent(a_rows(), a_cols(), lda)) ||
                   !volt_emu::is_device_range(B, extent(b_rows(), b_cols(), ldb)))) ||
        !volt_emu::is_device_range(C, extent(m, n, ldc)) || !volt_emu::is_device_range(D, extent(m, n, ldd)))
      return CUBLAS_STATUS_INVALID_VALUE;  // a host pointer, or a matrix past its allocation's end
    return CUBLAS_STATUS_SUCCESS;
  }

  // Computes it (on the host, when the stream runs it). bias (may be null): m values of type e added to
  // each column before the rounding (cuBLASLt's BIAS epilogue). bgrad (may be null): the n sums of
  // op(B) over k, of type e (BGRADB). With beta == 0, C is never read. The workspace's bytes are
  // overwritten first: whatever a caller kept there is gone.
  void enqueue(cudaStream_t stream, float alpha, float beta, const void* bias, void* bgrad, void* workspace = nullptr,
               size_t workspace_bytes = 0) const {
    if (m == 0 || n == 0) return;
    const Gemm g = *this;
    volt_emu::submit(stream, [g, alpha, beta, bias, bgrad, workspace, workspace_bytes] {
      if (workspace_bytes) std::memset(workspace, 0xA5, workspace_bytes);
      const size_t bytes = elem_bytes(g.e);
      const auto values = [&](const void* p, int rows, int cols, int ld) {
        return g.k > 0 ? load(g.e, p, g.extent(rows, cols, ld) / bytes, g.tf32) : std::vector<float>();
      };
      const std::vector<float> a = values(g.A, g.a_rows(), g.a_cols(), g.lda);
      const std::vector<float> b = values(g.B, g.b_rows(), g.b_cols(), g.ldb);
      const std::vector<float> c = beta != 0.f ? load(g.e, g.C, g.extent(g.m, g.n, g.ldc) / bytes, false)
                                               : std::vector<float>();
      const std::vector<float> add = bias ? load(g.e, bias, size_t(g.m), false) : std::vector<float>();
      const auto b_at = [&](int l, int j) { return g.tb == CUBLAS_OP_N ? b[size_t(j) * g.ldb + l] : b[size_t(l) * g.ldb + j]; };
      for (int j = 0; j < g.n; ++j) {
        for (int i = 0; i < g.m; ++i) {
          double s = 0;
          for (int l = 0; l < g.k; ++l) {
            const float av = g.ta == CUBLAS_OP_N ? a[size_t(l) * g.lda + i] : a[size_t(i) * g.lda + l];
            s += double(av) * double(b_at(l, j));
          }
          double v = double(alpha) * s;
          if (beta != 0.f) v += double(beta) * double(c[size_t(j) * g.ldc + i]);
          if (bias) v += double(add[size_t(i)]);
          store(g.e, g.D, size_t(j) * g.ldd + i, float(v));
        }
        if (bgrad) {
          double s = 0;
          for (int l = 0; l < g.k; ++l) s += double(b_at(l, j));
          store(g.e, bgrad, size_t(j), float(s));
        }
      }
    });
  }
};

bool compute_32f(cublasComputeType_t c) { return c == CUBLAS_COMPUTE_32F || c == CUBLAS_COMPUTE_32F_FAST_TF32; }

}  // namespace

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType_t Atype, int lda, const void* B,
                            cudaDataType_t Btype, int ldb, const void* beta, void* C, cudaDataType_t Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (Atype != Ctype || Btype != Ctype || !compute_32f(compute)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  const Elem e = elem_of(Ctype);
  const Gemm g{e, transa, transb, m, n, k, A, lda, B, ldb, C, ldc, C, ldc,
               e == Elem::F32 && compute == CUBLAS_COMPUTE_32F_FAST_TF32};
  if (const cublasStatus_t st = g.check(); st != CUBLAS_STATUS_SUCCESS) return st;
  g.enqueue(handle->stream, *static_cast<const float*>(alpha), *static_cast<const float*>(beta), nullptr, nullptr);
  return CUBLAS_STATUS_SUCCESS;
}

// ---------------------------------------------------------------------------------------------
// cuBLASLt
// ---------------------------------------------------------------------------------------------

struct volt_emu_lt {};
struct volt_emu_lt_desc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  int32_t bias_type = -1;  // -1: D's type
};
struct volt_emu_lt_layout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};
struct volt_emu_lt_pref {
  uint64_t max_workspace = 0;
};

namespace {

// The algorithm the emulated heuristics hand out (checked by cublasLtMatmul).
constexpr uint64_t kLtAlgo = 0x766f6c74u;  // "volt"
std::atomic<int> g_refuse{0};  // volt_emu_cublaslt_refuse

template <class T>
cublasStatus_t set_value(T& field, const void* buf, size_t bytes) {
  if (!buf || bytes != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(&field, buf, sizeof(T));
  return CUBLAS_STATUS_SUCCESS;
}

// cublasLt*Create / *Destroy: a new object behind the handle, and its deletion.
template <class T, class... Args>
cublasStatus_t create(T** out, Args... args) {
  if (!out) return CUBLAS_STATUS_INVALID_VALUE;
  *out = new T{args...};
  return CUBLAS_STATUS_SUCCESS;
}
template <class T>
cublasStatus_t destroy(T* object) {
  delete object;
  return CUBLAS_STATUS_SUCCESS;
}

bool fits_int(uint64_t v) { return v <= 2147483647u; }

// The product the descriptors describe, with its pointers; its e is Bad where the emulator does not
// compute it (mixed types, a compute or scale type other than float32's, an epilogue other than
// DEFAULT, BIAS and BGRADB, or sizes that disagree).
Gemm lt_product(const volt_emu_lt_desc& d, const volt_emu_lt_layout& a, const volt_emu_lt_layout& b,
                const volt_emu_lt_layout& c, const volt_emu_lt_layout& out, const void* A, const void* B,
                const void* C, void* D) {
  const int m = int(out.rows), n = int(out.cols);
  const int k = int(d.ta == CUBLAS_OP_N ? a.cols : a.rows);
  Gemm g{elem_of(out.type), d.ta, d.tb, m, n, k, A, int(a.ld), B, int(b.ld), C, int(c.ld), D, int(out.ld),
         d.compute == CUBLAS_COMPUTE_32F_FAST_TF32 && out.type == CUDA_R_32F};
  const bool supported = a.type == out.type && b.type == out.type && c.type == out.type && compute_32f(d.compute) &&
                         d.scale == CUDA_R_32F &&
                         (d.bias_type == -1 || d.bias_type == int32_t(out.type)) &&
                         (d.epilogue == CUBLASLT_EPILOGUE_DEFAULT || d.epilogue == CUBLASLT_EPILOGUE_BIAS ||
                          d.epilogue == CUBLASLT_EPILOGUE_BGRADB);
  const bool sizes = fits_int(out.rows) && fits_int(out.cols) && fits_int(a.rows) && fits_int(a.cols) &&
                     c.rows == out.rows && c.cols == out.cols && uint64_t(g.a_rows()) == a.rows &&
                     uint64_t(g.a_cols()) == a.cols && uint64_t(g.b_rows()) == b.rows && uint64_t(g.b_cols()) == b.cols &&
                     a.ld >= 1 && b.ld >= 1 && c.ld >= 1 && out.ld >= 1 && a.ld <= 2147483647 &&
                     b.ld <= 2147483647 && c.ld <= 2147483647 && out.ld <= 2147483647;
  if (!supported || !sizes) g.e = Elem::Bad;
  return g;
}

}  // namespace

void volt_emu_cublaslt_refuse(int mode) { g_refuse.store(mode); }

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) { return create(handle); }
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) { return destroy(handle); }
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute,
                                        cudaDataType_t scale_type) {
  return create(desc, compute, scale_type);
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) { return destroy(desc); }
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t bytes) {
  if (!desc) return CUBLAS_STATUS_NOT_INITIALIZED;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return set_value(desc->ta, buf, bytes);
    case CUBLASLT_MATMUL_DESC_TRANSB: return set_value(desc->tb, buf, bytes);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return set_value(desc->epilogue, buf, bytes);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return set_value(desc->bias, buf, bytes);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return set_value(desc->bias_type, buf, bytes);
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (ld < 1 || uint64_t(ld) < rows) return CUBLAS_STATUS_INVALID_VALUE;
  return create(layout, type, rows, cols, ld);
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) { return destroy(layout); }
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) { return create(pref); }
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) { return destroy(pref); }
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t bytes) {
  if (!pref) return CUBLAS_STATUS_NOT_INITIALIZED;
  uint32_t alignment = 0;
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: return set_value(pref->max_workspace, buf, bytes);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      return set_value(alignment, buf, bytes);  // the emulated algorithm needs none
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* returned) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!desc || !a || !b || !c || !d || !pref || requested < 1 || !results || !returned)
    return CUBLAS_STATUS_INVALID_VALUE;
  *returned = 0;
  if (g_refuse.load() == 1 || lt_product(*desc, *a, *b, *c, *d, nullptr, nullptr, nullptr, nullptr).e == Elem::Bad)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].algo.data[0] = kLtAlgo;
  results[0].workspaceSize = 0;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t a, const void* B, cublasLtMatrixLayout_t b, const void* beta,
                              const void* C, cublasLtMatrixLayout_t c, void* D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t* algo, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!desc || !a || !b || !c || !d || !alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  if (algo && algo->data[0] != kLtAlgo) return CUBLAS_STATUS_INVALID_VALUE;  // not one the heuristics gave
  if (g_refuse.load() != 0) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (workspace_bytes && !volt_emu::is_device_range(workspace, workspace_bytes)) return CUBLAS_STATUS_INVALID_VALUE;
  const Gemm g = lt_product(*desc, *a, *b, *c, *d, A, B, C, D);
  if (g.e == Elem::Bad) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (const cublasStatus_t st = g.check(); st != CUBLAS_STATUS_SUCCESS) return st;
  const size_t bytes = elem_bytes(g.e);
  const void* bias = nullptr;
  void* bgrad = nullptr;
  if (desc->epilogue == CUBLASLT_EPILOGUE_BIAS) {
    if (!volt_emu::is_device_range(desc->bias, size_t(g.m) * bytes)) return CUBLAS_STATUS_INVALID_VALUE;
    bias = desc->bias;
  } else if (desc->epilogue == CUBLASLT_EPILOGUE_BGRADB) {
    if (!volt_emu::is_device_range(desc->bias, size_t(g.n) * bytes)) return CUBLAS_STATUS_INVALID_VALUE;
    bgrad = const_cast<void*>(desc->bias);
  }
  g.enqueue(stream, *static_cast<const float*>(alpha), *static_cast<const float*>(beta), bias, bgrad, workspace,
            workspace_bytes);
  return CUBLAS_STATUS_SUCCESS;
}
