// The emulated SDK's cuDNN (see emu_sdk.cpp): 2-D convolution computed on the host, enqueued on the
// handle's stream like any other work. Sums are taken in double and rounded once to the output type: a
// tighter result than the GPU's float32 sums, which is what the GPU tests' tolerances are measured
// against anyway (the CPU reference). cuBLAS is in emu_sdk_blas.cpp.
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "cuda_runtime_api.h"
#include "cudnn.h"
#include "engine/dtype.h"
#include "kernels/cuda/emu/cuda_emu.h"
#include "kernels/cuda/emu/emu_sdk_elem.h"

using namespace volt_emu::sdk;

namespace {
Elem elem_of(cudnnDataType_t t) {
  return t == CUDNN_DATA_FLOAT ? Elem::F32 : t == CUDNN_DATA_HALF ? Elem::F16
                                           : t == CUDNN_DATA_BFLOAT16 ? Elem::BF16 : Elem::Bad;
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// cuDNN
// ---------------------------------------------------------------------------------------------

struct volt_emu_cudnn {
  cudaStream_t stream = nullptr;
};
struct volt_emu_tensor_desc {
  bool set = false;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int n = 0, c = 0, h = 0, w = 0;
};
struct volt_emu_filter_desc {
  bool set = false;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int k = 0, c = 0, r = 0, s = 0;
};
struct volt_emu_conv_desc {
  bool set = false;
  int pad_h = 0, pad_w = 0, u = 1, v = 1, dil_h = 1, dil_w = 1;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

const char* cudnnGetErrorString(cudnnStatus_t status) {
  switch (status) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM (emulator: a bad descriptor, a host pointer, or "
                                        "too small a workspace)";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
  }
  return "unknown cuDNN status";
}

cudnnStatus_t cudnnCreate(cudnnHandle_t* handle) {
  *handle = new volt_emu_cudnn;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
  delete handle;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUDNN_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* desc) {
  *desc = new volt_emu_tensor_desc;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format, cudnnDataType_t type,
                                         int n, int c, int h, int w) {
  if (!d || n <= 0 || c <= 0 || h <= 0 || w <= 0 || elem_of(type) == Elem::Bad) return CUDNN_STATUS_BAD_PARAM;
  if (format != CUDNN_TENSOR_NCHW) return CUDNN_STATUS_NOT_SUPPORTED;  // the emulator knows NCHW only
  *d = volt_emu_tensor_desc{true, type, n, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* desc) {
  *desc = new volt_emu_filter_desc;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t type, cudnnTensorFormat_t format,
                                         int k, int c, int h, int w) {
  if (!d || k <= 0 || c <= 0 || h <= 0 || w <= 0 || elem_of(type) == Elem::Bad) return CUDNN_STATUS_BAD_PARAM;
  if (format != CUDNN_TENSOR_NCHW) return CUDNN_STATUS_NOT_SUPPORTED;
  *d = volt_emu_filter_desc{true, type, k, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* desc) {
  *desc = new volt_emu_conv_desc;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w, int u, int v,
                                              int dilation_h, int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute_type) {
  if (!d || pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0 ||
      compute_type != CUDNN_DATA_FLOAT)
    return CUDNN_STATUS_BAD_PARAM;
  const cudnnMathType_t math = d->math;
  *d = volt_emu_conv_desc{true, pad_h, pad_w, u, v, dilation_h, dilation_w, mode, math};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t math) {
  if (!d) return CUDNN_STATUS_BAD_PARAM;
  d->math = math;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}

namespace {

// One convolution problem, checked: descriptors consistent with each other, types equal.
struct Problem {
  volt_emu_tensor_desc x, y;
  volt_emu_filter_desc w;
  volt_emu_conv_desc conv;
  Elem e = Elem::Bad;
  bool tf32 = false;
};

int out_dim(int in, int pad, int dil, int f, int stride) { return (in + 2 * pad - dil * (f - 1) - 1) / stride + 1; }

cudnnStatus_t make_problem(cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w, cudnnConvolutionDescriptor_t conv,
                           cudnnTensorDescriptor_t y, Problem* p) {
  if (!x || !w || !conv || !y || !x->set || !w->set || !conv->set || !y->set) return CUDNN_STATUS_BAD_PARAM;
  if (x->type != w->type || y->type != x->type) return CUDNN_STATUS_BAD_PARAM;
  if (x->c != w->c || y->n != x->n || y->c != w->k ||
      y->h != out_dim(x->h, conv->pad_h, conv->dil_h, w->r, conv->u) ||
      y->w != out_dim(x->w, conv->pad_w, conv->dil_w, w->s, conv->v))
    return CUDNN_STATUS_BAD_PARAM;
  *p = Problem{*x, *y, *w, *conv, elem_of(x->type), false};
  // float32 under DEFAULT or TENSOR_OP math may run on the tensor cores in TF32 (cuDNN's rule).
  p->tf32 = p->e == Elem::F32 && conv->math != CUDNN_FMA_MATH;
  return CUDNN_STATUS_SUCCESS;
}

size_t x_bytes(const Problem& p) { return size_t(p.x.n) * p.x.c * p.x.h * p.x.w * elem_bytes(p.e); }
size_t y_bytes(const Problem& p) { return size_t(p.y.n) * p.y.c * p.y.h * p.y.w * elem_bytes(p.e); }
size_t w_bytes(const Problem& p) { return size_t(p.w.k) * p.w.c * p.w.r * p.w.s * elem_bytes(p.e); }

// The emulated algorithms' workspaces: none for the implicit GEMMs, the unrolled input for the rest.
size_t workspace_of(const Problem& p, int algo) {
  if (algo == 0) return 0;
  return size_t(p.w.c) * p.w.r * p.w.s * p.y.h * p.y.w * 4;
}

size_t xi(const Problem& p, int n, int c, int h, int w) { return ((size_t(n) * p.x.c + c) * p.x.h + h) * p.x.w + w; }
size_t yi(const Problem& p, int n, int k, int h, int w) { return ((size_t(n) * p.y.c + k) * p.y.h + h) * p.y.w + w; }
size_t wi(const Problem& p, int k, int c, int r, int s) { return ((size_t(k) * p.w.c + c) * p.w.r + r) * p.w.s + s; }

// The convolution's product terms y[n, k, oh, ow] ~ x[n, c, ih, iw] * w[k, c, r, s], a run of output
// columns at a time: row(y_offset, x_offset, x_step, w_offset, count) for the `count` terms
// y[y_offset + i] ~ x[x_offset + i * x_step] * w[w_offset]. Padding is left out of the runs.
template <class Row>
void for_each_row(const Problem& p, Row row) {
  const volt_emu_conv_desc& cv = p.conv;
  for (int n = 0; n < p.x.n; ++n)
    for (int k = 0; k < p.w.k; ++k)
      for (int c = 0; c < p.w.c; ++c)
        for (int r = 0; r < p.w.r; ++r)
          for (int s = 0; s < p.w.s; ++s) {
            // CUDNN_CONVOLUTION flips the filter; cross-correlation does not.
            const int fr = cv.mode == CUDNN_CONVOLUTION ? p.w.r - 1 - r : r;
            const int fs = cv.mode == CUDNN_CONVOLUTION ? p.w.s - 1 - s : s;
            const int col0 = s * cv.dil_w - cv.pad_w;  // iw = ow * v + col0
            int lo = 0, hi = p.y.w;
            while (lo < hi && lo * cv.v + col0 < 0) ++lo;
            while (hi > lo && (hi - 1) * cv.v + col0 >= p.x.w) --hi;
            if (lo >= hi) continue;
            for (int oh = 0; oh < p.y.h; ++oh) {
              const int ih = oh * cv.u - cv.pad_h + r * cv.dil_h;
              if (ih < 0 || ih >= p.x.h) continue;
              row(yi(p, n, k, oh, lo), xi(p, n, c, ih, lo * cv.v + col0), size_t(cv.v), wi(p, k, c, fr, fs),
                  size_t(hi - lo));
            }
          }
}


enum class Dir { Forward, BackwardData, BackwardFilter };

// Runs the pass on the handle's stream: out = alpha * result + beta * out.
cudnnStatus_t enqueue(cudnnHandle_t h, const Problem& p, Dir dir, const void* alpha, const void* a, const void* b,
                      int algo, void* workspace, size_t workspace_bytes, const void* beta, void* out) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  if (!alpha || !beta) return CUDNN_STATUS_BAD_PARAM;
  const size_t need = workspace_of(p, algo);
  if (workspace_bytes < need || (need && !volt_emu::is_device_range(workspace, need))) return CUDNN_STATUS_BAD_PARAM;
  bool ok = true;
  if (dir == Dir::Forward)
    ok = volt_emu::is_device_range(a, x_bytes(p)) && volt_emu::is_device_range(b, w_bytes(p)) &&
         volt_emu::is_device_range(out, y_bytes(p));
  else if (dir == Dir::BackwardData)
    ok = volt_emu::is_device_range(a, w_bytes(p)) && volt_emu::is_device_range(b, y_bytes(p)) &&
         volt_emu::is_device_range(out, x_bytes(p));
  else
    ok = volt_emu::is_device_range(a, x_bytes(p)) && volt_emu::is_device_range(b, y_bytes(p)) &&
         volt_emu::is_device_range(out, w_bytes(p));
  if (!ok) return CUDNN_STATUS_BAD_PARAM;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  volt_emu::submit(h->stream, [=] {
    if (need) std::memset(workspace, 0xA5, need);  // whatever was kept there is gone
    const Elem e = p.e;
    if (dir == Dir::Forward) {
      const std::vector<float> x = load(e, a, x_bytes(p) / elem_bytes(e), p.tf32);
      const std::vector<float> w = load(e, b, w_bytes(p) / elem_bytes(e), p.tf32);
      std::vector<double> y(y_bytes(p) / elem_bytes(e), 0.0);
      for_each_row(p, [&](size_t yo, size_t xo, size_t xs, size_t wo, size_t count) {
        const double wv = w[wo];
        for (size_t i = 0; i < count; ++i) y[yo + i] += double(x[xo + i * xs]) * wv;
      });
      for (size_t i = 0; i < y.size(); ++i) blend(e, out, i, y[i], al, be);
    } else if (dir == Dir::BackwardData) {
      const std::vector<float> w = load(e, a, w_bytes(p) / elem_bytes(e), p.tf32);
      const std::vector<float> dy = load(e, b, y_bytes(p) / elem_bytes(e), p.tf32);
      std::vector<double> dx(x_bytes(p) / elem_bytes(e), 0.0);
      for_each_row(p, [&](size_t yo, size_t xo, size_t xs, size_t wo, size_t count) {
        const double wv = w[wo];
        for (size_t i = 0; i < count; ++i) dx[xo + i * xs] += double(dy[yo + i]) * wv;
      });
      for (size_t i = 0; i < dx.size(); ++i) blend(e, out, i, dx[i], al, be);
    } else {
      const std::vector<float> x = load(e, a, x_bytes(p) / elem_bytes(e), p.tf32);
      const std::vector<float> dy = load(e, b, y_bytes(p) / elem_bytes(e), p.tf32);
      std::vector<double> dw(w_bytes(p) / elem_bytes(e), 0.0);
      for_each_row(p, [&](size_t yo, size_t xo, size_t xs, size_t wo, size_t count) {
        double acc = 0;
        for (size_t i = 0; i < count; ++i) acc += double(dy[yo + i]) * double(x[xo + i * xs]);
        dw[wo] += acc;
      });
      for (size_t i = 0; i < dw.size(); ++i) blend(e, out, i, dw[i], al, be);
    }
  });
  return CUDNN_STATUS_SUCCESS;
}

// The algorithms the emulator offers per direction, best first: a transform-based one (which callers
// that want direct sums must skip), one with a workspace, and the implicit GEMM (algorithm 0, none).
template <class Algo>
struct Algos;
template <>
struct Algos<cudnnConvolutionFwdAlgo_t> {
  static constexpr Dir dir = Dir::Forward;
  static constexpr auto transform = CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
  static constexpr auto with_workspace = CUDNN_CONVOLUTION_FWD_ALGO_GEMM;
};
template <>
struct Algos<cudnnConvolutionBwdDataAlgo_t> {
  static constexpr Dir dir = Dir::BackwardData;
  static constexpr auto transform = CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING;
  static constexpr auto with_workspace = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
};
template <>
struct Algos<cudnnConvolutionBwdFilterAlgo_t> {
  static constexpr Dir dir = Dir::BackwardFilter;
  static constexpr auto transform = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT;
  static constexpr auto with_workspace = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
};

// 0 for the implicit GEMM, 1 for the algorithms with a workspace, -1 for one the emulator lacks.
template <class Algo>
int algo_index(Algo algo) {
  return algo == Algo(0) ? 0 : (algo == Algos<Algo>::transform || algo == Algos<Algo>::with_workspace) ? 1 : -1;
}

template <class Algo>
int list_algos(const Problem& p, int requested, int* returned, volt_emu_cudnn_perf<Algo>* perf) {
  const Algo order[3] = {Algos<Algo>::transform, Algos<Algo>::with_workspace, Algo(0)};
  int n = 0;
  for (int i = 0; i < 3 && n < requested; ++i, ++n) {
    perf[n] = volt_emu_cudnn_perf<Algo>{};
    perf[n].algo = order[i];
    perf[n].status = CUDNN_STATUS_SUCCESS;
    perf[n].time = 0.1f * float(i + 1);
    perf[n].memory = workspace_of(p, i == 2 ? 0 : 1);
    perf[n].determinism = CUDNN_DETERMINISTIC;
    perf[n].mathType = p.conv.math;
  }
  *returned = n;
  return n;
}

}  // namespace

#define VOLT_EMU_PROBLEM(x, w, conv, y)                        \
  Problem p;                                                   \
  if (cudnnStatus_t st = make_problem(x, w, conv, y, &p); st)  \
    return st

namespace {

template <class Algo>
cudnnStatus_t heuristics(cudnnHandle_t h, const Problem& p, int requested, int* returned,
                         volt_emu_cudnn_perf<Algo>* perf) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  list_algos(p, requested, returned, perf);
  return CUDNN_STATUS_SUCCESS;
}

// The Find...Ex searches run every algorithm (scribbling over the output, as the real ones do) and
// synchronise, which a capturing stream does not allow.
template <class Algo>
cudnnStatus_t find(cudnnHandle_t h, const Problem& p, const void* a, const void* b, void* out, int requested,
                   int* returned, volt_emu_cudnn_perf<Algo>* perf, void* workspace, size_t workspace_bytes) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  cudaStreamIsCapturing(h->stream, &st);
  if (st != cudaStreamCaptureStatusNone) return CUDNN_STATUS_NOT_SUPPORTED;
  list_algos(p, requested, returned, perf);
  const float one = 1.f, zero = 0.f;
  for (int i = 0; i < *returned; ++i) {
    if (perf[i].memory > workspace_bytes) {
      perf[i].status = CUDNN_STATUS_NOT_SUPPORTED;  // does not fit the workspace offered
      continue;
    }
    if (cudnnStatus_t s = enqueue(h, p, Algos<Algo>::dir, &one, a, b, algo_index(perf[i].algo), workspace,
                                  workspace_bytes, &zero, out))
      return s;
  }
  return CUDNN_STATUS_SUCCESS;
}

std::atomic<unsigned> g_refuse_run{0}, g_refuse_query{0};  // volt_emu_cudnn_refuse

template <class Algo>
cudnnStatus_t workspace_size(cudnnHandle_t h, const Problem& p, Algo algo, size_t* bytes) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  const int idx = algo_index(algo);
  if (idx < 0 || (g_refuse_query.load() >> idx & 1u)) return CUDNN_STATUS_NOT_SUPPORTED;
  *bytes = workspace_of(p, idx);
  return CUDNN_STATUS_SUCCESS;
}

template <class Algo>
cudnnStatus_t run(cudnnHandle_t h, const Problem& p, Algo algo, const void* alpha, const void* a, const void* b,
                  void* workspace, size_t workspace_bytes, const void* beta, void* out) {
  const int idx = algo_index(algo);
  if (idx < 0 || (g_refuse_run.load() >> idx & 1u)) return CUDNN_STATUS_NOT_SUPPORTED;
  return enqueue(h, p, Algos<Algo>::dir, alpha, a, b, idx, workspace, workspace_bytes, beta, out);
}

}  // namespace

void volt_emu_cudnn_refuse(unsigned run_mask, unsigned query_mask) {
  g_refuse_run.store(run_mask);
  g_refuse_query.store(query_mask);
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t x,
                                                    cudnnFilterDescriptor_t w, int* n, int* c, int* h, int* wo) {
  if (!conv || !x || !w || !conv->set || !x->set || !w->set || x->c != w->c) return CUDNN_STATUS_BAD_PARAM;
  *n = x->n;
  *c = w->k;
  *h = out_dim(x->h, conv->pad_h, conv->dil_h, w->r, conv->u);
  *wo = out_dim(x->w, conv->pad_w, conv->dil_w, w->s, conv->v);
  return *h > 0 && *wo > 0 ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_BAD_PARAM;
}

// Each direction's calls name its tensors in its own order: x, w, y always go to the problem as such.
cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                     cudnnFilterDescriptor_t w, cudnnConvolutionDescriptor_t conv,
                                                     cudnnTensorDescriptor_t y, int requested, int* returned,
                                                     cudnnConvolutionFwdAlgoPerf_t* perf) {
  VOLT_EMU_PROBLEM(x, w, conv, y);
  return heuristics(h, p, requested, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t h, cudnnFilterDescriptor_t w,
                                                          cudnnTensorDescriptor_t dy,
                                                          cudnnConvolutionDescriptor_t conv,
                                                          cudnnTensorDescriptor_t dx, int requested, int* returned,
                                                          cudnnConvolutionBwdDataAlgoPerf_t* perf) {
  VOLT_EMU_PROBLEM(dx, w, conv, dy);
  return heuristics(h, p, requested, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                            cudnnTensorDescriptor_t dy,
                                                            cudnnConvolutionDescriptor_t conv,
                                                            cudnnFilterDescriptor_t dw, int requested, int* returned,
                                                            cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
  VOLT_EMU_PROBLEM(x, dw, conv, dy);
  return heuristics(h, p, requested, returned, perf);
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(cudnnHandle_t h, cudnnTensorDescriptor_t xd, const void* x,
                                                     cudnnFilterDescriptor_t wd, const void* w,
                                                     cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t yd,
                                                     void* y, int requested, int* returned,
                                                     cudnnConvolutionFwdAlgoPerf_t* perf, void* workspace,
                                                     size_t workspace_bytes) {
  VOLT_EMU_PROBLEM(xd, wd, conv, yd);
  return find(h, p, x, w, y, requested, returned, perf, workspace, workspace_bytes);
}
cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(cudnnHandle_t h, cudnnFilterDescriptor_t wd, const void* w,
                                                          cudnnTensorDescriptor_t dyd, const void* dy,
                                                          cudnnConvolutionDescriptor_t conv,
                                                          cudnnTensorDescriptor_t dxd, void* dx, int requested,
                                                          int* returned, cudnnConvolutionBwdDataAlgoPerf_t* perf,
                                                          void* workspace, size_t workspace_bytes) {
  VOLT_EMU_PROBLEM(dxd, wd, conv, dyd);
  return find(h, p, w, dy, dx, requested, returned, perf, workspace, workspace_bytes);
}
cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(cudnnHandle_t h, cudnnTensorDescriptor_t xd,
                                                            const void* x, cudnnTensorDescriptor_t dyd,
                                                            const void* dy, cudnnConvolutionDescriptor_t conv,
                                                            cudnnFilterDescriptor_t dwd, void* dw, int requested,
                                                            int* returned, cudnnConvolutionBwdFilterAlgoPerf_t* perf,
                                                            void* workspace, size_t workspace_bytes) {
  VOLT_EMU_PROBLEM(xd, dwd, conv, dyd);
  return find(h, p, x, dy, dw, requested, returned, perf, workspace, workspace_bytes);
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                      cudnnFilterDescriptor_t w, cudnnConvolutionDescriptor_t conv,
                                                      cudnnTensorDescriptor_t y, cudnnConvolutionFwdAlgo_t algo,
                                                      size_t* bytes) {
  VOLT_EMU_PROBLEM(x, w, conv, y);
  return workspace_size(h, p, algo, bytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t h, cudnnFilterDescriptor_t w,
                                                           cudnnTensorDescriptor_t dy,
                                                           cudnnConvolutionDescriptor_t conv,
                                                           cudnnTensorDescriptor_t dx,
                                                           cudnnConvolutionBwdDataAlgo_t algo, size_t* bytes) {
  VOLT_EMU_PROBLEM(dx, w, conv, dy);
  return workspace_size(h, p, algo, bytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t h, cudnnTensorDescriptor_t x,
                                                             cudnnTensorDescriptor_t dy,
                                                             cudnnConvolutionDescriptor_t conv,
                                                             cudnnFilterDescriptor_t dw,
                                                             cudnnConvolutionBwdFilterAlgo_t algo, size_t* bytes) {
  VOLT_EMU_PROBLEM(x, dw, conv, dy);
  return workspace_size(h, p, algo, bytes);
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void* alpha, cudnnTensorDescriptor_t xd, const void* x,
                                      cudnnFilterDescriptor_t wd, const void* w, cudnnConvolutionDescriptor_t conv,
                                      cudnnConvolutionFwdAlgo_t algo, void* workspace, size_t workspace_bytes,
                                      const void* beta, cudnnTensorDescriptor_t yd, void* y) {
  VOLT_EMU_PROBLEM(xd, wd, conv, yd);
  return run(h, p, algo, alpha, x, w, workspace, workspace_bytes, beta, y);
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void* alpha, cudnnFilterDescriptor_t wd,
                                           const void* w, cudnnTensorDescriptor_t dyd, const void* dy,
                                           cudnnConvolutionDescriptor_t conv, cudnnConvolutionBwdDataAlgo_t algo,
                                           void* workspace, size_t workspace_bytes, const void* beta,
                                           cudnnTensorDescriptor_t dxd, void* dx) {
  VOLT_EMU_PROBLEM(dxd, wd, conv, dyd);
  return run(h, p, algo, alpha, w, dy, workspace, workspace_bytes, beta, dx);
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void* alpha, cudnnTensorDescriptor_t xd,
                                             const void* x, cudnnTensorDescriptor_t dyd, const void* dy,
                                             cudnnConvolutionDescriptor_t conv, cudnnConvolutionBwdFilterAlgo_t algo,
                                             void* workspace, size_t workspace_bytes, const void* beta,
                                             cudnnFilterDescriptor_t dwd, void* dw) {
  VOLT_EMU_PROBLEM(xd, dwd, conv, dyd);
  return run(h, p, algo, alpha, x, dy, workspace, workspace_bytes, beta, dw);
}
