// The CUDA backend against the CPU, the training side: the optimizers and gradient clipping, Module::to
// and the whole seed CNN (loss, gradients, SGD steps, BN statistics), the classification metrics, and
// the caching allocator's steady state (split from test_cuda.cpp, which keeps the op table, the
// convolution paths and the tensor basics). Every case skips (exit 77) where no GPU is visible.
// Labelled `gpu`.
#include <doctest/doctest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/cuda_graph.h"
#include "engine/gpu.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "layers/layers.h"
#include "layers/metrics.h"
#include "layers/models/seed_cnn.h"
#include "layers/optim/grad_clip.h"
#include "layers/optim/grad_scaler.h"
#include "layers/optim/optimizer.h"
#include "tests/gpu_check.h"
#include "tests/test_util.h"

using namespace volt;
namespace vt = volt::test;
using vt::check_near;
using vt::contains;
using vt::error_of;
using vt::kGpu;
using vt::require_gpu;

// ---------------------------------------------------------------- optimizers

namespace {
// n parameters of varied sizes (more than one multi-tensor launch holds), the same on both devices.
std::pair<std::vector<Tensor>, std::vector<Tensor>> twin_params(int n) {
  std::vector<Tensor> c, g;
  for (int i = 0; i < n; ++i) {
    const int64_t size = 1 + (int64_t(i) * 7919) % 3001;
    Tensor p = vt::rand_tensor({size}, 100 + uint64_t(i));
    Tensor q = p.to(kGpu);
    p.requires_grad_(true);
    q.requires_grad_(true);
    c.push_back(p);
    g.push_back(q);
  }
  return {c, g};
}

void set_same_grads(std::vector<Tensor>& c, std::vector<Tensor>& g, uint64_t seed) {
  for (size_t i = 0; i < c.size(); ++i) {
    if (i % 5 == 3) continue;  // some parameters get no gradient this step (skipped, as in PyTorch)
    const Tensor gr = vt::rand_tensor(c[i].shape(), seed + i);
    c[i].set_grad(gr);
    g[i].set_grad(gr.to(kGpu));
  }
}

template <class Opt, class Options>
void check_optimizer_twins(const Options& o, const char* name) {
  INFO(name);
  auto [pc, pg] = twin_params(53);
  Opt oc(pc, o), og(pg, o);
  for (int step = 0; step < 4; ++step) {
    set_same_grads(pc, pg, 1000 * uint64_t(step + 1));
    oc.step();
    og.step();
  }
  for (size_t i = 0; i < pc.size(); ++i) {
    INFO("parameter " << i);
    CHECK(pg[i].device() == kGpu);
    check_near(pg[i], pc[i], 1e-7, 1e-6, "parameter after 4 steps");
  }
  // The state lives on the parameters' device and round-trips through state_dict; the step counts,
  // kept on the device, are those the CPU counted (parameters without a gradient included).
  const OptimizerState s = og.state_dict();
  for (const auto& [n, t] : s.tensors) CHECK(t.device() == kGpu);
  CHECK(s.ints == oc.state_dict().ints);
  CHECK(s.tensors.size() == oc.state_dict().tensors.size());
  Opt loaded(pg, o);
  loaded.load_state_dict(s);
  CHECK(loaded.state_dict().ints == s.ints);
}
}  // namespace

TEST_CASE("gpu optimizers: SGD, Adam and AdamW update like the CPU") {
  require_gpu();
  check_optimizer_twins<SGD>(vt::sgd_options(0.1, 0.9, 0.1, 0.01), "SGD momentum dampening weight decay");
  check_optimizer_twins<SGD>(vt::sgd_options(0.05, 0.9, 0.0, 0.0, true), "SGD nesterov");
  check_optimizer_twins<SGD>(vt::sgd_options(0.05), "SGD plain");
  check_optimizer_twins<Adam>(vt::adam_options(1e-2, 0.9, 0.999, 1e-8, 0.01), "Adam weight decay");
  check_optimizer_twins<Adam>(vt::adam_options(1e-2, 0.8, 0.99, 1e-6, 0.0, true), "Adam amsgrad");
  check_optimizer_twins<AdamW>(vt::adam_options(1e-2, 0.9, 0.999, 1e-8, 0.05), "AdamW");
}

