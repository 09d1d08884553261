// The Trainer on the GPU (label gpu; skipped where no GPU is visible): the seed CNN trained on
// synthetic data with the same seed on cuda:0 and on the CPU follows the same loss trajectory for
// its first steps (fp32, dropout on: the GPU's Philox masks are the CPU's), and the GPU run's
// checkpoint, test(ckpt="best") and gradient clipping work with device tensors.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "dist/checkpoint.h"
#include "dist/communicator.h"
#include "dist/trainer.h"
#include "engine/cuda_graph.h"
#include "engine/device.h"
#include "engine/random.h"
#include "tests/test_util.h"
#include "tests/trainer_fixtures.h"

using namespace volt;
using namespace volt::test;

namespace {


// Records every training step's loss.
class Recording : public ClassifierModule {
 public:
  Recording() : ClassifierModule(small_cnn(0.3), adam(2e-3)) {}
  Tensor training_step(const Batch& b, int64_t i) override {
    Tensor loss = ClassifierModule::training_step(b, i);
    losses.push_back(double(loss.item()));
    devices.push_back(b.images.device());
    return loss;
  }
  std::vector<double> losses;
  std::vector<Device> devices;
};

std::vector<double> train(const char* accelerator, Recording& m, const std::string& root, double clip = 0) {
  SynthDM dm(384, 32, 32);
  Quiet q;
  auto o = q.base(root);
  o.accelerator = accelerator;
  o.max_epochs = 1;
  o.seed = 17;
  o.gradient_clip_val = clip;
  o.cuda_graphs = false;  // Recording reads each loss on the host (graph replays are the test below)
  Trainer t(o);
  t.fit(m, dm);
  const auto r = t.test(m, dm, "best");
  CHECK(r.at(0).count("test_acc") == 1);
  return m.losses;
}

}  // namespace

TEST_CASE("gpu Trainer: the first 10 steps' losses match the CPU's, with dropout, and batches run on cuda:0") {
  require_gpu();
  TempDir dir("volt_trainer_gpu_");
  manual_seed(17);
  Recording cpu;
  manual_seed(17);
  Recording gpu;
  const auto a = train("cpu", cpu, dir / "cpu");
  const auto b = train("gpu", gpu, dir / "gpu");
  REQUIRE(a.size() >= 10);
  REQUIRE(b.size() == a.size());
  CHECK(gpu.devices.front() == Device::cuda(0));
  CHECK(cpu.devices.front() == Device::cpu());
  for (size_t i = 0; i < 10; ++i) {
    INFO("step " << i << ": cpu " << a[i] << ", gpu " << b[i]);
    CHECK(std::fabs(a[i] - b[i]) <= 1e-4 + 1e-3 * std::fabs(a[i]));
  }
  CHECK(b.back() < b.front());
}

TEST_CASE("gpu Trainer: gradient clipping by norm on device gradients matches the CPU run") {
  require_gpu();
  TempDir dir("volt_trainer_gpu_");
  manual_seed(17);
  Recording cpu;
  manual_seed(17);
  Recording gpu;
  const auto a = train("cpu", cpu, dir / "cpu", 0.05);
  const auto b = train("gpu", gpu, dir / "gpu", 0.05);
  REQUIRE(b.size() == a.size());
  for (size_t i = 0; i < 5; ++i) {
    INFO("step " << i << ": cpu " << a[i] << ", gpu " << b[i]);
    CHECK(std::fabs(a[i] - b[i]) <= 1e-4 + 1e-3 * std::fabs(a[i]));
  }
}

// A 2-epoch fit of m on cuda:0 (seed 23) with or without CUDA graphs, with gradient clipping when
// clip > 0: the final weights, the last train_loss and what the Trainer printed.
namespace {

struct GpuFit {
  StateDict state;
  double loss = 0;
  std::string log;
};
GpuFit fit_on_gpu(ClassifierModule& m, const std::string& precision, bool graphs, const std::string& root,
                  double clip = 0, const std::string& clip_algorithm = "norm") {
  // 5 training batches an epoch: two eager warm-up steps, the capture, replays in both epochs with a
  // validation pass between them (the emulated backend of CI runs each step in about a second).
  SynthDM dm(192, 32, 32);
  Quiet q;
  auto o = q.base(root);
  o.accelerator = "gpu";
  o.max_epochs = 2;
  o.seed = 23;
  o.precision = precision;
  o.cuda_graphs = graphs;
  o.gradient_clip_val = clip;
  o.gradient_clip_algorithm = clip_algorithm;
  Trainer t(o);
  t.fit(m, dm);
  return {snapshot(m), t.callback_metrics().at("train_loss"), q.os.str()};
}

// The same fit from seed 23 eagerly (fits[0]) and with CUDA graphs (fits[1]); make() builds the module.
template <class Make>
std::vector<GpuFit> eager_and_graphed(Make make, const TempDir& dir, const std::string& precision, double clip = 0,
                                      const std::string& clip_algorithm = "norm") {
  std::vector<GpuFit> fits;
  for (bool graphs : {false, true}) {
    manual_seed(23);
    auto m = make();
    const std::string name = precision + (clip > 0 ? "_clip_" + clip_algorithm : "") + (graphs ? "_graph" : "_eager");
    fits.push_back(fit_on_gpu(*m, precision, graphs, dir / name, clip, clip_algorithm));
  }
  return fits;
}

// Whether the two fits ended with the same weights, bit for bit.
template <class Make>
bool same_weights(Make make, const std::vector<GpuFit>& fits) {
  auto probe = make();
  probe->load_state_dict(fits[1].state);
  return same_state(*probe, fits[0].state);
}

}  // namespace

