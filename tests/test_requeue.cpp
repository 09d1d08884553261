// Slurm pre-emption in the Trainer (dist/requeue.h): SIGUSR1 during a fit writes hpc_ckpt.ckpt at the
// next step boundary, asks for a requeue (recorded here through $VOLT_REQUEUE_CMD) and stops; the
// requeued job ($SLURM_RESTART_COUNT > 0) resumes from it without flags and ends bit-identical to
// an uninterrupted run.
#include <doctest/doctest.h>
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "dist/callbacks.h"
#include "dist/checkpoint.h"
#include "dist/requeue.h"
#include "engine/random.h"
#include "tests/test_util.h"
#include "tests/trainer_fixtures.h"

using namespace volt;
using namespace volt::test;
namespace fs = std::filesystem;

namespace {

// Raises SIGUSR1 in its training_step at one global step, as Slurm would at any moment.
class Preempted : public ClassifierModule {
 public:
  Preempted(int64_t at_step) : ClassifierModule(small_cnn(0.3), adam(2e-3)), at_(at_step) {}
  Tensor training_step(const Batch& b, int64_t i) override {
    if (global_step() == at_) ::raise(SIGUSR1);
    Tensor loss = ClassifierModule::training_step(b, i);
    LogOptions lo;  // an epoch mean of the training loss, as a module may log
    lo.on_step = false;
    lo.on_epoch = true;
    log("epoch_loss", loss, lo);
    return loss;
  }

 private:
  int64_t at_;
};

// The training epoch means each epoch's end sees, by epoch.
class EpochMeans : public Callback {
 public:
  std::string name() const override { return "EpochMeans"; }
  void on_train_epoch_end(Trainer& t, LightningModule&) override {
    seen[t.current_epoch()] = t.callback_metrics().at("epoch_loss");
    if (t.callback_metrics().count("hook")) hook[t.current_epoch()] = t.callback_metrics().at("hook");
  }
  std::map<int64_t, double> seen, hook;
};

// Options of a fit in `root` that may be cut short by max_steps and saves last.ckpt at its end,
// resuming from `resume`; a new `means` records its epoch means.
TrainerOptions cut_options(Quiet& q, const std::string& root, int64_t max_epochs, int64_t max_steps,
                           const std::string& resume, std::shared_ptr<EpochMeans>& means) {
  auto o = q.base(root);
  o.max_epochs = max_epochs;
  o.max_steps = max_steps;
  o.seed = 5;
  o.resume = resume;
  means = std::make_shared<EpochMeans>();
  ModelCheckpointOptions mo;
  mo.save_last = true;
  o.callbacks = {means, std::make_shared<ModelCheckpoint>(mo)};
  return o;
}

// Also logs an epoch value in its epoch-end hook, which a fit cut short by max_steps runs too.
// And, given a Trainer, saves a checkpoint through it at one step (as a module may).
class HookLogs : public Preempted {
 public:
  HookLogs() : Preempted(-1) {}
  void on_train_epoch_end() override {
    LogOptions lo;
    lo.on_epoch = true;
    log("hook", double(global_step()), lo);
  }
  Tensor training_step(const Batch& b, int64_t i) override {
    if (trainer && global_step() == save_at) trainer->save_checkpoint(save_to);
    return Preempted::training_step(b, i);
  }
  Trainer* trainer = nullptr;
  int64_t save_at = -1;
  std::string save_to;
};

std::string read_all(const std::string& p) {
  std::ifstream f(p);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A 2-epoch fit (options changed by `tweak`) in `root` of a module that raises SIGUSR1 at step
// at_step (-1: never); its trainer and what it printed.
struct PreemptedFit {
  Quiet q;
  Preempted m;
  std::unique_ptr<Trainer> t;
  PreemptedFit(const std::string& root, int64_t at_step, DataModule& dm,
               const std::function<void(TrainerOptions&)>& tweak = {})
      : m(at_step) {
    TrainerOptions o = q.base(root);
    o.max_epochs = 2;
    if (tweak) tweak(o);
    t = std::make_unique<Trainer>(o);
    t->fit(m, dm);
  }
};

// A 4-epoch fit in `root` whose node fails (an exception) at global step `at`; what it printed.
std::string fit_until_node_failure(const std::string& root, int64_t at, DataModule& dm) {
  class NodeFails : public Preempted {
   public:
    explicit NodeFails(int64_t at) : Preempted(-1), at_(at) {}
    Tensor training_step(const Batch& b, int64_t i) override {
      if (global_step() == at_) throw std::runtime_error("node failure");
      return Preempted::training_step(b, i);
    }

   private:
    int64_t at_;
  };
  Quiet q;
  TrainerOptions o = q.base(root);
  o.max_epochs = 4;
  NodeFails m(at);
  Trainer t(o);
  CHECK_THROWS_WITH(t.fit(m, dm), "node failure");
  return q.os.str();
}

}  // namespace

TEST_CASE("SIGUSR1 mid-epoch: checkpoint, requeue call, and the requeued job ends bit-identical") {
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);  // 5 training batches per epoch
  std::shared_ptr<EpochMeans> means;
  auto opts = [&](Quiet& q, const std::string& root) {
    auto o = q.base(root);
    o.max_epochs = 3;
    o.seed = 5;
    means = std::make_shared<EpochMeans>();
    o.callbacks = {means, std::make_shared<ModelCheckpoint>()};
    return o;
  };
  // The uninterrupted run.
  Quiet q0;
  manual_seed(5);
  Preempted full(-1);
  Trainer(opts(q0, dir / "full")).fit(full, dm);
  const auto full_means = means->seen;
  REQUIRE(full_means.size() == 3);

