// Fixtures of the Trainer tests (test_trainer.cpp, test_requeue.cpp): a small synthetic data module,
// a small seed CNN, a module that counts its steps, and quiet Trainer options.
#pragma once
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "data/datamodule.h"
#include "data/synthetic.h"
#include "dist/callbacks.h"
#include "dist/trainer.h"
#include "engine/ops.h"
#include "layers/optim/scheduler.h"
#include "engine/random.h"
#include "layers/models/seed_cnn.h"

namespace volt::test {


// 3 x 16 x 16 synthetic images of 4 classes; validation and test share the held-out part.
class SynthDM : public DataModule {
 public:
  SynthDM(int64_t size = 256, int64_t batch = 32, int64_t val = 64) : DataModule(opts(batch)), size_(size), nval_(val) {
    eval_transform_.mean = {0.5f};
    eval_transform_.std = {0.5f};
    train_transform_ = eval_transform_;
  }
  static DataModuleOptions opts(int64_t batch) {
    DataModuleOptions o;
    o.batch_size = batch;
    o.num_workers = 0;
    o.seed = 3;
    return o;
  }
  std::string name() const override { return "synth"; }
  void setup(const std::string&) override {
    if (train_) return;
    SyntheticOptions s;
    s.size = size_;
    s.height = s.width = 16;
    s.num_classes = 4;
    s.noise = 0.8f;
    s.seed = 11;
    split(std::make_shared<SyntheticDataset>(s), nval_);
    test_ = val_;
  }
  Shape image_shape() const override { return {3, 16, 16}; }
  int64_t num_classes() const override { return 4; }

 private:
  int64_t size_, nval_;
};

inline std::shared_ptr<SeedCNN> small_cnn(double dropout = 0.2) {
  SeedCNNOptions o;
  o.height = o.width = 16;
  o.num_classes = 4;
  o.dropout = dropout;
  return std::make_shared<SeedCNN>(o);
}

// Counts the steps and can log a scripted per-epoch "score".
class Counting : public ClassifierModule {
 public:
  using ClassifierModule::ClassifierModule;
  Tensor training_step(const Batch& b, int64_t i) override {
    ++train_calls;
    return ClassifierModule::training_step(b, i);
  }
  void validation_step(const Batch& b, int64_t i) override {
    ++val_calls;
    ClassifierModule::validation_step(b, i);
    log("bs", double(b.labels.numel()));
  }
  void test_step(const Batch& b, int64_t i) override {
    ++test_calls;
    ClassifierModule::test_step(b, i);
  }
  void on_validation_epoch_end() override {
    if (!scores.empty()) log("score", scores[size_t(std::min<int64_t>(current_epoch(), int64_t(scores.size()) - 1))]);
  }
  int64_t train_calls = 0, val_calls = 0, test_calls = 0;
  std::vector<double> scores;
};

// A classifier whose loss is Inf at batch inf_batch of epoch 0 (-1: never): a step 16-mixed skips.
class InfAt : public ClassifierModule {
 public:
  InfAt(std::shared_ptr<Module> model, const ClassifierOptions& o, int64_t inf_batch)
      : ClassifierModule(std::move(model), o), inf_batch_(inf_batch) {}
  Tensor training_step(const Batch& b, int64_t i) override {
    const Tensor l = ClassifierModule::training_step(b, i);
    return current_epoch() == 0 && i == inf_batch_ ? mul(l, std::numeric_limits<float>::infinity()) : l;
  }

