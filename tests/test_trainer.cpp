// The Trainer (dist/trainer.h) on the CPU with small synthetic data: learning, fast_dev_run, batch
// limits and validation counts, gradient clipping and accumulation, epoch means, ModelCheckpoint,
// EarlyStopping, test(ckpt="best"), exact resume, log folders, the progress bar and bad options.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/datamodule.h"
#include "data/synthetic.h"
#include "dist/checkpoint.h"
#include "layers/optim/grad_clip.h"
#include "dist/trainer.h"
#include "engine/autograd.h"
#include "engine/random.h"
#include "engine/threads.h"
#include "layers/layers.h"
#include "layers/models/seed_cnn.h"
#include "tests/test_util.h"
#include "tests/trainer_fixtures.h"

using namespace volt;
using test::contains;
using test::error_of;
namespace fs = std::filesystem;

using namespace volt::test;

namespace {
std::set<std::string> names_in(const std::string& dir) {
  std::set<std::string> s;
  for (const auto& e : fs::directory_iterator(dir)) s.insert(e.path().filename().string());
  return s;
}
}  // namespace


TEST_CASE("fit learns: val_acc rises on a learnable synthetic set") {
  test::TempDir dir("volt_trainer_");
  const auto f = run_learning_fit(dir.path);
  INFO(f->q.os.str());
  CHECK(f->after > f->before + 0.2);
  CHECK(f->after > 0.7);
  auto res = f->t->test(*f->m, *f->dm);
  REQUIRE(res.size() == 1);
  CHECK(res[0].count("test_acc") == 1);
  CHECK(res[0].count("test_loss") == 1);
  CHECK(contains(f->q.os.str(), "Test metric"));
}

TEST_CASE("fast_dev_run runs n batches of each and writes nothing") {
  test::TempDir dir("volt_trainer_");
  manual_seed(2);
  SynthDM dm;
  Counting m(small_cnn(), adam());
  Quiet q;
  auto o = q.base(dir.path);
  o.fast_dev_run = 2;
  o.max_epochs = 5;
  Trainer t(o);
  t.fit(m, dm);
  CHECK(m.train_calls == 2);
  CHECK(m.val_calls == 2);  // no sanity check under fast_dev_run
  t.test(m, dm);
  CHECK(m.test_calls == 2);
  CHECK(fs::is_empty(dir.path));
  CHECK(t.log_dir().empty());
}

TEST_CASE("limit_train_batches, val_check_interval and num_sanity_val_steps give the expected call counts") {
  test::TempDir dir("volt_trainer_");
  manual_seed(3);
  SynthDM dm(256, 32, 128);  // 4 training and 4 validation batches
  Counting m(small_cnn(), adam());
  Quiet q;
  auto o = q.base(dir.path);
  o.max_epochs = 2;
  o.limit_train_batches = 4;
  o.limit_val_batches = 3;
  o.val_check_interval = 2;
  o.num_sanity_val_steps = 2;
  o.logger = false;
  o.enable_checkpointing = false;
  Trainer t(o);
  t.fit(m, dm);
  CHECK(m.train_calls == 8);
  CHECK(m.val_calls == 2 + 2 * 2 * 3);
  CHECK(t.global_step() == 8);
  CHECK(t.current_epoch() == 2);

  Counting m2(small_cnn(), adam());
  o.limit_train_batches = 0.5;  // half of 4 batches
  o.val_check_interval = 1.0;
  o.num_sanity_val_steps = 0;
  o.limit_val_batches = 0.25;  // a quarter of 4 batches
  Trainer t2(o);
  t2.fit(m2, dm);
  CHECK(m2.train_calls == 2 * 2);
  CHECK(m2.val_calls == 2 * 1);
}

