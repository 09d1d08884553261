// The CUDA backend against the CPU: every op-table entry (forward and the gradients of a fixed random
// projection) run on both devices from the same inputs, the convolution paths (cuDNN, Volt's own
// kernels, the fused first block, TF32), larger shapes, tensors and copies, and dropout masks (the
// training side is test_cuda_training.cpp).
// Every test case skips (exit 77, reported by CTest as skipped) when no GPU is visible; none passes
// without running on a GPU. Labelled `gpu`.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/cuda_graph.h"
#include "engine/gpu.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "layers/metrics.h"
#include "layers/models/seed_cnn.h"
#include "layers/optim/grad_clip.h"
#include "layers/optim/optimizer.h"
#include "tests/ops/op_table.h"
#include "tests/gpu_check.h"
#include "tests/ops/reference.h"
#include "tests/test_util.h"

using namespace volt;
namespace vt = volt::test;
using vt::OpCase;

namespace {

using vt::check_near;
using vt::kGpu;
using vt::require_gpu;

// ---------------------------------------------------------------- the op table on the GPU

// Forward on both devices from the same inputs; then backward of sum(y * R) for a fixed random R.
void check_case_on_gpu(const OpCase& c) {
  INFO("case: " << c.op << " " << c.name);
  std::vector<Tensor> in_cpu = vt::make_inputs(c, /*with_grad=*/true, Device::cpu());
  std::vector<Tensor> in_gpu = vt::make_inputs(c, /*with_grad=*/true, kGpu);
  for (const Tensor& t : in_gpu) REQUIRE(t.device() == kGpu);
  const Tensor y_cpu = c.run(in_cpu);
  const Tensor y_gpu = c.run(in_gpu);
  REQUIRE(y_gpu.defined());
  CHECK(y_gpu.device() == kGpu);  // computed there, not on the host behind our back
  CHECK(y_gpu.dtype() == DType::F32);
  REQUIRE(y_gpu.shape() == y_cpu.shape());
  // Against the double-precision reference with the entry's own tolerances, and against the CPU.
  if (c.reference) {
    const vt::Reference ref = c.reference(in_cpu);
    std::string where;
    const double v = vt::max_rel_violation(y_gpu.to_vector(), ref.values, c.atol, c.rtol, &where);
    INFO("GPU vs double reference, worst element: " << where << " (violation " << v << ")");
    CHECK(v <= 1.0);
  }
  check_near(y_gpu, y_cpu, c.atol, c.rtol, "forward, GPU vs CPU");
  // The same inputs give the same output on the GPU (no leftover state, deterministic kernels).
  CHECK(c.run(in_gpu).to_vector() == y_gpu.to_vector());

  if (!y_cpu.requires_grad()) return;  // e.g. dropout in eval mode with p = 0 returns the input itself
  const Tensor proj = vt::rand_tensor(y_cpu.shape(), 4242);
  sum(mul(y_cpu, proj)).backward();
  sum(mul(y_gpu, proj.to(kGpu))).backward();
  for (size_t k = 0; k < in_cpu.size(); ++k) {
    if (!c.inputs[k].differentiable) continue;
    INFO("gradient of input " << k);
    REQUIRE(in_cpu[k].grad().defined());
    REQUIRE(in_gpu[k].grad().defined());
    CHECK(in_gpu[k].grad().device() == kGpu);
    check_near(in_gpu[k].grad(), in_cpu[k].grad(), 1e-4, 1e-4, "gradient, GPU vs CPU");
  }
}

int run_table_on_gpu(const std::string& op) {
  require_gpu();
  int n = 0;
  for (const OpCase& c : vt::op_table())
    if (c.op == op) {
      check_case_on_gpu(c);
      ++n;
    }
  CHECK(n > 0);
  return n;
}

// The entries in float16 and bfloat16 on the GPU against the CPU's float32 (op_table.h).
int run_table_on_gpu_16(const std::string& op) {
  require_gpu();
  int n = 0;
  for (const OpCase& c : vt::op_table())
    if (c.op == op) {
      vt::check_low_precision(c, DType::F16, kGpu);
      vt::check_low_precision(c, DType::BF16, kGpu);
      ++n;
    }
  CHECK(n > 0);
  return n;
}

}  // namespace

