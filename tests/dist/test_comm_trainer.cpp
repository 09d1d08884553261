// The Trainer across processes (part of the test_comm program, run under mpirun/srun with 2 and 3
// ranks, and alone): every rank decides stops, saves and resumes as rank 0 does, mid-epoch resumes
// keep the epoch means, and a failure on one rank is every rank's error.
#include <doctest/doctest.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "dist/callbacks.h"
#include "dist/communicator.h"
#include "dist/requeue.h"
#include "dist/trainer.h"
#include "engine/random.h"
#include "tests/dist/comm_world.h"
#include "tests/dist/dist_util.h"
#include "tests/test_util.h"
#include "tests/trainer_fixtures.h"

using namespace volt;
using volt::test::comm;
using volt::test::identical_on_all_ranks;
namespace fs = std::filesystem;

namespace {
// What the Trainer cases' fits share: the CPU, this process's communicator (not owned), no progress
// bar and no sanity check, `epochs` epochs in `root`.
TrainerOptions rank_options(volt::test::Quiet& q, const std::string& root, int64_t epochs) {
  TrainerOptions o = q.cpu_fit(root, epochs);
  o.communicator = std::shared_ptr<Communicator>(&comm(), [](Communicator*) {});
  return o;
}

// A folder that rank 0 makes (and removes when it goes), and every rank's path to it.
struct Rank0Dir {
  std::unique_ptr<volt::test::TempDir> dir;
  std::string path;
  explicit Rank0Dir(const char* prefix) {
    if (comm().rank() == 0) {
      dir = std::make_unique<volt::test::TempDir>(prefix);
      path = dir->path;
    }
    broadcast_string(comm(), path);
  }
};
}  // namespace

namespace {
// Logs, at every step, a metric that differs between ranks and is not synced (sync_dist off): on
// rank 0 it never improves after the first epoch, elsewhere it improves every epoch.
class RankDependent : public ClassifierModule {
 public:
  using ClassifierModule::ClassifierModule;
  Tensor training_step(const Batch& b, int64_t i) override {
    Tensor loss = ClassifierModule::training_step(b, i);
    const double e = double(current_epoch());
    log("m", comm().rank() == 0 ? e : -e);
    return loss;
  }
};
}  // namespace

TEST_CASE("trainer: every rank stops and saves as rank 0 decides, on a metric that differs between ranks") {
  // EarlyStopping and ModelCheckpoint decide at each epoch's end on every rank, and collectives
  // follow (the checkpoint's barrier, the next step's all-reduces): a rank deciding otherwise paired
  // mismatched collectives (MPI: a truncation error; NCCL: a hang until the watchdog).
  const Rank0Dir root("volt_comm_trainer_");
  manual_seed(3);
  volt::test::SynthDM dm(128, 32, 32);
  RankDependent m(volt::test::small_cnn(0.0), volt::test::adam());
  volt::test::Quiet q;
  TrainerOptions o = rank_options(q, root.path, 5);
  EarlyStoppingOptions eo;
  eo.monitor = "m";
  eo.patience = 1;
  auto es = std::make_shared<EarlyStopping>(eo);
  ModelCheckpointOptions mo;
  mo.monitor = "m";
  mo.save_top_k = 1;
  auto ckpt = std::make_shared<ModelCheckpoint>(mo);
  o.callbacks = {es, ckpt};
  Trainer t(o);
  t.fit(m, dm);
  // Rank 0's values: 0 (best), then 1 (no improvement: patience 1 spent): two epochs everywhere.
  const int64_t epochs = t.current_epoch();
  CHECK(epochs == 2);
  CHECK(identical_on_all_ranks(&epochs, sizeof epochs));
  CHECK(volt::test::contains(es->reason(), "did not improve"));
  std::string best = ckpt->best_model_path(), best0 = best;
  broadcast_string(comm(), best0);
  CHECK(best == best0);
  CHECK(volt::test::contains(best, "epoch=0"));
  comm().barrier();  // rank 0 removes the folder only after every rank has looked
}

