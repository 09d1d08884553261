// Mixed precision on the CPU (the float32 kernels between 16-bit casts, the reference the GPU is
// held to): Autocast in the layers, the GradScaler's scaling, unscaling, skipping and growth, and the
// Trainer's 16-mixed and bf16-mixed runs: they learn, an Inf gradient skips exactly one step (and the
// per-step scheduler with it), and a resumed 16-mixed run continues bit for bit, loss scale included.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "dist/checkpoint.h"
#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/threads.h"
#include "layers/layers.h"
#include "layers/optim/grad_scaler.h"
#include "layers/optim/scheduler.h"
#include "tests/test_util.h"
#include "tests/trainer_fixtures.h"

using namespace volt;
using namespace volt::test;

TEST_CASE("Autocast runs Conv2d and Linear in 16 bits with float32 master weights and float32 gradients") {
  manual_seed(3);
  Conv2d conv(3, 4, 3);
  Linear fc(4 * 6 * 6, 5);
  BatchNorm2d bn(4);
  Sequential net;
  const Tensor x = rand_tensor({2, 3, 8, 8}, 1);
  for (DType dt : {DType::F16, DType::BF16}) {
    INFO(dtype_name(dt));
    Tensor y;
    {
      Autocast ac(dt);
      CHECK(autocast_dtype() == dt);
      Tensor h = conv(x);
      CHECK(h.dtype() == dt);
      h = bn.forward_relu(h);  // 16-bit activations, float32 statistics
      CHECK(h.dtype() == dt);
      y = fc(h.flatten(1));
      CHECK(y.dtype() == dt);
    }
    CHECK(autocast_dtype() == DType::F32);
    CHECK(conv.weight.dtype() == DType::F32);
    conv.weight.set_grad(Tensor());
    fc.weight.set_grad(Tensor());
    cross_entropy(y, Tensor::from_labels({1, 4})).backward();
    REQUIRE(conv.weight.grad().defined());
    CHECK(conv.weight.grad().dtype() == DType::F32);
    CHECK(fc.bias.grad().dtype() == DType::F32);
    CHECK(bn.weight.grad().dtype() == DType::F32);
  }
  CHECK_THROWS_AS(Autocast(DType::I64), Error);
}

TEST_CASE("GradScaler scales the loss, unscales once, skips an Inf step and halves, grows after the interval") {
  Tensor p = param({1.f, -2.f, 3.f});
  SGDOptions so;
  so.lr = 0.5;
  SGD opt({p}, so);
  GradScalerOptions go;
  go.init_scale = 1024;
  go.growth_interval = 3;
  GradScaler s(go);
  auto loss_of = [&](float k) { return mul(sum(mul(p, p)), k); };  // d/dp = 2 k p

  // A clean step: backward of the scaled loss gives scale * grad; step() divides it back.
  opt.zero_grad();
  Tensor l = s.scale(loss_of(1.f));
  CHECK(l.item() == doctest::Approx(1024.f * 14.f));
  l.backward();
  CHECK(p.grad().to_vector()[0] == doctest::Approx(2048.f));
  CHECK(s.step(opt));
  s.update();
  check_close(p, {1 - 0.5 * 2, -2 + 0.5 * 4, 3 - 0.5 * 6});
  CHECK(s.get_scale() == 1024);
  CHECK(s.growth_tracker() == 1);

  // An Inf gradient: no step, the parameters stay, the scale halves, the tracker resets.
  const std::vector<float> before = p.to_vector();
  opt.zero_grad();
  s.scale(loss_of(std::numeric_limits<float>::infinity())).backward();
  s.unscale_(opt);
  CHECK_THROWS_WITH_AS(s.unscale_(opt), doctest::Contains("already called"), Error);
  CHECK_FALSE(s.step(opt));
  s.update();
  CHECK(p.to_vector() == before);
  CHECK(s.get_scale() == 512);
  CHECK(s.growth_tracker() == 0);
  CHECK(s.skipped_steps() == 1);
  CHECK(s.steps() == 2);

  // Three clean steps in a row double the scale.
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    s.scale(loss_of(0.01f)).backward();
    CHECK(s.step(opt));
    s.update();
  }
  CHECK(s.get_scale() == 1024);
  CHECK(s.growth_tracker() == 0);
  CHECK_THROWS_WITH_AS(s.update(), doctest::Contains("step() first"), Error);

  // The state round-trips; a bad state is refused and changes nothing.
  const LossScalerState st = s.state_dict();
  GradScaler t;
  t.load_state_dict(st);
  CHECK(t.get_scale() == 1024);
  CHECK(t.skipped_steps() == 1);
  CHECK(t.steps() == 5);
  LossScalerState bad = st;
  bad.reals["scale"] = -1;
  CHECK_THROWS_WITH_AS(t.load_state_dict(bad), doctest::Contains("not a positive finite number"), Error);
  bad = st;
  bad.type = "Adam";
  CHECK_THROWS_WITH_AS(t.load_state_dict(bad), doctest::Contains("not a GradScaler"), Error);
  CHECK(t.get_scale() == 1024);
}

