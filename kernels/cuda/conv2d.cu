// CUDA convolution through cuDNN (see kernels/conv2d.h), NCHW: float32 with FMA math (TF32 only when
// asked for), and float16/bfloat16 with tensor-core math and float32 accumulation. For each shape and type a plan
// (descriptors, and each direction's algorithm, picked by the cuDNN heuristics at that direction's first
// call, or with VOLT_CUDNN_FIND=1 by timing them then, like PyTorch's cudnn.benchmark) is built once and cached; one
// workspace per device is reused and only grows. Each direction keeps its other candidate algorithms:
// when cuDNN refuses the one in use, or its workspace does not fit, the next one takes over (said on
// stderr). VOLT_CUDNN_VERBOSE=1 prints each direction's choice and what choosing it took. The forward
// pass of a 16-bit convolution with a small reduction (C*R*S <= 96: the first layer) runs Volt's own
// tensor-core kernel instead (conv_igemm.cu; VOLT_CONV_OWN, see own_policy).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/batch_norm.h"
#include "kernels/conv2d.h"
#include "kernels/cuda/device_query.h"
#include "kernels/elementwise.h"
#include "kernels/math_mode.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/handles.h"
#include "kernels/cuda/runtime.h"

namespace volt::cuda {

namespace {

struct Key {
  int device;
  FType type;
  bool tf32;
  int64_t v[11];
  bool operator<(const Key& o) const {
    if (device != o.device) return device < o.device;
    if (type != o.type) return type < o.type;
    if (tf32 != o.tf32) return tf32 < o.tf32;
    return std::memcmp(v, o.v, sizeof v) < 0;
  }
};

cudnnDataType_t data_type(FType t) {
  return t == FType::F32 ? CUDNN_DATA_FLOAT : (t == FType::F16 ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16);
}

// One direction's algorithm: the candidates the search proposed, in order of preference (see choose), and
// the one in use with its exact workspace. When cuDNN refuses the one in use (CUDNN_STATUS_NOT_SUPPORTED
// at its workspace query or its run) or its workspace does not fit, the next one takes over for good.
template <class Perf, class Algo>
struct Choice {
  using perf_t = Perf;
  struct Candidate {
    Algo algo;
    cudnnMathType_t math;
  };
  std::vector<Candidate> candidates;
  size_t at = 0;  // the candidate in use
  Algo algo{};
  cudnnMathType_t math = CUDNN_FMA_MATH;
  size_t workspace = 0;
  bool ready = false;  // candidates chosen (at this direction's first call: an evaluation never asks for the others)
  void use(size_t i) {
    at = i;
    algo = candidates[i].algo;
    math = candidates[i].math;
    workspace = 0;  // settle asks for the exact figure
  }
};
using FwdChoice = Choice<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>;
using BwdDataChoice = Choice<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>;
using BwdFilterChoice = Choice<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>;

struct Plan {
  FType type = FType::F32;
  bool tf32 = false;  // float32 with TF32 tensor-core math allowed
  bool found[3] = {false, false, false};  // VOLT_CUDNN_FIND: forward, backward data, backward filter timed
  int own_fwd = -1;  // VOLT_CUDNN_FIND's timing of Volt's own forward kernel: -1 not yet, 0 cuDNN won, 1 own won
  int own_wgrad = -1;  // the same for the weight (+ bias) gradient
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  Conv2dShape shape{};
  FwdChoice fwd;
  BwdDataChoice bwd_data;
  BwdFilterChoice bwd_filter;
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

// Whether float32 may use TF32 tensor-core math (kernels/math_mode.h), read once per plan: a plan's
// algorithms were chosen under one setting, so the setting is part of the plan's key.
bool tf32_for(FType t) { return t == FType::F32 && float32_tf32_allowed().load(std::memory_order_relaxed); }

// The math the algorithm search runs in: FMA for float32 (cuDNN's default math, which admits TF32
// tensor-core kernels, when TF32 was asked for), tensor cores allowed for 16-bit types.
cudnnMathType_t search_math(FType t, bool tf32) {
  return t == FType::F32 ? (tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH) : CUDNN_TENSOR_OP_MATH;
}

// float32 may only use FMA math (a tensor-core algorithm would compute in TF32 behind the caller's
// back) unless TF32 was asked for, and never a conversion to 16 bits; float16/bfloat16 may use any math.
bool math_allowed(FType t, bool tf32, cudnnMathType_t m) {
  if (t != FType::F32) return true;
  return m == CUDNN_FMA_MATH || (tf32 && (m == CUDNN_DEFAULT_MATH || m == CUDNN_TENSOR_OP_MATH));
}

// The candidates, in order: the usable results (fastest first, by the heuristics' ranking or the
// measured times) in an allowed math, preferring in turn deterministic and direct; direct; any. Then an
// algorithm that every shape supports and that is deterministic: in tensor-core math first for 16-bit
// types, in FMA math last.
template <class Perf, class C, class Algo>
void choose(FType t, bool tf32, const Perf* perf, int n, C& out, Algo fallback) {
  out.candidates.clear();
  const auto add = [&](Algo a, cudnnMathType_t m) {
    for (const auto& c : out.candidates)
      if (c.algo == a && c.math == m) return;
    out.candidates.push_back({a, m});
  };
  for (int pass = 0; pass < 3; ++pass)
    for (int i = 0; i < n; ++i) {
      const Perf& p = perf[i];
      if (p.status != CUDNN_STATUS_SUCCESS || p.memory > kMaxWorkspace || !math_allowed(t, tf32, p.mathType)) continue;
      if (pass == 0 && p.determinism != CUDNN_DETERMINISTIC) continue;
      if (pass <= 1 && transform_based(p.algo)) continue;
      add(p.algo, p.mathType);
    }
  if (t != FType::F32) add(fallback, CUDNN_TENSOR_OP_MATH);
  add(fallback, CUDNN_FMA_MATH);
  out.use(0);
}

const char* direction_name(const FwdChoice&) { return "forward pass"; }
const char* direction_name(const BwdDataChoice&) { return "input gradient"; }
const char* direction_name(const BwdFilterChoice&) { return "weight gradient"; }

// The workspace query of the candidate in use (its math set on the descriptor first).
cudnnStatus_t query_workspace(cudnnHandle_t h, const Plan& p, FwdChoice& c) {
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, c.math));
  return cudnnGetConvolutionForwardWorkspaceSize(h, p.x, p.w, p.conv, p.y, c.algo, &c.workspace);
}
cudnnStatus_t query_workspace(cudnnHandle_t h, const Plan& p, BwdDataChoice& c) {
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, c.math));
  return cudnnGetConvolutionBackwardDataWorkspaceSize(h, p.w, p.y, p.conv, p.x, c.algo, &c.workspace);
}
cudnnStatus_t query_workspace(cudnnHandle_t h, const Plan& p, BwdFilterChoice& c) {
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, c.math));
  return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p.x, p.y, p.conv, p.w, c.algo, &c.workspace);
}

