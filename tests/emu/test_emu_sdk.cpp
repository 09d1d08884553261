// The emulated CUDA SDK itself (VOLT_CUDA=EMULATED builds only; kernels/cuda/emu/emu_sdk*.cpp): the
// GPU tests trust it to behave as the runtime, cuBLAS and cuDNN do, and to refuse what they refuse.
#include <cmath>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "cublasLt.h"
#include "cublas_v2.h"
#include "cuda_runtime.h"
#include "cudnn.h"
#include "engine/cuda_graph.h"
#include "engine/gpu.h"
#include "engine/ops.h"
#include "tests/gpu_check.h"
#include "tests/test_util.h"

namespace {

template <class T>
T* device_array(size_t n) {
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess);
  return static_cast<T*>(p);
}

template <class T>
void upload(T* dst, const std::vector<T>& src) {
  REQUIRE(cudaMemcpyAsync(dst, src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice, nullptr) == cudaSuccess);
}

template <class T>
std::vector<T> download(const T* src, size_t n) {
  std::vector<T> out(n);
  REQUIRE(cudaMemcpyAsync(out.data(), src, n * sizeof(T), cudaMemcpyDeviceToHost, nullptr) == cudaSuccess);
  return out;
}

std::vector<float> ramp(size_t n, float scale, float shift) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * float((i * 7919) % 23) - shift;
  return v;
}

__global__ void add_one(float* p, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) p[i] += 1.f;
}

}  // namespace

TEST_CASE("emulated runtime: fresh device memory is NaN, and copies check which side is the device") {
  float* d = device_array<float>(5);
  const std::vector<float> fresh = download(d, 5);
  for (float v : fresh) CHECK(std::isnan(v));  // nothing may depend on cudaMalloc zeroing memory
  std::vector<float> host(5, 1.f);
  CHECK(cudaMemcpyAsync(host.data(), host.data(), 20, cudaMemcpyHostToDevice, nullptr) == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaSuccess);  // read once, then cleared
  CHECK(cudaMemcpyAsync(d, host.data(), 24, cudaMemcpyHostToDevice, nullptr) == cudaErrorInvalidValue);  // past the end
  CHECK(cudaMemsetAsync(host.data(), 0, 4, nullptr) == cudaErrorInvalidValue);
  (void)cudaGetLastError();
  cudaPointerAttributes a{};
  REQUIRE(cudaPointerGetAttributes(&a, d + 2) == cudaSuccess);
  CHECK(a.type == cudaMemoryTypeDevice);
  REQUIRE(cudaPointerGetAttributes(&a, host.data()) == cudaSuccess);
  CHECK(a.type == cudaMemoryTypeUnregistered);
  CHECK(cudaFree(d + 1) == cudaErrorInvalidValue);  // not an allocation's base
  (void)cudaGetLastError();
  CHECK(cudaFree(d) == cudaSuccess);
}

// Pinned memory that runs out: the caching host allocator gives its cached blocks back and tries once
// more (cudaHostAlloc's failure must reach it as "none left", not as an error).
TEST_CASE("emulated runtime: out of pinned memory, the pinned cache is given back and the allocation retried") {
  struct Restore {
    ~Restore() { volt_emu::lift_memory_limits(); }
  } restore;
  volt::Allocator& pinned = volt::pinned_host_allocator();
  const size_t cached = size_t(3) << 20, wanted = size_t(4) << 20;
  pinned.deallocate(pinned.allocate(cached), cached);  // cached, so still page-locked
  volt_emu::limit_memory(volt_emu::MemoryKind::Pinned, wanted - cached / 2);  // too little beside the cached block
  void* p = nullptr;
  CHECK_NOTHROW(p = pinned.allocate(wanted));
  CHECK(p != nullptr);
  pinned.deallocate(p, wanted);
  CHECK(cudaGetLastError() == cudaSuccess);
}

