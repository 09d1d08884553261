// The Trainer (dist/trainer.h) on the CPU with small synthetic data: learning, fast_dev_run, batch
// limits and validation counts, gradient clipping and accumulation, epoch means,
// exact resume, log folders, the progress bar and bad options (the callbacks: test_callbacks.cpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "data/datamodule.h"
#include "data/synthetic.h"
#include "dist/checkpoint.h"
#include "dist/progress_bar.h"
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


TEST_CASE("ClassifierModule: weight decay unset is the optimizer's default, and 0 is 0 (adamw too)") {
  struct Case {
    std::string optimizer;
    std::optional<double> asked;
    double want;
  };
  for (const Case& c : {Case{"adamw", std::nullopt, 1e-2}, Case{"adamw", 0.0, 0.0}, Case{"adamw", 0.05, 0.05},
                        Case{"adam", std::nullopt, 0.0}, Case{"adam", 1e-4, 1e-4}, Case{"sgd", std::nullopt, 0.0},
                        Case{"sgd", 5e-4, 5e-4}}) {
    CAPTURE(c.optimizer);
    CAPTURE(c.asked.value_or(-1));
    ClassifierOptions o;
    o.optimizer = c.optimizer;
    o.weight_decay = c.asked;
    ClassifierModule m(small_cnn(), o);
    const OptimizerConfig cfg = m.configure_optimizers();
    REQUIRE(cfg.optimizer);
    CHECK(cfg.optimizer->state_dict().reals.at("weight_decay") == c.want);
    CHECK(std::get<double>(m.hyperparameters().at("weight_decay")) == c.want);  // what hparams.yaml says
  }
}

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

  // A smoke test validates whatever the validation pace (Lightning's fast_dev_run sets it to once at
  // the end of its one epoch).
  Counting paced(small_cnn(), adam());
  o.check_val_every_n_epoch = 2;
  o.val_check_interval = 1;
  Trainer(o).fit(paced, dm);
  CHECK(paced.train_calls == 2);
  CHECK(paced.val_calls == 2);
}

TEST_CASE("max_steps without max_epochs is not capped at Lightning's 1000 default epochs") {
  test::TempDir dir("volt_trainer_");
  manual_seed(2);
  SynthDM dm(24, 4, 4);
  Counting m(small_cnn(), adam());
  Quiet q;
  auto o = q.cpu_fit(dir.path, 1);
  o.max_epochs.reset();   // Lightning's max_epochs=None: 1000, or no limit when max_steps is set
  o.max_steps = 1003;
  o.limit_train_batches = 1;  // one step an epoch
  o.limit_val_batches = 0;
  o.logger = false;
  o.enable_checkpointing = false;
  Trainer t(o);
  t.fit(m, dm);
  CHECK(t.global_step() == 1003);
  CHECK(t.current_epoch() == 1003);
}

namespace {
// metrics.csv as rows of cells (the header first), and the cell of `column` in row `r`.
std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::vector<std::string>> rows;
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) cells.push_back(c);
    rows.push_back(cells);
  }
  return rows;
}
std::string csv_cell(const std::vector<std::vector<std::string>>& csv, size_t r, const std::string& column) {
  REQUIRE(!csv.empty());
  const auto at = std::find(csv[0].begin(), csv[0].end(), column);
  REQUIRE(at != csv[0].end());
  const size_t i = size_t(at - csv[0].begin());
  return i < csv.at(r).size() ? csv[r][i] : std::string();
}
}  // namespace

TEST_CASE("Trainer.validate logs its means to the loggers, as test does and Lightning's validate") {
  test::TempDir dir("volt_trainer_");
  manual_seed(2);
  SynthDM dm(64, 32, 32);
  Counting m(small_cnn(), adam());
  Quiet q;
  Trainer t(q.cpu_fit(dir.path, 1));
  t.fit(m, dm);
  const size_t rows = read_csv(t.log_dir() + "/metrics.csv").size();
  const auto results = t.validate(m, dm);
  const auto csv = read_csv(t.log_dir() + "/metrics.csv");
  REQUIRE(csv.size() == rows + 1);
  CHECK(std::stod(csv_cell(csv, csv.size() - 1, "val_loss")) == doctest::Approx(results.at(0).at("val_loss")));
  CHECK(t.logged_metrics().at("val_loss") == results.at(0).at("val_loss"));
}