TEST_CASE("gpu Trainer: a fit as CUDA-graph replays ends with the eager fit's weights and metrics") {
  require_gpu();
  TempDir dir("volt_trainer_gpu_");
  for (const char* precision : {"32", "16-mixed"}) {
    INFO(precision);
    auto make = [] { return std::make_unique<ClassifierModule>(small_cnn(0.3), adam(2e-3)); };
    const std::vector<GpuFit> fits = eager_and_graphed(make, dir, precision);
    INFO(fits[0].log);
    INFO(fits[1].log);
    CHECK_FALSE(contains(fits[0].log, "the training step is captured"));
    CHECK(contains(fits[1].log, "the training step is captured"));
    CHECK(same_weights(make, fits));
    CHECK(fits[1].loss == fits[0].loss);
    // the loss scaler's counters as the host reads them after the last (replayed) step
    const auto amp_line = [](const std::string& log) {
      const size_t at = log.find("Mixed precision");
      return at == std::string::npos ? std::string() : log.substr(at, log.find('\n', at) - at);
    };
    CHECK(amp_line(fits[1].log) == amp_line(fits[0].log));
    if (std::string(precision) == "16-mixed") CHECK(contains(amp_line(fits[0].log), "0 of 10 optimizer steps"));  // 2 epochs of 5
  }
}

TEST_CASE("gpu Trainer: gradient clipping (norm and value) runs inside the captured step, as eagerly") {
  require_gpu();
  TempDir dir("volt_trainer_gpu_");
  for (const char* precision : {"32", "16-mixed"}) {
    for (const char* algorithm : {"norm", "value"}) {
      INFO(precision << ", clip by " << algorithm);
      auto make = [] { return std::make_unique<ClassifierModule>(small_cnn(0.3), adam(2e-3)); };
      // Limits that clip most steps: the norm of these gradients is about 1, single values about 0.1.
      const std::vector<GpuFit> fits = eager_and_graphed(make, dir, precision, algorithm == std::string("norm") ? 0.2 : 0.01,
                                                         algorithm);
      INFO(fits[1].log);
      CHECK(contains(fits[1].log, "the training step is captured"));
      CHECK(same_weights(make, fits));
      CHECK(fits[1].loss == fits[0].loss);
    }
  }
}

// Adds a term in a parameter of its own to the loss while a CUDA graph is being captured: Adam has
// no state for it yet, so the capture fails in the optimizer step, after backward and (16-mixed)
// after the scaler's unscale. Eager steps never touch it.
namespace {
class FailsInCapture : public ClassifierModule {
 public:
  FailsInCapture() : ClassifierModule(small_cnn(0.3), adam(2e-3)) {
    late_ = register_parameter("late", Tensor::zeros({1}));
  }
  Tensor training_step(const Batch& b, int64_t i) override {
    const Tensor loss = ClassifierModule::training_step(b, i);
    return cuda_graph_capturing() ? add(loss, sum(mul(late_, late_))) : loss;
  }

 private:
  Tensor late_;
};
}  // namespace

TEST_CASE("gpu Trainer: a capture that fails after backward leaves no gradient or scaler state behind") {
  require_gpu();
  TempDir dir("volt_trainer_gpu_");
  for (const char* precision : {"32", "16-mixed"}) {
    INFO(precision);
    auto make = [] { return std::make_unique<FailsInCapture>(); };
    const std::vector<GpuFit> fits = eager_and_graphed(make, dir, precision);
    INFO(fits[1].log);
    CHECK(contains(fits[1].log, "CUDA graph capture failed"));
    CHECK_FALSE(contains(fits[1].log, "the training step is captured"));
    // The eager steps after the failed capture are those of the fit that never tried one.
    CHECK(same_weights(make, fits));
    CHECK(fits[1].loss == fits[0].loss);
  }
}