// cuBLAS's first use on a full device (CTest runs this case in a process of its own, so that it is the
// first): its 32 MiB workspace is refused cleanly and tried again at the next call, and it takes the
// caching allocator's cache back as any device allocation does.
TEST_CASE("emulated runtime: cuBLAS's workspace on a full device: a clean refusal, then the cache given back") {
  using namespace volt;
  struct Restore {
    ~Restore() { volt_emu::lift_memory_limits(); }
  } restore;
  const Tensor x = test::rand_tensor({4, 6}, 71), w = test::rand_tensor({3, 6}, 72), b = test::rand_tensor({3}, 73);
  const Tensor xg = x.to(test::kGpu), wg = w.to(test::kGpu), bg = b.to(test::kGpu);
  cuda_empty_cache();
  volt_emu::limit_memory(volt_emu::MemoryKind::Device, size_t(16) << 20);
  const std::string refused = test::error_of([&] { linear(xg, wg, bg); });
  if (!refused.empty()) {  // (cuBLAS was already set up when an earlier case in this process used it)
    CHECK(test::contains(refused, "allocating cuBLAS's workspace"));
    volt_emu::lift_memory_limits();
    { Tensor big = Tensor::empty({int64_t(40) << 18}, DType::F32, test::kGpu); }  // 40 MiB, now cached
    volt_emu::limit_memory(volt_emu::MemoryKind::Device, size_t(16) << 20);
  }
  test::check_near(linear(xg, wg, bg), linear(x, w, b), 1e-5, 1e-5, "linear after the retry");
}

TEST_CASE("emulated runtime: a captured stream records its work, a graph replays it, host waits invalidate") {
  cudaStream_t s = nullptr, side = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking) == cudaSuccess);
  float* d = device_array<float>(40);
  upload(d, std::vector<float>(40, 0.f));

  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) == cudaSuccess);
  volt_emu::launch_on(s, add_one, dim3(2), dim3(32), 0, d, 40);
  CHECK(download(d, 40)[39] == 0.f);  // recorded, not run
  REQUIRE(cudaMemsetAsync(d + 39, 0, sizeof(float), s) == cudaSuccess);
  REQUIRE(cudaMemcpyAsync(d + 39, d, sizeof(float), cudaMemcpyDeviceToDevice, s) == cudaSuccess);
  cudaGraph_t g = nullptr;
  REQUIRE(cudaStreamEndCapture(s, &g) == cudaSuccess);
  size_t nodes = 0;
  CHECK(cudaGraphGetNodes(g, nullptr, &nodes) == cudaSuccess);
  CHECK(nodes == 3);  // the kernel, the memset and the copy
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiateWithFlags(&exec, g, 0) == cudaSuccess);
  cudaGraphDestroy(g);
  for (int i = 0; i < 3; ++i) REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
  CHECK(download(d, 40)[0] == 3.f);
  CHECK(download(d, 40)[39] == 3.f);
  cudaGraphExecDestroy(exec);

  // waiting for a capturing stream on the host is refused and spoils the capture
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) == cudaSuccess);
  CHECK(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported);
  cudaStreamCaptureStatus st{};
  REQUIRE(cudaStreamIsCapturing(s, &st) == cudaSuccess);
  CHECK(st == cudaStreamCaptureStatusInvalidated);
  CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated);
  CHECK(g == nullptr);
  REQUIRE(cudaStreamIsCapturing(s, &st) == cudaSuccess);
  CHECK(st == cudaStreamCaptureStatusNone);  // the stream is usable again

  // a stream that joins through an event must join back before the capture ends
  cudaEvent_t fork = nullptr, join = nullptr;
  REQUIRE(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming) == cudaSuccess);
  REQUIRE(cudaEventCreateWithFlags(&join, cudaEventDisableTiming) == cudaSuccess);
  for (bool join_back : {false, true}) {
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) == cudaSuccess);
    REQUIRE(cudaEventRecord(fork, s) == cudaSuccess);
    REQUIRE(cudaStreamWaitEvent(side, fork, 0) == cudaSuccess);
    REQUIRE(cudaMemsetAsync(d, 0, 8, side) == cudaSuccess);  // side's work joins the graph
    if (join_back) {
      REQUIRE(cudaEventRecord(join, side) == cudaSuccess);
      REQUIRE(cudaStreamWaitEvent(s, join, 0) == cudaSuccess);
    }
    const cudaError_t e = cudaStreamEndCapture(s, &g);
    CHECK(e == (join_back ? cudaSuccess : cudaErrorStreamCaptureUnjoined));
    (void)cudaGetLastError();
    if (g) cudaGraphDestroy(g);
    g = nullptr;
  }
  CHECK(download(d, 2)[0] == 3.f);  // captured, never replayed
  cudaEventDestroy(fork);
  cudaEventDestroy(join);
  cudaFree(d);
  cudaStreamDestroy(s);
  cudaStreamDestroy(side);
}