TEST_CASE("gpu gradient clipping: norm (p = 2, 1, inf) and value clipping match the CPU, with the norm left on the device") {
  require_gpu();
  for (double p : {2.0, 1.0, double(INFINITY)}) {
    for (double max_norm : {0.5, 1e9}) {  // clipping, and a norm under the limit (untouched)
      INFO("p " << p << ", max_norm " << max_norm);
      auto [pc, pg] = twin_params(53);
      set_same_grads(pc, pg, 7000);
      const Tensor nc = clip_grad_norm_(pc, max_norm, p), ng = clip_grad_norm_(pg, max_norm, p);
      CHECK(ng.device() == kGpu);
      CHECK(ng.item() == doctest::Approx(nc.item()).epsilon(1e-6));
      for (size_t i = 0; i < pc.size(); ++i)
        if (pc[i].grad().defined()) check_near(pg[i].grad(), pc[i].grad(), 1e-12, 1e-6, "clipped gradient");
    }
  }
  auto [pc, pg] = twin_params(53);
  set_same_grads(pc, pg, 7100);
  clip_grad_value_(pc, 0.3);
  clip_grad_value_(pg, 0.3);
  for (size_t i = 0; i < pc.size(); ++i)
    if (pc[i].grad().defined()) CHECK(pg[i].grad().to_vector() == pc[i].grad().to_vector());
  // Gradients on two devices are refused.
  CHECK(vt::contains(vt::error_of([&] { clip_grad_norm_({pc[0], pg[1]}, 1.0); }), "gradients on several devices"));
}

// ---------------------------------------------------------------- Module::to and the seed CNN

TEST_CASE("gpu Module::to moves parameters, gradients and buffers in place and back") {
  require_gpu();
  manual_seed(3);
  SeedCNN m;
  const StateDict before = vt::snapshot(m);
  const Tensor w = m.parameters()[0];  // a handle taken before the move sees the move
  m.parameters()[1].set_grad(Tensor::ones(m.parameters()[1].shape()));
  m.to(kGpu);
  CHECK(w.device() == kGpu);
  for (const auto& [n, t] : m.state_dict().items()) {
    INFO(n);
    CHECK(t.device() == kGpu);
  }
  CHECK(m.parameters()[1].grad().device() == kGpu);
  m.to(Device::cpu());
  CHECK(w.device().is_cpu());
  CHECK(vt::same_state(m, before));
}

TEST_CASE("gpu autograd: an output gradient of another dtype is converted, not read as the output's type") {
  require_gpu();
  Tensor x = Tensor::from_vector({4}, {1, -2, 3, 4}).to(DType::F16).to(kGpu);
  x.requires_grad_();
  relu(x).backward(Tensor::ones({4}).to(kGpu));  // float32 ones were read as pairs of halves
  CHECK(x.grad().dtype() == DType::F16);
  CHECK(x.grad().to(Device::cpu()).to(DType::F32).to_vector() == std::vector<float>{1, 0, 1, 1});
  Tensor a = Tensor::from_vector({2}, {1, 2}).to(kGpu);
  a.requires_grad_();
  a.backward(Tensor::from_vector({2}, {0.5f, 2.f}).to(DType::F16).to(kGpu));
  CHECK(a.grad().dtype() == DType::F32);
  CHECK(a.grad().to(Device::cpu()).to_vector() == std::vector<float>{0.5f, 2.f});
}