namespace {
// Asks the Trainer to stop at the end of epoch 0 on one rank only (a user's rank-local condition).
class StopOnRank : public Callback {
 public:
  explicit StopOnRank(int rank) : rank_(rank) {}
  std::string name() const override { return "StopOnRank"; }
  void on_train_epoch_end(Trainer& t, LightningModule&) override {
    if (comm().rank() == rank_ && t.current_epoch() == 0) t.request_stop();
  }

 private:
  int rank_;
};
}  // namespace

TEST_CASE("trainer: a stop asked on one rank is every rank's before the next callback decides") {
  // ModelCheckpoint with every_n_epochs saves early when the fit stops: a rank that saw the stop
  // and one that did not went different ways through the checkpoint's collectives.
  const Rank0Dir root("volt_comm_trainer_");
  manual_seed(3);
  volt::test::SynthDM dm(64, 32, 32);
  ClassifierModule m(volt::test::small_cnn(0.0), volt::test::adam());
  volt::test::Quiet q;
  TrainerOptions o = rank_options(q, root.path, 4);
  o.logger = false;
  ModelCheckpointOptions mo;
  mo.every_n_epochs = 3;
  mo.save_last = true;
  auto ckpt = std::make_shared<ModelCheckpoint>(mo);
  o.callbacks = {std::make_shared<StopOnRank>(comm().size() - 1), ckpt};
  Trainer t(o);
  t.fit(m, dm);
  const int64_t epochs = t.current_epoch();
  CHECK(epochs == 1);
  CHECK(identical_on_all_ranks(&epochs, sizeof epochs));
  CHECK(volt::test::contains(ckpt->last_model_path(), "last.ckpt"));
  if (comm().rank() == 0) CHECK(fs::exists(ckpt->last_model_path()));
  comm().barrier();  // rank 0 removes the folder only after every rank has looked
}

namespace {
// Logs an epoch metric that differs between ranks (whole numbers: any order of summing gives the
// same bits), and raises SIGUSR1 on rank 0 at global step `at` (-1: never).
class RankSums : public ClassifierModule {
 public:
  explicit RankSums(int64_t at) : ClassifierModule(volt::test::small_cnn(0.0), volt::test::adam()), at_(at) {}
  Tensor training_step(const Batch& b, int64_t i) override {
    if (comm().rank() == 0 && global_step() == at_) ::raise(SIGUSR1);
    LogOptions lo;
    lo.on_step = false;
    lo.on_epoch = true;
    log("m", double((comm().rank() + 1) * (i + 1)), lo);
    return ClassifierModule::training_step(b, i);
  }

 private:
  int64_t at_;
};

class EpochMeans : public Callback {
 public:
  std::string name() const override { return "EpochMeans"; }
  void on_train_epoch_end(Trainer& t, LightningModule&) override { seen[t.current_epoch()] = t.callback_metrics().at("m"); }
  std::map<int64_t, double> seen;
};
}  // namespace

TEST_CASE("trainer: pre-empted in mid-epoch, the resumed run's epoch means are over every rank's batches") {
  const Rank0Dir root("volt_comm_sums_");
  volt::test::ScopedEnv requeue_cmd("VOLT_REQUEUE_CMD", "true"), restart("SLURM_RESTART_COUNT", "0");
  volt::test::SynthDM dm(32 * 4 * comm().size() + 32, 32, 32);  // 4 training batches per rank
  auto run = [&](const std::string& dir_name, int64_t at, const std::string& resume) {
    volt::test::Quiet q;
    TrainerOptions o = rank_options(q, root.path + "/" + dir_name, 2);
    o.logger = false;
    o.resume = resume;
    auto means = std::make_shared<EpochMeans>();
    o.callbacks = {means};
    manual_seed(5);
    RankSums m(at);
    Trainer t(o);
    t.fit(m, dm);
    return std::make_pair(t.requeued(), means->seen);
  };
  const auto full = run("full", -1, "");
  REQUIRE(full.second.size() == 2);
  const auto part = run("job", 1, "");  // the signal in epoch 0's second step: stops after it
  CHECK(part.first);
  CHECK(part.second.empty());
  const auto rest = run("job", -1, requeue_checkpoint_path(root.path + "/job"));
  CHECK_FALSE(rest.first);
  CHECK(rest.second == full.second);
  comm().barrier();  // rank 0 removes the folder only after every rank has looked
}