#define VOLT_GPU_TABLE(OP)                                                                          \
  TEST_CASE("gpu " OP " table: forward and gradients match the CPU") { run_table_on_gpu(OP); }      \
  TEST_CASE("gpu " OP " table in float16 and bfloat16: NMSE against the CPU's float32") {           \
    run_table_on_gpu_16(OP);                                                                        \
  }

VOLT_GPU_TABLE("conv2d")
VOLT_GPU_TABLE("batch_norm")
VOLT_GPU_TABLE("batch_norm_relu")
VOLT_GPU_TABLE("batch_norm_relu_max_pool2d")
VOLT_GPU_TABLE("conv2d_batch_norm_relu_max_pool2d")
VOLT_GPU_TABLE("cast")
VOLT_GPU_TABLE("relu")
VOLT_GPU_TABLE("max_pool2d")
VOLT_GPU_TABLE("linear")
VOLT_GPU_TABLE("dropout")
VOLT_GPU_TABLE("relu_dropout")
VOLT_GPU_TABLE("add")
VOLT_GPU_TABLE("sub")
VOLT_GPU_TABLE("mul")
VOLT_GPU_TABLE("sum")
VOLT_GPU_TABLE("mean")
VOLT_GPU_TABLE("log_softmax")
VOLT_GPU_TABLE("cross_entropy")

// The 16-bit conv2d entries with cuDNN only, then with Volt's own kernels wherever they apply
// (kernels/cuda/conv_igemm.cu: forward, and weight + bias gradients in one pass; the default rule uses
// them too), and the seed CNN's first layer at batch 256 both ways against the CPU's float32 on the same
// rounded values (the gradients sum 200,704 products: an absolute tolerance for their cancellation).
TEST_CASE("gpu conv2d in 16 bits: cuDNN and Volt's own tensor-core kernels both match the CPU") {
  require_gpu();
  struct Restore {
    ~Restore() { cuda_set_conv_own_kernel(ConvOwnKernel::Auto); }
  } restore;
  const Tensor x = vt::rand_tensor({256, 3, 32, 32}, 21), w = vt::rand_tensor({64, 3, 5, 5}, 22, -0.2f, 0.2f);
  const Tensor b = vt::rand_tensor({64}, 23);
  for (ConvOwnKernel mode : {ConvOwnKernel::Never, ConvOwnKernel::Always}) {
    INFO((mode == ConvOwnKernel::Never ? "cuDNN only" : "Volt's own forward kernel"));
    cuda_set_conv_own_kernel(mode);
    run_table_on_gpu_16("conv2d");
    for (DType dt : {DType::F16, DType::BF16}) {
      INFO(dtype_name(dt));
      const Tensor xr = cast(x, dt), wr = cast(w, dt), br = cast(b, dt);
      Tensor wf = cast(wr, DType::F32), bf = cast(br, DType::F32), wg = wr.to(kGpu), bg = br.to(kGpu);
      for (Tensor* p : {&wf, &bf, &wg, &bg}) p->requires_grad_(true);
      const Tensor want = conv2d(cast(xr, DType::F32), wf, bf);
      const Tensor got = conv2d(xr.to(kGpu), wg, bg, {1, 1}, {0, 0});
      REQUIRE(got.dtype() == dt);
      const bool half = dt == DType::F16;
      const double atol = half ? 2e-3 : 2e-2, rtol = half ? 2e-3 : 1.6e-2;
      check_near(cast(got, DType::F32), want, atol, rtol, "first layer forward");
      // dw and db (in one pass over dy in Volt's kernel) for a 16-bit-rounded dy, against the CPU's.
      const Tensor proj = cast(vt::rand_tensor(want.shape(), 24), dt);
      sum(mul(want, cast(proj, DType::F32))).backward();
      sum(mul(got, proj.to(kGpu))).backward();
      check_near(cast(wg.grad(), DType::F32), wf.grad(), 50 * atol, rtol, "first layer dw");
      check_near(cast(bg.grad(), DType::F32), bf.grad(), 50 * atol, rtol, "first layer db");
    }
  }
}