[[noreturn]] void cudnn_failed(const char* call, cudnnStatus_t st) {
  VOLT_FAIL("cuDNN error: ", call, " failed: ", cudnnGetErrorString(st));
}

// "x[N, C, H, W] w[K, C, R, S] stride SxS pad PxP in <type>": the convolution, for messages.
std::string describe(const Plan& p) {
  const Conv2dShape& s = p.shape;
  return ::volt::detail::format("x[", s.N, ", ", s.C, ", ", s.H, ", ", s.W, "] w[", s.K, ", ", s.C, ", ", s.R, ", ",
                                s.S, "] stride ", s.stride_h, "x", s.stride_w, " pad ", s.pad_h, "x", s.pad_w, " in ",
                                p.tf32 ? "float32 (TF32 allowed)" : ftype_name(p.type));
}

// The candidate in use cannot serve (`why`): the next one takes over, saying so; without one, a
// volt::Error naming the convolution.
template <class C>
void next_candidate(const Plan& p, C& c, const std::string& why) {
  VOLT_CHECK(c.at + 1 < c.candidates.size(), "conv2d on CUDA: no cuDNN algorithm left for the ", direction_name(c),
             " of ", describe(p), ": the last of ", c.candidates.size(), " candidates, algorithm ", int(c.algo),
             " in math ", int(c.math), ", ", why);
  const int algo = int(c.algo), math = int(c.math);
  c.use(c.at + 1);
  std::fprintf(stderr, "volt conv2d: cuDNN algorithm %d (math %d) for the %s of %s %s; algorithm %d (math %d) from now on\n",
               algo, math, direction_name(c), describe(p).c_str(), why.c_str(), int(c.algo), int(c.math));
}