  // Pre-empted at step 7 (epoch 1, batch 2) of a Slurm job whose requeue command records its call.
  const std::string calls = dir / "requeue_calls.txt";
  const std::string script = dir / "fake_scontrol.sh";
  std::ofstream(script) << "#!/bin/sh\necho \"requeue $*\" >> " << calls << "\necho queued\n";
  fs::permissions(script, fs::perms::owner_all);
  // An array job's task: its own requeue names the task (job 4242 is task 3 of array 4240), not the
  // array; its checkpoint is owned by its job id, which a requeue keeps.
  ScopedEnv job("SLURM_JOB_ID", "4242"), cmd("VOLT_REQUEUE_CMD", script), array("SLURM_ARRAY_JOB_ID", "4240"),
      task("SLURM_ARRAY_TASK_ID", "3");
  Quiet q1;
  manual_seed(5);
  Preempted first(7);
  Trainer t1(opts(q1, dir / "job"));
  t1.fit(first, dm);
  INFO(q1.os.str());
  CHECK(t1.requeued());
  CHECK_FALSE(t1.requeue_failed());
  CHECK(t1.global_step() == 8);  // the step that saw the signal finished
  CHECK(contains(t1.requeue_message(), "Pre-empted (SIGUSR1) at epoch 1, step 8"));
  CHECK(contains(t1.requeue_message(), "succeeded: queued"));
  CHECK(read_all(calls) == "requeue 4240_3\n");
  const std::string hpc = requeue_checkpoint_path(dir / "job");
  REQUIRE(fs::exists(hpc));
  CHECK_FALSE(requeue_signal_raised());  // handled: the handler is gone with the fit and the flag cleared

  // A rerun that is not a requeued job starts afresh; the requeued job resumes from hpc_ckpt.ckpt.
  ScopedEnv restart("SLURM_RESTART_COUNT", "1");
  Quiet q2;
  manual_seed(99);  // other initial weights: the checkpoint replaces them
  Preempted second(-1);
  Trainer t2(opts(q2, dir / "job"));
  t2.fit(second, dm);
  INFO(q2.os.str());
  CHECK(contains(q2.os.str(), "Resumed from " + hpc + " at epoch 1, step 8"));
  CHECK_FALSE(t2.requeued());
  CHECK(t2.current_epoch() == 3);
  CHECK(same_state(second, snapshot(full)));
  // The interrupted epoch's mean is over all its batches, those before the signal too.
  CHECK(means->seen == std::map<int64_t, double>{{1, full_means.at(1)}, {2, full_means.at(2)}});
  CHECK_FALSE(fs::exists(hpc));  // a finished run removes it, so a later requeue cannot go back
}