TEST_CASE("clip_grad_norm_ and clip_grad_value_ follow PyTorch") {
  Tensor a = test::param({3.f, 4.f}), b = test::param({12.f});
  test::set_grad(a, {3, 4});
  test::set_grad(b, {12});
  const Tensor total = clip_grad_norm_({a, b}, 6.5);
  CHECK(total.shape() == Shape{});
  CHECK(total.item() == doctest::Approx(13.0));
  const double c = 6.5 / (13.0 + 1e-6);
  test::check_close(a.grad(), {3 * c, 4 * c});
  test::check_close(b.grad(), {12 * c});
  // Below the limit: unchanged, bit for bit.
  const std::vector<float> before = a.grad().to_vector();
  CHECK(clip_grad_norm_({a, b}, 100.0).item() == doctest::Approx(6.5).epsilon(1e-5));
  CHECK(a.grad().to_vector() == before);
  test::set_grad(a, {-3, 0.5});
  clip_grad_value_({a}, 1.0);
  test::check_close(a.grad(), {-1, 0.5});

  // Other norms: inf (the largest |g|), 1, 3.
  test::set_grad(a, {3, -4});
  test::set_grad(b, {-2});
  CHECK(clip_grad_norm_({a, b}, 100.0, INFINITY).item() == 4.f);
  CHECK(clip_grad_norm_({a, b}, 100.0, 1.0).item() == 9.f);
  CHECK(clip_grad_norm_({a, b}, 100.0, 3.0).item() == doctest::Approx(std::cbrt(27.0 + 64 + 8)));
  clip_grad_norm_({a, b}, 2.0, INFINITY);
  test::check_close(a.grad(), {1.5, -2}, 1e-5);
  // No gradient at all: a zero norm; a NaN gradient makes every gradient NaN, as torch's does.
  Tensor none = test::param({1.f});
  CHECK(clip_grad_norm_({none}, 1.0).item() == 0.f);
  test::set_grad(a, {NAN, 1});
  test::set_grad(b, {2});
  CHECK(std::isnan(clip_grad_norm_({a, b}, 1.0).item()));
  CHECK(std::isnan(b.grad().to_vector()[0]));
  test::set_grad(a, {NAN, 1});
  CHECK(std::isnan(clip_grad_norm_({a, b}, 1.0, INFINITY).item()));  // NaN wins over max, too
  // clip_grad_value_ keeps NaN (torch.clamp does).
  test::set_grad(a, {NAN, -7});
  clip_grad_value_({a}, 2.0);
  CHECK(std::isnan(a.grad().to_vector()[0]));
  CHECK(a.grad().to_vector()[1] == -2.f);

  // Bad input.
  CHECK(contains(error_of([&] { clip_grad_norm_({a}, -1.0); }), "max_norm must be >= 0"));
  CHECK(contains(error_of([&] { clip_grad_norm_({a}, 1.0, 0.0); }), "norm_type must be positive"));
  CHECK(contains(error_of([&] { clip_grad_value_({a}, -1.0); }), "clip_value must be >= 0"));
}

TEST_CASE("gradient clipping inside fit keeps the update bounded") {
  // SGD lr 1, one step with clip value 1e-3: no weight moves by more than 1e-3 (bias/weights alike).
  test::TempDir dir("volt_trainer_");
  manual_seed(4);
  SynthDM dm;
  auto net = std::make_shared<Sequential>(
      std::vector<std::shared_ptr<Module>>{std::make_shared<Flatten>(), std::make_shared<Linear>(3 * 16 * 16, 4)});
  ClassifierOptions co;
  co.optimizer = "sgd";
  co.lr = 1.0;
  ClassifierModule m(net, co);
  const StateDict before = test::snapshot(m);
  for (std::string algo : {"value", "norm"}) {
    m.load_state_dict(before);
    Quiet q;
    auto o = q.base(dir.path);
    o.max_steps = 1;
    o.num_sanity_val_steps = 0;
    o.logger = false;
    o.enable_checkpointing = false;
    o.gradient_clip_val = 1e-3;
    o.gradient_clip_algorithm = algo;
    Trainer t(o);
    t.fit(m, dm);
    double sq = 0, mx = 0;
    for (const auto& [n, v] : m.state_dict().items()) {
      auto x = v.to_vector(), y = before.find(n)->to_vector();
      for (size_t i = 0; i < x.size(); ++i) {
        sq += double(x[i] - y[i]) * double(x[i] - y[i]);
        mx = std::max(mx, double(std::fabs(x[i] - y[i])));
      }
    }
    INFO(algo);
    if (algo == "value")
      CHECK(mx <= 1e-3 + 1e-7);
    else
      CHECK(std::sqrt(sq) <= 1e-3 * (1 + 1e-4));
    CHECK(mx > 0);
  }
}