namespace {
// Logs its rank as an epoch mean shown on the progress bar.
class RankOnBar : public ClassifierModule {
 public:
  using ClassifierModule::ClassifierModule;
  Tensor training_step(const Batch& b, int64_t i) override {
    LogOptions lo;
    lo.on_step = false;
    lo.on_epoch = true;
    lo.prog_bar = true;
    log("rank_value", double(comm().rank()), lo);
    return ClassifierModule::training_step(b, i);
  }
};
}  // namespace

TEST_CASE("trainer: the epoch's last progress line shows the epoch means over every rank, as logged") {
  const Rank0Dir root("volt_comm_bar_");
  volt::test::SynthDM dm(32 * 2 * comm().size() + 32, 32, 32);
  volt::test::Quiet q;
  TrainerOptions o = rank_options(q, root.path, 1);
  o.logger = false;
  o.enable_checkpointing = false;
  o.enable_progress_bar = true;
  o.progress_tty = 0;
  manual_seed(5);
  RankOnBar m(volt::test::small_cnn(), volt::test::adam());
  Trainer t(o);
  t.fit(m, dm);
  const int n = comm().size();
  const double mean = double(n - 1) / 2;  // the ranks' mean (the same batch size on each)
  CHECK(t.callback_metrics().at("rank_value") == doctest::Approx(mean));
  if (comm().rank() == 0) {
    const std::string s = q.os.str();
    INFO(s);
    char want[64];
    std::snprintf(want, sizeof want, "rank_value=%.4g", mean);
    CHECK((volt::test::contains(s, std::string(want) + ",") || volt::test::contains(s, std::string(want) + "]")));
  }
  comm().barrier();
}

namespace {
// Frozen first convolution from the fit's start; optionally unfrozen at epoch 1.
class FreezeFirst : public ClassifierModule {
 public:
  explicit FreezeFirst(bool unfreeze) : ClassifierModule(volt::test::small_cnn(0.0), volt::test::adam()), unfreeze_(unfreeze) {}
  void on_fit_start() override { first().requires_grad_(false); }
  void on_train_epoch_start() override {
    if (unfreeze_ && current_epoch() == 1) first().requires_grad_(true);
    at_epoch_start.push_back(first().clone());
  }
  Tensor first() { return named_parameters()[0].second; }
  std::vector<Tensor> at_epoch_start;

 private:
  bool unfreeze_;
};
}  // namespace

TEST_CASE("trainer: a parameter frozen in on_fit_start stays out of DDP; one unfrozen later is refused, not drifted") {
  const Rank0Dir root("volt_comm_freeze_");
  volt::test::SynthDM dm(32 * 2 * comm().size() + 32, 32, 32);
  auto fit = [&](bool unfreeze) {
    volt::test::Quiet q;
    TrainerOptions o = rank_options(q, root.path + (unfreeze ? "/b" : "/a"), 2);
    o.logger = false;
    o.enable_checkpointing = false;
    manual_seed(5);
    FreezeFirst m(unfreeze);
    Trainer t(o);
    std::string err;
    try {
      t.fit(m, dm);
    } catch (const Error& e) {
      err = e.what();
    }
    return std::make_pair(err, m.at_epoch_start);
  };
  const auto frozen = fit(false);
  CHECK(frozen.first.empty());
  REQUIRE(frozen.second.size() == 2);
  CHECK(volt::test::same_values(frozen.second[0], frozen.second[1]));  // no update, on any rank
  const auto unfrozen = fit(true);
  if (comm().size() > 1) {  // the buckets were made without it: every rank refuses the step
    CHECK(volt::test::contains(unfrozen.first, "was unfrozen"));
    CHECK(volt::test::contains(unfrozen.first, "block1.0.weight"));
  } else {
    CHECK(unfrozen.first.empty());  // one process averages nothing
  }
  comm().barrier();
}