TEST_CASE("SIGUSR1 in an epoch's last batch: the checkpoint follows the epoch's end, the logs are on disk") {
  // cnn_train's callbacks: a ModelCheckpoint on val_loss. Pre-empted inside the last batch, the run
  // saved the checkpoint before that epoch's validation, so the requeued job started the next epoch
  // with no val_loss to rank and failed. Now the checkpoint comes after the epoch's validation and
  // callbacks, and the metrics logged so far are on disk before the requeue ends the job.
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);  // 5 training batches per epoch
  auto opts = [&](Quiet& q, const std::string& root, std::shared_ptr<ModelCheckpoint>& mc) {
    auto o = q.base(root);
    o.max_epochs = 3;
    o.seed = 5;
    ModelCheckpointOptions mo;
    mo.monitor = "val_loss";
    mo.save_last = true;
    mo.filename = "epoch={epoch}-step={step}-val_loss={val_loss:.4f}";
    mc = std::make_shared<ModelCheckpoint>(mo);
    o.callbacks = {mc};
    return o;
  };
  Quiet q0;
  std::shared_ptr<ModelCheckpoint> mc_full;
  manual_seed(5);
  Preempted full(-1);
  Trainer(opts(q0, dir / "full", mc_full)).fit(full, dm);

  // The fake scontrol keeps what metrics.csv holds when the requeue is asked for.
  const std::string csv = dir / "job/lightning_logs/version_0/metrics.csv", seen = dir / "csv_at_requeue.txt";
  const std::string script = dir / "fake_scontrol.sh";
  std::ofstream(script) << "#!/bin/sh\ncat " << csv << " > " << seen << " 2>&1\necho queued\n";
  fs::permissions(script, fs::perms::owner_all);
  ScopedEnv job("SLURM_JOB_ID", "4242"), cmd("VOLT_REQUEUE_CMD", script);
  Quiet q1;
  std::shared_ptr<ModelCheckpoint> mc1;
  manual_seed(5);
  Preempted first(4);  // step 4: batch 4, the last of epoch 0
  Trainer t1(opts(q1, dir / "job", mc1));
  t1.fit(first, dm);
  INFO(q1.os.str());
  CHECK(t1.requeued());
  CHECK(contains(t1.requeue_message(), "Pre-empted (SIGUSR1) at epoch 1, step 5"));
  const std::string logged = read_all(seen);
  INFO(logged);
  CHECK(contains(logged, "val_loss"));
  CHECK(contains(logged, "val_acc"));

  ScopedEnv restart("SLURM_RESTART_COUNT", "1");
  Quiet q2;
  std::shared_ptr<ModelCheckpoint> mc2;
  manual_seed(99);
  Preempted second(-1);
  Trainer t2(opts(q2, dir / "job", mc2));
  CHECK_NOTHROW(t2.fit(second, dm));
  INFO(q2.os.str());
  CHECK(contains(q2.os.str(), "at epoch 1, step 5"));
  CHECK(t2.current_epoch() == 3);
  CHECK(same_state(second, snapshot(full)));
}

TEST_CASE("SIGUSR1 under overfit_batches: the requeued job goes on from the next cached batch") {
  // The checkpoint said "batch 0" of the epoch, so the requeued job trained that epoch's first
  // batches twice and ended elsewhere than an uninterrupted run.
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);
  ScopedEnv job("SLURM_JOB_ID", "4242"), cmd("VOLT_REQUEUE_CMD", "true");
  const auto tweak = [](TrainerOptions& o) {
    o.max_epochs = 3;
    o.seed = 5;
    o.overfit_batches = 3;
  };
  manual_seed(5);
  PreemptedFit full(dir / "full", -1, dm, tweak);
  manual_seed(5);
  PreemptedFit first(dir / "job", 4, dm, tweak);  // step 4: epoch 1, the second of its 3 batches
  REQUIRE(first.t->requeued());
  CHECK(contains(first.t->requeue_message(), "at epoch 1, step 5"));
  ScopedEnv restart("SLURM_RESTART_COUNT", "1");
  manual_seed(99);
  PreemptedFit second(dir / "job", -1, dm, tweak);
  INFO(second.q.os.str());
  CHECK(contains(second.q.os.str(), "at epoch 1, step 5"));
  CHECK(second.t->global_step() == full.t->global_step());
  CHECK(same_state(second.m, snapshot(full.m)));
}

TEST_CASE("SIGUSR1 outside Slurm: the checkpoint is written and the message says how to continue") {
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);
  ScopedEnv no_job("SLURM_JOB_ID", nullptr);
  PreemptedFit run(dir.path, 2, dm);
  const Trainer& t = *run.t;
  CHECK(t.requeued());
  CHECK(contains(t.requeue_message(), "not a Slurm job"));
  CHECK(contains(t.requeue_message(), "--resume " + requeue_checkpoint_path(dir.path)));
  CHECK(fs::exists(requeue_checkpoint_path(dir.path)));
}

