// The Trainer's callbacks on the CPU with small synthetic data: ModelCheckpoint's top-k, last.ckpt
// and test(ckpt="best"), EarlyStopping, the order they run in, their state in checkpoints (keys,
// resume into another version folder, fields that do not parse) and checkpoint file names.
#include <doctest/doctest.h>

#include <limits>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "dist/callbacks.h"
#include "dist/checkpoint.h"
#include "dist/trainer.h"
#include "engine/random.h"
#include "tests/test_util.h"
#include "tests/trainer_fixtures.h"

using namespace volt;
using namespace volt::test;
namespace fs = std::filesystem;

namespace {
// What these cases' fits share: `epochs` epochs in `root`, no sanity check, no logger, resuming from
// `resume` ("": a fresh start).
TrainerOptions scored_options(Quiet& q, const std::string& root, int64_t epochs, const std::string& resume) {
  TrainerOptions o = q.base(root);
  o.max_epochs = epochs;
  o.num_sanity_val_steps = 0;
  o.logger = false;
  o.resume = resume;
  return o;
}
}  // namespace

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
  const std::set<std::string> files = names_in(t.log_dir() + "/checkpoints");
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

TEST_CASE("ModelCheckpoint every_n_epochs paces the ranked files, and last.ckpt follows every epoch as in Lightning") {
  test::TempDir dir("volt_trainer_");
  manual_seed(6);
  SynthDM dm(128, 32, 32);  // 3 training batches per epoch
  Counting m(small_cnn(), adam());
  Quiet q;
  auto o = scored_options(q, dir.path, 3, "");
  ModelCheckpointOptions mo;
  mo.save_top_k = -1;
  mo.save_last = true;
  mo.every_n_epochs = 2;
  auto mc = std::make_shared<ModelCheckpoint>(mo);
  o.callbacks = {mc};
  Trainer t(o);
  t.fit(m, dm);
  CHECK(names_in(t.log_dir() + "/checkpoints") == std::set<std::string>{"epoch=1-step=6.ckpt", "last.ckpt"});
  CHECK(load_checkpoint(mc->last_model_path()).global_step == 9);  // the third epoch's, off the pace
  // Off the pace with no save_last: nothing at all.
  mo.save_last = false;
  mo.every_n_epochs = 5;
  auto none = std::make_shared<ModelCheckpoint>(mo);
  o.callbacks = {none};
  Trainer t2(o);
  t2.fit(m, dm);
  CHECK(names_in(t2.log_dir() + "/checkpoints").empty());
}

TEST_CASE("test(ckpt=last) takes this trainer's last.ckpt, never another run's under the same root") {
  test::TempDir dir("volt_trainer_");
  manual_seed(6);
  SynthDM dm(128, 32, 32);
  Counting m(small_cnn(), adam());
  Quiet q;
  auto o = scored_options(q, dir.path, 1, "");
  ModelCheckpointOptions mo;
  mo.save_last = true;
  o.callbacks = {std::make_shared<ModelCheckpoint>(mo)};
  Trainer a(o);
  a.fit(m, dm);  // version_0/checkpoints/last.ckpt
  a.test(m, dm, "last");
  CHECK(contains(q.os.str(), "Testing with the weights of " + a.log_dir() + "/checkpoints/last.ckpt"));

  Quiet q2;
  auto o2 = scored_options(q2, dir.path, 1, "");
  o2.fast_dev_run = 2;  // no checkpoint
  Trainer b(o2);
  b.fit(m, dm);
  const StateDict trained = snapshot(m);
  b.test(m, dm, "last");
  CHECK(contains(q2.os.str(), "test(ckpt=\"last\"): this trainer saved no last checkpoint"));
  CHECK_FALSE(contains(q2.os.str(), "Testing with the weights of"));
  CHECK(same_state(m, trained));
}

namespace {
// Logs a scripted "score" per validation (not per epoch), counting its validations.
class ScoredPerValidation : public ClassifierModule {
 public:
  explicit ScoredPerValidation(std::vector<double> scores)
      : ClassifierModule(small_cnn(), adam()), scores_(std::move(scores)) {}
  void on_validation_epoch_end() override {
    log("score", scores_[std::min(validations_++, scores_.size() - 1)]);
  }

