// CUDA graphs (engine/cuda_graph.h) on the GPU: a training step captured once and replayed gives the
// eager run's parameters bit for bit in every precision (dropout offsets and the learning rate arrive
// through device memory per replay; Adam's step counts and the loss scale live on the device), a step
// with an Inf gradient is skipped on the device exactly as eagerly, replays allocate nothing, and a
// step that needs the host cannot be captured. Label `gpu`: every case skips (exit 77) without a GPU.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>

#include "engine/autocast.h"
#include "engine/cuda_graph.h"
#include "engine/gpu.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "layers/models/seed_cnn.h"
#include "layers/optim/grad_scaler.h"
#include "layers/optim/optimizer.h"
#include "tests/test_util.h"

using namespace volt;
namespace vt = volt::test;

namespace {

const Device kGpu = Device::cuda(0);

// A loss scale of 1024, not 65536: an early float16 overflow would skip a warm-up step and shift the
// step counts the tests expect (only the forced Inf below may skip).
GradScalerOptions small_scale() {
  GradScalerOptions o;
  o.init_scale = 1024;
  return o;
}

struct Run {
  SeedCNN model;
  std::unique_ptr<Adam> opt;
  GradScaler scaler{small_scale()};
  Tensor x, y, factor, loss;
  DType dt;
  explicit Run(DType compute) : dt(compute) {
    model.to(kGpu);
    model.train();
    opt = std::make_unique<Adam>(model.parameters(), vt::adam_options(3e-3));
    x = vt::rand_tensor({16, 3, 32, 32}, 51).to(kGpu);
    std::vector<int64_t> labels(16);
    for (size_t i = 0; i < labels.size(); ++i) labels[i] = int64_t((i * 7) % 10);
    y = Tensor::from_labels(labels, kGpu);
    factor = Tensor::ones({}, DType::F32, kGpu);  // set to Inf between steps to force a skipped step
  }
  void step() {
    opt->zero_grad();
    {
      Autocast ac(dt);
      loss = mul(cross_entropy(model(x), y), factor);
    }
    if (dt == DType::F16) {
      scaler.scale(loss).backward();
      scaler.step(*opt);
      scaler.update();
    } else {
      loss.backward();
      opt->step();
    }
  }
};

// 3 eager warm-up steps, then `steps` more: eager, or one capture and replays. Step `inf_at` (if
// >= 0, counted among the later steps) has an Inf loss.
StateDict train(DType dt, bool graphed, int steps, int inf_at, int64_t* adam_steps, int64_t* skipped) {
  manual_seed(7);
  Run r(dt);
  for (int i = 0; i < 3; ++i) r.step();
  CudaGraph g(kGpu);
  if (graphed) {
    g.capture([&] { r.step(); });
    CHECK(g.nodes() > 10);  // a whole step: forward, backward, the optimizer
  }
  for (int i = 0; i < steps; ++i) {
    r.factor.fill_(i == inf_at ? std::numeric_limits<float>::infinity() : 1.f);
    if (!graphed) {
      r.step();
      continue;
    }
    g.replay();  // the loss scale, the Inf check and Adam's step counts all stay on the device
  }
  cuda_synchronize(0);
  *adam_steps = r.opt->step_count(0);
  *skipped = r.scaler.skipped_steps();
  return vt::snapshot(r.model);
}

}  // namespace

TEST_CASE("gpu CUDA graph: replayed training steps equal eager ones bit for bit in every precision") {
  vt::require_gpu();
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    INFO(dtype_name(dt));
    int64_t steps_e = 0, steps_g = 0, skip_e = 0, skip_g = 0;
    const StateDict eager = train(dt, false, 6, -1, &steps_e, &skip_e);
    const uint64_t offset_eager = default_generator(kStreamDropout).offset();
    const StateDict graph = train(dt, true, 6, -1, &steps_g, &skip_g);
    CHECK(default_generator(kStreamDropout).offset() == offset_eager);  // fresh masks every replay
    CHECK(steps_g == steps_e);
    CHECK(steps_e == 9);
    SeedCNN probe;
    probe.load_state_dict(graph);
    CHECK(vt::same_state(probe, eager));
  }
}

TEST_CASE("gpu CUDA graph: an Inf gradient skips the replayed step on the device, as eagerly") {
  vt::require_gpu();
  int64_t steps_e = 0, steps_g = 0, skip_e = 0, skip_g = 0;
  const StateDict eager = train(DType::F16, false, 5, 2, &steps_e, &skip_e);
  const StateDict graph = train(DType::F16, true, 5, 2, &steps_g, &skip_g);
  CHECK(skip_e == 1);
  CHECK(skip_g == 1);
  CHECK(steps_e == 7);  // 8 steps, one skipped: Adam counted 7
  CHECK(steps_g == 7);
  SeedCNN probe;
  probe.load_state_dict(graph);
  CHECK(vt::same_state(probe, eager));
}