TEST_CASE("a logged \"step\" is the loggers' step and a logged \"epoch\" their epoch, as Lightning's") {
  class LogsAxes : public ClassifierModule {
   public:
    LogsAxes() : ClassifierModule(small_cnn(), adam()) {}
    Tensor training_step(const Batch& b, int64_t i) override {
      log("epoch", 40.0 + double(current_epoch()));
      log("step", 1000.0 + double(global_step()));
      return ClassifierModule::training_step(b, i);
    }
  };
  test::TempDir dir("volt_trainer_");
  manual_seed(2);
  SynthDM dm(64, 32, 32);
  LogsAxes m;
  Quiet q;
  auto o = q.cpu_fit(dir.path, 1);
  o.log_every_n_steps = 1;
  Trainer t(o);
  t.fit(m, dm);  // the CSV logger refused both names ("a reserved column")
  const auto csv = read_csv(t.log_dir() + "/metrics.csv");
  REQUIRE(csv.size() >= 2);
  CHECK(std::count(csv[0].begin(), csv[0].end(), "step") == 1);
  CHECK(csv_cell(csv, 1, "step") == "1000");
  CHECK(csv_cell(csv, 1, "epoch") == "40");
}

TEST_CASE("on_step values logged in validation_step reach the loggers per batch, as Lightning's") {
  class StepInEval : public ClassifierModule {
   public:
    StepInEval() : ClassifierModule(small_cnn(), adam()) {}
    void validation_step(const Batch& b, int64_t i) override {
      ClassifierModule::validation_step(b, i);
      LogOptions step_only, both;
      step_only.on_step = true;
      step_only.on_epoch = false;
      both.on_step = both.on_epoch = true;
      log("val_batch", 10.0 + double(i), step_only);
      log("val_twice", 20.0 + double(i), both);
    }
  };
  test::TempDir dir("volt_trainer_");
  manual_seed(2);
  SynthDM dm(64, 16, 48);  // 3 validation batches
  StepInEval m;
  Quiet q;
  Trainer t(q.cpu_fit(dir.path, 1));
  t.fit(m, dm);  // the per-batch values were dropped
  const auto csv = read_csv(t.log_dir() + "/metrics.csv");
  std::vector<double> batch_values, twice, steps;
  for (size_t r = 1; r < csv.size(); ++r)
    if (!csv_cell(csv, r, "val_batch").empty()) {
      batch_values.push_back(std::stod(csv_cell(csv, r, "val_batch")));
      twice.push_back(std::stod(csv_cell(csv, r, "val_twice_step")));
      steps.push_back(std::stod(csv_cell(csv, r, "step")));
    }
  CHECK(batch_values == std::vector<double>{10, 11, 12});
  CHECK(twice == std::vector<double>{20, 21, 22});
  CHECK(steps == std::vector<double>{0, 1, 2});  // the evaluation batches seen, as Lightning's
  CHECK(std::stod(csv_cell(csv, csv.size() - 1, "val_twice_epoch")) == doctest::Approx(21.0));
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
      CHECK(contains(s, "forward/model (SeedCNN)"));  // (ClassifierModule's call of its model is seen)
      CHECK(autograd::current_tag() == nullptr);  // the profiler left no tag behind
    }
    CHECK(test::names_of(m.named_parameters()) == names);  // advanced profiling leaves the model as it was
    CHECK(m.children()[0].second->children()[0].second->children()[0].second->extra_repr() == small_cnn()->block1->children()[0].second->extra_repr());
  }
}

namespace {
// The "N.NN it/s" of a progress line.
double its_of(const std::string& line) {
  const size_t at = line.find(" it/s");
  REQUIRE(at != std::string::npos);
  const size_t from = line.rfind(' ', at - 1);
  return std::stod(line.substr(from + 1, at - from - 1));
}
}  // namespace

