// CUDA convolution through cuDNN (see kernels/conv2d.h): fp32 NCHW with FMA math (no TF32). For each
// shape a plan (descriptors and the three algorithms picked by the cuDNN heuristics) is built once and
// cached; one workspace per device is reused and only grows. VOLT_CUDNN_VERBOSE=1 prints each plan.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "kernels/conv2d.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/handles.h"

namespace volt::cuda {

namespace {

struct Key {
  int device;
  int64_t v[11];
  bool operator<(const Key& o) const {
    if (device != o.device) return device < o.device;
    return std::memcmp(v, o.v, sizeof v) < 0;
  }
};

template <class Perf, class Algo>
struct Choice {
  Algo algo{};
  cudnnMathType_t math = CUDNN_FMA_MATH;
  size_t workspace = 0;
};

struct Plan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  Choice<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t> fwd;
  Choice<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t> bwd_data;
  Choice<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t> bwd_filter;
};

int to_int(int64_t v, const char* what) {
  VOLT_CHECK(v >= 0 && v <= 2147483647, "conv2d on CUDA: ", what, " = ", v, " does not fit cuDNN's int");
  return int(v);
}

constexpr size_t kMaxWorkspace = size_t(2) << 30;  // never pick an algorithm that needs more

// Algorithms whose rounding error grows beyond a direct sum's (FFT and Winograd transforms): they
// are taken only when nothing else is proposed, so results stay within the CPU's fp32 tolerances.
bool transform_based(cudnnConvolutionFwdAlgo_t a) {
  return a == CUDNN_CONVOLUTION_FWD_ALGO_FFT || a == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING ||
         a == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD || a == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
}
bool transform_based(cudnnConvolutionBwdDataAlgo_t a) {
  return a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT || a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING ||
         a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD || a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
}
bool transform_based(cudnnConvolutionBwdFilterAlgo_t a) {
  return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT || a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING ||
         a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
}

// The first (fastest, by the heuristics' ranking) usable result in FMA math, preferring in turn:
// deterministic and direct; direct; any FMA algorithm. Without one, an algorithm that every shape
// supports in FMA math and that is deterministic, so a tensor-core TF32 algorithm is never picked
// behind the caller's back.
template <class Perf, class C, class Algo>
void choose(const Perf* perf, int n, C& out, Algo fallback) {
  for (int pass = 0; pass < 3; ++pass)
    for (int i = 0; i < n; ++i) {
      const Perf& p = perf[i];
      if (p.status != CUDNN_STATUS_SUCCESS || p.memory > kMaxWorkspace || p.mathType != CUDNN_FMA_MATH) continue;
      if (pass == 0 && p.determinism != CUDNN_DETERMINISTIC) continue;
      if (pass <= 1 && transform_based(p.algo)) continue;
      out.algo = p.algo;
      out.math = p.mathType;
      out.workspace = p.memory;
      return;
    }
  out.algo = fallback;
  out.math = CUDNN_FMA_MATH;
  out.workspace = 0;  // asked for below
}

std::mutex g_mu;  // guards the plan cache and the workspaces (calls only enqueue work, so this is cheap)

Plan& plan_for(const Conv2dShape& s, int device, cudnnHandle_t h) {
  static std::map<Key, std::unique_ptr<Plan>> plans;  // never destroyed (cuDNN may be gone at exit)
  Key k{device, {s.N, s.C, s.H, s.W, s.K, s.R, s.S, s.stride_h, s.stride_w, s.pad_h, s.pad_w}};
  auto it = plans.find(k);
  if (it != plans.end()) return *it->second;
  auto p = std::make_unique<Plan>();
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->x));
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y));
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->bias));
  CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->w));
  CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->conv));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, to_int(s.N, "N"),
                                         to_int(s.C, "C"), to_int(s.H, "H"), to_int(s.W, "W")));
  CUDNN_CHECK(cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, to_int(s.K, "K"),
                                         to_int(s.C, "C"), to_int(s.R, "R"), to_int(s.S, "S")));
  CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p->conv, to_int(s.pad_h, "pad_h"), to_int(s.pad_w, "pad_w"),
                                              to_int(s.stride_h, "stride_h"), to_int(s.stride_w, "stride_w"), 1, 1,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv, CUDNN_FMA_MATH));
  int n = 0, k_out = 0, p_out = 0, q_out = 0;
  CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &n, &k_out, &p_out, &q_out));
  VOLT_CHECK(n == s.N && k_out == s.K && p_out == s.P && q_out == s.Q, "conv2d on CUDA: cuDNN's output shape [", n,
             ", ", k_out, ", ", p_out, ", ", q_out, "] differs from Volt's [", s.N, ", ", s.K, ", ", s.P, ", ", s.Q,
             "]");
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, k_out, p_out, q_out));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->bias, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, k_out, 1, 1));

  constexpr int kAsk = 16;
  int got = 0;
  cudnnConvolutionFwdAlgoPerf_t fwd[kAsk];
  CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, p->x, p->w, p->conv, p->y, kAsk, &got, fwd));
  choose(fwd, got, p->fwd, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM);
  cudnnConvolutionBwdDataAlgoPerf_t bd[kAsk];
  CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p->w, p->y, p->conv, p->x, kAsk, &got, bd));
  choose(bd, got, p->bwd_data, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1);
  cudnnConvolutionBwdFilterAlgoPerf_t bf[kAsk];
  CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p->x, p->y, p->conv, p->w, kAsk, &got, bf));
  choose(bf, got, p->bwd_filter, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1);
  // The heuristics' memory figure is an estimate: ask for the exact sizes of the chosen algorithms.
  CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv, p->fwd.math));
  CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, p->x, p->w, p->conv, p->y, p->fwd.algo, &p->fwd.workspace));
  CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv, p->bwd_data.math));
  CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, p->w, p->y, p->conv, p->x, p->bwd_data.algo,
                                                           &p->bwd_data.workspace));
  CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv, p->bwd_filter.math));
  CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p->x, p->y, p->conv, p->w, p->bwd_filter.algo,
                                                             &p->bwd_filter.workspace));
  static const bool verbose = std::getenv("VOLT_CUDNN_VERBOSE") != nullptr;
  if (verbose)
    std::fprintf(stderr,
                 "volt conv2d plan cuda:%d x[%lld,%lld,%lld,%lld] w[%lld,%lld,%lld,%lld] stride %lldx%lld pad %lldx%lld: "
                 "fwd algo %d math %d ws %zu, bwd-data algo %d math %d ws %zu, bwd-filter algo %d math %d ws %zu\n",
                 device, (long long)s.N, (long long)s.C, (long long)s.H, (long long)s.W, (long long)s.K,
                 (long long)s.C, (long long)s.R, (long long)s.S, (long long)s.stride_h, (long long)s.stride_w,
                 (long long)s.pad_h, (long long)s.pad_w, int(p->fwd.algo), int(p->fwd.math), p->fwd.workspace,
                 int(p->bwd_data.algo), int(p->bwd_data.math), p->bwd_data.workspace, int(p->bwd_filter.algo),
                 int(p->bwd_filter.math), p->bwd_filter.workspace);
  Plan& ref = *p;
  plans.emplace(k, std::move(p));
  return ref;
}