TEST_CASE("gpu GradScaler: the skip, the scale update and the counts happen on the device, as on the CPU") {
  vt::require_gpu();
  GradScalerOptions go;
  go.init_scale = 1024;
  go.growth_interval = 3;
  auto run = [&](Device d, std::vector<bool>* taken) {
    Tensor p = Tensor::from_vector({3}, {1.f, -2.f, 3.f}).to(d);
    p.requires_grad_(true);
    Adam opt({p}, vt::adam_options(0.1));
    GradScaler s(go);
    for (float k : {1.f, std::numeric_limits<float>::infinity(), 0.5f, 0.25f, 0.125f, 2.f}) {
      opt.zero_grad();
      s.scale(mul(sum(mul(p, p)), k)).backward();
      s.step(opt);  // on the GPU: issued, skipped on the device when Inf
      s.update();
      taken->push_back(s.last_step_taken());
    }
    CHECK(s.get_scale() == 1024);  // 1024, halved by the Inf step, grown again after 3 clean steps
    CHECK(s.skipped_steps() == 1);
    CHECK(s.steps() == 6);
    CHECK(s.growth_tracker() == 1);
    CHECK(opt.step_count(0) == 5);
    return std::make_pair(p.to(Device::cpu()).to_vector(), s.state_dict());
  };
  std::vector<bool> taken_cpu, taken_gpu;
  const auto cpu = run(Device::cpu(), &taken_cpu);
  const auto gpu = run(kGpu, &taken_gpu);
  CHECK(taken_gpu == taken_cpu);
  CHECK(taken_gpu == std::vector<bool>{true, false, true, true, true, true});
  CHECK(gpu.first == cpu.first);  // Adam's first step after the skipped one is its step 2, on both
  CHECK(gpu.second.reals == cpu.second.reals);
  CHECK(gpu.second.ints == cpu.second.ints);
  // A state loaded on the GPU continues there from the loaded scale and counts.
  GradScaler t;
  t.load_state_dict(cpu.second);
  Tensor q = Tensor::ones({2}, DType::F32, kGpu);
  q.requires_grad_(true);
  SGD sgd({q}, SGDOptions{});
  t.scale(sum(q)).backward();
  t.step(sgd);
  t.update();
  CHECK(t.steps() == 7);
  CHECK(t.growth_tracker() == 2);
}

TEST_CASE("gpu CUDA graph: replays allocate nothing, and destroying the graph hands its pool back") {
  vt::require_gpu();
  manual_seed(9);
  Run r(DType::F32);
  for (int i = 0; i < 3; ++i) r.step();
  DeviceAllocatorStats after_capture;
  {
    CudaGraph g(kGpu);
    g.capture([&] { r.step(); });
    cuda_synchronize(0);
    after_capture = cuda_memory_stats(0);
    for (int i = 0; i < 20; ++i) g.replay();
    cuda_synchronize(0);
    const DeviceAllocatorStats s = cuda_memory_stats(0);
    CHECK(s.system_allocs == after_capture.system_allocs);
    CHECK(s.bytes_in_use == after_capture.bytes_in_use);
    cuda_caching_allocator(0).empty_cache();
    CHECK(cuda_memory_stats(0).bytes_cached > 0);  // a live graph's pool is not given to the driver
  }
  // The pool's free blocks went back to the stream's cache: emptying it now leaves nothing cached.
  cuda_caching_allocator(0).empty_cache();
  CHECK(cuda_memory_stats(0).bytes_cached == 0);
  r.step();  // eager again after the graph is gone
  cuda_synchronize(0);
  CHECK(std::isfinite(r.loss.item()));
}

TEST_CASE("gpu CUDA graph: a step that reads a value on the host cannot be captured and says why") {
  vt::require_gpu();
  manual_seed(9);
  Run r(DType::F32);
  r.step();
  CudaGraph g(kGpu);
  const std::string msg = vt::error_of([&] {
    g.capture([&] {
      r.step();
      (void)r.loss.item();  // a host read inside the step
    });
  });
  CHECK(vt::contains(msg, "capture failed"));
  CHECK_FALSE(g.captured());
  r.step();  // the device and the stream work normally afterwards
  cuda_synchronize(0);
  CHECK(std::isfinite(r.loss.item()));
}

TEST_CASE("gpu CUDA graph: a replay is an in-place change of what the step writes, as for autograd") {
  vt::require_gpu();
  manual_seed(9);
  Run r(DType::F32);
  for (int i = 0; i < 3; ++i) r.step();
  CudaGraph g(kGpu);
  g.capture([&] { r.step(); });
  Tensor w = r.model.parameters()[0];
  Tensor x = w.detach().clone();  // not written by the step: its version stays
  const Tensor saved = mul(w, w);  // saves w for its backward
  const uint64_t vw = w.version(), vx = x.version();
  g.replay();
  cuda_synchronize(0);
  CHECK(w.version() > vw);
  CHECK(x.version() == vx);
  const std::string msg = vt::error_of([&] { sum(saved).backward(); });
  CHECK(vt::contains(msg, "changed in place"));
}