TEST_CASE("trainer: every rank resumes from the checkpoint rank 0 chose, whatever its own filesystem shows") {
  // A requeued job resumes from the pre-empted run's checkpoint where the root directory holds one.
  // Here only rank 0's root does (the others get empty roots of their own, as a node whose view of a
  // filesystem lags would): every rank must still resume from rank 0's file, or they would train
  // different numbers of steps and pair mismatched collectives.
  const int me = comm().rank();
  volt::test::TempDir own("volt_comm_resume_");
  std::string shared_root = own.path;
  broadcast_string(comm(), shared_root);
  manual_seed(5);
  volt::test::SynthDM dm(128, 32, 32);
  volt::test::Quiet q;
  auto options = [&](const std::string& root, int64_t epochs) { return rank_options(q, root, epochs); };
  ClassifierModule first(volt::test::small_cnn(0.0), volt::test::adam());
  Trainer t1(options(shared_root, 1));
  t1.fit(first, dm);
  const std::string hpc = requeue_checkpoint_path(shared_root);
  if (me == 0) {
    fs::copy_file(t1.checkpoint_callback()->best_model_path(), hpc);
    fs::copy_file(hpc, shared_root + "/resume.ckpt");  // for the second part (the run removes hpc)
  }
  comm().barrier();

  const char* restart = std::getenv("SLURM_RESTART_COUNT");
  const std::string saved_restart = restart ? restart : "";
  setenv("SLURM_RESTART_COUNT", "1", 1);
  struct RestoreEnv {
    const char* was;
    std::string value;
    ~RestoreEnv() {
      if (was) setenv("SLURM_RESTART_COUNT", value.c_str(), 1);
      else unsetenv("SLURM_RESTART_COUNT");
    }
  } restore_env{restart, saved_restart};
  ClassifierModule second(volt::test::small_cnn(0.0), volt::test::adam());
  Trainer t2(options(own.path, 3));  // rank 0's root is the shared one; the others' are empty
  t2.fit(second, dm);
  if (me == 0) CHECK(volt::test::contains(q.os.str(), "Resumed from " + hpc + " at epoch 1"));
  const int64_t epochs = t2.current_epoch(), steps = t2.global_step();
  CHECK(epochs == 3);
  CHECK(identical_on_all_ranks(&epochs, sizeof epochs));
  CHECK(identical_on_all_ranks(&steps, sizeof steps));
  comm().barrier();

  // An explicit --resume path that only rank 0 can read (a relative path, and each rank in its own
  // root): every rank fails, naming the rank that cannot read it, instead of rank 0 training alone.
  if (comm().size() > 1) {
    setenv("SLURM_RESTART_COUNT", "0", 1);  // a first run (a requeued job would take its own newest checkpoint)
    const fs::path cwd = fs::current_path();
    fs::current_path(own.path);
    TrainerOptions o = options(own.path, 3);
    o.resume = "resume.ckpt";
    ClassifierModule third(volt::test::small_cnn(0.0), volt::test::adam());
    Trainer t3(o);
    std::string what;
    try {
      t3.fit(third, dm);
    } catch (const Error& e) {
      what = e.what();
    }
    fs::current_path(cwd);
    INFO(what);
    const int last = comm().size() - 1;  // the highest rank that failed
    CHECK(volt::test::contains(what, "rank " + std::to_string(me == 0 ? last : me) + " cannot load resume.ckpt"));
    CHECK(volt::test::contains(what, "a filesystem that every node shares"));
  }
  comm().barrier();  // every rank is done with rank 0's files before they go
}