TEST_CASE("GradScaler scales a float16 loss in float32: the default scale 65536 is past float16's range") {
  Tensor p = param({0.5f, -1.f, 1.5f});
  SGD opt({p}, sgd_options(0.1));
  GradScaler s;  // init_scale 65536: float16's largest finite value is 65504
  auto loss = [&] { return cast(sum(mul(p, p)), DType::F16); };  // 3.5
  Tensor l = s.scale(loss());
  CHECK(l.dtype() == DType::F32);
  CHECK(l.item() == 3.5f * 65536.f);
  // The loss's own gradient, 65536, is not a float16 number either: that step is skipped and the
  // scale halves, as with torch's GradScaler.
  l.backward();
  CHECK_FALSE(s.step(opt));
  s.update();
  REQUIRE(s.get_scale() == 32768);
  // 3.5 * 32768 is still past float16's range, not float32's; the gradients (float16 on their way
  // through the loss) are finite.
  opt.zero_grad();
  l = s.scale(loss());
  CHECK(l.item() == 3.5f * 32768.f);
  l.backward();
  check_close(p.grad(), {32768.0 * 1, 32768.0 * -2, 32768.0 * 3});
  CHECK(s.step(opt));
  s.update();
  check_close(p, {0.5 - 0.1 * 1, -1 + 0.1 * 2, 1.5 - 0.1 * 3});
}

TEST_CASE("16-mixed fit: an Inf loss skips that step, the scheduler waits, and the run reports it") {
  TempDir dir("volt_amp_");
  manual_seed(5);
  SynthDM dm(128, 32, 32);
  InfOnce m(1);
  Quiet q;
  auto o = q.base(dir.path);
  o.max_epochs = 1;
  o.precision = "16-mixed";
  o.num_sanity_val_steps = 0;
  Trainer t(o);
  t.fit(m, dm);
  INFO(q.os.str());
  // 3 batches: one skipped, so the per-step scheduler advanced twice.
  CHECK(t.global_step() == 3);
  CHECK(m.sched->last_epoch() == 2);
  CHECK(contains(q.os.str(), "Mixed precision (16-mixed): 1 of 3 optimizer steps skipped"));
  CHECK(contains(q.os.str(), "loss scale now 32768"));
}

TEST_CASE("16-mixed and bf16-mixed fits learn like float32 on the CPU") {
  TempDir f32_dir("volt_amp_");
  const auto f32 = run_learning_fit(f32_dir.path, "32");
  INFO("float32: val_acc " << f32->before << " -> " << f32->after);
  for (const char* precision : {"16-mixed", "bf16-mixed"}) {
    INFO(precision);
    TempDir dir("volt_amp_");
    const auto f = run_learning_fit(dir.path, precision);
    INFO(f->q.os.str());
    CHECK(f->after > f->before + 0.2);
    CHECK(f->after > 0.7);
    // The same fit (same seed, data and order) in float32: 16-bit rounding may move a few of the 64
    // validation samples, not the outcome.
    CHECK(std::abs(f->after - f32->after) <= 0.1);
  }
}

TEST_CASE("a 16-mixed run resumed after 2 of 4 epochs ends bit-identical, loss scale included") {
  TempDir dir("volt_amp_");
  const int saved = get_num_threads();
  set_num_threads(2);
  const ResumeRuns r = run_resume_pair(dir.path, "16-mixed", /*inf_batch=*/1);  // the scale halves once
  const Checkpoint c = load_checkpoint(dir.path + "/lightning_logs/version_1/checkpoints/last.ckpt");
  REQUIRE(c.loss_scaler.has_value());
  CHECK(c.loss_scaler->type == "GradScaler");
  CHECK(c.loss_scaler->ints.at("steps") == 10);  // 2 epochs of 5 batches
  CHECK(c.loss_scaler->reals.at("scale") == 32768.0);
  INFO(r.resumed_log);
  CHECK(r.resumed_epoch == 4);
  CHECK(same_state(*r.resumed, snapshot(*r.full)));
  CHECK(contains(r.resumed_log, "1 of 20 optimizer steps skipped"));
  CHECK(contains(r.resumed_log, "loss scale now 32768"));  // the saved scale, not a fresh 65536
  set_num_threads(saved);
}
