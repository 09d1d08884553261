// The Trainer on the GPU (label gpu; skipped where no GPU is visible): the seed CNN trained on
// synthetic data with the same seed on cuda:0 and on the CPU follows the same loss trajectory for
// its first steps (fp32, dropout on: the GPU's Philox masks are the CPU's), and the GPU run's
// checkpoint, test(ckpt="best") and gradient clipping work with device tensors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

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

TEST_CASE("gpu Trainer: a fit as CUDA-graph replays ends with the eager fit's weights and metrics") {
  require_gpu();
  TempDir dir("volt_trainer_gpu_");
  for (const char* precision : {"32", "16-mixed"}) {
    INFO(precision);
    std::vector<StateDict> states;
    std::vector<double> losses;
    for (bool graphs : {false, true}) {
      manual_seed(23);
      ClassifierModule m(small_cnn(0.3), adam(2e-3));
      SynthDM dm(384, 32, 32);
      Quiet q;
      auto o = q.base(dir / (std::string(precision) + (graphs ? "_graph" : "_eager")));
      o.accelerator = "gpu";
      o.max_epochs = 2;
      o.seed = 23;
      o.precision = precision;
      o.cuda_graphs = graphs;
      Trainer t(o);
      t.fit(m, dm);
      INFO(q.os.str());
      CHECK(contains(q.os.str(), "the training step is captured") == graphs);
      states.push_back(snapshot(m));
      losses.push_back(t.callback_metrics().at("train_loss"));
    }
    ClassifierModule probe(small_cnn(0.3), adam(2e-3));
    probe.load_state_dict(states[1]);
    CHECK(same_state(probe, states[0]));
    CHECK(losses[1] == losses[0]);
  }
}