// The exact workspace of the candidate in use: the heuristics' and the search's memory figures are
// estimates, the fallback has none. A candidate whose query cuDNN refuses gives way to the next.
template <class C>
void settle(cudnnHandle_t h, const Plan& p, C& c) {
  for (;;) {
    const cudnnStatus_t st = query_workspace(h, p, c);
    if (st == CUDNN_STATUS_SUCCESS) return;
    if (st != CUDNN_STATUS_NOT_SUPPORTED) cudnn_failed("the workspace size query", st);
    next_candidate(p, c, "is not supported (its workspace size query said CUDNN_STATUS_NOT_SUPPORTED)");
  }
}

constexpr auto kFallbackFwd = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
constexpr auto kFallbackBwdData = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
constexpr auto kFallbackBwdFilter = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;

bool verbose() {
  static const bool on = std::getenv("VOLT_CUDNN_VERBOSE") != nullptr;
  return on;
}

// The heuristics' ranking for one direction (cudnnGet*Algorithm_v7), up to `ask` entries.
constexpr int kAsk = 16;
cudnnStatus_t heuristics(cudnnHandle_t h, const Plan& p, int* got, cudnnConvolutionFwdAlgoPerf_t* perf) {
  return cudnnGetConvolutionForwardAlgorithm_v7(h, p.x, p.w, p.conv, p.y, kAsk, got, perf);
}
cudnnStatus_t heuristics(cudnnHandle_t h, const Plan& p, int* got, cudnnConvolutionBwdDataAlgoPerf_t* perf) {
  return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p.w, p.y, p.conv, p.x, kAsk, got, perf);
}
cudnnStatus_t heuristics(cudnnHandle_t h, const Plan& p, int* got, cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
  return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p.x, p.y, p.conv, p.w, kAsk, got, perf);
}

// A direction's candidates, at its first call: the heuristics' ranking, then the fallback (see choose),
// the first usable one settled. An evaluation thus never pays for the backward directions of its
// shapes (a last, shorter batch is a shape of its own).
template <class C, class Algo>
void make_ready(cudnnHandle_t h, int device, Plan& p, C& c, Algo fallback) {
  if (c.ready) return;
  const auto t0 = std::chrono::steady_clock::now();
  typename C::perf_t perf[kAsk];
  int got = 0;
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, search_math(p.type, p.tf32)));
  CUDNN_CHECK(heuristics(h, p, &got, perf));
  choose(p.type, p.tf32, perf, got, c, fallback);
  settle(h, p, c);
  c.ready = true;
  if (verbose())
    std::fprintf(stderr, "volt conv2d plan cuda:%d %s, %s: algo %d math %d ws %zu (chosen in %.2f ms)\n", device,
                 describe(p).c_str(), direction_name(c), int(c.algo), int(c.math), c.workspace,
                 std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
}

std::mutex g_mu;  // guards the plan cache and the workspaces (calls only enqueue work, so this is cheap)

