// Per-op microbenchmark of the CUDA backend at the seed CNN's shapes (batch 128 by default): time per
// call of each op's forward and backward, and the memory bandwidth that implies against the GPU's
// theoretical peak (bytes moved is the op's minimum: inputs read once, outputs written once). It times
// the eager ops (allocation included); fused kernels and the first layer's 16-bit forward (cuDNN and
// Volt's own tensor-core kernel, in the same run) beside them.
// --first-calls instead times what a new batch shape costs: the first call of the seed CNN's
// convolutions and first linear layer at each batch size of cnn_train (128, then validation's last 8,
// the test's last 16, training's last 72), in each type, against the second call.
//   bench_ops_cuda [--batch 128] [--iters 50] [--first-calls]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/gpu.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "bench_common.h"

using namespace volt;

namespace {

double peak_bytes_per_second = 0;  // the GPU's theoretical memory bandwidth (its attributes)

Tensor randn_like_uniform(const Shape& s, uint64_t seed, Device d) {
  Tensor t = Tensor::empty(s);
  Generator g(seed);
  uniform_(t, -1.f, 1.f, g);
  return t.to(d);
}

void time_op(const std::string& name, double bytes, int iters, const std::function<void()>& fn) {
  for (int i = 0; i < 3; ++i) fn();  // warm-up: plans, workspaces, the allocator's cache
  cuda_synchronize(0);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) fn();
  cuda_synchronize(0);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
  std::printf("RESULT op=%-28s us=%9.2f GB/s=%8.1f peak_fraction=%.3f\n", name.c_str(), s * 1e6, bytes / s / 1e9,
              bytes / s / peak_bytes_per_second);
}