TEST_CASE("emulated cuBLAS: GemmEx against a direct product, every transpose, beta = 0 ignores C") {
  cublasHandle_t h = nullptr;
  REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
  const int m = 5, n = 3, k = 7;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const int lda = ta ? k + 1 : m + 2, ldb = tb ? n : k;  // padded leading dimensions too
      const int a_cols = ta ? m : k, b_cols = tb ? k : n;
      const std::vector<float> A = ramp(size_t(lda) * a_cols, 0.25f, 2.f), B = ramp(size_t(ldb) * b_cols, 0.5f, 3.f);
      float* dA = device_array<float>(A.size());
      float* dB = device_array<float>(B.size());
      float* dC = device_array<float>(size_t(m) * n);  // NaN: beta = 0 must not read it
      upload(dA, A);
      upload(dB, B);
      const float alpha = 1.5f, beta = 0.f;
      REQUIRE(cublasGemmEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, dA,
                           CUDA_R_32F, lda, dB, CUDA_R_32F, ldb, &beta, dC, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
      const std::vector<float> C = download(dC, size_t(m) * n);
      for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) {
          double s = 0;
          for (int l = 0; l < k; ++l)
            s += double(ta ? A[size_t(i) * lda + l] : A[size_t(l) * lda + i]) *
                 double(tb ? B[size_t(l) * ldb + j] : B[size_t(j) * ldb + l]);
          CHECK(C[size_t(j) * m + i] == doctest::Approx(1.5 * s).epsilon(1e-6));
        }
      cudaFree(dA);
      cudaFree(dB);
      cudaFree(dC);
    }
  std::vector<float> host(64, 1.f);
  const float one = 1.f;
  CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, host.data(), CUDA_R_32F, 4, host.data(), CUDA_R_32F,
                     4, &one, host.data(), CUDA_R_32F, 4, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);  // host pointers
  cublasDestroy(h);
}