Plan& plan_for(FType t, const Conv2dShape& s, int device) {
  static std::map<Key, std::unique_ptr<Plan>> plans;  // never destroyed (cuDNN may be gone at exit)
  const bool allow_tf32 = tf32_for(t);
  Key k{device, t, allow_tf32, {s.N, s.C, s.H, s.W, s.K, s.R, s.S, s.stride_h, s.stride_w, s.pad_h, s.pad_w}};
  auto it = plans.find(k);
  if (it != plans.end()) return *it->second;
  // cuDNN's NCHW descriptors index a tensor with an int: at most 2^31 - 1 elements each.
  const int64_t in_elems = s.N * s.C * s.H * s.W, out_elems = s.N * s.K * s.P * s.Q;
  VOLT_CHECK(in_elems <= 2147483647 && out_elems <= 2147483647, "conv2d on CUDA: input [", s.N, ", ", s.C, ", ", s.H,
             ", ", s.W, "] or output [", s.N, ", ", s.K, ", ", s.P, ", ", s.Q,
             "] has more than 2^31 - 1 elements, cuDNN's limit; use a smaller batch");
  auto p = std::make_unique<Plan>();
  p->type = t;
  p->tf32 = allow_tf32;
  p->shape = s;
  const cudnnDataType_t dt = data_type(t);
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->x));
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y));
  CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->w));
  CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->conv));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, dt, to_int(s.N, "N"),
                                         to_int(s.C, "C"), to_int(s.H, "H"), to_int(s.W, "W")));
  CUDNN_CHECK(cudnnSetFilter4dDescriptor(p->w, dt, CUDNN_TENSOR_NCHW, to_int(s.K, "K"),
                                         to_int(s.C, "C"), to_int(s.R, "R"), to_int(s.S, "S")));
  CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p->conv, to_int(s.pad_h, "pad_h"), to_int(s.pad_w, "pad_w"),
                                              to_int(s.stride_h, "stride_h"), to_int(s.stride_w, "stride_w"), 1, 1,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv, search_math(t, allow_tf32)));
  int n = 0, k_out = 0, p_out = 0, q_out = 0;
  CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &n, &k_out, &p_out, &q_out));
  VOLT_CHECK(n == s.N && k_out == s.K && p_out == s.P && q_out == s.Q, "conv2d on CUDA: cuDNN's output shape [", n,
             ", ", k_out, ", ", p_out, ", ", q_out, "] differs from Volt's [", s.N, ", ", s.K, ", ", s.P, ", ", s.Q,
             "]");
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, dt, n, k_out, p_out, q_out));

  Plan& ref = *p;
  plans.emplace(k, std::move(p));
  return ref;
}

// The device's workspace, grown to at least `bytes`; nullptr when the device cannot hold it, even after
// the caching allocator gave its cache back (not while `stream` is being captured into a graph). A
// replaced buffer is never freed: a captured CUDA graph may still use it. It grows to twice its size
// when that fits, so all the buffers kept stay under twice the last.
void* workspace(int device, size_t bytes, void* stream) {
  static std::vector<std::pair<void*, size_t>> ws;  // per device, never freed
  static std::vector<void*> retired;
  if (ws.size() <= size_t(device)) ws.resize(size_t(device) + 1, {nullptr, 0});
  auto& [ptr, size] = ws[size_t(device)];
  if (bytes <= size) return ptr;
  const auto mib = [](size_t b) { return (b + (size_t(1) << 20) - 1) & ~((size_t(1) << 20) - 1); };
  void* fresh = nullptr;
  size_t got = 0;
  for (int attempt = 0; attempt < 2 && !fresh; ++attempt) {
    if (attempt == 1) {
      if (stream_capturing(stream)) break;
      release_cache(device);
    }
    for (size_t want : {mib(std::max(bytes, 2 * size)), mib(bytes)}) {
      if ((fresh = device_malloc(want, device))) {
        got = want;
        break;
      }
    }
  }
  if (!fresh) return nullptr;
  if (ptr) retired.push_back(ptr);
  ptr = fresh;
  size = got;
  return ptr;
}

struct Call {
  void* stream;
  std::lock_guard<std::mutex> lock{g_mu};
  int device;
  cudnnHandle_t h;
  Plan* plan;
  Call(FType t, const Conv2dShape& s, void* stream_) : stream(stream_) {
    CUDA_CHECK(cudaGetDevice(&device));
    h = cudnn_handle(device, static_cast<cudaStream_t>(stream));
    plan = &plan_for(t, s, device);
  }
};

const float kOne = 1.f, kZero = 0.f;

// VOLT_CUDNN_FIND=1: the first call of each plan and direction times the algorithms on the real
// buffers (cudnnFind*Ex, which synchronises) and keeps the fastest usable one.
bool find_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("VOLT_CUDNN_FIND");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}
constexpr size_t kFindWorkspace = size_t(256) << 20;
constexpr int kFindAsk = 16;