TEST_CASE("accumulate_grad_batches=2 equals one step on the doubled batch") {
  test::TempDir dir("volt_trainer_");
  auto run = [&](int64_t batch, int64_t accum) {
    manual_seed(5);
    auto net = std::make_shared<Sequential>(
        std::vector<std::shared_ptr<Module>>{std::make_shared<Flatten>(), std::make_shared<Linear>(3 * 16 * 16, 4)});
    ClassifierOptions co;
    co.optimizer = "sgd";
    co.lr = 0.5;
    ClassifierModule m(net, co);
    SynthDM dm(256, batch);
    Quiet q;
    auto o = q.base(dir.path);
    o.max_steps = 1;
    o.accumulate_grad_batches = accum;
    o.num_sanity_val_steps = 0;
    o.logger = false;
    o.enable_checkpointing = false;
    Trainer t(o);
    t.fit(m, dm);
    CHECK(t.global_step() == 1);
    return test::snapshot(m);
  };
  const StateDict a = run(8, 2), b = run(16, 1);
  for (const auto& [n, v] : a.items()) {
    const auto x = v.to_vector(), y = b.find(n)->to_vector();
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, double(std::fabs(x[i] - y[i])));
    INFO(n);
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("epoch metrics are the batch-size-weighted mean") {
  MetricStore s;
  s.set_stage("val");
  s.add("x", 1.0, {}, 10);
  s.add("x", 3.0, {}, 30);
  CHECK(s.epoch_means().at("x") == doctest::Approx(2.5));
  // Through validate(): 40 validation images in batches 16, 16, 8; "bs" logs the batch size.
  SynthDM dm(120, 16, 40);
  Counting m(small_cnn(), adam());
  Quiet q;
  TrainerOptions o;
  o.out = &q.os;
  Trainer t(o);
  const auto r = t.validate(m, dm);
  CHECK(r[0].at("bs") == doctest::Approx((16.0 * 16 + 16 * 16 + 8 * 8) / 40));
  CHECK(contains(q.os.str(), "Validate metric"));
}

TEST_CASE("ModelCheckpoint keeps the best k and last.ckpt, and test(ckpt=best) loads the best") {
  test::TempDir dir("volt_trainer_");
  manual_seed(6);
  SynthDM dm(128, 32, 32);
  Counting m(small_cnn(), adam());
  m.scores = {5, 3, 4, 1, 2};
  Quiet q;
  auto o = q.base(dir.path);
  o.max_epochs = 5;
  o.num_sanity_val_steps = 0;
  ModelCheckpointOptions mo;
  mo.monitor = "score";
  mo.save_top_k = 2;
  mo.save_last = true;
  mo.filename = "epoch={epoch}-step={step}-{score:.2f}";
  auto mc = std::make_shared<ModelCheckpoint>(mo);
  o.callbacks = {mc};
  Trainer t(o);
  t.fit(m, dm);
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(t.log_dir() + "/checkpoints")) files.insert(e.path().filename().string());
  const std::set<std::string> want = {"epoch=3-step=12-score=1.00.ckpt", "epoch=4-step=15-score=2.00.ckpt", "last.ckpt"};
  CHECK(files == want);
  CHECK(contains(mc->best_model_path(), "epoch=3-step=12"));
  CHECK(mc->best_model_score() == 1.0);

  const Checkpoint best = load_checkpoint(mc->best_model_path());
  t.test(m, dm, "best");
  for (const auto& [n, v] : best.model) {
    INFO(n);
    CHECK(test::same_values(*m.state_dict().find(n), v));
  }
  CHECK(contains(error_of([&] { Trainer(o).test(m, dm, "best"); }), "no best checkpoint"));
}

TEST_CASE("EarlyStopping stops after patience epochs without improvement, and on NaN") {
  test::TempDir dir("volt_trainer_");
  manual_seed(7);
  SynthDM dm(128, 32, 32);
  {
    Counting m(small_cnn(), adam());
    m.scores = {1, 2, 3, 4, 5, 6, 7, 8};
    Quiet q;
    auto o = q.base(dir.path);
    o.max_epochs = 8;
    o.num_sanity_val_steps = 0;
    o.logger = false;
    o.enable_checkpointing = false;
    EarlyStoppingOptions eo;
    eo.monitor = "score";
    eo.patience = 2;
    auto es = std::make_shared<EarlyStopping>(eo);
    o.callbacks = {es};
    Trainer t(o);
    t.fit(m, dm);
    CHECK(es->stopped_epoch() == 2);
    CHECK(t.current_epoch() == 3);
    CHECK(contains(q.os.str(), "did not improve"));
  }
  {
    Counting m(small_cnn(), adam());
    m.scores = {1, NAN};
    Quiet q;
    auto o = q.base(dir.path);
    o.max_epochs = 8;
    o.num_sanity_val_steps = 0;
    o.logger = false;
    o.enable_checkpointing = false;
    EarlyStoppingOptions eo;
    eo.monitor = "score";
    eo.patience = 5;
    auto es = std::make_shared<EarlyStopping>(eo);
    o.callbacks = {es};
    Trainer t(o);
    t.fit(m, dm);
    CHECK(es->stopped_epoch() == 1);
    CHECK(contains(es->reason(), "not finite"));
  }
}