// The linear layer's bias added, and its gradient summed, in cuBLASLt's GEMM epilogues (the default) and
// in separate kernels after cuBLAS's GEMMs: the op table in every precision both ways; the seed CNN's
// first linear layer at batch 128, with a frozen weight too (the bias gradient alone: no product to
// fuse it into); and, captured in a CUDA graph, the epilogues launch fewer nodes (else they never ran).
TEST_CASE("gpu linear: the bias in cuBLASLt's epilogues and in separate kernels both match the CPU") {
  require_gpu();
  struct Restore {
    bool on;
    ~Restore() { cuda_set_linear_fused_bias(on); }
  } restore{cuda_linear_fused_bias()};
  const Tensor x = vt::rand_tensor({128, 800}, 31), w = vt::rand_tensor({64, 800}, 32, -0.05f, 0.05f);
  const Tensor b = vt::rand_tensor({64}, 33), proj = vt::rand_tensor({128, 64}, 34);
  auto leaf = [](const Tensor& t, Device d, bool grad) {
    Tensor p = t.to(d);
    if (p.device() == t.device()) p = p.clone();
    p.requires_grad_(grad);
    return p;
  };
  size_t nodes[2] = {0, 0};
  for (bool fused : {false, true}) {
    INFO((fused ? "cuBLASLt epilogues" : "separate bias kernels"));
    cuda_set_linear_fused_bias(fused);
    REQUIRE(cuda_linear_fused_bias() == fused);
    run_table_on_gpu("linear");
    run_table_on_gpu_16("linear");
    for (bool weight_grad : {true, false}) {
      INFO((weight_grad ? "every gradient" : "frozen weight"));
      const Device cpu = Device::cpu();
      Tensor xc = leaf(x, cpu, true), wc = leaf(w, cpu, weight_grad), bc = leaf(b, cpu, true);
      Tensor xg = leaf(x, kGpu, true), wg = leaf(w, kGpu, weight_grad), bg = leaf(b, kGpu, true);
      const Tensor y = linear(xc, wc, bc), yg = linear(xg, wg, bg);
      check_near(yg, y, 1e-4, 1e-4, "forward");
      sum(mul(y, proj)).backward();
      sum(mul(yg, proj.to(kGpu))).backward();
      check_near(xg.grad(), xc.grad(), 1e-4, 1e-4, "dx");
      check_near(bg.grad(), bc.grad(), 1e-4, 1e-4, "db");
      if (weight_grad) check_near(wg.grad(), wc.grad(), 1e-4, 1e-4, "dw");
      else CHECK_FALSE(wg.grad().defined());
    }
    Tensor xg = leaf(x, kGpu, true), wg = leaf(w, kGpu, true), bg = leaf(b, kGpu, true);
    const Tensor pg = proj.to(kGpu);
    auto step = [&] { sum(mul(linear(xg, wg, bg), pg)).backward(); };
    step();  // plans and workspaces exist before the capture
    CudaGraph graph(kGpu);
    graph.capture(step);
    nodes[fused] = graph.nodes();
  }
  INFO("graph nodes: " << nodes[0] << " with separate bias kernels, " << nodes[1] << " with cuBLASLt's epilogues");
  CHECK(nodes[1] < nodes[0]);
}