// With VOLT_CUDNN_FIND, the first call of direction dir (0 forward, 1 input gradient, 2 weight gradient)
// times the algorithms on the real buffers: find(ask, &got, perf, workspace, bytes) wraps that direction's cudnnFind*Ex.
template <class Choice, class Algo, class Find>
void find_once(Call& c, int dir, Choice& out, Algo fallback, Find find) {
  Plan& p = *c.plan;
  // Not while a graph captures the stream: cudnnFind*Ex synchronises, which would spoil the capture
  // (the heuristic's choice stands; the next eager call of the shape times it).
  if (!find_enabled() || p.found[dir] || stream_capturing(c.stream)) return;
  typename Choice::perf_t perf[kFindAsk];
  int got = 0;
  CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, search_math(p.type, p.tf32)));
  void* ws = workspace(c.device, kFindWorkspace, c.stream);
  const size_t bytes = ws ? kFindWorkspace : 0;  // a full device: search what needs no workspace
  CUDNN_CHECK(find(kFindAsk, &got, perf, ws, bytes));
  choose(p.type, p.tf32, perf, got, out, fallback);
  settle(c.h, p, out);
  out.ready = true;
  p.found[dir] = true;
  if (verbose())
    std::fprintf(stderr, "volt conv2d find (%s, direction %d): algo %d math %d ws %zu\n", ftype_name(p.type), dir,
                 int(out.algo), int(out.math), out.workspace);
}

// Volt's own forward kernel (conv_igemm.cu) for the shapes it supports: VOLT_CONV_OWN=0 never, =1
// always; otherwise (auto) it is used, or with VOLT_CUDNN_FIND timed once against cuDNN's fastest.
std::atomic<int> g_own_override{-1};
ConvOwnKernel own_policy() {
  const int o = g_own_override.load(std::memory_order_relaxed);
  if (o >= 0) return ConvOwnKernel(o);
  static const ConvOwnKernel env = [] {
    const char* v = std::getenv("VOLT_CONV_OWN");
    if (!v || !*v) return ConvOwnKernel::Auto;
    if (std::strcmp(v, "0") == 0) return ConvOwnKernel::Never;
    if (std::strcmp(v, "1") == 0) return ConvOwnKernel::Always;
    VOLT_FAIL("VOLT_CONV_OWN=", v, ": expected 0 (cuDNN only) or 1 (Volt's own forward kernel where it applies); "
              "unset lets Volt choose");
  }();
  return env;
}

// Milliseconds per call of f on `stream`, the mean of 3 after one warm-up (synchronises).
template <class F>
float time_ms(void* stream, F&& f) {
  const auto st = static_cast<cudaStream_t>(stream);
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  float ms = 0.f;
  try {
    f();
    CUDA_CHECK(cudaEventRecord(start, st));
    for (int i = 0; i < 3; ++i) f();
    CUDA_CHECK(cudaEventRecord(stop, st));
    CUDA_CHECK(cudaEventSynchronize(stop));
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / 3.f;
}

// The workspace of the candidate in use; when the device cannot hold it, the next candidates take over
// (the last ones need little or none), saying so.
template <class C>
void* workspace_for(Call& c, C& choice) {
  for (;;) {
    void* ws = workspace(c.device, choice.workspace, c.stream);
    if (ws || choice.workspace == 0) return ws;
    next_candidate(*c.plan, choice,
                   "needs " + std::to_string(choice.workspace) +
                       " bytes of workspace, more than the GPU's free memory holds");
    settle(c.h, *c.plan, choice);
  }
}

// Runs the candidate in use: run(workspace) makes the cuDNN call. Where cuDNN refuses it
// (CUDNN_STATUS_NOT_SUPPORTED, which it answers before launching anything), the next candidate runs.
template <class C, class Run>
void run_cudnn(Call& c, C& choice, const char* call, Run run) {
  for (;;) {
    void* ws = workspace_for(c, choice);
    CUDNN_CHECK(cudnnSetConvolutionMathType(c.plan->conv, choice.math));
    const cudnnStatus_t st = run(ws);
    if (st == CUDNN_STATUS_SUCCESS) return;
    if (st != CUDNN_STATUS_NOT_SUPPORTED) cudnn_failed(call, st);
    next_candidate(*c.plan, choice, std::string("is not supported (") + call + " said CUDNN_STATUS_NOT_SUPPORTED)");
    settle(c.h, *c.plan, choice);
  }
}

}  // namespace