TEST_CASE("gpu autograd: a module moved between forward and backward, or a scale updated, is an error there") {
  require_gpu();
  // The backward of a forward on the CPU would read the moved weights' new (GPU) memory, or (an
  // input without a gradient: the weights are not read) give them CPU gradients.
  for (bool input_grad : {true, false}) {
    CAPTURE(input_grad);
    manual_seed(3);
    Linear lin(4, 2);
    Tensor x = Tensor::ones({3, 4});
    if (input_grad) x.requires_grad_();
    Tensor out = lin(x);
    lin.to(kGpu);
    CHECK(contains(error_of([&] { sum(out).backward(); }),
                   input_grad ? "backward through 'linear': a tensor it saved (2 of 2) was given other memory after "
                                "the op used it"
                              : "backward: a gradient computed on cpu for a tensor on cuda:0 (moved"));
    CHECK_FALSE(lin.weight.grad().defined());
  }
  // A loss scaled before update() must not run its backward with the updated scale.
  Tensor p = Tensor::ones({3}).to(kGpu);
  p.requires_grad_();
  SGD opt({p}, vt::sgd_options(0.1));
  GradScaler scaler;
  Tensor first = scaler.scale(sum(mul(p, p))), second = scaler.scale(sum(p));
  first.backward();
  scaler.step(opt);
  scaler.update();
  CHECK(contains(error_of([&] { second.backward(); }), "was changed in place after the op used it"));
}

namespace {
struct Step {
  float loss;
  std::vector<Tensor> grads;
};

Step train_step(SeedCNN& m, Optimizer& opt, const Tensor& x, const Tensor& y) {
  default_generator(kStreamDropout).set_offset(0);  // same dropout masks on both devices
  opt.zero_grad();
  Tensor loss = cross_entropy(m(x), y, Reduction::Mean, 0.1);
  loss.backward();
  Step s{loss.item(), {}};
  for (const Tensor& p : m.parameters()) s.grads.push_back(p.grad().clone());
  opt.step();
  return s;
}
}  // namespace

// SGD, not Adam, takes the steps here: the conv biases feed BatchNorm, so their exact gradient is 0
// and what both devices compute is rounding noise; Adam would turn that noise into +-lr steps that
// differ between devices (harmlessly: BatchNorm cancels them). Adam itself is compared above.
TEST_CASE("gpu seed CNN: loss, every gradient, SGD steps and BN statistics match the CPU") {
  require_gpu();
  manual_seed(7);
  SeedCNN cpu_model;
  manual_seed(7);
  SeedCNN gpu_model;
  REQUIRE(vt::same_state(gpu_model, vt::snapshot(cpu_model)));
  gpu_model.to(kGpu);
  SGD oc(cpu_model.parameters(), vt::sgd_options(0.05, 0.9));
  SGD og(gpu_model.parameters(), vt::sgd_options(0.05, 0.9));
  const Tensor x = vt::rand_tensor({16, 3, 32, 32}, 21);
  std::vector<int64_t> labels;
  Generator g(22);
  for (int i = 0; i < 16; ++i) labels.push_back(int64_t(g.next_below(10)));
  const Tensor y = Tensor::from_labels(labels);
  const Tensor xg = x.to(kGpu), yg = y.to(kGpu);
  const auto names = vt::names_of(cpu_model.named_parameters());
  for (int step = 0; step < 3; ++step) {
    INFO("step " << step);
    const Step sc = train_step(cpu_model, oc, x, y);
    const Step sg = train_step(gpu_model, og, xg, yg);
    CHECK(std::fabs(sc.loss - sg.loss) <= 1e-5 + 1e-4 * std::fabs(sc.loss));
    for (size_t i = 0; i < sc.grads.size(); ++i) {
      INFO(names[i]);
      CHECK(sg.grads[i].device() == kGpu);
      check_near(sg.grads[i], sc.grads[i], 1e-5, 1e-3, "gradient");
    }
  }
  const StateDict gpu_state = gpu_model.state_dict();  // find() points into it: it must outlive the loop
  for (const auto& [n, t] : cpu_model.state_dict().items()) {
    INFO(n);
    const Tensor* tg = gpu_state.find(n);
    REQUIRE(tg != nullptr);
    CHECK(tg->device() == kGpu);
    if (t.dtype() == DType::I64) CHECK(tg->to_int_vector() == t.to_int_vector());
    else check_near(*tg, t, 1e-5, 1e-3, "parameter or buffer after 3 SGD steps");
  }
  // eval mode (running statistics, no dropout) agrees too
  cpu_model.eval();
  gpu_model.eval();
  NoGradGuard ng;
  check_near(gpu_model(xg), cpu_model(x), 1e-4, 1e-3, "eval logits");
  CHECK(accuracy(gpu_model(xg), yg) == doctest::Approx(accuracy(cpu_model(x), y)));
}