// cuBLASLt as linear.cu calls it: y^T = op_T(w) x^T + b per row (BIAS), and dw^T = x^T op_T(dy^T) with db
// the column sums of op_T(dy^T) over k (BGRADB), against direct sums; what the emulator does not compute
// is NOT_SUPPORTED from the heuristics with no algorithm, and bad arguments are refused.
TEST_CASE("emulated cuBLASLt: the BIAS and BGRADB epilogues against direct sums, and what it refuses") {
  cublasLtHandle_t h = nullptr;
  REQUIRE(cublasLtCreate(&h) == CUBLAS_STATUS_SUCCESS);
  const int m = 5, n = 3, k = 7;  // D is m x n; op(A) m x k; op(B) k x n
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (cublasLtEpilogue_t epi : {CUBLASLT_EPILOGUE_DEFAULT, CUBLASLT_EPILOGUE_BIAS, CUBLASLT_EPILOGUE_BGRADB}) {
        INFO("ta " << ta << " tb " << tb << " epilogue " << int(epi));
        const int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
        const int lda = a_rows + 1, ldb = b_rows, ldd = m + 2;  // padded leading dimensions too
        const std::vector<float> A = ramp(size_t(lda) * a_cols, 0.25f, 2.f), B = ramp(size_t(ldb) * b_cols, 0.5f, 3.f);
        const std::vector<float> bias = ramp(size_t(m), 0.75f, 1.f);
        float* dA = device_array<float>(A.size());
        float* dB = device_array<float>(B.size());
        float* dD = device_array<float>(size_t(ldd) * n);  // NaN: beta = 0 must not read it
        float* dbias = device_array<float>(size_t(std::max(m, n)));
        upload(dA, A);
        upload(dB, B);
        if (epi == CUBLASLT_EPILOGUE_BIAS) upload(dbias, bias);
        cublasLtMatmulDesc_t desc = nullptr;
        REQUIRE(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS);
        const int32_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
        const uint32_t e = epi;
        const void* bp = dbias;
        REQUIRE(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, 4) == CUBLAS_STATUS_SUCCESS);
        REQUIRE(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, 4) == CUBLAS_STATUS_SUCCESS);
        REQUIRE(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, 4) == CUBLAS_STATUS_SUCCESS);
        REQUIRE(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)) ==
                CUBLAS_STATUS_SUCCESS);
        CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, 8) ==
              CUBLAS_STATUS_INVALID_VALUE);
        cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
        REQUIRE(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, a_rows, a_cols, lda) == CUBLAS_STATUS_SUCCESS);
        REQUIRE(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, b_rows, b_cols, ldb) == CUBLAS_STATUS_SUCCESS);
        REQUIRE(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, m, n, ldd) == CUBLAS_STATUS_SUCCESS);
        cublasLtMatmulPreference_t pref = nullptr;
        REQUIRE(cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS);
        cublasLtMatmulHeuristicResult_t r{};
        int found = 0;
        REQUIRE(cublasLtMatmulAlgoGetHeuristic(h, desc, la, lb, ld, ld, pref, 1, &r, &found) == CUBLAS_STATUS_SUCCESS);
        REQUIRE(found == 1);
        const float alpha = 1.f, beta = 0.f;
        REQUIRE(cublasLtMatmul(h, desc, &alpha, dA, la, dB, lb, &beta, dD, ld, dD, ld, &r.algo, nullptr, 0, nullptr) ==
                CUBLAS_STATUS_SUCCESS);
        const std::vector<float> D = download(dD, size_t(ldd) * n);
        const auto b_at = [&](int l, int j) { return tb ? B[size_t(l) * ldb + j] : B[size_t(j) * ldb + l]; };
        for (int j = 0; j < n; ++j)
          for (int i = 0; i < m; ++i) {
            double s = epi == CUBLASLT_EPILOGUE_BIAS ? double(bias[size_t(i)]) : 0.0;
            for (int l = 0; l < k; ++l)
              s += double(ta ? A[size_t(i) * lda + l] : A[size_t(l) * lda + i]) * double(b_at(l, j));
            CHECK(D[size_t(j) * ldd + i] == doctest::Approx(s).epsilon(1e-6));
          }
        if (epi == CUBLASLT_EPILOGUE_BGRADB) {
          const std::vector<float> db = download(dbias, size_t(n));
          for (int j = 0; j < n; ++j) {
            double s = 0;
            for (int l = 0; l < k; ++l) s += double(b_at(l, j));
            CHECK(db[size_t(j)] == doctest::Approx(s).epsilon(1e-6));
          }
        }
        // A host pointer is refused, as a bias too short for D's rows.
        std::vector<float> host(size_t(ldd) * n);
        CHECK(cublasLtMatmul(h, desc, &alpha, dA, la, dB, lb, &beta, host.data(), ld, host.data(), ld, &r.algo, nullptr,
                             0, nullptr) == CUBLAS_STATUS_INVALID_VALUE);
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(la);
        cublasLtMatrixLayoutDestroy(lb);
        cublasLtMatrixLayoutDestroy(ld);
        cublasLtMatmulDescDestroy(desc);
        cudaFree(dA);
        cudaFree(dB);
        cudaFree(dD);
        cudaFree(dbias);
      }
  // Mixed types and epilogues the emulator does not compute: no algorithm, as the real heuristics say.
  cublasLtMatmulDesc_t desc = nullptr;
  REQUIRE(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS);
  cublasLtMatrixLayout_t l32 = nullptr, l16 = nullptr;
  REQUIRE(cublasLtMatrixLayoutCreate(&l32, CUDA_R_32F, 4, 4, 4) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasLtMatrixLayoutCreate(&l16, CUDA_R_16F, 4, 4, 4) == CUBLAS_STATUS_SUCCESS);
  CHECK(cublasLtMatrixLayoutCreate(&l16, CUDA_R_16F, 5, 4, 4) == CUBLAS_STATUS_INVALID_VALUE);  // ld < rows
  cublasLtMatmulPreference_t pref = nullptr;
  REQUIRE(cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulHeuristicResult_t r{};
  int found = 7;
  CHECK(cublasLtMatmulAlgoGetHeuristic(h, desc, l32, l16, l32, l32, pref, 1, &r, &found) ==
        CUBLAS_STATUS_NOT_SUPPORTED);
  CHECK(found == 0);
  const uint32_t relu = CUBLASLT_EPILOGUE_RELU;
  REQUIRE(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &relu, 4) == CUBLAS_STATUS_SUCCESS);
  found = 7;
  CHECK(cublasLtMatmulAlgoGetHeuristic(h, desc, l32, l32, l32, l32, pref, 1, &r, &found) ==
        CUBLAS_STATUS_NOT_SUPPORTED);
  CHECK(found == 0);
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(l32);
  cublasLtMatrixLayoutDestroy(l16);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(h);
}