bool conv2d_forward(FType t, const Conv2dShape& s, const void* x, const void* w, const void* b, void* y,
                    void* stream, double* sums) {
  Call c(t, s, stream);
  Plan& p = *c.plan;
  const ConvOwnKernel policy = own_policy();
  const bool own_ok = policy != ConvOwnKernel::Never && conv2d_forward_own_supported(t, s);
  if (own_ok && (policy == ConvOwnKernel::Always || !find_enabled() || p.own_fwd == 1)) {
    conv2d_forward_own(t, s, x, w, b, y, stream, sums);  // the bias (and the sums) in the same pass
    return true;
  }
  find_once(c, 0, p.fwd, kFallbackFwd, [&](int ask, int* got, auto* perf, void* ws, size_t bytes) {
    return cudnnFindConvolutionForwardAlgorithmEx(c.h, p.x, x, p.w, w, p.conv, p.y, y, ask, got, perf, ws, bytes);
  });
  make_ready(c.h, c.device, p, p.fwd, kFallbackFwd);
  const auto cudnn_forward = [&] {
    run_cudnn(c, p.fwd, "cudnnConvolutionForward", [&](void* ws) {
      return cudnnConvolutionForward(c.h, &kOne, p.x, x, p.w, w, p.conv, p.fwd.algo, ws, p.fwd.workspace, &kZero,
                                     p.y, y);
    });
    // Volt's own kernel rather than cudnnAddTensor: one path for every storage type (bfloat16 included).
    if (b) add_channel_bias(t, s.N, s.K, s.P * s.Q, b, y, stream);
  };
  if (own_ok && p.own_fwd < 0 && !stream_capturing(stream)) {
    // VOLT_CUDNN_FIND: Volt's kernel against cuDNN's fastest (bias included), on the real buffers, once.
    const float own_ms = time_ms(stream, [&] { conv2d_forward_own(t, s, x, w, b, y, stream, sums); });
    const float cudnn_ms = time_ms(stream, cudnn_forward);
    p.own_fwd = own_ms <= cudnn_ms ? 1 : 0;
    if (verbose())
      std::fprintf(stderr, "volt conv2d find (%s, forward): Volt's kernel %.4f ms, cuDNN's %.4f ms: %s\n",
                   ftype_name(t), double(own_ms), double(cudnn_ms), p.own_fwd ? "Volt's" : "cuDNN's");
    if (p.own_fwd == 1) {
      conv2d_forward_own(t, s, x, w, b, y, stream, sums);
      return true;
    }
  }
  cudnn_forward();
  return false;
}

void conv2d_backward_input(FType t, const Conv2dShape& s, const void* dy, const void* w, void* dx, void* stream) {
  Call c(t, s, stream);
  Plan& p = *c.plan;
  find_once(c, 1, p.bwd_data, kFallbackBwdData, [&](int ask, int* got, auto* perf, void* ws, size_t bytes) {
    return cudnnFindConvolutionBackwardDataAlgorithmEx(c.h, p.w, w, p.y, dy, p.conv, p.x, dx, ask, got, perf, ws, bytes);
  });
  make_ready(c.h, c.device, p, p.bwd_data, kFallbackBwdData);
  run_cudnn(c, p.bwd_data, "cudnnConvolutionBackwardData", [&](void* ws) {
    return cudnnConvolutionBackwardData(c.h, &kOne, p.w, w, p.y, dy, p.conv, p.bwd_data.algo, ws,
                                        p.bwd_data.workspace, &kZero, p.x, dx);
  });
}