// SGD at momentum 0 until the second epoch, which starts with momentum 0.9: a step captured in the
// first epoch has no momentum buffers, so the graph is given up for eager steps (which make them).
namespace {
class MomentumLater : public ClassifierModule {
 public:
  MomentumLater() : ClassifierModule(small_cnn(0.3), sgd_options()) {}
  OptimizerConfig configure_optimizers() override {
    OptimizerConfig c = ClassifierModule::configure_optimizers();
    optimizer_ = c.optimizer;
    return c;
  }
  void on_train_epoch_start() override {
    if (epochs_started_++ == 1) optimizer_->set_momentum(0.9);
  }

 private:
  static ClassifierOptions sgd_options() {
    ClassifierOptions c;
    c.optimizer = "sgd";
    c.lr = 0.05;
    return c;
  }
  std::shared_ptr<Optimizer> optimizer_;
  int epochs_started_ = 0;
};
}  // namespace

TEST_CASE("gpu Trainer: SGD's momentum raised from 0 after the capture turns the graph off, as eager steps") {
  require_gpu();
  TempDir dir("volt_trainer_gpu_");
  auto make = [] { return std::make_unique<MomentumLater>(); };
  const std::vector<GpuFit> fits = eager_and_graphed(make, dir, "32");
  INFO(fits[1].log);
  CHECK(contains(fits[1].log, "the training step is captured"));
  CHECK(contains(fits[1].log, "CUDA graphs: off (SGD: momentum is 0.9 but the CUDA graph of the step was captured "
                              "at momentum 0"));
  CHECK(same_weights(make, fits));
  CHECK(fits[1].loss == fits[0].loss);
}

// 16-mixed on the GPU: the Inf step is skipped on the device (no host read per step); the per-step
// scheduler, which must not advance on it, is the one place the host reads the flag.
TEST_CASE("gpu Trainer 16-mixed: an Inf loss is skipped on the device, the per-step scheduler waits, the run says") {
  require_gpu();
  for (bool graphs : {false, true}) {
    INFO((graphs ? "CUDA graphs" : "eager"));
    TempDir dir("volt_trainer_gpu_amp_");
    manual_seed(5);
    SynthDM dm(256, 32, 32);
    InfOnce m(1);  // batch 1: an eager warm-up step when graphs are on
    Quiet q;
    auto o = q.base(dir.path);
    o.accelerator = "gpu";
    o.max_epochs = 1;
    o.precision = "16-mixed";
    o.num_sanity_val_steps = 0;
    o.cuda_graphs = graphs;
    Trainer t(o);
    t.fit(m, dm);
    INFO(q.os.str());
    const int64_t steps = t.global_step();
    CHECK(steps >= 4);
    CHECK(m.sched->last_epoch() == steps - 1);  // every step but the skipped one
    CHECK(contains(q.os.str(),
                   "Mixed precision (16-mixed): 1 of " + std::to_string(steps) + " optimizer steps skipped"));
    CHECK(contains(q.os.str(), "loss scale now 32768"));
    if (graphs) CHECK(contains(q.os.str(), "the training step is captured"));
  }
}

TEST_CASE("gpu Trainer: a run resumed after 2 of 4 epochs on cuda:0 ends bit-identical (CUDA graphs, 16-mixed)") {
  require_gpu();
  // What a replayed step updates only on the device (Adam's moments and step counts, the loss scale
  // and its counters, the dropout offsets) must reach the checkpoint and come back from it.
  TempDir dir("volt_trainer_gpu_resume_");
  const ResumeRuns r = run_resume_pair(dir.path, "16-mixed", /*inf_batch=*/1, "gpu");
  INFO(r.resumed_log);
  CHECK(contains(r.resumed_log, "the training step is captured"));
  const Checkpoint c = load_checkpoint(dir.path + "/lightning_logs/version_1/checkpoints/last.ckpt");
  REQUIRE(c.loss_scaler.has_value());
  CHECK(c.loss_scaler->ints.at("steps") == 10);  // 2 epochs of 5 batches
  CHECK(c.loss_scaler->reals.at("scale") == 32768.0);
  CHECK(r.resumed_epoch == 4);
  CHECK(same_state(*r.resumed, snapshot(*r.full)));
  CHECK(contains(r.resumed_log, "1 of 20 optimizer steps skipped"));
}

TEST_CASE("gpu Trainer: gpus=N means devices=N (one process here), gpus=-1 one per visible GPU") {
  require_gpu();
  auto with_gpus = [](int64_t gpus) {
    TrainerOptions o;
    o.gpus = gpus;
    return o;
  };
  // A single process: gpus=2 asks for two processes on the node, which only the launcher starts.
  CHECK(contains(error_of([&] { Trainer t(with_gpus(2)); }), "--devices 2 but 1 process runs"));
  CHECK_NOTHROW(Trainer(with_gpus(1)));
  if (cuda_device_count() == 1) CHECK_NOTHROW(Trainer(with_gpus(-1)));
}