// linear.cu's way back: where cuBLASLt's heuristics find no algorithm (1), or its call refuses after they
// found one (2), the linear layer takes cublasGemmEx and its own bias kernels: the CPU's values again, and
// captured, the two nodes that the epilogues save are back. A fresh shape per mode (plans are per shape).
TEST_CASE("emulated cuBLASLt refusing: the linear layer falls back to cublasGemmEx and its bias kernels") {
  using namespace volt;
  struct Restore {
    ~Restore() { volt_emu_cublaslt_refuse(0); }
  } restore;
  REQUIRE(cuda_linear_fused_bias());
  const Device gpu = test::kGpu;
  size_t nodes[3] = {0, 0, 0};
  for (int mode : {0, 1, 2}) {
    INFO("refusal mode " << mode);
    volt_emu_cublaslt_refuse(mode);
    const int64_t M = 5 + mode;
    const Tensor x = test::rand_tensor({M, 7}, 61), w = test::rand_tensor({3, 7}, 62), b = test::rand_tensor({3}, 63);
    const Tensor proj = test::rand_tensor({M, 3}, 64);
    Tensor xc = x.clone(), wc = w.clone(), bc = b.clone(), xg = x.to(gpu), wg = w.to(gpu), bg = b.to(gpu);
    for (Tensor* t : {&xc, &wc, &bc, &xg, &wg, &bg}) t->requires_grad_(true);
    const Tensor pg = proj.to(gpu);
    auto step = [&] {
      for (Tensor* t : {&xg, &wg, &bg}) t->set_grad(Tensor());
      sum(mul(linear(xg, wg, bg), pg)).backward();
    };
    step();
    sum(mul(linear(xc, wc, bc), proj)).backward();
    test::check_near(xg.grad(), xc.grad(), 1e-5, 1e-5, "dx");
    test::check_near(wg.grad(), wc.grad(), 1e-5, 1e-5, "dw");
    test::check_near(bg.grad(), bc.grad(), 1e-5, 1e-5, "db");
    test::check_near(linear(xg, wg, bg), linear(xc, wc, bc), 1e-5, 1e-5, "forward");
    CudaGraph graph(gpu);
    graph.capture(step);
    nodes[mode] = graph.nodes();
  }
  CHECK(nodes[1] == nodes[0] + 2);  // a bias kernel forward, a column sum backward
  CHECK(nodes[2] == nodes[1]);
}