TEST_CASE("SIGUSR1 with the program's own handler stops one fit only, and none at its last step") {
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);
  ScopedEnv no_job("SLURM_JOB_ID", nullptr);
  const bool installed = install_requeue_signal();  // as cnn_train does, before any fit
  CHECK(PreemptedFit(dir / "a", 2, dm).t->requeued());
  CHECK_FALSE(PreemptedFit(dir / "b", -1, dm).t->requeued());  // it stopped at its first step
  CHECK_FALSE(PreemptedFit(dir / "c", 2, dm, [](TrainerOptions& o) { o.max_steps = 3; }).t->requeued());
  clear_requeue_signal();
  if (installed) uninstall_requeue_signal();
}

TEST_CASE("Ctrl-C or SIGTERM during a fit: a clean stop at that step, the logs on disk, the handlers put back") {
  for (const int sig : {SIGINT, SIGTERM}) {
    CAPTURE(sig);
    // The process's own handler before the fit, which the fit must put back.
    static volatile sig_atomic_t own = 0;
    struct sigaction mine {}, before {};
    mine.sa_handler = [](int) { own = 1; };
    sigemptyset(&mine.sa_mask);
    REQUIRE(::sigaction(sig, &mine, &before) == 0);
    class Interrupted : public ClassifierModule {
     public:
      explicit Interrupted(int s) : ClassifierModule(small_cnn(), adam()), sig_(s) {}
      Tensor training_step(const Batch& b, int64_t i) override {
        if (global_step() == 6) ::raise(sig_);  // in epoch 1 (5 batches an epoch)
        return ClassifierModule::training_step(b, i);
      }
      void on_fit_end() override { fit_ended = true; }
      bool fit_ended = false;

     private:
      int sig_;
    };
    TempDir dir("volt_interrupt_");
    SynthDM dm(192, 32, 32);
    Quiet q;
    auto o = q.cpu_fit(dir.path, 5);
    ModelCheckpointOptions mo;
    mo.save_last = true;
    o.callbacks = {std::make_shared<ModelCheckpoint>(mo)};
    Interrupted m(sig);
    Trainer t(o);
    t.fit(m, dm);
    INFO(q.os.str());
    CHECK(t.interrupted() == sig);
    CHECK(t.global_step() == 7);  // the step the signal came in finished, and no other
    CHECK_FALSE(m.fit_ended);
    CHECK(contains(q.os.str(), sig == SIGINT ? "Detected KeyboardInterrupt (SIGINT): stopped at epoch 1, step 7"
                                             : "Detected SIGTERM: stopped at epoch 1, step 7"));
    CHECK(contains(q.os.str(), "the latest checkpoint is " + t.log_dir() + "/checkpoints/last.ckpt"));
    CHECK(contains(read_all(t.log_dir() + "/metrics.csv"), "val_loss"));  // epoch 0's rows
    CHECK(load_checkpoint(t.log_dir() + "/checkpoints/last.ckpt").global_step == 5);  // epoch 0's end
    struct sigaction now {};
    REQUIRE(::sigaction(sig, &before, &now) == 0);
    CHECK((now.sa_handler == mine.sa_handler));
    CHECK(own == 0);
    // The next fit starts without the old signal.
    Quiet q2;
    auto o2 = q2.cpu_fit(dir / "again", 1);
    ClassifierModule m2(small_cnn(), adam());
    Trainer t2(o2);
    t2.fit(m2, dm);
    CHECK(t2.interrupted() == 0);
    CHECK(t2.global_step() == 5);
  }
}

TEST_CASE("a failing requeue command is reported, the checkpoint stays") {
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);
  ScopedEnv job("SLURM_JOB_ID", "77"), cmd("VOLT_REQUEUE_CMD", "false");
  PreemptedFit run(dir.path, 1, dm);
  const Trainer& t = *run.t;
  CHECK(t.requeued());
  CHECK(t.requeue_failed());
  INFO(t.requeue_message());
  CHECK(contains(t.requeue_message(), "requeue: `false '77' 2>&1` failed"));
  CHECK(fs::exists(requeue_checkpoint_path(dir.path)));
}