TEST_CASE("trainer: a resumed ModelCheckpoint saves as rank 0's ranking decides, whatever files a rank sees") {
  // A resumed ranking keeps the checkpoints that exist. With a relative dirpath each rank looks in
  // its own folder, where only rank 0 (the writer) has them: rank 1's ranking is empty and would
  // save a worse checkpoint (a collective) that rank 0 does not save.
  volt::test::TempDir own("volt_comm_rank_");
  std::string shared = own.path;
  broadcast_string(comm(), shared);
  const fs::path cwd = fs::current_path();
  fs::current_path(own.path);
  struct Back {
    fs::path to;
    ~Back() { fs::current_path(to); }
  } back{cwd};
  manual_seed(5);
  volt::test::SynthDM dm(64, 32, 32);
  volt::test::Quiet q;
  auto fit = [&](int64_t epochs, const std::string& resume) {
    TrainerOptions o = rank_options(q, own.path, epochs);
    o.logger = false;
    o.resume = resume;
    ModelCheckpointOptions mo;
    mo.monitor = "score";
    mo.dirpath = "ck";
    mo.filename = "{epoch}";
    mo.save_last = true;
    auto mc = std::make_shared<ModelCheckpoint>(mo);
    o.callbacks = {mc};
    volt::test::Counting m(volt::test::small_cnn(0.0), volt::test::adam());
    m.scores = {1, 5};  // epoch 1 is worse: not kept
    Trainer t(o);
    t.fit(m, dm);
    return std::make_pair(t.global_step(), mc->best_model_path());
  };
  const int64_t first = fit(1, "").first;
  const auto [second, best] = fit(2, shared + "/ck/last.ckpt");
  CHECK(second == 2 * first);
  // Rank 0 kept epoch 0; a rank that sees no files ranks nothing, rather than epoch 1 by itself.
  CHECK(best == (comm().rank() == 0 ? "ck/epoch=0.ckpt" : ""));
  if (comm().rank() == 0) CHECK(volt::test::names_in(own.path + "/ck") == std::set<std::string>{"epoch=0.ckpt", "last.ckpt"});
  comm().barrier();
}

namespace {
// Logs a synced step metric on rank 0 only: the ranks would reduce different lists.
class SyncedOnRank0 : public ClassifierModule {
 public:
  using ClassifierModule::ClassifierModule;
  Tensor training_step(const Batch& b, int64_t i) override {
    Tensor loss = ClassifierModule::training_step(b, i);
    LogOptions lo;
    lo.sync_dist = true;
    if (comm().rank() == 0) log("only_here", 1.0, lo);
    return loss;
  }
};


// One epoch in `root` (rank_options) without logger or checkpoints.
TrainerOptions one_quiet_epoch(volt::test::Quiet& q, const std::string& root) {
  TrainerOptions o = rank_options(q, root, 1);
  o.logger = false;
  o.enable_checkpointing = false;
  return o;
}
}  // namespace

TEST_CASE("trainer: a synced step metric that only some ranks log is every rank's error, not a hang") {
  volt::test::TempDir own("volt_comm_sync_");
  manual_seed(5);
  volt::test::SynthDM dm(64, 32, 32);
  volt::test::Quiet q;
  const TrainerOptions o = one_quiet_epoch(q, own.path);
  SyncedOnRank0 m(volt::test::small_cnn(0.0), volt::test::adam());
  Trainer t(o);
  if (comm().size() == 1) {
    CHECK_NOTHROW(t.fit(m, dm));
  } else {
    const std::string what = volt::test::error_of([&] { t.fit(m, dm); });
    INFO(what);
    CHECK(volt::test::contains(what, "the ranks logged different sync_dist step metrics"));
  }
  comm().barrier();
}

TEST_CASE("trainer: a checkpoint rank 0 cannot write is every rank's error") {
  // Only rank 0 writes; a failure it kept to itself left the other ranks training on, to wait at
  // the next collective for a rank that had stopped (the I/O timeout, 30 minutes by default).
  volt::test::TempDir own("volt_comm_save_");
  manual_seed(5);
  volt::test::SynthDM dm(64, 32, 32);
  volt::test::Quiet q;
  const TrainerOptions o = one_quiet_epoch(q, own.path);
  ClassifierModule m(volt::test::small_cnn(0.0), volt::test::adam());
  Trainer t(o);
  t.fit(m, dm);
  const std::string path = own.path + "/no-such-folder/x.ckpt";
  const std::string what = volt::test::error_of([&] { t.save_checkpoint(path); });
  INFO(what);
  if (comm().rank() == 0)
    CHECK(volt::test::contains(what, "cannot create"));
  else
    CHECK(volt::test::contains(what, "rank 0 could not write the checkpoint " + path));
  t.save_checkpoint(own.path + "/ok.ckpt");  // and the ranks are still in step
  comm().barrier();
}