// Lightning runs every ModelCheckpoint after the other callbacks (_reorder_callbacks), so that a
// checkpoint holds EarlyStopping's state of its own epoch. Listed first, it used to save the state of
// the epoch before, and a run resumed from last.ckpt stopped one epoch after the uninterrupted one.
TEST_CASE("ModelCheckpoint runs after EarlyStopping: a run resumed from last.ckpt stops when an uninterrupted one does") {
  test::TempDir dir("volt_trainer_");
  SynthDM dm(128, 32, 32);
  auto run = [&](int64_t epochs, const std::string& resume) {
    manual_seed(7);
    Counting m(small_cnn(), adam());
    m.scores = {1, 2, 3, 4, 5, 6, 7, 8};
    Quiet q;
    auto o = q.base(dir.path);
    o.max_epochs = epochs;
    o.num_sanity_val_steps = 0;
    o.logger = false;
    o.resume = resume;
    ModelCheckpointOptions mo;
    mo.save_last = true;
    EarlyStoppingOptions eo;
    eo.monitor = "score";
    eo.patience = 2;
    auto mc = std::make_shared<ModelCheckpoint>(mo);
    auto es = std::make_shared<EarlyStopping>(eo);
    o.callbacks = {mc, es};
    Trainer t(o);
    t.fit(m, dm);
    CHECK(t.callbacks().back() == mc);
    return std::make_pair(es->stopped_epoch(), t.current_epoch());
  };
  const auto full = run(8, "");
  run(2, "");
  const auto resumed = run(8, "last");
  CHECK(full.first == 2);
  CHECK(resumed.first == full.first);
  CHECK(resumed.second == full.second);
}

// A checkpoint must hold the ranking it is part of: a top-k file saved before the ranking was
// updated did not know it was the best, so a run resumed from it kept a second file and the wrong
// best. A file the new one displaces is removed only once the new one is written.
TEST_CASE("ModelCheckpoint ranks a checkpoint before saving it, and removes the displaced file only after the save") {
  test::TempDir dir("volt_trainer_");
  SynthDM dm(128, 32, 32);
  std::shared_ptr<ModelCheckpoint> mc;
  auto run = [&](const std::string& ck, int64_t epochs, const std::string& resume) {
    manual_seed(7);
    Counting m(small_cnn(), adam());
    m.scores = {5, 3, 4};
    Quiet q;
    auto o = q.base(dir / "root");
    o.max_epochs = epochs;
    o.num_sanity_val_steps = 0;
    o.logger = false;
    o.resume = resume;
    ModelCheckpointOptions mo;
    mo.monitor = "score";
    mo.dirpath = ck;
    mo.filename = "{epoch}";
    mc = std::make_shared<ModelCheckpoint>(mo);
    o.callbacks = {mc};
    Trainer t(o);
    t.fit(m, dm);
    return mc;
  };
  const std::string ck = dir / "ckpts";
  const auto part = run(ck, 2, "");
  CHECK(part->best_model_path() == ck + "/epoch=1.ckpt");
  const auto resumed = run(ck, 3, part->best_model_path());  // epoch 2 scores 4: worse than epoch 1's 3
  CHECK(names_in(ck) == std::set<std::string>{"epoch=1.ckpt"});
  CHECK(resumed->best_model_path() == ck + "/epoch=1.ckpt");
  CHECK(resumed->best_model_score() == 3.0);

  // Epoch 1's file cannot be written (a folder has its name): epoch 0's file and ranking stay.
  const std::string ck2 = dir / "ckpts2";
  fs::create_directories(ck2 + "/epoch=1.ckpt");
  CHECK_FALSE(error_of([&] { run(ck2, 2, ""); }).empty());
  CHECK(fs::is_regular_file(ck2 + "/epoch=0.ckpt"));
  REQUIRE(mc->best_k_models().size() == 1);
  CHECK(mc->best_k_models()[0].second == ck2 + "/epoch=0.ckpt");
  CHECK(mc->best_model_path() == ck2 + "/epoch=0.ckpt");
  CHECK(mc->best_model_score() == 5.0);
}