// The seed CNN's first block as one op (x needs no gradient: backward forms the convolution's output
// gradient inside the weight-gradient kernel; in training the convolution sums batch norm's statistics)
// against the two ops (Volt's own kernels on both sides). In eval the same bits, forward and every
// gradient; in training the statistics are summed without batch norm's shift, so the two agree to
// rounding (a window's maximum may flip on a near tie: the gradients' tolerance).
TEST_CASE("gpu conv2d_batch_norm_relu_max_pool2d: the fused op against the two ops") {
  require_gpu();
  struct Restore {
    ~Restore() { cuda_set_conv_own_kernel(ConvOwnKernel::Auto); }
  } restore;
  cuda_set_conv_own_kernel(ConvOwnKernel::Always);
  for (DType dt : {DType::F16, DType::BF16})
    for (bool training : {true, false}) {
      INFO(dtype_name(dt) << (training ? " training" : " eval"));
      const Tensor x = cast(vt::rand_tensor({64, 3, 32, 32}, 41), dt).to(kGpu);
      const Tensor w = cast(vt::rand_tensor({64, 3, 5, 5}, 42, -0.2f, 0.2f), dt);
      const Tensor b = cast(vt::rand_tensor({64}, 43), dt);
      const Tensor g = vt::rand_tensor({64}, 44, 0.5f, 1.5f), be = vt::rand_tensor({64}, 45);
      auto param = [](const Tensor& t) {
        Tensor p = t.to(kGpu);
        p.requires_grad_(true);
        return p;
      };
      Tensor w1 = param(w), b1 = param(b), g1 = param(g), be1 = param(be);
      Tensor w2 = param(w), b2 = param(b), g2 = param(g), be2 = param(be);
      Tensor rm1 = vt::rand_tensor({64}, 46, -0.1f, 0.1f).to(kGpu);
      Tensor rv1 = vt::rand_tensor({64}, 47, 0.5f, 1.5f).to(kGpu);
      Tensor rm2 = rm1.clone(), rv2 = rv1.clone();
      const Tensor y1 = conv2d_batch_norm_relu_max_pool2d(x, w1, b1, g1, be1, rm1, rv1, training, {2, 2});
      const Tensor y2 = batch_norm_relu_max_pool2d(conv2d(x, w2, b2), g2, be2, rm2, rv2, training, {2, 2});
      CHECK(y1.shape() == Shape{64, 64, 14, 14});
      const Tensor proj = cast(vt::rand_tensor(y1.shape(), 48), dt).to(kGpu);
      sum(mul(y1, proj)).backward();
      sum(mul(y2, proj)).backward();
      if (!training) {
        CHECK(y1.to_vector() == y2.to_vector());
        CHECK(w1.grad().to_vector() == w2.grad().to_vector());
        CHECK(b1.grad().to_vector() == b2.grad().to_vector());
        CHECK(g1.grad().to_vector() == g2.grad().to_vector());
        CHECK(be1.grad().to_vector() == be2.grad().to_vector());
        continue;
      }
      const bool half = dt == DType::F16;
      const double atol = half ? 2e-3 : 2e-2, rtol = half ? 2e-3 : 1.6e-2;
      check_near(cast(y1, DType::F32), cast(y2, DType::F32), atol, rtol, "forward");
      check_near(rm1, rm2, 1e-6, 1e-5, "running_mean");
      check_near(rv1, rv2, 1e-6, 1e-5, "running_var");
      check_near(cast(w1.grad(), DType::F32), cast(w2.grad(), DType::F32), 50 * atol, 10 * rtol, "dw");
      check_near(cast(b1.grad(), DType::F32), cast(b2.grad(), DType::F32), 50 * atol, 10 * rtol, "db");
      check_near(g1.grad(), g2.grad(), 50 * atol, 10 * rtol, "dgamma");
      check_near(be1.grad(), be2.grad(), 50 * atol, 10 * rtol, "dbeta");
    }
}

// set_float32_matmul_precision("high") lets float32 convolutions and matrix products use TF32 (products of
// 10-bit mantissas: within TF32's tolerance of the CPU); "highest" gives plain FP32 again (its own plans).
TEST_CASE("gpu float32 matmul precision: 'high' is within TF32's tolerance, 'highest' within FP32's") {
  require_gpu();
  struct Restore {
    ~Restore() { set_float32_matmul_precision("highest"); }
  } restore;
  const Tensor x = vt::rand_tensor({64, 3, 32, 32}, 31), w = vt::rand_tensor({64, 3, 5, 5}, 32, -0.2f, 0.2f);
  const Tensor a = vt::rand_tensor({256, 800}, 33), lw = vt::rand_tensor({64, 800}, 34, -0.05f, 0.05f);
  const Tensor want_conv = conv2d(x, w, Tensor()), want_linear = linear(a, lw, Tensor());
  for (const char* p : {"high", "highest", "high"}) {
    INFO("precision " << p);
    set_float32_matmul_precision(p);
    const bool tf32 = std::string(p) == "high";
    const double tol = tf32 ? 5e-3 : 1e-4;
    check_near(conv2d(x.to(kGpu), w.to(kGpu), Tensor()), want_conv, tol, tol, "conv2d");
    check_near(linear(a.to(kGpu), lw.to(kGpu), Tensor()), want_linear, tol, tol, "linear");
  }
}

// Backward of sum(y * R) on the CPU and of sum(yg * R) on the GPU, for one fixed random R.
static void backward_projected(const Tensor& y, const Tensor& yg, uint64_t seed) {
  const Tensor proj = vt::rand_tensor(y.shape(), seed);
  sum(mul(y, proj)).backward();
  sum(mul(yg, proj.to(kGpu))).backward();
}