 private:
  int64_t inf_batch_;
};

struct Quiet {
  std::ostringstream os;
  TrainerOptions base(const std::string& root) {
    TrainerOptions o;
    o.default_root_dir = root;
    o.out = &os;
    o.enable_model_summary = false;
    return o;
  }
  // base() for a fit of `epochs` on the CPU without a sanity check or a progress bar.
  TrainerOptions cpu_fit(const std::string& root, int64_t epochs) {
    TrainerOptions o = base(root);
    o.accelerator = "cpu";
    o.max_epochs = epochs;
    o.num_sanity_val_steps = 0;
    o.enable_progress_bar = false;
    return o;
  }
};

inline ClassifierOptions adam(double lr = 1e-3) {
  ClassifierOptions c;
  c.lr = lr;
  return c;
}

// A classifier whose loss is Inf on one chosen batch of the first epoch, with a per-step LinearLR.
class InfOnce : public InfAt {
 public:
  explicit InfOnce(int64_t bad_batch) : InfAt(small_cnn(0.0), adam(1e-3), bad_batch) {}
  OptimizerConfig configure_optimizers() override {
    OptimizerConfig c = ClassifierModule::configure_optimizers();
    c.scheduler = std::make_shared<LinearLR>(*c.optimizer, 0.5, 1.0, 100);
    c.interval = "step";
    sched = c.scheduler;
    return c;
  }
  std::shared_ptr<LRScheduler> sched;
};

// The learning check: the small CNN (Adam 3e-3, seed 1) fitted 3 epochs on SynthDM in `precision`,
// with the validation accuracy before and after. The Trainer, module and data stay for more checks.
struct LearningFit {
  std::unique_ptr<SynthDM> dm;
  std::unique_ptr<Counting> m;
  Quiet q;
  std::unique_ptr<Trainer> t;
  double before = 0, after = 0;
};
inline std::unique_ptr<LearningFit> run_learning_fit(const std::string& root, const std::string& precision = "32") {
  auto f = std::make_unique<LearningFit>();
  manual_seed(1);
  f->dm = std::make_unique<SynthDM>();
  f->m = std::make_unique<Counting>(small_cnn(), adam(3e-3));
  auto o = f->q.base(root);
  o.max_epochs = 3;
  o.seed = 1;
  o.precision = precision;
  f->t = std::make_unique<Trainer>(o);
  f->before = f->t->validate(*f->m, *f->dm)[0].at("val_acc");
  f->t->fit(*f->m, *f->dm);
  f->after = f->t->callback_metrics().at("val_acc");
  return f;
}

// The exact-resume experiment: an uninterrupted 4-epoch fit, a 2-epoch fit writing last.ckpt, and a
// fit to 4 epochs resumed from it (same seed, dropout and shuffling on), all under `root`; the loss
// is Inf at batch inf_batch of the first epoch (-1: never).
struct ResumeRuns {
  std::unique_ptr<ClassifierModule> full, part, resumed;
  std::string resumed_log;  // what the resumed fit printed
  int64_t resumed_epoch = 0;
};
inline ResumeRuns run_resume_pair(const std::string& root, const std::string& precision = "32",
                                  int64_t inf_batch = -1, const std::string& accelerator = "") {
  SynthDM dm(192, 32, 32);
  auto make = [inf_batch] {
    manual_seed(21);
    return std::make_unique<InfAt>(small_cnn(0.3), adam(2e-3), inf_batch);
  };
  auto opts = [&](Quiet& q, int64_t epochs) {
    auto o = q.base(root);
    o.max_epochs = epochs;
    o.seed = 21;
    o.precision = precision;
    if (!accelerator.empty()) o.accelerator = accelerator;
    ModelCheckpointOptions mo;
    mo.save_last = true;
    o.callbacks = {std::make_shared<ModelCheckpoint>(mo)};
    return o;
  };
  ResumeRuns r;
  Quiet q1, q2, q3;
  r.full = make();
  Trainer(opts(q1, 4)).fit(*r.full, dm);
  r.part = make();
  Trainer(opts(q2, 2)).fit(*r.part, dm);
  r.resumed = make();
  auto o3 = opts(q3, 4);
  o3.resume = "last";
  Trainer t3(o3);
  t3.fit(*r.resumed, dm);
  r.resumed_log = q3.os.str();
  r.resumed_epoch = t3.current_epoch();
  return r;
}

}  // namespace volt::test