// Every fit writes to a new version_N folder, so a resumed run's checkpoints go elsewhere than the
// earlier part's. As Lightning keeps best_model_path, the resumed ModelCheckpoint keeps the earlier
// part's ranked files that still exist: best_model_path (what test(ckpt="best") and cnn_train load)
// is the best of the whole run, not of its resumed part. It never deletes a file outside its folder.
TEST_CASE("a run resumed into a new version folder keeps the earlier folder's best checkpoints") {
  test::TempDir dir("volt_trainer_");
  SynthDM dm(128, 32, 32);
  auto run = [&](const std::string& root, std::vector<double> scores, int64_t epochs, const std::string& resume) {
    manual_seed(7);
    Counting m(small_cnn(), adam());
    m.scores = std::move(scores);
    Quiet q;
    auto o = q.base(root);
    o.max_epochs = epochs;
    o.num_sanity_val_steps = 0;
    o.logger = false;
    o.resume = resume;
    ModelCheckpointOptions mo;
    mo.monitor = "score";
    mo.save_last = true;
    mo.filename = "{epoch}";
    auto mc = std::make_shared<ModelCheckpoint>(mo);
    o.callbacks = {mc};
    Trainer t(o);
    t.fit(m, dm);
    return mc;
  };
  {  // the best is in the first part
    const std::vector<double> scores = {5, 1, 3, 4};
    const auto full = run(dir / "full", scores, 4, "");
    run(dir / "a", scores, 2, "");
    const auto resumed = run(dir / "a", scores, 4, "last");
    CHECK(full->best_model_score() == 1.0);
    CHECK(resumed->best_model_score() == 1.0);
    CHECK(resumed->best_model_path() == dir / "a/lightning_logs/version_0/checkpoints/epoch=1.ckpt");
    CHECK(names_in(resumed->dirpath()) == std::set<std::string>{"last.ckpt"});
  }
  {  // the best is in the resumed part: the earlier best leaves the ranking, its file stays
    const std::vector<double> scores = {5, 1, 3, 0.5};
    run(dir / "b", scores, 2, "");
    const auto resumed = run(dir / "b", scores, 4, "last");
    CHECK(resumed->best_model_score() == 0.5);
    CHECK(resumed->best_model_path() == resumed->dirpath() + "/epoch=3.ckpt");
    CHECK(resumed->best_k_models().size() == 1);
    CHECK(fs::is_regular_file(dir / "b/lightning_logs/version_0/checkpoints/epoch=1.ckpt"));
  }
}