 private:
  std::vector<double> scores_;
  size_t validations_ = 0;
};
}  // namespace

TEST_CASE("validations within an epoch: ModelCheckpoint ranks and EarlyStopping counts each, on its own weights") {
  // 5 training batches an epoch, validated after batches 2 and 4 (steps 2, 4, then 7, 9, ...): as in
  // Lightning, the callbacks act after each of these, not at the epoch's end with the last one's
  // score beside weights trained further.
  test::TempDir dir("volt_trainer_");
  manual_seed(6);
  SynthDM dm(192, 32, 32);
  ScoredPerValidation m({3, 5, 1, 4});
  Quiet q;
  auto o = scored_options(q, dir.path, 2, "");
  o.val_check_interval = 2;
  ModelCheckpointOptions mo;
  mo.monitor = "score";
  mo.save_top_k = 2;
  mo.filename = "epoch={epoch}-step={step}-{score:.0f}";
  auto mc = std::make_shared<ModelCheckpoint>(mo);
  o.callbacks = {mc};
  Trainer t(o);
  t.fit(m, dm);
  CHECK(names_in(t.log_dir() + "/checkpoints") ==
        std::set<std::string>{"epoch=0-step=2-score=3.ckpt", "epoch=1-step=7-score=1.ckpt"});
  CHECK(load_checkpoint(mc->best_model_path()).global_step == 7);  // the weights that scored 1
  // Written in mid-epoch, it resumes there: the rest of the fit ends with the whole fit's weights.
  const StateDict whole = snapshot(m);
  ScoredPerValidation resumed_m({3, 5, 1, 4});
  Quiet q3;
  auto o3 = scored_options(q3, dir.path, 2, mc->best_model_path());
  o3.val_check_interval = 2;
  Trainer resumed(o3);
  resumed.fit(resumed_m, dm);
  CHECK(contains(q3.os.str(), "at epoch 1, step 7"));
  CHECK(same_state(resumed_m, whole));

  // Patience in validations: 1 improves, the next two do not: the fit stops at the third, mid-epoch.
  ScoredPerValidation flat({1, 1, 1, 1, 1, 1});
  Quiet q2;
  auto o2 = scored_options(q2, dir.path, 4, "");
  o2.val_check_interval = 2;
  o2.enable_checkpointing = false;
  EarlyStoppingOptions eo;
  eo.monitor = "score";
  eo.patience = 2;
  auto es = std::make_shared<EarlyStopping>(eo);
  o2.callbacks = {es};
  Trainer t2(o2);
  t2.fit(flat, dm);
  CHECK(es->stopped_epoch() == 1);
  CHECK(t2.global_step() == 7);
}

TEST_CASE("EarlyStopping stops after patience epochs without improvement, and on NaN") {
  test::TempDir dir("volt_trainer_");
  manual_seed(7);
  SynthDM dm(128, 32, 32);
  struct Outcome {
    int64_t stopped_epoch, end_epoch;
    std::string reason, printed;
  };
  auto fit = [&](std::vector<double> scores, int64_t patience) {
    Counting m(small_cnn(), adam());
    m.scores = std::move(scores);
    Quiet q;
    auto o = scored_options(q, dir.path, 8, "");
    o.enable_checkpointing = false;
    EarlyStoppingOptions eo;
    eo.monitor = "score";
    eo.patience = patience;
    auto es = std::make_shared<EarlyStopping>(eo);
    o.callbacks = {es};
    Trainer t(o);
    t.fit(m, dm);
    return Outcome{es->stopped_epoch(), t.current_epoch(), es->reason(), q.os.str()};
  };
  const Outcome rising = fit({1, 2, 3, 4, 5, 6, 7, 8}, 2);
  CHECK(rising.stopped_epoch == 2);
  CHECK(rising.end_epoch == 3);
  CHECK(contains(rising.printed, "did not improve"));
  const Outcome nan = fit({1, NAN}, 5);
  CHECK(nan.stopped_epoch == 1);
  CHECK(contains(nan.reason, "not finite"));
}