TEST_CASE("a requeued job does not resume from the checkpoint another job left in its folder") {
  // Job 111 was pre-empted in its second epoch and never came back; job 222, requeued in the same
  // folder, starts afresh rather than continuing job 111's run (from its hpc_ckpt.ckpt or its
  // epoch-end checkpoint), and leaves 111's files alone.
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);
  ScopedEnv cmd("VOLT_REQUEUE_CMD", "true");
  const std::string hpc = requeue_checkpoint_path(dir.path);
  {
    ScopedEnv job("SLURM_JOB_ID", "111");
    PreemptedFit run(dir.path, 7, dm);
    REQUIRE(run.t->requeued());
    CHECK(load_checkpoint(hpc).metadata.at("slurm_job_id") == "111");
  }
  const std::string epoch_end = dir / "lightning_logs/version_0/checkpoints/epoch=0-step=5.ckpt";
  REQUIRE(fs::exists(epoch_end));
  ScopedEnv job("SLURM_JOB_ID", "222"), restart("SLURM_RESTART_COUNT", "1");
  PreemptedFit run(dir.path, -1, dm);
  const std::string printed = run.q.os.str();
  INFO(printed);
  CHECK(contains(printed, hpc + " was written by Slurm job 111, not by this job (222): not resuming from it"));
  CHECK(contains(printed, epoch_end + " was written by Slurm job 111, not by this job (222)"));
  CHECK_FALSE(contains(printed, "Resumed from"));
  CHECK(run.t->global_step() == 10);  // two whole epochs of 5 batches: a fresh start
  CHECK(fs::exists(hpc));
  CHECK(fs::exists(epoch_end));
}

TEST_CASE("a job requeued again after a node failure goes on from its newer checkpoint, not the old hpc_ckpt") {
  // Pre-empted at step 3 (hpc_ckpt.ckpt); the requeued run passes it and saves at the ends of epochs
  // 0 and 1, then its node fails in epoch 2; requeued once more, the job must go on from step 10.
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);  // 5 training batches per epoch
  ScopedEnv cmd("VOLT_REQUEUE_CMD", "true"), job("SLURM_JOB_ID", "4545");
  auto four_epochs = [](TrainerOptions& o) { o.max_epochs = 4; };
  const std::string hpc = requeue_checkpoint_path(dir.path);
  {
    PreemptedFit first(dir.path, 2, dm, four_epochs);
    REQUIRE(first.t->requeued());
  }
  {
    ScopedEnv restart("SLURM_RESTART_COUNT", "1");
    const std::string printed = fit_until_node_failure(dir.path, 12, dm);
    INFO(printed);
    CHECK(contains(printed, "Resumed from " + hpc + " at epoch 0, step 3"));
  }
  const std::string newer = dir / "lightning_logs/version_1/checkpoints/epoch=1-step=10.ckpt";
  REQUIRE(fs::exists(newer));
  REQUIRE(fs::exists(hpc));
  ScopedEnv restart("SLURM_RESTART_COUNT", "2");
  PreemptedFit again(dir.path, -1, dm, four_epochs);
  INFO(again.q.os.str());
  CHECK(contains(again.q.os.str(), "Resumed from " + newer + " at epoch 2, step 10"));
  CHECK(again.t->global_step() == 20);
  CHECK_FALSE(fs::exists(hpc));  // the job's run is complete: its requeue checkpoint goes
}

TEST_CASE("a requeued job started with --resume goes on from its own requeue checkpoint") {
  // The job's command line resumes an earlier run (resume="last"); pre-empted and requeued, the same
  // command must continue from where the job stopped, not go back to where it first started.
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);  // 5 training batches per epoch
  ScopedEnv cmd("VOLT_REQUEUE_CMD", "true");
  { PreemptedFit earlier(dir.path, -1, dm); }  // two epochs: last.ckpt at step 10
  auto resume_last = [](TrainerOptions& o) {
    o.max_epochs = 4;
    o.resume = "last";
  };
  ScopedEnv job("SLURM_JOB_ID", "4343");
  {
    PreemptedFit first(dir.path, 12, dm, resume_last);
    INFO(first.q.os.str());
    REQUIRE(first.t->requeued());
    CHECK(contains(first.q.os.str(), "at epoch 2, step 10"));
  }
  const std::string hpc = requeue_checkpoint_path(dir.path);
  ScopedEnv restart("SLURM_RESTART_COUNT", "1");
  PreemptedFit again(dir.path, -1, dm, resume_last);
  const std::string printed = again.q.os.str();
  INFO(printed);
  CHECK(contains(printed, "resuming from its own " + hpc + ", not from resume=\"last\""));
  CHECK(contains(printed, "Resumed from " + hpc + " at epoch 2, step 13"));
  CHECK(again.t->global_step() == 20);
  CHECK_FALSE(fs::exists(hpc));
}