// Each callback's state is saved under a key made from its configuration (Lightning's state_key), so
// two ModelCheckpoints no longer overwrite each other's state; two with the same key are refused.
// A checkpoint written with the old per-type key still loads into the one callback of that type.
TEST_CASE("callback states are keyed by configuration, and the old per-type keys still load") {
  test::TempDir dir("volt_trainer_");
  SynthDM dm(128, 32, 32);
  auto opts = [&](Quiet& q, int64_t epochs, const std::string& resume) {
    auto o = q.base(dir.path);
    o.max_epochs = epochs;
    o.num_sanity_val_steps = 0;
    o.logger = false;
    o.resume = resume;
    return o;
  };
  std::shared_ptr<ModelCheckpoint> best, periodic;
  auto run = [&](int64_t epochs, const std::string& resume) {
    manual_seed(7);
    Counting m(small_cnn(), adam());
    m.scores = {5, 1, 3};
    Quiet q;
    auto o = opts(q, epochs, resume);
    ModelCheckpointOptions a, b;
    a.monitor = "score";
    a.filename = "best-{epoch}";
    b.save_last = true;
    b.filename = "periodic-{epoch}";
    best = std::make_shared<ModelCheckpoint>(a);
    periodic = std::make_shared<ModelCheckpoint>(b);
    o.callbacks = {best, periodic};
    Trainer(o).fit(m, dm);
  };
  run(2, "");
  const std::string best_path = best->best_model_path();
  run(3, "last");
  CHECK(best->best_model_path() == best_path);
  CHECK(best->best_model_score() == 1.0);
  CHECK(periodic->best_model_path() == periodic->dirpath() + "/periodic-epoch=2.ckpt");

  {
    Counting m(small_cnn(), adam());
    Quiet q;
    auto o = opts(q, 1, "");
    o.callbacks = {std::make_shared<ModelCheckpoint>(), std::make_shared<ModelCheckpoint>()};
    CHECK(contains(error_of([&] { Trainer(o).fit(m, dm); }), "same state key"));
  }

  // A checkpoint in the old format: EarlyStopping's state under "callback.EarlyStopping.".
  Counting m(small_cnn(), adam());
  m.scores = {1, 2};
  Quiet q;
  auto o = opts(q, 2, "");
  EarlyStoppingOptions eo;
  eo.monitor = "score";
  eo.patience = 5;
  o.callbacks = {std::make_shared<EarlyStopping>(eo)};
  Trainer t(o);
  t.fit(m, dm);
  Checkpoint c = load_checkpoint(t.checkpoint_callback()->best_model_path());
  std::map<std::string, std::string> old;
  for (const auto& [k, v] : c.metadata) {
    const size_t field = k.rfind('.');
    if (k.rfind("callback.EarlyStopping", 0) == 0) old["callback.EarlyStopping" + k.substr(field)] = v;
    else if (k.rfind("callback.", 0) != 0) old[k] = v;
  }
  REQUIRE(old.count("callback.EarlyStopping.wait"));
  c.metadata = old;
  save_checkpoint(dir / "old.ckpt", c);
  auto resume_with = [&](std::vector<std::shared_ptr<Callback>> callbacks) {
    Counting m2(small_cnn(), adam());
    Quiet q2;
    auto o2 = opts(q2, 2, dir / "old.ckpt");
    o2.callbacks = std::move(callbacks);
    Trainer(o2).fit(m2, dm);
    return q2.os.str();
  };
  auto one = std::make_shared<EarlyStopping>(eo);
  resume_with({one});
  CHECK(one->wait_count() == 1);
  CHECK(one->best_score() == 1.0);
  // With two EarlyStoppings, which one the old state belongs to is unknown: neither takes it.
  EarlyStoppingOptions eo2 = eo;
  eo2.monitor = "val_loss";
  auto first = std::make_shared<EarlyStopping>(eo), second = std::make_shared<EarlyStopping>(eo2);
  CHECK(contains(resume_with({first, second}), "2 EarlyStopping callbacks"));
  CHECK(first->wait_count() == 0);
  CHECK(second->wait_count() == 0);
}

// An infinite or NaN metric used to be converted to long long (undefined; it printed
// val_loss=-9223372036854775808), and a format's conversion went to snprintf unchecked with a double.
TEST_CASE("ModelCheckpoint filenames: non-finite metrics, and only f, e, g, E, G conversions") {
  auto name = [](const std::string& tmpl, double v) { return ModelCheckpoint::format_name(tmpl, {{"x", v}}); };
  CHECK(name("{x}", INFINITY) == "x=inf");
  CHECK(name("{x}", -INFINITY) == "x=-inf");
  CHECK(name("{x}", NAN) == "x=nan");
  CHECK(name("{x}", 1e30) == "x=1000000000000000019884624838656.0000");
  CHECK(name("{x}", -12) == "x=-12");
  CHECK(name("{x:.3e}", 0.123456) == "x=1.235e-01");
  CHECK(name("{x:+08.2f}", 1.5) == "x=+0001.50");
  CHECK(name("{x:G}", 0.25) == "x=0.25");
  for (const char* bad : {"{x:d}", "{x:.2}", "{x:.2f%}", "{x:ld}"})
    CHECK(contains(error_of([&] { name(bad, 1.0); }), "f, e, g, E or G"));
  for (const char* bad : {"{x:s}", "{x:n}"}) {
    ModelCheckpointOptions mo;
    mo.filename = bad;
    CHECK(contains(error_of([&] { (void)ModelCheckpoint(mo); }), bad));
  }
}