// conv2d.cu's way back: where cuDNN refuses the algorithm in use, at its run or at its workspace query
// (as the real library may for an algorithm its heuristics offered), the next candidate takes over,
// also inside a graph capture; with every algorithm refused, a volt::Error names the convolution. A
// fresh shape per mode (plans are per shape), cuDNN for all three passes.
TEST_CASE("emulated cuDNN refusing algorithms it offered: the convolution takes the next candidate") {
  using namespace volt;
  struct Restore {
    ~Restore() {
      volt_emu_cudnn_refuse(0, 0);
      cuda_set_conv_own_kernel(ConvOwnKernel::Auto);
    }
  } restore;
  cuda_set_conv_own_kernel(ConvOwnKernel::Never);
  const Device gpu = test::kGpu;
  struct Mode {
    unsigned run, query;
    bool capture_first;
    const char* what;
  };
  const Mode modes[] = {{0, 0, false, "nothing refused"},
                        {2, 0, false, "the algorithms with a workspace refused at their run"},
                        {0, 2, false, "the algorithms with a workspace refused at their workspace query"},
                        {2, 0, true, "refused at their run, first met inside a capture"}};
  for (int i = 0; i < int(std::size(modes)); ++i) {
    const Mode& m = modes[i];
    INFO(std::string(m.what));
    volt_emu_cudnn_refuse(m.run, m.query);
    const int64_t N = 2 + i;
    const Tensor x = test::rand_tensor({N, 3, 7, 6}, 71), w = test::rand_tensor({4, 3, 3, 2}, 72);
    const Tensor b = test::rand_tensor({4}, 73), proj = test::rand_tensor({N, 4, 4, 5}, 74);
    Tensor xc = x.clone(), wc = w.clone(), bc = b.clone(), xg = x.to(gpu), wg = w.to(gpu), bg = b.to(gpu);
    for (Tensor* t : {&xc, &wc, &bc, &xg, &wg, &bg}) t->requires_grad_(true);
    const Tensor pg = proj.to(gpu);
    Tensor yg;
    auto step = [&] {
      for (Tensor* t : {&xg, &wg, &bg}) t->set_grad(Tensor());
      yg = conv2d(xg, wg, bg, {2, 1}, {1, 0});
      sum(mul(yg, pg)).backward();
    };
    if (m.capture_first) {
      CudaGraph graph(gpu);
      graph.capture(step);
      graph.replay();
    } else {
      step();
    }
    const Tensor yc = conv2d(xc, wc, bc, {2, 1}, {1, 0});
    sum(mul(yc, proj)).backward();
    test::check_near(yg, yc, 1e-5, 1e-5, "forward");
    test::check_near(xg.grad(), xc.grad(), 1e-5, 1e-5, "dx");
    test::check_near(wg.grad(), wc.grad(), 1e-5, 1e-5, "dw");
    test::check_near(bg.grad(), bc.grad(), 1e-5, 1e-5, "db");
  }
  volt_emu_cudnn_refuse(3, 0);  // nothing left that runs
  const Tensor x = test::rand_tensor({9, 3, 7, 6}, 75).to(gpu), w = test::rand_tensor({4, 3, 3, 2}, 76).to(gpu);
  try {
    (void)conv2d(x, w, Tensor(), {2, 1}, {1, 0});
    FAIL("conv2d ran with every cuDNN algorithm refused");
  } catch (const Error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find("no cuDNN algorithm left for the forward pass of x[9, 3, 7, 6] w[4, 3, 3, 2]") !=
          std::string::npos);
    CHECK(what.find("CUDNN_STATUS_NOT_SUPPORTED") != std::string::npos);
  }
}