TEST_CASE("progress bar: a line resumed in mid-epoch rates only the batches run since, and is not printed twice") {
  std::ostringstream os;
  ProgressBar bar(os, 0, 1, 80);
  // Resumed at batch 1,000,000 of 2,000,000: one batch in at least 20 ms is at most 50 it/s (counting
  // the batches before the resume would say 1,000,001 batches in that time).
  bar.start("Epoch 3", 2000000, 1000000);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  bar.update(1000001, 32, {});
  INFO(os.str());
  CHECK(contains(os.str(), "Epoch 3:  50% 1000001/2000000"));
  CHECK(its_of(os.str()) <= 50.0);
  // Stopped on a step whose line was just printed (max_steps, EarlyStopping): not printed again.
  std::ostringstream os2;
  ProgressBar plain(os2, 0, 5, 80);
  const std::map<std::string, double> m = {{std::string(300, 'n'), 0.25}};
  plain.start("Epoch 0", 20);
  plain.update(5, 8, m);
  plain.finish(m);
  const std::string out = os2.str();
  INFO(out);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  CHECK(contains(out, std::string(300, 'n') + "=0.25]"));  // a long name keeps its value
  // With other values (the epoch means), the epoch's last line is printed.
  plain.start("Epoch 1", 20);
  plain.update(5, 8, m);
  plain.finish({{"train_loss_epoch", 0.5}});
  CHECK(contains(os2.str(), "Epoch 1:  25% 5/20"));
  CHECK(contains(os2.str(), "train_loss_epoch=0.5]"));
}

TEST_CASE("progress bar: a message during the epoch gets its own line, and the live bar goes on below it") {
  std::ostringstream os;
  ProgressBar bar(os, 1, 50, 100);
  bar.start("Epoch 0", 100);
  bar.update(100, 32, {});  // drawn (the last batch always is)
  bar.interject();
  os << "CUDA graphs: the training step is captured\n";
  bar.interject();  // nothing drawn since: no empty line
  bar.finish({});
  const std::string s = os.str();
  INFO(s);
  CHECK(contains(s, "img/s]\nCUDA graphs: the training step is captured\n\rEpoch 0: 100%"));
  ProgressBar plain(os, 0, 50, 100);  // plain lines: nothing to end
  plain.start("Epoch 1", 10);
  const size_t before = os.str().size();
  plain.interject();
  CHECK(os.str().size() == before);
}

TEST_CASE("the model summary counts frozen parameters as non-trainable, and profilers report each stage's own rows") {
  test::TempDir dir("volt_trainer_");
  SynthDM dm(64, 16, 32);
  manual_seed(9);
  auto cnn = small_cnn();
  int64_t frozen = 0;
  for (Tensor& p : cnn->block1->parameters()) {
    p.requires_grad_(false);
    frozen += p.numel();
  }
  ClassifierModule m(cnn, adam());
  const int64_t total = m.num_parameters();
  Quiet q;
  auto o = q.cpu_fit(dir.path, 1);
  o.enable_model_summary = true;
  o.profiler = "simple";
  o.logger = false;
  o.enable_checkpointing = false;
  Trainer t(o);
  t.test(m, dm);
  const std::string tested = q.os.str();
  INFO(tested);
  CHECK(contains(tested, "Profiler report (simple, test)"));
  CHECK(contains(tested, "test_step"));
  q.os.str("");
  t.fit(m, dm);
  t.fit(m, dm);
  const std::string s = q.os.str();
  INFO(s);
  CHECK(contains(s, std::to_string(total - frozen) + " trainable parameters, " + std::to_string(frozen) +
                        " non-trainable, " + std::to_string(total) + " total"));
  CHECK(contains(s, "logs: (none: logger off)\n"));  // (logger and checkpointing off: nothing is written)
  // The frozen parameters are the optimizer's too, and stay as they were.
  const Tensor w1 = cnn->block1->parameters()[0];
  manual_seed(9);
  auto init = small_cnn();
  CHECK(test::same_values(w1, init->block1->parameters()[0]));
  CHECK_FALSE(test::same_values(cnn->fc_layers->parameters()[0], init->fc_layers->parameters()[0]));
  CHECK(!contains(s, "test_step"));  // the earlier test's rows are not the fit's
  const size_t last = s.rfind("Profiler report (simple, fit)");
  REQUIRE(last != std::string::npos);
  REQUIRE(last != s.find("Profiler report (simple, fit)"));  // one report per fit
  // The second fit's report: one epoch, under 100% of its time (not the two fits' epochs).
  const std::string second = s.substr(last);
  const size_t row = second.find("run_training_epoch");
  REQUIRE(row != std::string::npos);
  const std::string line = second.substr(row, second.find('\n', row) - row);
  INFO(line);
  CHECK(contains(line, " 1 | "));
  CHECK(std::stod(line.substr(line.rfind('|') + 1)) <= 100.0);
}