// Shapes larger than the table's: several blocks per grid, long rows, the cuDNN/cuBLAS paths at sizes
// where they pick other algorithms.
TEST_CASE("gpu larger shapes: conv2d, linear, batch_norm, pools and reductions match the CPU") {
  require_gpu();
  auto both = [](const Tensor& cpu_t) {
    Tensor a = cpu_t.clone(), b = cpu_t.to(kGpu);
    a.requires_grad_(true);
    b.requires_grad_(true);
    return std::pair<Tensor, Tensor>{a, b};
  };
  auto [x, xg] = both(vt::rand_tensor({16, 3, 32, 32}, 1));
  auto [w, wg] = both(vt::rand_tensor({64, 3, 5, 5}, 2, -0.2f, 0.2f));
  auto [b, bg] = both(vt::rand_tensor({64}, 3));
  auto [gamma, gammag] = both(vt::rand_tensor({64}, 4, 0.5f, 1.5f));
  auto [beta, betag] = both(vt::rand_tensor({64}, 5));
  Tensor rm = Tensor::zeros({64}), rv = Tensor::ones({64});
  Tensor rmg = rm.to(kGpu), rvg = rv.to(kGpu);
  auto net = [](const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& g, const Tensor& be, Tensor rm,
                Tensor rv) {
    Tensor h = conv2d(x, w, b, {1, 1}, {2, 2});
    h = relu(batch_norm(h, g, be, rm, rv, true));
    h = max_pool2d(h, {3, 3}, {2, 2}, {1, 1});
    return log_softmax(h.flatten(1), 1);
  };
  const Tensor y = net(x, w, b, gamma, beta, rm, rv);
  const Tensor yg = net(xg, wg, bg, gammag, betag, rmg, rvg);
  check_near(yg, y, 1e-4, 1e-4, "forward");
  check_near(rmg, rm, 1e-6, 1e-5, "running_mean");
  check_near(rvg, rv, 1e-6, 1e-5, "running_var");
  backward_projected(y, yg, 6);
  check_near(xg.grad(), x.grad(), 1e-4, 1e-3, "dx");
  check_near(wg.grad(), w.grad(), 1e-3, 1e-3, "dw");
  check_near(bg.grad(), b.grad(), 1e-3, 1e-3, "db");
  check_near(gammag.grad(), gamma.grad(), 1e-3, 1e-3, "dgamma");
  check_near(betag.grad(), beta.grad(), 1e-3, 1e-3, "dbeta");

  // The seed CNN's first block at its size: conv, then batch norm + ReLU + 2x2 max pool in one pass
  // (several blocks per channel in the statistics), in training and in eval.
  for (bool training : {true, false}) {
    INFO((training ? "fused block in training" : "fused block in eval"));
    auto [x2, x2g] = both(vt::rand_tensor({16, 3, 32, 32}, 11));
    auto [w2, w2g] = both(vt::rand_tensor({64, 3, 5, 5}, 12, -0.2f, 0.2f));
    auto [g2, g2g] = both(vt::rand_tensor({64}, 13, -1.5f, 1.5f));  // negative gammas flip the window order
    auto [b2, b2g] = both(vt::rand_tensor({64}, 14));
    Tensor rm2 = vt::rand_tensor({64}, 15, -0.1f, 0.1f), rv2 = vt::rand_tensor({64}, 16, 0.5f, 1.5f);
    Tensor rm2g = rm2.to(kGpu), rv2g = rv2.to(kGpu);
    auto block = [training](const Tensor& x, const Tensor& w, const Tensor& g, const Tensor& be, Tensor rm, Tensor rv) {
      return batch_norm_relu_max_pool2d(conv2d(x, w, Tensor()), g, be, rm, rv, training, {2, 2});
    };
    const Tensor y2 = block(x2, w2, g2, b2, rm2, rv2), y2g = block(x2g, w2g, g2g, b2g, rm2g, rv2g);
    CHECK(y2g.shape() == Shape{16, 64, 14, 14});
    check_near(y2g, y2, 1e-4, 1e-4, "fused forward");
    check_near(rm2g, rm2, 1e-6, 1e-5, "fused running_mean");
    backward_projected(y2, y2g, 17);
    check_near(x2g.grad(), x2.grad(), 1e-4, 1e-3, "fused dx");
    check_near(w2g.grad(), w2.grad(), 1e-3, 1e-3, "fused dw");
    check_near(g2g.grad(), g2.grad(), 1e-3, 1e-3, "fused dgamma");
    check_near(b2g.grad(), b2.grad(), 1e-3, 1e-3, "fused dbeta");
  }

  // linear with sizes that are not multiples of anything, and a long-row sum (the block-per-row path)
  auto [a, ag] = both(vt::rand_tensor({37, 1029}, 7));
  auto [lw, lwg] = both(vt::rand_tensor({129, 1029}, 8, -0.05f, 0.05f));
  auto [lb, lbg] = both(vt::rand_tensor({129}, 9));
  const Tensor ly = linear(a, lw, lb), lyg = linear(ag, lwg, lbg);
  check_near(lyg, ly, 1e-4, 1e-4, "linear forward");
  sum(mul(ly, ly)).backward();
  sum(mul(lyg, lyg)).backward();
  check_near(ag.grad(), a.grad(), 1e-4, 1e-4, "linear dx");
  check_near(lwg.grad(), lw.grad(), 1e-3, 1e-4, "linear dw");
  check_near(lbg.grad(), lb.grad(), 1e-3, 1e-4, "linear db");
  const Tensor big = vt::rand_tensor({3, 100003}, 10);
  check_near(sum(big.to(kGpu), 1), sum(big, 1), 1e-3, 1e-5, "sum over long rows");
  check_near(mean(big.to(kGpu)), mean(big), 1e-6, 1e-4, "mean of everything");
  CHECK(argmax(big.to(kGpu), 1).to_int_vector() == argmax(big, 1).to_int_vector());
}