// ---------------------------------------------------------------- classification metrics

TEST_CASE("gpu ClassificationMetrics: counts on cuda:0 equal the CPU's, bad targets are reported and valid rows kept") {
  require_gpu();
  const int64_t N = 300, C = 10;
  const Tensor logits = vt::rand_tensor({N, C}, 41, -3.f, 3.f);
  std::vector<int64_t> labels(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) labels[size_t(i)] = (i * 7) % C;
  const Tensor target = Tensor::from_labels(labels);
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    INFO(dtype_name(dt));
    const Tensor l = logits.to(dt);  // the same rounded values on both sides
    ClassificationMetrics on_cpu(C, {1, 3, 5}), on_gpu(C, {1, 3, 5});
    on_cpu.update(l, target);
    on_gpu.update(l.to(kGpu), target.to(kGpu));
    CHECK(on_gpu.counts() == on_cpu.counts());
  }
  ClassificationMetrics m(C, {1});
  m.update(logits.to(kGpu), target.to(kGpu));
  std::vector<int64_t> bad = labels;
  bad[4] = C;
  bad[9] = -1;
  m.update(logits.to(kGpu), Tensor::from_labels(bad, kGpu));
  CHECK(vt::contains(vt::error_of([&] { (void)m.compute(); }), "2 target(s) on cuda:0 were not class indices"));
  const ClassificationResult r = m.compute();  // reported once; the other 2N - 2 rows all counted
  CHECK(r.count == 2 * N - 2);
  int64_t rows = 0;
  for (int64_t c : r.class_count) rows += c;
  CHECK(rows == 2 * N - 2);
}

// ---------------------------------------------------------------- mixed precision

TEST_CASE("gpu Autocast: a model call casts every layer's weights at once, bit for bit as layer by layer") {
  require_gpu();
  for (DType dt : {DType::F16, DType::BF16}) {
    INFO(dtype_name(dt));
    manual_seed(5);
    SeedCNN m;
    m.to(kGpu);
    m.eval();  // no dropout: both passes must run the same graph
    const Tensor x = vt::rand_tensor({6, 3, 32, 32}, 41).to(kGpu);
    const Tensor y = Tensor::from_labels({0, 1, 2, 3, 4, 5}, kGpu);
    // (a) m(x): the outermost module call casts the tree's Conv2d and Linear parameters in one
    //     cast_many. (b) m(x) inside a module call whose own tree holds no parameters: no outermost
    //     cast happens, so every layer casts its own weight and bias as it runs.
    struct Wrapper : Module {
      Module* inner = nullptr;
      Tensor forward(const Tensor& in) override { return (*inner)(in); }
      std::string type_name() const override { return "Wrapper"; }
    } wrapper;
    wrapper.inner = &m;
    auto run = [&](bool whole) {
      for (Tensor& p : m.parameters()) p.set_grad(Tensor());
      Tensor logits;
      {
        Autocast ac(dt);
        logits = whole ? m(x) : wrapper(x);
      }
      cross_entropy(logits, y).backward();
      std::vector<std::vector<float>> out{logits.to(DType::F32).to_vector()};
      for (const Tensor& p : m.parameters()) {
        REQUIRE(p.grad().defined());
        CHECK(p.grad().dtype() == DType::F32);
        out.push_back(p.grad().to_vector());
      }
      return out;
    };
    const auto whole = run(true), layered = run(false);
    REQUIRE(whole.size() == layered.size());
    for (size_t i = 0; i < whole.size(); ++i) {
      INFO("tensor " << i << " (0: the logits, then the parameters' gradients)");
      CHECK(whole[i] == layered[i]);
    }
    // What each layer gets: in (a) the casts made together (one buffer), in (b) casts of its own.
    struct Seen : ForwardObserver {
      std::vector<Tensor> weights;
      void before(const Module& mod) override {
        if (auto* c = dynamic_cast<const Conv2d*>(&mod)) weights.push_back(autocast_param(c->weight));
        if (auto* l = dynamic_cast<const Linear*>(&mod)) weights.push_back(autocast_param(l->weight));
      }
      void after(const Module&) override {}
    };
    for (bool whole_call : {true, false}) {
      Seen seen;
      {
        struct Observe {
          explicit Observe(ForwardObserver* o) { set_forward_observer(o); }
          ~Observe() { set_forward_observer(nullptr); }
        } observe(&seen);
        NoGradGuard no_grad;
        Autocast ac(dt);
        (void)(whole_call ? m(x) : wrapper(x));
      }
      REQUIRE(seen.weights.size() == 5);  // two Conv2d, three Linear
      for (const Tensor& w : seen.weights) CHECK(w.dtype() == dt);
      CHECK(seen.weights[0].same_storage(seen.weights[4]) == whole_call);
    }
  }
}