void conv2d_backward_weight(FType t, const Conv2dShape& s, const void* dy, const void* x, void* dw, void* stream) {
  Call c(t, s, stream);
  Plan& p = *c.plan;
  find_once(c, 2, p.bwd_filter, kFallbackBwdFilter, [&](int ask, int* got, auto* perf, void* ws, size_t bytes) {
    return cudnnFindConvolutionBackwardFilterAlgorithmEx(c.h, p.x, x, p.y, dy, p.conv, p.w, dw, ask, got, perf, ws,
                                                         bytes);
  });
  make_ready(c.h, c.device, p, p.bwd_filter, kFallbackBwdFilter);
  run_cudnn(c, p.bwd_filter, "cudnnConvolutionBackwardFilter", [&](void* ws) {
    return cudnnConvolutionBackwardFilter(c.h, &kOne, p.x, x, p.y, dy, p.conv, p.bwd_filter.algo, ws,
                                          p.bwd_filter.workspace, &kZero, p.w, dw);
  });
}

void conv2d_backward_weight_bias(FType t, const Conv2dShape& s, const void* dy, const void* x, void* dw, void* db,
                                 void* bias_workspace, void* stream) {
  const auto cudnn_path = [&] {
    if (dw) conv2d_backward_weight(t, s, dy, x, dw, stream);
    if (db) conv2d_backward_bias(t, s, dy, db, bias_workspace, stream);
  };
  const ConvOwnKernel policy = own_policy();
  if (!dw || policy == ConvOwnKernel::Never || !conv2d_backward_weight_own_supported(t, s)) return cudnn_path();
  void* ws = nullptr;
  int* choice = nullptr;
  ConvWgradGrid grid{};
  {
    Call c(t, s, stream);  // the plan (for the timing's verdict) and the workspace, under the lock
    grid = conv2d_backward_weight_own_grid(s, multiprocessor_count(c.device));
    ws = workspace(c.device, conv2d_backward_weight_own_workspace(s, grid.blocks), stream);
    choice = &c.plan->own_wgrad;  // plans live as long as the process
  }
  if (!ws) return cudnn_path();  // the device cannot hold the partial sums; cuDNN's path needs less
  const auto own_path = [&] {
    conv2d_backward_weight_own(t, s, dy, x, dw, db, ws, stream, grid.blocks, grid.per_sm);
  };
  if (policy == ConvOwnKernel::Auto && find_enabled() && *choice < 0 && !stream_capturing(stream)) {
    cudnn_path();  // cuDNN's own search first (it synchronises), outside the timing
    const float own_ms = time_ms(stream, own_path), cudnn_ms = time_ms(stream, cudnn_path);
    std::lock_guard<std::mutex> lock(g_mu);
    *choice = own_ms <= cudnn_ms ? 1 : 0;
    if (verbose())
      std::fprintf(stderr, "volt conv2d find (%s, weight%s gradient): Volt's kernel %.4f ms, cuDNN's %.4f ms: %s\n",
                   ftype_name(t), db ? " and bias" : "", double(own_ms), double(cudnn_ms),
                   *choice ? "Volt's" : "cuDNN's");
  }
  if (policy == ConvOwnKernel::Always || !find_enabled() || *choice == 1) own_path();
  else cudnn_path();
}

void conv2d_backward_weight_bias_from_pool(FType t, const Conv2dShape& s, const BnPoolGradSource& g, const void* x,
                                           void* dw, void* db, void* stream) {
  void* ws = nullptr;
  ConvWgradGrid grid{};
  {
    Call c(t, s, stream);
    grid = conv2d_backward_weight_own_grid(s, multiprocessor_count(c.device));
    ws = workspace(c.device, conv2d_backward_weight_own_workspace(s, grid.blocks), stream);
  }
  VOLT_CHECK(ws, "conv2d on CUDA: out of GPU memory for the weight gradient's partial sums (",
             conv2d_backward_weight_own_workspace(s, grid.blocks), " bytes)");
  conv2d_backward_weight_own_from_pool(t, s, g, x, dw, db, ws, stream, grid.blocks, grid.per_sm);
}

bool conv2d_own_kernels_allowed() { return own_policy() != ConvOwnKernel::Never; }

void set_conv2d_own_kernel(ConvOwnKernel mode) { g_own_override.store(int(mode), std::memory_order_relaxed); }

void conv2d_backward_bias(FType t, const Conv2dShape& s, const void* dy, void* db, void* workspace, void* stream) {
  channel_sum(t, s.N, s.K, s.P * s.Q, dy, db, workspace, stream);  // db[k] = sum of dy over n, p, q
}

}  // namespace volt::cuda