// The ops outside the op table (not differentiable, or in place) that a training step runs on the GPU:
// add_ (gradient accumulation), add_int_ (BatchNorm's num_batches_tracked), batch_accuracy and accuracy
// (every logged accuracy, with ties: the first maximum wins, as on the CPU), cast_many and cast_into
// (mixed precision's weights and gradients; several pairs of one type pair in one launch, one of another
// pair by itself).
TEST_CASE("gpu add_, add_int_, accuracy, cast_many and cast_into match the CPU") {
  require_gpu();
  const Tensor a = vt::rand_tensor({7, 13}, 21), b = vt::rand_tensor({7, 13}, 22);
  Tensor ah = a.clone(), ad = a.to(kGpu);
  add_(ah, b, -0.375f);
  add_(ad, b.to(kGpu), -0.375f);
  check_near(ad, ah, 0, 1e-7, "add_ with alpha");

  Tensor counter = Tensor::from_labels({41}, kGpu).reshape({});
  add_int_(counter);
  add_int_(counter, 1000000007);
  CHECK(counter.to_int_vector() == std::vector<int64_t>{41 + 1 + 1000000007});

  // Logits with ties in some rows (rounded to quarters) and labels on the first maximum, another, or none.
  std::vector<float> lv = vt::rand_tensor({61, 10}, 23).to_vector();
  for (float& v : lv) v = std::round(v * 4) / 4;
  const Tensor logits = Tensor::from_vector({61, 10}, lv);
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < 61; ++i) labels.push_back((i * 7) % 10);
  const std::vector<int64_t> first_max = argmax(logits, 1).to_int_vector();
  for (int64_t i = 0; i < 61; i += 3) labels[size_t(i)] = first_max[size_t(i)];
  const Tensor yh = Tensor::from_labels(labels), yd = Tensor::from_labels(labels, kGpu);
  CHECK(argmax(logits.to(kGpu), 1).to_int_vector() == first_max);
  const Tensor acc_d = batch_accuracy(logits.to(kGpu), yd);
  CHECK(acc_d.device() == kGpu);
  CHECK(acc_d.to_vector() == batch_accuracy(logits, yh).to_vector());
  CHECK(accuracy(logits.to(kGpu), yd) == accuracy(logits, yh));
  CHECK(accuracy(logits, yh) > 0.3);  // the rows labelled with their first maximum at least

  for (DType dt : {DType::F16, DType::BF16}) {
    INFO(std::string(dtype_name(dt)));
    std::vector<Tensor> src_h = {vt::rand_tensor({5, 3}, 24, -70000, 70000), vt::rand_tensor({129}, 25),
                                 Tensor(), vt::rand_tensor({2, 2, 3}, 26, -1e-6f, 1e-6f)};
    std::vector<Tensor> src_d;
    for (const Tensor& t : src_h) src_d.push_back(t.defined() ? t.to(kGpu) : Tensor());
    const std::vector<Tensor> lo_h = cast_many(src_h, dt), lo_d = cast_many(src_d, dt);
    REQUIRE(lo_d.size() == lo_h.size());
    CHECK_FALSE(lo_d[2].defined());
    for (size_t i : {0, 1, 3}) {
      CHECK(lo_d[i].dtype() == dt);
      CHECK(lo_d[i].device() == kGpu);
      // Round to nearest even on both (overflow to inf in float16, subnormals kept): the same bits.
      CHECK(lo_d[i].to(Device::cpu()).to(DType::F32).to_vector() == lo_h[i].to(DType::F32).to_vector());
    }
    // Back into float32 tensors: the three 16-bit pairs together, and one float32 -> bfloat16/float16
    // pair (another type pair, cast by itself) in the same call.
    const Tensor other_h = vt::rand_tensor({33}, 27);
    const DType other_dt = dt == DType::F16 ? DType::BF16 : DType::F16;
    std::vector<Tensor> dst_h, dst_d;
    for (size_t i : {0, 1, 3}) {
      dst_h.push_back(Tensor::zeros(src_h[i].shape()));
      dst_d.push_back(Tensor::zeros(src_h[i].shape(), DType::F32, kGpu));
    }
    dst_h.push_back(Tensor::zeros({33}, other_dt));
    dst_d.push_back(Tensor::zeros({33}, other_dt, kGpu));
    cast_into({lo_h[0], lo_h[1], lo_h[3], other_h}, dst_h);
    cast_into({lo_d[0], lo_d[1], lo_d[3], other_h.to(kGpu)}, dst_d);
    for (size_t i = 0; i < dst_h.size(); ++i) {
      CAPTURE(i);
      CHECK(dst_d[i].dtype() == dst_h[i].dtype());
      CHECK(dst_d[i].to(Device::cpu()).to(DType::F32).to_vector() == dst_h[i].to(DType::F32).to_vector());
    }
  }
}