// The device's workspace, grown to at least `bytes`. Growing waits for queued work (which may still
// use the old buffer) before freeing it; it happens only while new shapes appear.
void* workspace(int device, size_t bytes, cudaStream_t stream) {
  static std::vector<std::pair<void*, size_t>> ws;  // per device, never freed
  if (ws.size() <= size_t(device)) ws.resize(size_t(device) + 1, {nullptr, 0});
  auto& [ptr, size] = ws[size_t(device)];
  if (bytes <= size) return ptr;
  if (ptr) {
    CUDA_CHECK(cudaStreamSynchronize(stream));
    CUDA_CHECK(cudaFree(ptr));
    ptr = nullptr;
    size = 0;
  }
  const size_t want = (bytes + (size_t(1) << 20) - 1) & ~((size_t(1) << 20) - 1);
  CUDA_CHECK(cudaMalloc(&ptr, want));
  size = want;
  return ptr;
}

struct Call {
  std::lock_guard<std::mutex> lock{g_mu};
  cudaStream_t stream;
  int device;
  cudnnHandle_t h;
  Plan* plan;
  explicit Call(const Conv2dShape& s, void* st) : stream(static_cast<cudaStream_t>(st)) {
    CUDA_CHECK(cudaGetDevice(&device));
    h = cudnn_handle(device, stream);
    plan = &plan_for(s, device, h);
  }
};

const float kOne = 1.f, kZero = 0.f;

}  // namespace

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* b, float* y, void* stream) {
  Call c(s, stream);
  Plan& p = *c.plan;
  void* ws = workspace(c.device, p.fwd.workspace, c.stream);
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.fwd.math));
  CUDNN_CHECK(cudnnConvolutionForward(c.h, &kOne, p.x, x, p.w, w, p.conv, p.fwd.algo, ws, p.fwd.workspace, &kZero,
                                      p.y, y));
  if (b) CUDNN_CHECK(cudnnAddTensor(c.h, &kOne, p.bias, b, &kOne, p.y, y));
}

void conv2d_backward_input(const Conv2dShape& s, const float* dy, const float* w, float* dx, void* stream) {
  Call c(s, stream);
  Plan& p = *c.plan;
  void* ws = workspace(c.device, p.bwd_data.workspace, c.stream);
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.bwd_data.math));
  CUDNN_CHECK(cudnnConvolutionBackwardData(c.h, &kOne, p.w, w, p.y, dy, p.conv, p.bwd_data.algo, ws,
                                           p.bwd_data.workspace, &kZero, p.x, dx));
}

void conv2d_backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw, void* stream) {
  Call c(s, stream);
  Plan& p = *c.plan;
  void* ws = workspace(c.device, p.bwd_filter.workspace, c.stream);
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.bwd_filter.math));
  CUDNN_CHECK(cudnnConvolutionBackwardFilter(c.h, &kOne, p.x, x, p.y, dy, p.conv, p.bwd_filter.algo, ws,
                                             p.bwd_filter.workspace, &kZero, p.w, dw));
}

void conv2d_backward_bias(const Conv2dShape& s, const float* dy, float* db, void* stream) {
  Call c(s, stream);
  CUDNN_CHECK(cudnnConvolutionBackwardBias(c.h, &kOne, c.plan->y, dy, &kZero, c.plan->bias, db));
}

}  // namespace volt::cuda