// Milliseconds of fn's first and second call, each synchronised.
void time_first_call(const std::string& name, DType dt, int64_t n, const std::function<void()>& fn) {
  double ms[2];
  for (double& m : ms) {
    cuda_synchronize(0);
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    cuda_synchronize(0);
    m = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  std::printf("RESULT first_call op=%-22s dtype=%-8s batch=%-4lld first_ms=%9.3f second_ms=%8.3f\n", name.c_str(),
              dtype_name(dt), (long long)n, ms[0], ms[1]);
}

// The one-time cost of each new shape, type by type (float32 first: its first call also starts the
// libraries, reported as its own row).
void first_calls(Device d) {
  time_first_call("library start (conv)", DType::F32, 2, [&] {
    (void)conv2d(randn_like_uniform({2, 3, 8, 8}, 1, d), randn_like_uniform({4, 3, 3, 3}, 2, d), Tensor());
  });
  time_first_call("library start (linear)", DType::F32, 2, [&] {
    (void)linear(randn_like_uniform({2, 8}, 3, d), randn_like_uniform({4, 8}, 4, d), Tensor());
  });
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    const Tensor w1 = cast(randn_like_uniform({64, 3, 5, 5}, 5, d), dt), b1 = cast(randn_like_uniform({64}, 6, d), dt);
    const Tensor w2 = cast(randn_like_uniform({32, 64, 5, 5}, 7, d), dt), b2 = cast(randn_like_uniform({32}, 8, d), dt);
    const Tensor fw = cast(randn_like_uniform({64, 800}, 9, d), dt), fb = cast(randn_like_uniform({64}, 10, d), dt);
    for (int64_t n : {128, 8, 16, 72}) {
      const Tensor x = cast(randn_like_uniform({n, 3, 32, 32}, 11, d), dt);
      const Tensor h = cast(randn_like_uniform({n, 64, 14, 14}, 12, d), dt);
      const Tensor a = cast(randn_like_uniform({n, 800}, 13, d), dt);
      time_first_call("conv 3->64 k5 fwd", dt, n, [&] { (void)conv2d(x, w1, b1); });
      time_first_call("conv 64->32 k5 fwd", dt, n, [&] { (void)conv2d(h, w2, b2); });
      time_first_call("linear 800->64 fwd", dt, n, [&] { (void)linear(a, fw, fb); });
      autograd::set_grad_enabled(true);
      Tensor hg = h.clone(), wg = w2.clone();
      hg.requires_grad_(true);
      wg.requires_grad_(true);
      time_first_call("conv 64->32 k5 fwd+bwd", dt, n, [&] {
        hg.set_grad(Tensor());
        wg.set_grad(Tensor());
        sum(conv2d(hg, wg, b2)).backward();
      });
      autograd::set_grad_enabled(false);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int64_t N = 128;
  int iters = 50;
  bool first = false;
  try {
    for (bench::Args args(argc, argv); args.next();) {
      const std::string& a = args.flag();
      if (a == "--batch") N = bench::parse_int(args.value(), a);
      else if (a == "--iters") iters = int(bench::parse_int(args.value(), a));
      else if (a == "--first-calls") first = true;
      else throw Error("unknown flag " + a);
    }
  } catch (const volt::Error& e) {
    std::fprintf(stderr, "bench_ops_cuda: %s\nusage: bench_ops_cuda [--batch 128] [--iters 50] [--first-calls]\n",
                 e.what());
    return 2;
  }
  try {
    if (cuda_device_count() == 0) {
      std::printf("SKIPPED: no CUDA device\n");
      return 0;
    }
    const Device d = Device::cuda(0);
    if (first) {
      NoGradGuard no_grad;
      first_calls(d);
      return 0;
    }
    peak_bytes_per_second = cuda_peak_memory_bandwidth(0);
    VOLT_CHECK(peak_bytes_per_second > 0, "the GPU does not report its memory bandwidth");
    std::printf("# %s: %.0f GB/s theoretical memory bandwidth\n", cuda_device_name(0).c_str(),
                peak_bytes_per_second / 1e9);
    const double f = 4.0;  // bytes per float
    NoGradGuard no_grad;
    const Tensor x = randn_like_uniform({N, 3, 32, 32}, 1, d);
    const Tensor w1 = randn_like_uniform({64, 3, 5, 5}, 2, d), b1 = randn_like_uniform({64}, 3, d);
    const Tensor h1 = randn_like_uniform({N, 64, 28, 28}, 4, d);
    const Tensor g = randn_like_uniform({64}, 5, d), be = randn_like_uniform({64}, 6, d);
    Tensor rm = Tensor::zeros({64}, DType::F32, d), rv = Tensor::ones({64}, DType::F32, d);
    const Tensor flat = randn_like_uniform({N, 800}, 7, d), fw = randn_like_uniform({64, 800}, 8, d);
    const Tensor fb = randn_like_uniform({64}, 9, d);
    const Tensor logits = randn_like_uniform({N, 10}, 10, d);
    std::vector<int64_t> lab(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) lab[size_t(i)] = i % 10;
    const Tensor labels = Tensor::from_labels(lab, d);
    Generator drop(11, kStreamDropout);
    const double act = double(h1.numel()) * f;

    time_op("conv2d fwd 3->64 k5", double(x.numel() + w1.numel() + h1.numel()) * f, iters,
            [&] { (void)conv2d(x, w1, b1); });
    // The first layer in float16, both kernels (the bias is a second pass after cuDNN, fused in Volt's;
    // so is the bias gradient, from the same pass over dy as the weight gradient).
    {
      const Tensor xh = cast(x, DType::F16), wh = cast(w1, DType::F16), bh = cast(b1, DType::F16);
      const double bytes = double(x.numel() + w1.numel() + h1.numel()) * 2;
      // forward + the weight and bias gradients (dy read once more; no input gradient, as in the seed CNN)
      Tensor wg = wh.clone(), bg = bh.clone();
      wg.requires_grad_(true);
      bg.requires_grad_(true);
      const Tensor dy = cast(h1, DType::F16);
      for (ConvOwnKernel mode : {ConvOwnKernel::Never, ConvOwnKernel::Always}) {
        const std::string who = mode == ConvOwnKernel::Never ? " cuDNN" : " Volt";
        cuda_set_conv_own_kernel(mode);
        time_op("conv2d fwd 3->64 k5 fp16" + who, bytes, iters, [&] { (void)conv2d(xh, wh, bh); });
        autograd::set_grad_enabled(true);
        time_op("conv2d fwd+dw+db 3->64 k5 fp16" + who, bytes + double(h1.numel()) * 2, iters, [&] {
          sum(mul(conv2d(xh, wg, bg), dy)).backward();
        });
        autograd::set_grad_enabled(false);
      }
      cuda_set_conv_own_kernel(ConvOwnKernel::Auto);
    }
    time_op("batch_norm train fwd", 2 * act, iters, [&] { (void)batch_norm(h1, g, be, rm, rv, true); });
    time_op("batch_norm eval fwd", 2 * act, iters, [&] { (void)batch_norm(h1, g, be, rm, rv, false); });
    time_op("relu fwd", 2 * act, iters, [&] { (void)relu(h1); });
    time_op("max_pool2d 2x2 fwd", 1.25 * act, iters, [&] { (void)max_pool2d(h1, {2, 2}, {2, 2}); });
    time_op("batch_norm+relu+pool 2x2 train fwd", (2.25 + 0.25 / f) * act, iters,
            [&] { (void)batch_norm_relu_max_pool2d(h1, g, be, rm, rv, true, {2, 2}); });
    time_op("dropout fwd", 2.25 * act, iters, [&] { (void)dropout(h1, 0.2, true, drop); });
    time_op("add same shape", 3 * act, iters, [&] { (void)add(h1, h1); });
    time_op("sum all", act, iters, [&] { (void)sum(h1); });
    // The bias in cuBLASLt's epilogues (forward; the bias gradient in the weight gradient's GEMM), or in
    // separate kernels after cublasGemmEx. fwd+bwd (with the loss's sum and product) counts x, w and y
    // once more for each of dx and dw.
    {
      const double fwd = double(flat.numel() + fw.numel() + N * 64) * f;
      Tensor xg = flat.clone(), wg = fw.clone(), bg = fb.clone();
      for (Tensor* p : {&xg, &wg, &bg}) p->requires_grad_(true);
      const Tensor dy = Tensor::ones({N, 64}, DType::F32, flat.device());
      const bool fused = cuda_linear_fused_bias();
      for (bool on : {false, true}) {
        const std::string who = on ? " cuBLASLt epilogue" : " GemmEx+bias kernels";
        cuda_set_linear_fused_bias(on);
        time_op("linear fwd 800->64" + who, fwd, iters, [&] { (void)linear(flat, fw, fb); });
        autograd::set_grad_enabled(true);
        time_op("linear fwd+bwd 800->64" + who, 3 * fwd, iters, [&] {
          for (Tensor* p : {&xg, &wg, &bg}) p->set_grad(Tensor());  // each gradient taken, none accumulated
          sum(mul(linear(xg, wg, bg), dy)).backward();
        });
        autograd::set_grad_enabled(false);
      }
      cuda_set_linear_fused_bias(fused);
    }
    time_op("cross_entropy fwd", double(logits.numel()) * f, iters, [&] { (void)cross_entropy(logits, labels); });

    // forward + backward of the first block, which dominates the seed CNN's step
    autograd::set_grad_enabled(true);
    Tensor xr = x.detach(), wr = w1.clone(), br = b1.clone(), gr = g.clone(), ber = be.clone();
    wr.requires_grad_(true);
    br.requires_grad_(true);
    gr.requires_grad_(true);
    ber.requires_grad_(true);
    time_op("block1 fwd+bwd (conv,bn,relu,pool)", 8 * act, iters, [&] {
      Tensor y = max_pool2d(relu(batch_norm(conv2d(xr, wr, br), gr, ber, rm, rv, true)), {2, 2}, {2, 2});
      sum(y).backward();
    });
    // As the seed CNN runs it: batch norm, ReLU and pool in one op (see bench/train_gpu.cpp's floor).
    time_op("block1 fwd+bwd (conv, fused bn+relu+pool)", 6.5 * act, iters, [&] {
      Tensor y = batch_norm_relu_max_pool2d(conv2d(xr, wr, br), gr, ber, rm, rv, true, {2, 2});
      sum(y).backward();
    });
    // In float16 as 16-mixed runs it: the two ops (dx stored, then read by the weight gradient) against
    // conv2d_batch_norm_relu_max_pool2d (dx formed inside the weight-gradient kernel).
    {
      const Tensor xh = cast(xr, DType::F16);
      Tensor wh = cast(w1, DType::F16), bh = cast(b1, DType::F16);
      wh.requires_grad_(true);
      bh.requires_grad_(true);
      time_op("block1 fp16 fwd+bwd (conv, fused bn+relu+pool)", 6.5 * act / 2, iters, [&] {
        Tensor y = batch_norm_relu_max_pool2d(conv2d(xh, wh, bh), gr, ber, rm, rv, true, {2, 2});
        sum(y).backward();
      });
      time_op("block1 fp16 fwd+bwd (one op, dx never stored)", 4.5 * act / 2, iters, [&] {
        Tensor y = conv2d_batch_norm_relu_max_pool2d(xh, wh, bh, gr, ber, rm, rv, true, {2, 2});
        sum(y).backward();
      });
    }
    const DeviceAllocatorStats st = cuda_memory_stats(0);
    std::printf("allocator: %zu driver allocations, %zu cache hits, peak %.1f MiB in use\n", st.system_allocs,
                st.cache_hits, double(st.peak_bytes_in_use) / (1 << 20));
    return 0;
  } catch (const volt::Error& e) {
    std::fprintf(stderr, "bench_ops_cuda: %s\n", e.what());
    return 1;
  }
}