// ---------------------------------------------------------------- tensors, copies, errors

TEST_CASE("gpu tensors: copies to and from the device, clone, copy_, fill_, zero_, item") {
  require_gpu();
  const Tensor h = vt::rand_tensor({5, 7, 3}, 11);
  const Tensor d = h.to(kGpu);
  CHECK(d.device() == kGpu);
  CHECK(d.to_vector() == h.to_vector());
  CHECK(d.to(Device::cpu()).device().is_cpu());
  const Tensor c = d.clone();
  CHECK(!c.same_storage(d));
  CHECK(c.to_vector() == h.to_vector());
  Tensor z = Tensor::zeros({5, 7, 3}, DType::F32, kGpu);
  CHECK(z.to_vector() == std::vector<float>(105, 0.f));
  z.copy_(d);  // device to device
  CHECK(z.to_vector() == h.to_vector());
  {
    // Overlapping views of one buffer (undefined for cudaMemcpy): rows 0..3 into rows 1..4.
    Tensor w = d.clone();
    w.narrow(1, 4).copy_(w.narrow(0, 4));
    std::vector<float> want = h.to_vector();
    const std::vector<float> src(want.begin(), want.begin() + 4 * 21);
    std::copy(src.begin(), src.end(), want.begin() + 21);
    CHECK(w.to_vector() == want);
  }
  z.fill_(2.5f);
  CHECK(z.to_vector() == std::vector<float>(105, 2.5f));
  z.copy_(h);  // host to device
  CHECK(z.to_vector() == h.to_vector());
  Tensor back = Tensor::empty({5, 7, 3});
  back.copy_(d);  // device to host
  CHECK(back.to_vector() == h.to_vector());
  z.zero_();
  CHECK(z.to_vector() == std::vector<float>(105, 0.f));
  CHECK(Tensor::full({3}, -1.5f, DType::F32, kGpu).to_vector() == std::vector<float>(3, -1.5f));
  CHECK(Tensor::scalar(4.25f, kGpu).item() == 4.25f);
  CHECK(Tensor::from_vector({2}, {1.f, 2.f}, kGpu).to_vector() == std::vector<float>{1.f, 2.f});
  const Tensor labels = Tensor::from_labels({3, 1, 4, 1, 5}, kGpu);
  CHECK(labels.to_int_vector() == std::vector<int64_t>{3, 1, 4, 1, 5});
  // dtype conversion of a device tensor (through the host) keeps the device
  const Tensor as_i32 = d.to(DType::I32);
  CHECK(as_i32.device() == kGpu);
  CHECK(as_i32.to(DType::F32).to_vector() == h.to(DType::I32).to(DType::F32).to_vector());
  // a view of device memory (narrow) and its gradient
  Tensor leaf = h.to(kGpu);
  leaf.requires_grad_(true);
  sum(leaf.narrow(1, 3)).backward();
  std::vector<float> want(105, 0.f);
  for (int i = 21; i < 84; ++i) want[size_t(i)] = 1.f;
  CHECK(leaf.grad().to_vector() == want);
  CHECK(leaf.grad().device() == kGpu);
  // host element access needs a host tensor, with a message that says so
  CHECK(vt::contains(vt::error_of([&] { (void)d.at({0, 0, 0}); }), "needs a cpu tensor"));
}