// Callback state that does not parse used to throw std::invalid_argument (or read "1x" as 1), after
// restore() had changed the model. Now: volt::Error naming the key and the value, model untouched.
TEST_CASE("callback state that does not parse: volt::Error naming key and value, before the model changes") {
  EarlyStopping es;
  CHECK(contains(error_of([&] { es.load_state_dict({{"best", "abc"}, {"wait", "1"}}); }), "\"best\" = \"abc\""));
  CHECK(contains(error_of([&] { es.load_state_dict({{"best", "1"}, {"wait", "1x"}}); }), "\"wait\" = \"1x\""));
  ModelCheckpoint mc;
  CHECK(contains(error_of([&] { mc.load_state_dict({{"dirpath", ""}, {"best_model_path", ""},
                                                    {"best_model_score", "nan"}, {"count", "two"}}); }),
                 "\"count\" = \"two\""));
  // All or none: the first EarlyStopping's state loads, the second's does not; the first is put back.
  EarlyStoppingOptions eo;
  eo.monitor = "score";
  auto first = std::make_shared<EarlyStopping>(eo), second = std::make_shared<EarlyStopping>();
  std::map<std::string, std::string> meta = {{"callback." + first->state_key() + ".best", "0.5"},
                                             {"callback." + first->state_key() + ".wait", "2"},
                                             {"callback." + second->state_key() + ".best", "0.5"},
                                             {"callback." + second->state_key() + ".wait", "-1"}};
  std::ostringstream note;
  CHECK(contains(error_of([&] { load_callback_states({first, second}, meta, note); }), "\"wait\" = \"-1\""));
  CHECK(first->wait_count() == 0);
  CHECK(std::isinf(first->best_score()));

  test::TempDir dir("volt_trainer_");
  SynthDM dm(128, 32, 32);
  auto opts = [&](Quiet& q, const std::string& resume) {
    auto o = q.base(dir.path);
    o.max_epochs = 2;
    o.num_sanity_val_steps = 0;
    o.logger = false;
    o.resume = resume;
    EarlyStoppingOptions eo;
    eo.monitor = "score";
    o.callbacks = {std::make_shared<EarlyStopping>(eo)};
    return o;
  };
  manual_seed(7);
  Counting m(small_cnn(), adam());
  m.scores = {1, 2};
  Quiet q;
  Trainer t(opts(q, ""));
  t.fit(m, dm);
  Checkpoint c = load_checkpoint(t.checkpoint_callback()->best_model_path());
  for (auto& [k, v] : c.metadata)
    if (k.rfind("callback.EarlyStopping", 0) == 0 && k.size() > 5 && k.substr(k.size() - 5) == ".wait") v = "many";
  save_checkpoint(dir / "bad.ckpt", c);
  manual_seed(8);
  Counting fresh(small_cnn(), adam());
  const StateDict before = test::snapshot(fresh);
  Quiet q2;
  CHECK(contains(error_of([&] { Trainer(opts(q2, dir / "bad.ckpt")).fit(fresh, dm); }), "\"wait\" = \"many\""));
  CHECK(test::same_state(fresh, before));
}

TEST_CASE("resume from last.ckpt after 2 of 4 epochs ends bit-identical to an uninterrupted run") {
  test::TempDir dir("volt_trainer_");
  const int saved = get_num_threads();
  set_num_threads(2);
  const ResumeRuns r = run_resume_pair(dir.path);
  INFO(r.resumed_log);
  CHECK(contains(r.resumed_log, "version_1/checkpoints/last.ckpt"));
  CHECK(r.resumed_epoch == 4);
  CHECK(test::same_state(*r.resumed, test::snapshot(*r.full)));
  CHECK_FALSE(test::same_state(*r.part, test::snapshot(*r.full)));
  set_num_threads(saved);
}

TEST_CASE("log folders: version_0, version_1 with metrics.csv, hparams.yaml and an events file") {
  test::TempDir dir("volt_trainer_");
  SynthDM dm(128, 32, 32);
  for (int i = 0; i < 2; ++i) {
    manual_seed(8);
    ClassifierModule m(small_cnn(), adam());
    Quiet q;
    auto o = q.base(dir.path);
    o.max_epochs = 2;
    o.log_every_n_steps = 1;
    Trainer t(o);
    t.fit(m, dm);
    CHECK(t.log_dir() == dir.path + "/lightning_logs/version_" + std::to_string(i));
  }
  const std::string v0 = dir.path + "/lightning_logs/version_0";
  CHECK(fs::is_directory(dir.path + "/lightning_logs/version_1"));
  std::ifstream csv(v0 + "/metrics.csv");
  std::string header;
  std::getline(csv, header);
  INFO(header);
  for (const char* col : {"epoch", "step", "train_loss", "val_loss", "val_acc"}) CHECK(contains(header, col));
  CHECK(fs::is_regular_file(v0 + "/hparams.yaml"));
  bool events = false;
  for (const auto& e : fs::directory_iterator(v0))
    events = events || contains(e.path().filename().string(), "events.out.tfevents.");
  CHECK(events);
  bool ckpt = false;
  for (const auto& e : fs::directory_iterator(v0 + "/checkpoints")) ckpt = ckpt || e.path().extension() == ".ckpt";
  CHECK(ckpt);
}