TEST_CASE("emulated cuDNN: the three passes are each other's adjoints, and a short workspace is refused") {
  // <conv(x, w), dy> = <x, backward_data(dy, w)> = <w, backward_filter(x, dy)>, with stride and padding.
  const int N = 2, C = 3, H = 7, W = 6, K = 4, R = 3, S = 2;
  cudnnHandle_t h = nullptr;
  REQUIRE(cudnnCreate(&h) == CUDNN_STATUS_SUCCESS);
  cudnnTensorDescriptor_t xd = nullptr, yd = nullptr;
  cudnnFilterDescriptor_t wd = nullptr;
  cudnnConvolutionDescriptor_t cd = nullptr;
  cudnnCreateTensorDescriptor(&xd);
  cudnnCreateTensorDescriptor(&yd);
  cudnnCreateFilterDescriptor(&wd);
  cudnnCreateConvolutionDescriptor(&cd);
  REQUIRE(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, C, H, W) == CUDNN_STATUS_SUCCESS);
  REQUIRE(cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, K, C, R, S) == CUDNN_STATUS_SUCCESS);
  REQUIRE(cudnnSetConvolution2dDescriptor(cd, 1, 1, 2, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT) ==
          CUDNN_STATUS_SUCCESS);
  REQUIRE(cudnnSetConvolutionMathType(cd, CUDNN_FMA_MATH) == CUDNN_STATUS_SUCCESS);
  int n = 0, k = 0, p = 0, q = 0;
  REQUIRE(cudnnGetConvolution2dForwardOutputDim(cd, xd, wd, &n, &k, &p, &q) == CUDNN_STATUS_SUCCESS);
  CHECK(p == (H + 2 - R) / 2 + 1);
  CHECK(q == (W + 2 - S) / 1 + 1);
  REQUIRE(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, k, p, q) == CUDNN_STATUS_SUCCESS);
  const size_t nx = size_t(N) * C * H * W, nw = size_t(K) * C * R * S, ny = size_t(n) * k * p * q;
  const std::vector<float> x = ramp(nx, 0.125f, 1.f), w = ramp(nw, 0.25f, 2.5f), dy = ramp(ny, 0.5f, 4.f);
  float *dx_in = device_array<float>(nx), *dw_in = device_array<float>(nw), *ddy = device_array<float>(ny);
  float *dyo = device_array<float>(ny), *dxo = device_array<float>(nx), *dwo = device_array<float>(nw);
  upload(dx_in, x);
  upload(dw_in, w);
  upload(ddy, dy);
  const float one = 1.f, zero = 0.f;
  REQUIRE(cudnnConvolutionForward(h, &one, xd, dx_in, wd, dw_in, cd, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr,
                                  0, &zero, yd, dyo) == CUDNN_STATUS_SUCCESS);
  REQUIRE(cudnnConvolutionBackwardData(h, &one, wd, dw_in, yd, ddy, cd, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, nullptr, 0,
                                       &zero, xd, dxo) == CUDNN_STATUS_SUCCESS);
  REQUIRE(cudnnConvolutionBackwardFilter(h, &one, xd, dx_in, yd, ddy, cd, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, nullptr,
                                         0, &zero, wd, dwo) == CUDNN_STATUS_SUCCESS);
  const auto dot = [](const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * double(b[i]);
    return s;
  };
  const double fwd = dot(download(dyo, ny), dy), bwd_data = dot(x, download(dxo, nx)), bwd_filter = dot(w, download(dwo, nw));
  CHECK(fwd != 0.0);
  CHECK(bwd_data == doctest::Approx(fwd).epsilon(1e-6));
  CHECK(bwd_filter == doctest::Approx(fwd).epsilon(1e-6));
  // one output element by hand: y[0, 1, 1, 2] = sum over c, r, s of x[0, c, 2 - 1 + r, 2 - 1 + s] w[1, c, r, s]
  double y0 = 0;
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < R; ++r)
      for (int s = 0; s < S; ++s)
        y0 += double(x[((size_t(0) * C + c) * H + (1 + r)) * W + (1 + s)]) * double(w[((size_t(1) * C + c) * R + r) * S + s]);
  CHECK(download(dyo, ny)[((size_t(0) * k + 1) * p + 1) * q + 2] == doctest::Approx(y0).epsilon(1e-6));

  size_t need = 0;
  REQUIRE(cudnnGetConvolutionForwardWorkspaceSize(h, xd, wd, cd, yd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, &need) ==
          CUDNN_STATUS_SUCCESS);
  CHECK(need > 0);
  float* ws = device_array<float>(need / 4);
  CHECK(cudnnConvolutionForward(h, &one, xd, dx_in, wd, dw_in, cd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, ws, need - 4, &zero,
                                yd, dyo) == CUDNN_STATUS_BAD_PARAM);
  CHECK(cudnnConvolutionForward(h, &one, xd, dx_in, wd, dw_in, cd, CUDNN_CONVOLUTION_FWD_ALGO_GEMM, ws, need, &zero, yd,
                                dyo) == CUDNN_STATUS_SUCCESS);
  for (float* ptr : {dx_in, dw_in, ddy, dyo, dxo, dwo, ws}) cudaFree(ptr);
}
