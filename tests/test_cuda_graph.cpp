// CUDA graphs (engine/cuda_graph.h) on the GPU: a training step captured once and replayed gives the
// eager run's parameters bit for bit in every precision (dropout offsets, Adam's step counts and the
// loss scale arrive through device memory per replay), a step with an Inf gradient is skipped on the
// device exactly as eagerly, replays allocate nothing, and a step that needs the host cannot be
// captured. Label `gpu`: every case skips (exit 77) without a GPU.
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
  if (graphed) g.capture([&] { r.step(); });
  for (int i = 0; i < steps; ++i) {
    r.factor.fill_(i == inf_at ? std::numeric_limits<float>::infinity() : 1.f);
    if (!graphed) {
      r.step();
      continue;
    }
    g.replay();
    if (dt == DType::F16) r.scaler.after_replay(*r.opt);
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