TEST_CASE("fast_dev_run absorbs SIGUSR1: it runs to its end and writes no checkpoint") {
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);
  ScopedEnv job("SLURM_JOB_ID", "5"), cmd("VOLT_REQUEUE_CMD", "false");
  PreemptedFit run(dir.path, 1, dm, [](TrainerOptions& o) { o.fast_dev_run = 3; });
  CHECK_FALSE(run.t->requeued());
  CHECK(run.t->global_step() == 3);
  CHECK_FALSE(fs::exists(requeue_checkpoint_path(dir.path)));
}

TEST_CASE("save_checkpoint after a resumed fit with no epoch left records where the run is") {
  // The position a save records was only set at an epoch's end: a fit resumed at its last epoch
  // saved epoch 0 and step 6, which would have retrained every epoch from there.
  TempDir dir("volt_requeue_");
  SynthDM dm(128, 32, 32);
  auto opts = [&](Quiet& q, const std::string& resume) {
    auto o = q.base(dir.path);
    o.max_epochs = 2;
    o.seed = 7;
    o.resume = resume;
    ModelCheckpointOptions mo;
    mo.save_last = true;
    o.callbacks = {std::make_shared<ModelCheckpoint>(mo)};
    return o;
  };
  Quiet q1, q2;
  {
    manual_seed(7);
    Counting m(small_cnn(), adam());
    Trainer(opts(q1, "")).fit(m, dm);
  }
  manual_seed(7);
  Counting m(small_cnn(), adam());
  Trainer t(opts(q2, "last"));
  t.fit(m, dm);
  t.save_checkpoint(dir / "after.ckpt");
  const Checkpoint c = load_checkpoint(dir / "after.ckpt");
  CHECK(c.epoch == t.current_epoch());
  CHECK(c.epoch == 2);
  CHECK(c.global_step == t.global_step());
  CHECK(c.loader.epoch == 2);
  CHECK(c.loader.next_batch == 0);
}

TEST_CASE("a requeued job finds its own checkpoint behind a newer run of another job in the same folder") {
  // Job 5151 fails in epoch 2 (its version_0 holds step 10); job 6161 then runs in the same folder
  // (version_1). Requeued, 5151 must go on from its own step 10, not start afresh.
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);  // 5 training batches per epoch
  {
    ScopedEnv job("SLURM_JOB_ID", "5151");
    fit_until_node_failure(dir.path, 12, dm);
  }
  {
    ScopedEnv job("SLURM_JOB_ID", "6161");
    PreemptedFit other(dir.path, -1, dm, [](TrainerOptions& o) { o.max_epochs = 1; });
  }
  ScopedEnv job("SLURM_JOB_ID", "5151"), restart("SLURM_RESTART_COUNT", "1");
  PreemptedFit again(dir.path, -1, dm, [](TrainerOptions& o) { o.max_epochs = 4; });
  const std::string printed = again.q.os.str();
  INFO(printed);
  CHECK(contains(printed, "version_1/checkpoints/epoch=0-step=5.ckpt was written by Slurm job 6161, not by this job"));
  CHECK(contains(printed, "Resumed from " + (dir / "lightning_logs/version_0/checkpoints/epoch=1-step=10.ckpt") +
                              " at epoch 2, step 10"));
  CHECK(again.t->global_step() == 20);
}

TEST_CASE("a requeued job passes over a checkpoint it cannot read, saying so") {
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);
  ScopedEnv cmd("VOLT_REQUEUE_CMD", "true"), job("SLURM_JOB_ID", "7171");
  {
    PreemptedFit first(dir.path, 7, dm);  // hpc_ckpt at step 8, epoch=0-step=5.ckpt
    REQUIRE(first.t->requeued());
  }
  const std::string hpc = requeue_checkpoint_path(dir.path);
  std::ofstream(hpc, std::ios::trunc) << "not a checkpoint";
  ScopedEnv restart("SLURM_RESTART_COUNT", "1");
  PreemptedFit again(dir.path, -1, dm);
  const std::string printed = again.q.os.str();
  INFO(printed);
  CHECK(contains(printed, "not resuming from " + hpc + ": "));
  CHECK(contains(printed, "epoch=0-step=5.ckpt at epoch 1, step 5"));
  CHECK(again.t->global_step() == 10);
}