// backward() converts the 16-bit gradients of casts into float32 leaves together, one launch for the
// pass, unless a gradient-ready listener (DDP's) reads each gradient as it becomes final: both ways give
// the same bits, for the seed CNN under Autocast and for a weight cast twice (its second gradient is
// added to the first, which must be converted by then); captured, the batched pass has one launch in
// place of one per parameter.
TEST_CASE("gpu backward: the gradients of casts into float32 leaves are converted in one launch") {
  require_gpu();
  struct Quiet : autograd::GradReadyListener {
    void grad_ready(const Tensor&) override {}
  } quiet;
  auto listening = [&](bool on) { autograd::set_grad_ready_listener(on ? &quiet : nullptr); };
  struct Restore {
    ~Restore() { autograd::set_grad_ready_listener(nullptr); }
  } restore;
  for (DType dt : {DType::F16, DType::BF16}) {
    INFO(std::string(dtype_name(dt)));
    manual_seed(6);
    SeedCNN m;
    m.to(kGpu);
    m.eval();  // no dropout: every pass runs the same graph
    const Tensor x = vt::rand_tensor({6, 3, 32, 32}, 51).to(kGpu);
    const Tensor y = Tensor::from_labels({5, 4, 3, 2, 1, 0}, kGpu);
    auto step = [&] {
      for (Tensor& p : m.parameters()) p.set_grad(Tensor());
      Tensor logits;
      {
        Autocast ac(dt);
        logits = m(x);
      }
      cross_entropy(logits, y).backward();
    };
    auto grads = [&] {
      std::vector<std::vector<float>> out;
      for (const Tensor& p : m.parameters()) {
        REQUIRE(p.grad().defined());
        CHECK(p.grad().dtype() == DType::F32);
        out.push_back(p.grad().to_vector());
      }
      return out;
    };
    listening(false);
    step();
    const auto batched = grads();
    listening(true);
    step();
    CHECK(grads() == batched);
    size_t nodes[2] = {0, 0};
    for (bool on : {false, true}) {
      listening(on);
      CudaGraph graph(kGpu);
      graph.capture(step);
      nodes[on] = graph.nodes();
      graph.replay();
      CHECK(grads() == batched);
    }
    listening(false);
    // Autocast casts the weights and biases of the two Conv2d and three Linear layers (batch norm's stay
    // float32): ten conversions back, in one launch.
    INFO("graph nodes: " << nodes[0] << " batched, " << nodes[1] << " one conversion per cast parameter");
    CHECK(nodes[0] + 9 == nodes[1]);

    // One float32 weight cast twice: the second gradient is added to the first.
    Tensor w = vt::rand_tensor({4, 5}, 52).to(kGpu);
    w.requires_grad_(true);
    const Tensor a = cast(vt::rand_tensor({3, 5}, 53), dt).to(kGpu), b = cast(vt::rand_tensor({3, 5}, 54), dt).to(kGpu);
    std::vector<float> twice[2];
    for (bool on : {false, true}) {
      listening(on);
      w.set_grad(Tensor());
      sum(add(linear(a, cast(w, dt), Tensor()), linear(b, cast(w, dt), Tensor()))).backward();
      twice[on] = w.grad().to_vector();
    }
    listening(false);
    CHECK(twice[0] == twice[1]);
    // against the CPU: the column sums of a and b for every row of w, rounded once to 16 bits each
    const std::vector<float> av = cast(a, DType::F32).to_vector(), bv = cast(b, DType::F32).to_vector();
    for (int64_t r = 0; r < 4; ++r)
      for (int64_t c = 0; c < 5; ++c) {
        float sa = 0.f, sb = 0.f;
        for (int64_t i = 0; i < 3; ++i) {
          sa += av[size_t(i * 5 + c)];
          sb += bv[size_t(i * 5 + c)];
        }
        CHECK(twice[0][size_t(r * 5 + c)] == doctest::Approx(double(sa) + double(sb)).epsilon(2e-2));
      }
  }
}