TEST_CASE("progress bar: plain lines without a terminal, a live line with one, and the profilers report") {
  test::TempDir dir("volt_trainer_");
  SynthDM dm(128, 16, 32);
  for (int tty : {-1, 1}) {
    manual_seed(9);
    ClassifierModule m(small_cnn(), adam());
    const auto names = test::names_of(m.named_parameters());
    Quiet q;
    auto o = q.base(dir.path);
    o.max_epochs = 1;
    o.log_every_n_steps = 2;
    o.progress_tty = tty;
    o.profiler = tty < 0 ? "simple" : "advanced";
    o.logger = false;
    o.enable_checkpointing = false;
    Trainer t(o);
    t.fit(m, dm);
    const std::string s = q.os.str();
    INFO(s);
    CHECK(contains(s, "Epoch 0:"));
    CHECK(contains(s, "it/s"));
    CHECK(contains(s, "img/s"));
    CHECK(contains(s, "train_loss="));
    CHECK(contains(s, "training_step"));
    if (tty < 0) {
      CHECK(s.find('\r') == std::string::npos);
      CHECK(contains(s, "Epoch 0:  33% 2/6"));
    } else {
      CHECK(s.find('\r') != std::string::npos);
      CHECK(contains(s, "forward/model/block1/0 (Conv2d)"));
      // Backward time per layer, credited to the layer and the blocks around it; the loss's own
      // nodes belong to no layer.
      CHECK(contains(s, "backward/model/block1/0 (Conv2d)"));
      CHECK(contains(s, "backward/model/block1 (Sequential)"));
      CHECK(contains(s, "backward/model (SeedCNN)"));
      CHECK(autograd::current_tag() == nullptr);  // the profiler left no tag behind
    }
    CHECK(test::names_of(m.named_parameters()) == names);  // advanced profiling leaves the model as it was
    CHECK(m.children()[0].second->children()[0].second->children()[0].second->extra_repr() == small_cnn()->block1->children()[0].second->extra_repr());
  }
}

TEST_CASE("unsupported options throw volt::Error saying why") {
  auto msg = [](auto set) {
    TrainerOptions o;
    set(o);
    return error_of([&] { Trainer t(o); });
  };
  CHECK(contains(msg([](TrainerOptions& o) { o.accelerator = "gpu"; }), "CUDA backend"));
  CHECK(contains(msg([](TrainerOptions& o) { o.gpus = 1; }), "CUDA backend"));
  CHECK(contains(msg([](TrainerOptions& o) { o.precision = "16-true"; }), "use \"16-mixed\""));
  CHECK(contains(msg([](TrainerOptions& o) { o.precision = "fp8"; }), "choices: 32, 16-mixed, bf16-mixed"));
  // Several devices or nodes mean several processes, which the launcher starts, not the Trainer.
  const std::string devices = msg([](TrainerOptions& o) { o.devices = 2; });
  INFO(devices);
  CHECK(contains(devices, "--devices 2"));
  CHECK(contains(devices, "srun"));
  const std::string nodes = msg([](TrainerOptions& o) { o.num_nodes = 2; });
  INFO(nodes);
  CHECK(contains(nodes, "2"));
  CHECK(contains(nodes, "node"));
  CHECK(contains(msg([](TrainerOptions& o) { o.strategy = "fsdp"; }), "choices"));
  CHECK(contains(msg([](TrainerOptions& o) { o.profiler = "pytorch"; }), "simple, advanced"));
  CHECK(contains(msg([](TrainerOptions& o) { o.gradient_clip_algorithm = "l1"; }), "norm, value"));
  CHECK(contains(msg([](TrainerOptions& o) { o.limit_train_batches = 1.5; }), "fraction"));
  TrainerOptions ok;
  ok.strategy = "dp";
  ok.devices = -1;
  ok.accelerator = "cpu";
  CHECK_NOTHROW(Trainer{ok});
}