TEST_CASE("resumed in mid-epoch after that epoch's validation, ModelCheckpoint ranks the epoch as the whole run does") {
  // Validations after batches 2 and 4 of 5: the epoch's end has none of its own. Pre-empted after
  // batch 4 of epoch 1, the requeued run must still rank epoch 1 by that validation's val_loss.
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);  // 5 training batches per epoch
  ScopedEnv cmd("VOLT_REQUEUE_CMD", "true"), job("SLURM_JOB_ID", "8181");
  std::shared_ptr<ModelCheckpoint> mc;
  auto ranked = [&](TrainerOptions& o) {
    o.max_epochs = 3;
    o.seed = 5;
    o.val_check_interval = 2;
    ModelCheckpointOptions mo;
    mo.monitor = "val_loss";
    mo.save_top_k = -1;
    mo.filename = "{epoch}";
    mc = std::make_shared<ModelCheckpoint>(mo);
    o.callbacks = {mc};
  };
  std::vector<double> whole;
  {
    manual_seed(5);  // the same initial weights in both runs
    PreemptedFit full(dir / "full", -1, dm, ranked);
    for (const auto& [score, path] : mc->best_k_models()) whole.push_back(score);
  }
  REQUIRE(whole.size() == 3);
  {
    manual_seed(5);
    PreemptedFit first(dir / "job", 8, dm, ranked);  // training_step of epoch 1's batch 4 (step 8)
    REQUIRE(first.t->requeued());
    INFO(first.q.os.str());
    CHECK(contains(first.t->requeue_message(), "at epoch 1, step 9"));
  }
  ScopedEnv restart("SLURM_RESTART_COUNT", "1");
  PreemptedFit again(dir / "job", -1, dm, ranked);
  INFO(again.q.os.str());
  CHECK_FALSE(contains(again.q.os.str(), "no validation in epoch"));
  std::vector<double> resumed;
  for (const auto& [score, path] : mc->best_k_models()) resumed.push_back(score);
  CHECK(resumed == whole);
}

TEST_CASE("a fit cut short by max_steps in mid-epoch and resumed has the uninterrupted run's epoch means") {
  // The checkpoint at the cut holds the epoch's sums so far; what the epoch-end hook logged at the
  // cut is not among them (the resumed run logs it again at the epoch's real end).
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);  // 5 training batches per epoch
  std::shared_ptr<EpochMeans> means;
  auto run = [&](const std::string& root, int64_t max_steps, const std::string& resume, const std::string& save_to = "") {
    Quiet q;
    auto o = cut_options(q, root, 2, max_steps, resume, means);
    manual_seed(5);
    HookLogs m;
    Trainer t(o);
    m.trainer = &t;
    m.save_at = save_to.empty() ? -1 : 8;
    m.save_to = save_to;
    t.fit(m, dm);
    INFO(q.os.str());
    return t.global_step();
  };
  REQUIRE(run(dir / "full", 10, "") == 10);
  const auto full = *means;
  REQUIRE(run(dir / "part", 7, "") == 7);  // cut in epoch 1, after its second batch
  CHECK(means->hook.at(1) == 7.0);
  const std::string cut = dir / "part/lightning_logs/version_0/checkpoints/last.ckpt";
  const Checkpoint at_cut = load_checkpoint(cut);
  CHECK(at_cut.loader.next_batch == 2);
  REQUIRE(at_cut.metadata.count("trainer.epoch_sum.epoch_loss") == 1);
  CHECK(at_cut.metadata.count("trainer.epoch_sum.hook") == 0);
  REQUIRE(run(dir / "part", 10, "last", dir / "user.ckpt") == 10);
  CHECK(means->seen == std::map<int64_t, double>{{1, full.seen.at(1)}});
  CHECK(means->hook == std::map<int64_t, double>{{1, full.hook.at(1)}});
  // The module's own save in the resumed epoch records the resume's position, and the sums that go
  // with it (not those of the batches after it).
  const Checkpoint user = load_checkpoint(dir / "user.ckpt");
  CHECK(user.loader.next_batch == 2);
  CHECK(user.metadata.at("trainer.epoch_sum.epoch_loss") == at_cut.metadata.at("trainer.epoch_sum.epoch_loss"));
  CHECK(user.metadata.at("trainer.epoch_weight.epoch_loss") == at_cut.metadata.at("trainer.epoch_weight.epoch_loss"));
}