// ---------------------------------------------------------------- the caching allocator

TEST_CASE("gpu allocator: steady-state training steps allocate nothing new from the driver") {
  require_gpu();
  manual_seed(1);
  SeedCNN m;
  m.to(kGpu);
  Adam opt(m.parameters(), AdamOptions{});
  const Tensor x = vt::rand_tensor({32, 3, 32, 32}, 31).to(kGpu);
  std::vector<int64_t> labels(32);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = int64_t(i % 10);
  const Tensor y = Tensor::from_labels(labels, kGpu);
  auto step = [&] {
    opt.zero_grad();
    Tensor loss = cross_entropy(m(x), y);
    loss.backward();
    opt.step();
  };
  for (int i = 0; i < 3; ++i) step();  // warm-up: the cache fills, optimizer state appears
  cuda_synchronize(0);
  const DeviceAllocatorStats warm = cuda_memory_stats(0);
  for (int i = 0; i < 10; ++i) step();
  cuda_synchronize(0);
  const DeviceAllocatorStats after = cuda_memory_stats(0);
  INFO("system allocs " << warm.system_allocs << " -> " << after.system_allocs << ", cache hits " << warm.cache_hits
                        << " -> " << after.cache_hits);
  CHECK(warm.system_allocs > 0);
  CHECK(after.system_allocs == warm.system_allocs);
  CHECK(after.cache_hits > warm.cache_hits);
  CHECK(after.bytes_in_use == warm.bytes_in_use);  // nothing leaks from step to step
  cuda_empty_cache();
  CHECK(cuda_memory_stats(0).bytes_cached == 0);
  CHECK(cuda_memory_stats(0).system_frees > 0);
  // after empty_cache the model still trains (blocks come back from the driver)
  step();
  cuda_synchronize(0);
  CHECK(cuda_memory_stats(0).system_allocs > after.system_allocs);
}

TEST_CASE("gpu pinned host memory: allocations are cached and reused") {
  require_gpu();
  Allocator& a = pinned_host_allocator();
  const size_t before = pinned_memory_stats().system_allocs;
  void* p = a.allocate(1 << 20);
  REQUIRE(p != nullptr);
  static_cast<char*>(p)[0] = 1;  // host-writable
  a.deallocate(p, 1 << 20);
  void* q = a.allocate(1 << 20);
  CHECK(q == p);
  a.deallocate(q, 1 << 20);
  CHECK(pinned_memory_stats().system_allocs == before + 1);
}