namespace {
// Frozen first block, unfrozen from epoch 1 on (the fine-tuning recipe).
class UnfreezeAtEpoch1 : public ClassifierModule {
 public:
  UnfreezeAtEpoch1() : ClassifierModule(small_cnn(0.0), adam()) {}
  void on_fit_start() override {
    for (Tensor& p : block1().parameters()) p.requires_grad_(false);
  }
  void on_train_epoch_start() override {
    if (current_epoch() == 1)
      for (Tensor& p : block1().parameters()) p.requires_grad_(true);
    first_weight.push_back(block1().parameters()[0].clone());
  }
  Module& block1() { return *children()[0].second->children()[0].second; }
  std::vector<Tensor> first_weight;  // at each epoch's start
};
}  // namespace

TEST_CASE("a parameter frozen at the fit's start trains once unfrozen (the optimizer holds it, as PyTorch's)") {
  test::TempDir dir("volt_trainer_");
  SynthDM dm(64, 16, 32);
  manual_seed(9);
  UnfreezeAtEpoch1 m;
  Quiet q;
  auto o = q.cpu_fit(dir.path, 2);
  o.logger = false;
  o.enable_checkpointing = false;
  Trainer t(o);
  t.fit(m, dm);
  REQUIRE(m.first_weight.size() == 2);
  CHECK(test::same_values(m.first_weight[0], m.first_weight[1]));  // frozen through epoch 0
  CHECK_FALSE(test::same_values(m.first_weight[1], m.block1().parameters()[0]));  // trained in epoch 1
}

TEST_CASE("unsupported options throw volt::Error saying why") {
  auto msg = [](auto set) {
    TrainerOptions o;
    set(o);
    return error_of([&] { Trainer t(o); });
  };
  CHECK(contains(msg([](TrainerOptions& o) { o.accelerator = "gpu"; }), "CUDA backend"));
  CHECK(contains(msg([](TrainerOptions& o) { o.gpus = 1; }), "CUDA backend"));
  // gpus=N is devices=N (the tutorial's flag), so the two cannot disagree; -1 is every GPU.
  CHECK(contains(msg([](TrainerOptions& o) { o.gpus = 2, o.devices = 1; }), "gpus=2 and devices=1 disagree"));
  CHECK(contains(msg([](TrainerOptions& o) { o.gpus = 1, o.accelerator = "cpu"; }), "accelerator is \"cpu\""));
  CHECK(contains(msg([](TrainerOptions& o) { o.gpus = -2; }), "gpus must be a count >= 1, -1"));
  CHECK(contains(msg([](TrainerOptions& o) { o.num_nodes = -1; }), "num_nodes must be a count >= 1 or 0"));
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
  CHECK(contains(msg([](TrainerOptions& o) { o.default_root_dir.clear(); }), "default_root_dir is empty"));
  TrainerOptions ok;
  ok.strategy = "dp";
  ok.devices = -1;
  ok.accelerator = "cpu";
  CHECK_NOTHROW(Trainer{ok});
}

TEST_CASE("progress bar: the live line is cut to the terminal's width, so that a redraw never leaves a wrapped part") {
  std::ostringstream os;
  ProgressBar bar(os, 1, 50, 60);
  bar.start("Epoch 10", 1563);
  const std::map<std::string, double> metrics = {{"train_loss", 0.4321}, {"val_acc", 0.8765}, {"val_loss", 0.9}};
  bar.update(700, 32, metrics);
  bar.update(1563, 32, metrics);
  const std::string live = os.str();
  bar.finish(metrics);  // the last line is whole: nothing redraws it
  const std::string all = os.str();
  size_t segments = 0;
  for (size_t at = live.find('\r'); at != std::string::npos; at = live.find('\r', at + 1)) {
    const size_t next = live.find('\r', at + 1);
    const std::string seg = live.substr(at + 1, next == std::string::npos ? std::string::npos : next - at - 1);
    INFO(seg);
    CHECK(seg.size() <= 59);
    CHECK(contains(seg, "Epoch 10: "));
    ++segments;
  }
  CHECK(segments >= 1);  // (a redraw at most every 0.1 s, and at the end)
  CHECK(contains(all.substr(live.size()), "val_loss=0.9]"));
}