TEST_CASE("gpu errors: an op on tensors from two devices names both") {
  require_gpu();
  const Tensor x = vt::rand_tensor({1, 3, 8, 8}, 1).to(kGpu);
  const Tensor w = vt::rand_tensor({4, 3, 3, 3}, 2);
  const std::string msg = vt::error_of([&] { conv2d(x, w, Tensor()); });
  CHECK(vt::contains(msg, "conv2d: input is on cuda:0 but weight is on cpu"));
  CHECK(vt::contains(vt::error_of([&] { add(x, x.to(Device::cpu())); }), "is on cpu"));
  CHECK(vt::contains(vt::error_of([&] { (void)Tensor::zeros({2}, DType::F32, Device::cuda(cuda_device_count())); }),
                     "is not available"));
  // out-of-range labels are refused on the GPU too: found by the kernel without a synchronisation,
  // reported by check_deferred_errors (which the Trainer calls) and at once by accuracy()
  const Tensor logits = vt::rand_tensor({2, 3}, 3).to(kGpu);
  const Tensor bad_labels = Tensor::from_labels({0, 3}, kGpu);
  const std::vector<float> rows = cross_entropy(logits, bad_labels, Reduction::None).to_vector();
  CHECK(std::isnan(rows[1]));
  CHECK_FALSE(std::isnan(rows[0]));
  const std::string deferred = vt::error_of([&] { check_deferred_errors(kGpu); });
  CHECK(vt::contains(deferred, "target[1] = 3 is not a class index"));
  CHECK_NOTHROW(check_deferred_errors(kGpu));  // reported once
  CHECK(vt::contains(vt::error_of([&] { (void)accuracy(logits, bad_labels); }), "target[1] = 3 is not a class index"));
  CHECK_NOTHROW(check_deferred_errors(kGpu));
}

// ---------------------------------------------------------------- dropout masks

TEST_CASE("gpu dropout: masks are the CPU's, element for element, for the same seed, stream and offset") {
  require_gpu();
  const int64_t n = 1000003;  // not a multiple of four: a partial last Philox block
  const Tensor x = vt::rand_tensor({n}, 12, 0.5f, 1.5f);  // never zero, so y == 0 means dropped
  const Tensor xg = x.to(kGpu);
  for (double p : {0.1, 0.5, 0.9}) {
    for (uint64_t offset : {uint64_t(0), uint64_t(5), uint64_t(1) << 33}) {
      INFO("p " << p << ", offset " << offset);
      Generator gc(20240607, kStreamDropout), gg(20240607, kStreamDropout);
      gc.set_offset(offset);
      gg.set_offset(offset);
      const std::vector<float> yc = dropout(x, p, true, gc).to_vector();
      const std::vector<float> yg = dropout(xg, p, true, gg).to_vector();
      CHECK(gc.offset() == gg.offset());
      int64_t mask_diff = 0, value_diff = 0;
      for (size_t i = 0; i < yc.size(); ++i) {
        mask_diff += (yc[i] == 0.f) != (yg[i] == 0.f);
        value_diff += yc[i] != yg[i];
      }
      CHECK(mask_diff == 0);
      CHECK(value_diff == 0);  // x / (1 - p) rounds the same way on both
    }
  }
}