TEST_CASE("EarlyStopping: a later fit that does not stop does not report the earlier fit's stop") {
  test::TempDir dir("volt_trainer_");
  manual_seed(7);
  SynthDM dm(128, 32, 32);
  EarlyStoppingOptions eo;
  eo.monitor = "score";
  eo.mode = "max";
  eo.patience = 1;
  auto es = std::make_shared<EarlyStopping>(eo);
  Counting m(small_cnn(), adam());
  m.scores = {5, 1, 1, 1};  // stops at epoch 1
  Quiet q;
  auto o = scored_options(q, dir.path, 4, "");
  o.enable_checkpointing = false;
  o.callbacks = {es};
  Trainer t(o);
  t.fit(m, dm);
  REQUIRE(es->stopped_epoch() == 1);
  REQUIRE(contains(q.os.str(), "Signaling Trainer to stop"));
  m.scores = {6, 7, 8, 9};  // better than the best so far at every epoch: runs to its end
  q.os.str("");
  t.fit(m, dm);
  CHECK(t.current_epoch() == 4);
  CHECK(es->stopped_epoch() == -1);
  CHECK(es->reason().empty());
  CHECK(!contains(q.os.str(), "Signaling Trainer to stop"));
}

// As Lightning, a fit that validates ranks checkpoints and checks EarlyStopping after its validations:
// the epochs between them (check_val_every_n_epoch, max_steps in mid-epoch) have no new value. Those
// epochs used to fail the fit with "monitor was not logged", or rank by the last validation's value.
TEST_CASE("ModelCheckpoint and EarlyStopping act after validations, and a fit without any saves last.ckpt") {
  test::TempDir dir("volt_trainer_");
  manual_seed(8);
  SynthDM dm(128, 32, 32);  // 4 training batches per epoch
  auto checkpointed = [&](const std::string& monitor, const std::function<void(TrainerOptions&)>& tweak,
                          std::vector<double> scores, std::string* printed = nullptr) {
    Counting m(small_cnn(), adam());
    m.scores = std::move(scores);
    Quiet q;
    auto o = scored_options(q, dir.path, 4, "");
    ModelCheckpointOptions mo;
    mo.monitor = monitor;
    mo.save_last = true;
    mo.filename = "epoch={epoch}";
    auto mc = std::make_shared<ModelCheckpoint>(mo);
    o.callbacks = {mc};
    tweak(o);
    Trainer t(o);
    t.fit(m, dm);
    if (printed) *printed = q.os.str();
    return names_in(t.log_dir() + "/checkpoints");
  };
  std::string printed;
  // Validated at epochs 1 and 3: ranked there only (epoch 2's 0.5 is not a validation's score).
  const auto every2 = checkpointed("score", [](TrainerOptions& o) { o.check_val_every_n_epoch = 2; },
                                   {9, 3, 0.5, 1}, &printed);
  CHECK(every2 == std::set<std::string>{"epoch=3.ckpt", "last.ckpt"});
  CHECK(contains(printed, "ModelCheckpoint: no validation in epoch 0: the top-1 checkpoints by \"score\" are "
                          "saved after validations (last.ckpt at every save)"));
  // max_steps ends the fit before the first validation: last.ckpt, nothing ranked.
  CHECK(checkpointed("val_loss", [](TrainerOptions& o) { o.max_steps = 2; }, {}) ==
        std::set<std::string>{"last.ckpt"});
  // No validation at all: said once, last.ckpt every epoch.
  CHECK(checkpointed("val_loss", [](TrainerOptions& o) { o.limit_val_batches = 0; }, {}, &printed) ==
        std::set<std::string>{"last.ckpt"});
  CHECK(contains(printed, "monitor \"val_loss\" was not logged"));
  CHECK(contains(printed, "this fit has no validation: no top-k checkpoints"));
  // After a validation, a name it did not log is a mistake.
  CHECK(contains(error_of([&] { checkpointed("val_los", [](TrainerOptions&) {}, {}); }),
                 "ModelCheckpoint: monitor \"val_los\" was not logged"));

  // EarlyStopping's patience counts checks: validated at epochs 1, 3, 5 (scores 2, 4, 6: no
  // improvement after the first), patience 2 stops at epoch 5.
  Counting m(small_cnn(), adam());
  m.scores = {1, 2, 3, 4, 5, 6, 7, 8};
  Quiet q;
  auto o = scored_options(q, dir.path, 8, "");
  o.enable_checkpointing = false;
  o.check_val_every_n_epoch = 2;
  EarlyStoppingOptions eo;
  eo.monitor = "score";
  eo.patience = 2;
  auto es = std::make_shared<EarlyStopping>(eo);
  o.callbacks = {es};
  Trainer t(o);
  t.fit(m, dm);
  CHECK(es->stopped_epoch() == 5);
  CHECK(t.current_epoch() == 6);
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
    auto o = scored_options(q, dir.path, epochs, resume);
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
    auto o = scored_options(q, dir / "root", epochs, resume);
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
    auto o = scored_options(q, root, epochs, resume);
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
    auto o = scored_options(q, dir.path, epochs, resume);
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
  CHECK(name("{x:.4f}", -std::numeric_limits<double>::quiet_NaN()) == "x=nan");  // (printf: "-nan")
  CHECK(name("{x:.4f}", -INFINITY) == "x=-inf");
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
    auto o = scored_options(q, dir.path, 2, resume);
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
  // The Trainer's own state there too: the callbacks' metrics.
  Checkpoint c2 = load_checkpoint(t.checkpoint_callback()->best_model_path());
  REQUIRE(c2.metadata.count("trainer.callback_metric.score") == 1);
  c2.metadata["trainer.callback_metric.score"] = "high";
  save_checkpoint(dir / "bad2.ckpt", c2);
  Quiet q3;
  CHECK(contains(error_of([&] { Trainer(opts(q3, dir / "bad2.ckpt")).fit(fresh, dm); }),
                 "Trainer: checkpoint state \"trainer.callback_metric.score\" = \"high\" is not a number"));
  CHECK(test::same_state(fresh, before));
  // The mid-epoch sums of the training metrics: each entry of a name, a positive weight.
  for (const auto& [key, value, says] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"trainer.epoch_weight.m", "0", "\"trainer.epoch_weight.m\" = \"0\" is not a positive batch-size total"},
           {"trainer.epoch_shown.m", "bar", "\"trainer.epoch_shown.m\" = \"bar\" is not one of"},
           {"trainer.epoch_sum.m", "1.5", "epoch sums of \"m\" lack their trainer.epoch_weight.m entry"}}) {
    Checkpoint c3 = load_checkpoint(t.checkpoint_callback()->best_model_path());
    c3.metadata[key] = value;
    save_checkpoint(dir / "bad3.ckpt", c3);
    Quiet q5;
    CHECK(contains(error_of([&] { Trainer(opts(q5, dir / "bad3.ckpt")).fit(fresh, dm); }), says));
    CHECK(test::same_state(fresh, before));
  }
  // A checkpoint the callbacks take but restore() refuses (Adam's state for an SGD module): the
  // callbacks keep their own state too, as after a failure in the callbacks' part.
  for (const std::string ck : {dir / "bad2.ckpt", t.checkpoint_callback()->best_model_path()}) {
    CAPTURE(ck);
    ClassifierOptions sgd = adam();
    sgd.optimizer = "sgd";
    Counting other(small_cnn(), sgd);
    Quiet q4;
    TrainerOptions o = opts(q4, ck);
    auto es = std::dynamic_pointer_cast<EarlyStopping>(o.callbacks[0]);
    REQUIRE(es);
    CHECK_FALSE(error_of([&] { Trainer(o).fit(other, dm); }).empty());
    CHECK(es->wait_count() == 0);
    CHECK(std::isinf(es->best_score()));
  }
}