TEST_CASE("a mid-epoch checkpoint resumed with another batch size is refused, naming both orders") {
  // Batch 2 of 32-sample batches is not batch 2 of 48-sample ones: resumed there, samples would be
  // trained on twice or not at all. An epoch-end checkpoint resumes under any batch size.
  TempDir dir("volt_requeue_");
  auto fit = [&](int64_t batch, int64_t max_steps, int64_t epochs, const std::string& resume,
                 const std::string& root = "run") {
    SynthDM dm(192, batch, 32);
    Quiet q;
    auto o = q.cpu_fit(dir / root, epochs);
    o.max_steps = max_steps;
    o.resume = resume;
    ModelCheckpointOptions mo;
    mo.save_last = true;
    o.callbacks = {std::make_shared<ModelCheckpoint>(mo)};
    manual_seed(5);
    ClassifierModule m(small_cnn(), adam());
    Trainer t(o);
    t.fit(m, dm);
    return t.global_step();
  };
  REQUIRE(fit(32, 7, 2, "") == 7);  // 5 batches an epoch: cut before batch 2 of epoch 1
  const std::string cut = dir / "run/lightning_logs/version_0/checkpoints/last.ckpt";
  const Checkpoint c = load_checkpoint(cut);
  REQUIRE(c.loader.next_batch == 2);
  CHECK(c.metadata.at("trainer.train_order") == "160 samples in batches of 32 over 1 rank, shuffled with seed 3");
  const std::string e = error_of([&] { fit(48, -1, 2, cut); });
  CHECK(contains(e, "stopped in mid-epoch (before batch 2 of epoch 1)"));
  CHECK(contains(e, "batches of 32"));
  CHECK(contains(e, "this run's are 160 samples in batches of 48"));
  CHECK(fit(32, -1, 2, cut) == 10);  // the same order: resumed
  // At an epoch's end the position names no batch: another batch size is fine.
  REQUIRE(fit(32, -1, 1, "", "epoch_end") == 5);
  const std::string end = dir / "epoch_end/lightning_logs/version_0/checkpoints/last.ckpt";
  REQUIRE(load_checkpoint(end).loader.next_batch == 0);
  CHECK(load_checkpoint(end).metadata.count("trainer.train_order") == 0);
  CHECK(fit(48, -1, 2, end) == 5 + 4);
}

TEST_CASE("under overfit_batches, a fit cut short by max_steps in mid-epoch resumes at the next cached batch") {
  // The checkpoint said "the next epoch": the resumed run skipped the rest of the cut epoch's batches.
  TempDir dir("volt_requeue_");
  SynthDM dm(192, 32, 32);
  std::shared_ptr<EpochMeans> means;
  auto run = [&](const std::string& root, int64_t max_steps, const std::string& resume) {
    Quiet q;
    auto o = cut_options(q, root, 3, max_steps, resume, means);
    o.overfit_batches = 3;
    manual_seed(5);
    auto m = std::make_shared<Preempted>(-1);
    Trainer t(o);
    t.fit(*m, dm);
    INFO(q.os.str());
    CHECK(t.global_step() == (max_steps < 0 ? 9 : max_steps));
    return m;
  };
  const auto full = run(dir / "full", -1, "");
  const auto full_means = *means;
  run(dir / "part", 4, "");  // cut in epoch 1, after the first of its 3 batches
  const Checkpoint at_cut = load_checkpoint(dir / "part/lightning_logs/version_0/checkpoints/last.ckpt");
  CHECK(at_cut.epoch == 1);
  CHECK(at_cut.loader.epoch == 1);
  CHECK(at_cut.loader.next_batch == 1);
  const auto resumed = run(dir / "part", -1, "last");
  CHECK(same_state(*resumed, snapshot(*full)));
  CHECK(means->seen == std::map<int64_t, double>{{1, full_means.seen.at(1)}, {2, full_means.seen.at(2)}});
}
