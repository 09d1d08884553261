// The Trainer's loops: fit (sanity check, epochs of training with accumulation, clipping,
// scheduling and interleaved validation, epoch-end logging and callbacks), validate and test. The
// options, the process layout and the data-parallel helpers are in trainer_setup.cpp.
#include "dist/trainer.h"

#include "volt/config.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>

#include "dist/checkpoint.h"
#include "dist/csv_logger.h"
#include "dist/ddp.h"
#include "layers/optim/grad_clip.h"
#include "dist/graphed_step.h"
#include "dist/log_dir.h"
#include "dist/profiler.h"
#include "dist/progress_bar.h"
#include "dist/requeue.h"
#include "dist/trainer_internal.h"
#include "dist/trainer_logging.h"
#include "engine/autocast.h"
#include "layers/layers.h"
#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"

namespace volt {

namespace fs = std::filesystem;

namespace {
using trainer_detail::lower;

// While the training epoch's hooks run: log() defaults to on_epoch there.
struct InEpochHook {
  MetricStore& s;
  explicit InEpochHook(MetricStore& store) : s(store) { s.set_in_epoch_hook(true); }
  ~InEpochHook() { s.set_in_epoch_hook(false); }
};

}  // namespace

// One fit's loops; holds what the loops share.
struct TrainerRun {
  Trainer& t;
  Trainer::Impl& I;
  LightningModule& module;
  DataModule& dm;
  std::unique_ptr<DataLoader> train, val;
  std::vector<Batch> overfit;  // cached batches for overfit_batches
  int64_t n_train = 0, n_val = 0, val_every = 0;
  int64_t stopped_at = 0;  // the batch a training epoch cut short by max_steps stopped before
  int64_t fast = 0;

  std::map<std::string, double> run_eval(const std::string& stage, int64_t n) {
    // Each rank's last forward updated its BatchNorm statistics from its own batch: evaluate with
    // rank 0's, so that every rank computes the same model.
    if (I.averager) broadcast_from_rank0(t.communicator(), I.buffers);
    const bool was_training = module.is_training();
    if (overfit.empty()) val->set_epoch(0);
    const auto next = [&](int64_t i, Batch& b) {
      if (!overfit.empty()) {
        b = overfit[size_t(i % int64_t(overfit.size()))];
        return true;
      }
      if (!val->next(b)) return false;
      batch_to(b, t.device());
      return true;
    };
    MetricStore& s = I.eval_store;
    std::map<std::string, double> means = Trainer::eval_loop(module, s, next, n, false, I.profiler, t.communicator(),
                                                             t.compute_dtype_,
                                                             stage == "sanity" ? Trainer::StepLog() : t.eval_step_logger());
    if (stage != "sanity") {
      t.last_validated_epoch_ = t.epoch_;
      t.last_validated_step_ = t.global_step_;
      t.take_epoch_means(s, means);
      const auto logged = s.epoch_means(true);
      for (const auto& [k, v] : logged) t.logged_metrics_[k] = v;
      if (I.loggers) I.loggers->log_metrics(logged, std::max<int64_t>(0, t.global_step_ - 1), t.epoch_);
      I.val_prog_bar = s.epoch_prog_bar();
    }
    module.store_ = &I.train_store;
    module.train(was_training);
    return means;
  }

  bool next_train(Batch& b, int64_t batch_idx) {
    if (!overfit.empty()) {
      b = overfit[size_t(batch_idx % int64_t(overfit.size()))];
      return true;
    }
    Profiler::Scope sc(I.profiler, "train_dataloader_next");
    if (!train->next(b)) return false;
    batch_to(b, t.device());
    return true;
  }

  // The averager's buckets hold the parameters that trained when the fit started (as PyTorch's
  // DDP): one frozen or unfrozen since would train on this rank's gradients alone (the ranks drift
  // apart) or keep moving while frozen, so the step is refused, before any update, naming it.
  // (Per step: the flags of the parameters kept at set-up; names only for the message.)
  void check_ddp_parameters() {
    for (size_t i = 0; i < I.ddp_params.size(); ++i) {
      if (I.ddp_params[i].requires_grad() == I.ddp_requires_grad[i]) continue;
      VOLT_FAIL("DDP: parameter ", module.named_parameters()[i].first, " was ", I.ddp_requires_grad[i] ? "frozen" : "unfrozen",
                " after the fit set up its gradient averaging; freeze or unfreeze before fit() or in the module's "
                "on_fit_start(), and fit again to change it");
    }
  }

  // The step's device work on the optimizer side: averaging, clipping, the (possibly skipped) update,
  // zero_grad. Returns whether the update was issued: 16-mixed skips Inf/NaN steps, on the host on a
  // CPU (false), on the device on a GPU (true: the host does not wait to know).
  bool update_parameters() {
    Optimizer& opt = *I.optim.optimizer;
    const auto params = opt.params();
    if (I.averager) {  // every rank steps with the same (averaged) gradients; clipping sees those
      check_ddp_parameters();
      Profiler::Scope sc(I.profiler, "all_reduce_gradients");
      I.averager->all_reduce_gradients();
    }
    if (t.opts_.gradient_clip_val > 0) {
      Profiler::Scope sc(I.profiler, "clip_gradients");
      if (I.scaler) I.scaler->unscale_(opt);  // clip the true gradients, not the scaled ones
      if (t.opts_.gradient_clip_algorithm == "norm")
        clip_grad_norm_(params, t.opts_.gradient_clip_val);
      else
        clip_grad_value_(params, t.opts_.gradient_clip_val);
    }
    bool stepped = true;
    {
      Profiler::Scope sc(I.profiler, "optimizer_step");
      if (I.scaler) {
        stepped = I.scaler->step(opt);  // skipped when a gradient is Inf/NaN (see above)
        I.scaler->update();
      } else {
        opt.step();
      }
    }
    opt.zero_grad();
    return stepped;
  }

  // The host's part of an optimizer step. A per-step scheduler does not advance on a skipped step:
  // on a GPU, finding that out waits for the step (the only case where the host waits for 16-mixed's flag).
  void count_step(bool issued) {
    ++t.global_step_;
    module.global_step_ = t.global_step_;
    if (I.optim.scheduler && I.optim.interval == "step" && issued && (!I.scaler || I.scaler->last_step_taken()))
      I.optim.scheduler->step();
  }

  void optimizer_step() {
    const bool issued = update_parameters();
    eager_taken += issued;  // steps that called the optimizer (and so created its state)
    count_step(issued);
  }

  // ---- the CUDA-graph step (TrainerOptions::cuda_graphs) ----
  int64_t eager_taken = 0;
  std::unique_ptr<GraphedStep> graphed{};

  // Why the step cannot be a graph, "off" when graphs are not asked for, or "" (then it can).
  std::string graph_blocker() const {
    const auto& o = t.opts_;
    if (!t.device().is_cuda() || !o.cuda_graphs) return "off";
    if (o.accumulate_grad_batches > 1) return "gradient accumulation";
    if (I.averager) return "data-parallel gradient averaging";
    if (I.profiler.enabled()) return "the profiler (it times each phase on the host)";
    return "";
  }

  // Trains on b as a replay of the captured step when possible; false: run it eagerly.
  bool graph_step(const Batch& b, int64_t batch_idx, MetricStore& s) {
    if (!graphed) {
      graphed = std::make_unique<GraphedStep>(
          t.device(),
          [this]() -> std::ostream& {
            if (I.bar) I.bar->interject();  // (a message on its own line, not after the live bar)
            return t.out();
          },
          s);
      if (const std::string why = graph_blocker(); !why.empty()) graphed->disable(why);
    }
    if (graphed->disabled()) return false;
    const bool replayed = graphed->run(b, train->batch_size(), eager_taken, [&](const Batch& input) {
      Tensor loss;
      {
        Autocast autocast(t.compute_dtype_);
        loss = module.training_step(input, batch_idx);
      }
      VOLT_CHECK(loss.defined() && loss.numel() == 1, "training_step must return a one-element loss tensor");
      (I.scaler ? I.scaler->scale(loss) : loss).backward();
      update_parameters();
    }, [&] {
      I.optim.optimizer->zero_grad(true);  // the captured backward allocated them but never ran
      if (I.scaler) I.scaler->abandon_step();
    });
    if (!replayed) return false;
    count_step(true);
    return true;
  }

  // SIGUSR1 (Slurm's warning before the time limit) at a step boundary: a checkpoint that resumes at
  // epoch `epoch` from the loader position `at`, a requeue request, and a clean stop on every rank.
  void preempt(int64_t epoch, LoaderState at) {
    clear_requeue_signal();  // acted on: a later fit in this process starts without it
    I.resume_epoch = epoch;
    I.resume_loader = at;
    I.resume_sums.reset();  // the train store's sums are this position's
    t.save_checkpoint(requeue_checkpoint_path(t.opts_.default_root_dir));
    t.requeued_ = true;  // the requeue itself comes at the end of fit(), after the last collective
    t.should_stop_ = true;
  }

  // One epoch of training; returns whether it ran to its end (not stopped by max_steps).
  bool train_epoch(bool resumed_first) {
    const auto& o = t.opts_;
    MetricStore& s = I.train_store;
    s.set_stage("train");
    s.clear_epoch();
    module.store_ = &s;
    module.train();
    module.epoch_ = t.epoch_;
    {
      InEpochHook hook(s);
      module.on_train_epoch_start();
    }
    int64_t start = 0;
    if (overfit.empty()) {
      if (resumed_first && train->state().epoch == t.epoch_)
        start = train->state().next_batch;
      else
        train->set_epoch(t.epoch_);
    } else if (resumed_first && I.resume_loader.epoch == t.epoch_) {
      start = I.resume_loader.next_batch;  // the cached batches, from where a pre-empted run stopped
    }
    // Resumed in mid-epoch: the epoch means go on from the sums of the batches before `start`.
    if (start > 0 && I.resume_sums) s.restore_epoch_sums(*I.resume_sums, t.is_global_zero());
    if (I.bar) I.bar->start("Epoch " + std::to_string(t.epoch_), n_train, start);
    // (fast_dev_run validates its one epoch whatever the pace, as Lightning's)
    const bool validate_epoch = val && n_val > 0 && (fast || (t.epoch_ + 1) % o.check_val_every_n_epoch == 0);
    const int64_t accum = o.accumulate_grad_batches;
    bool finished = true;
    for (int64_t batch_idx = start; batch_idx < n_train; ++batch_idx) {
      if (o.max_steps >= 0 && t.global_step_ >= o.max_steps) {
        finished = false;
        stopped_at = batch_idx;
        break;
      }
      Batch b;
      if (!next_train(b, batch_idx)) break;
      s.clear_step();
      s.set_batch_size(b.labels.numel());
      const bool graphed = graph_step(b, batch_idx, s);  // a replay of the captured step, when possible
      const bool step_now = graphed || (batch_idx + 1) % accum == 0 || batch_idx + 1 == n_train;
      if (graphed) {
        ++t.train_batches_seen_;
      } else {
        if (I.averager) {
          // As PyTorch's DDP (broadcast_buffers): every rank's forward starts from rank 0's buffers,
          // so the BatchNorm running statistics stay the same on every rank.
          Profiler::Scope sc(I.profiler, "broadcast_buffers");
          broadcast_from_rank0(t.communicator(), I.buffers);
        }
        Tensor loss;
        {
          Profiler::Scope sc(I.profiler, "training_step");
          Autocast autocast(t.compute_dtype_);
          loss = module.training_step(b, batch_idx);
        }
        VOLT_CHECK(loss.defined() && loss.numel() == 1, "training_step must return a one-element loss tensor, got ",
                   loss.defined() ? shape_str(loss.shape()) : std::string("an undefined tensor"));
        // DDP: the step's last backward all-reduces each gradient bucket as soon as it is final.
        if (I.averager && step_now) I.averager->prepare_for_backward();
        {
          Profiler::Scope sc(I.profiler, "backward");
          Tensor l = accum > 1 ? loss * (1.0f / float(accum)) : loss;
          if (I.scaler) l = I.scaler->scale(l);
          l.backward();
        }
        ++t.train_batches_seen_;
      }
      if (step_now && !graphed) optimizer_step();
      // Per-step values, read (from the GPU: a synchronisation) only when something shows them: the
      // loggers every log_every_n_steps optimizer steps, the progress bar when it redraws, and the
      // callback metrics then and at the epoch's last batch.
      const bool log_now = step_now && t.global_step_ % o.log_every_n_steps == 0;
      const bool last = batch_idx + 1 == n_train;
      // sync_dist values are averaged over the ranks only where they are logged (the same steps on
      // every rank, so the collective matches); the progress bar between those shows this rank's.
      if (log_now || last) s.reduce_step(t.communicator());
      const bool draw = I.bar && I.bar->due(batch_idx + 1);
      if (log_now || draw || last) {
        std::map<std::string, double> step_log, bar_metrics = I.val_prog_bar;
        for (const auto& [k, e] : s.step_values()) {
          const double v = e->get();
          t.callback_metrics_[k] = v;
          if (!e->base.empty()) t.callback_metrics_[e->base] = v;  // (Lightning's, for a forked metric)
          if (e->logger) step_log[k] = v;
          if (e->prog_bar) bar_metrics[k] = v;
        }
        check_deferred_errors(t.device());  // e.g. a label out of range, found by a GPU kernel
        if (log_now && !step_log.empty()) {
          for (const auto& [k, v] : step_log) t.logged_metrics_[k] = v;
          if (I.loggers) I.loggers->log_metrics(step_log, t.global_step_ - 1, t.epoch_);
        }
        if (I.bar) I.bar->update(batch_idx + 1, b.labels.numel(), bar_metrics);
      } else if (I.bar) {
        I.bar->update(batch_idx + 1, b.labels.numel(), {});  // counts; draws nothing
      }
      if (validate_epoch && (batch_idx + 1) % val_every == 0) {
        {
          Profiler::Scope sc(I.profiler, "validation");
          run_eval("val", n_val);
        }
        // Within the epoch, the callbacks that monitor a metric act now, on these weights (as
        // Lightning's on_validation_end); a checkpoint they write resumes after this batch.
        if (t.validates_mid_epoch_ && batch_idx + 1 < n_train) {
          I.resume_epoch = t.epoch_;
          I.resume_loader = overfit.empty() ? train->state() : LoaderState{t.epoch_, batch_idx + 1};
          I.resume_sums.reset();  // the train store's sums are this position's
          t.run_callbacks(&Callback::on_validation_end, module);
          if (t.should_stop_) {  // (EarlyStopping): the epoch ends here, as one cut by max_steps
            finished = false;
            stopped_at = batch_idx + 1;
            break;
          }
        }
      }
      // Pre-empted: after this step's logging and validation, so that the resumed run has nothing of
      // this batch left to do. At the epoch's last batch, fit() handles it after the epoch's end.
      // (Not at the step that reaches max_steps: the fit is over, nothing is left to requeue.)
      if (step_now) {
        const Trainer::StopSignals sig = t.stop_signals();
        if (sig.interrupt) {  // Ctrl-C / SIGTERM: stop here, the logs written so far kept
          finish_bar();
          t.interrupted_ = sig.interrupt;
          t.should_stop_ = true;
          return false;
        }
        if (sig.preempt && batch_idx + 1 < n_train && !(o.max_steps >= 0 && t.global_step_ >= o.max_steps)) {
          finish_bar();  // (the pre-emption's message starts a line of its own)
          preempt(t.epoch_, overfit.empty() ? train->state() : LoaderState{t.epoch_, batch_idx + 1});
          return false;
        }
      }
    }
    return finished;  // (fit() ends the bar's line, once the epoch means are over all ranks)
  }

  // Ends the epoch's progress line: the last step's values and the epoch means (rank 0's own until
  // fit() has reduced them over the ranks; then every rank's, as logged).
  void finish_bar() {
    if (!I.bar) return;
    const MetricStore& s = I.train_store;
    std::map<std::string, double> bar_metrics = I.val_prog_bar;
    for (const auto& [k, e] : s.step_values())
      if (e->prog_bar) bar_metrics[k] = e->get();
    for (const auto& [k, v] : s.epoch_prog_bar()) bar_metrics[k] = v;
    I.bar->finish(bar_metrics);
  }
};

void Trainer::fit(LightningModule& module, DataModule& dm) {
  const auto t0 = std::chrono::steady_clock::now();
  Impl& I = *impl_;
  if (lower(opts_.strategy) == "dp")
    out() << "strategy \"dp\" runs as \"ddp\" (one process per device; here world size 1)\n";
  if (opts_.seed) manual_seed(*opts_.seed);
  const int64_t fast = opts_.fast_dev_run.batches;
  should_stop_ = false;
  train_batches_seen_ = 0;
  I.resume_epoch = 0;  // a fit that starts afresh saves from its start (not the previous fit's place)
  I.eval_log_step = 0;
  I.resume_loader = LoaderState{};
  I.resume_sums.reset();
  I.train_store.clear_epoch();  // nothing of a previous fit's last epoch goes into this one's checkpoints
  callback_metrics_.clear();
  logged_metrics_.clear();

  // Rank 0 alone decides where to resume from, and every rank takes its decision: ranks deciding on
  // their own (a requeue checkpoint that one node's view of the filesystem shows and another's does
  // not yet) would train different numbers of steps and pair mismatched collectives.
  const std::string hpc = requeue_checkpoint_path(opts_.default_root_dir);
  bool owns_hpc = false;  // rank 0's to know (a run that completes removes its job's file)
  const std::string resume_path = decided_on_rank0([&] { return resume_path_here(hpc, owns_hpc); });
  requeued_ = requeue_failed_ = false;
  interrupted_ = 0;
  requeue_message_.clear();
  InterruptGuard on_interrupt;  // Ctrl-C / SIGTERM stop this fit at a step boundary

  setup_data(dm, "fit");
  TrainerRun run{*this, I, module, dm, dm.train_loader(), nullptr, {}};
  run.fast = fast;
  if (dm.val_dataset()) run.val = dm.val_loader();
  if (device_.is_cuda())  // which way the batches reach the GPU, and why
    out() << "train data: " << run.train->mode_note()
          << (run.val ? "; val data: " + run.val->mode_note() : std::string()) << "\n";

  log_dir_.clear();
  I.loggers.reset();
  if (writes_files()) {
    // Rank 0 makes the version folder; the others learn its name (checkpoint paths are shared).
    if (is_global_zero()) log_dir_ = next_version_dir(opts_.default_root_dir, "lightning_logs");
    broadcast_string(*comm_, log_dir_);
    if (opts_.logger && is_global_zero()) I.loggers = std::make_unique<RunLoggers>(log_dir_);
  }
  callbacks_ = ordered_callbacks(opts_.callbacks);
  if (opts_.enable_checkpointing && writes_files() && !checkpoint_callback())
    callbacks_.push_back(std::make_shared<ModelCheckpoint>());
  if (fast) {
    // fast_dev_run: no checkpoints or logs written.
    std::vector<std::shared_ptr<Callback>> kept;
    for (auto& c : callbacks_)
      if (!dynamic_cast<ModelCheckpoint*>(c.get())) kept.push_back(c);
    callbacks_ = kept;
  }
  I.bar.reset();
  if (opts_.enable_progress_bar && is_global_zero()) {
    // mpirun hands every rank a pseudo-terminal whatever its own output is (a log file, a pipe): a
    // live '\r' line would fill that file with one endless line, so under mpirun plain lines unless
    // progress_tty says otherwise.
    const int tty = opts_.progress_tty >= 0 ? opts_.progress_tty : env_.launcher == "mpirun" ? 0 : -1;
    I.bar = std::make_unique<ProgressBar>(out(), tty, opts_.log_every_n_steps);
  }

  // Batch counts.
  const int64_t total_train = run.train->num_batches();
  if (opts_.overfit_batches.value > 0) {
    const int64_t n = fast ? std::min(fast, total_train) : opts_.overfit_batches.of(total_train);
    run.train->set_epoch(0);
    for (int64_t i = 0; i < n; ++i) {
      Batch b;
      if (!run.train->next(b)) break;
      batch_to(b, device_);
      run.overfit.push_back(b);
    }
    run.n_train = int64_t(run.overfit.size());
    run.n_val = run.n_train;
  } else {
    run.n_train = fast ? std::min(fast, total_train) : opts_.limit_train_batches.of(total_train);
    const int64_t total_val = run.val ? run.val->num_batches() : 0;
    run.n_val = fast ? std::min(fast, total_val) : opts_.limit_val_batches.of(total_val);
  }
  has_validation_ = run.val != nullptr && run.n_val > 0;
  last_validated_epoch_ = last_validated_step_ = -1;
  const auto& vci = opts_.val_check_interval;
  run.val_every = fast ? run.n_train  // fast_dev_run: once, at the epoch's end
                 : vci.is_fraction ? std::max<int64_t>(1, int64_t(std::floor(vci.value * double(run.n_train))))
                                   : vci.value >= double(run.n_train) + 1 ? run.n_train + 1  // (past 2^63 too)
                                                                         : int64_t(vci.value);
  // As Lightning: a count of batches past the epoch would never validate.
  VOLT_CHECK(!has_validation_ || vci.is_fraction || fast || run.n_train == 0 || run.val_every <= run.n_train,
             "val_check_interval (", vci.value, ") must be at most the number of training batches (",
             run.n_train, "); to turn validation off, set limit_val_batches to 0");
  if (run.val_every > run.n_train) run.val_every = std::max<int64_t>(1, run.n_train);
  validates_mid_epoch_ = has_validation_ && run.val_every < run.n_train;

  module.store_ = &I.train_store;
  I.module = &module;
  module.to(device_);  // before configure_optimizers: the optimizer's state follows the parameters
  I.optim = module.configure_optimizers();
  I.scaler.reset();
  if (compute_dtype_ == DType::F16) I.scaler = std::make_unique<GradScaler>();
  VOLT_CHECK(I.optim.optimizer != nullptr, "configure_optimizers() returned no optimizer");
  VOLT_CHECK(I.optim.interval == "epoch" || I.optim.interval == "step", "configure_optimizers(): scheduler interval \"",
             I.optim.interval, "\" (choices: epoch, step)");
  I.val_prog_bar.clear();
  I.profiler.clear();  // (a fit reports its own rows, not an earlier test's or fit's)
  I.profiler.wrap(module);
  const bool installed_handler = install_requeue_signal();  // unless the program did already
  struct Cleanup {
    Trainer::Impl& I;
    LightningModule& m;
    bool handler;
    std::vector<std::pair<BatchNorm2d*, SumOverRanks>> user_sync;  // what fit's SyncBatchNorm replaced
    ~Cleanup() {
      for (auto& [bn, sum] : user_sync) bn->set_sync(std::move(sum));
      if (handler) uninstall_requeue_signal();
      I.profiler.unwrap();
      I.averager.reset();
      I.buffers.clear();
      m.store_ = nullptr;
      m.comm_ = nullptr;
    }
  } cleanup{I, module, installed_handler, {}};
  module.comm_ = world_size() > 1 ? comm_.get() : nullptr;
  if (opts_.sync_batchnorm && world_size() > 1) {  // (one process: its batch is the whole batch)
    Communicator* c = comm_.get();
    for (BatchNorm2d* bn : batch_norms(module)) cleanup.user_sync.emplace_back(bn, bn->sync());
    const int n = set_sync_batch_norm(
        module, [c](std::vector<double>& v) { c->all_reduce(v.data(), v.size(), ReduceOp::Sum); });
    out() << "sync_batchnorm: " << n << " BatchNorm2d layer(s) normalise over the " << world_size()
          << " processes' batches\n";
  }

  epoch_ = 0;
  global_step_ = 0;
  if (opts_.enable_model_summary) {
    print_model_summary(out(), module,
                        log_dir_.empty()           ? std::string("(none)")
                        : opts_.logger             ? log_dir_
                        : checkpoint_callback()    ? "(none: logger off; checkpoints in " + log_dir_ + ")"
                                                   : std::string("(none: logger off)"));
  }
  if (I.loggers) {
    I.loggers->log_hparams(module.hyperparameters());
    I.loggers->log_graph(module);
  }
  for (auto& c : callbacks_) c->on_fit_start(*this, module);

  const bool resumed = !resume_path.empty();
  I.train_order = run.train->order_signature();
  if (resumed) resume_run(resume_path, module, run.overfit.empty() ? run.train.get() : nullptr);
  // (Before the data-parallel set-up, unlike Lightning's: parameters the hook freezes stay out of the
  // gradient averaging, and every rank starts from rank 0's weights as the hook left them.)
  module.on_fit_start();
  if (world_size() > 1 || comm_->device_buffers()) {  // NCCL: also world size 1 (the same code path)
    // Every rank starts from rank 0's weights and buffers, and averages its gradients every step.
    broadcast_from_rank0(*comm_, module);
    DDPOptions d;
    d.bucket_bytes = opts_.ddp_bucket_bytes;
    I.averager = make_gradient_averager(*comm_, module, d);
    I.ddp_params = module.parameters();
    I.ddp_requires_grad.clear();
    for (const Tensor& p : I.ddp_params) I.ddp_requires_grad.push_back(p.requires_grad());
    I.buffers.clear();
    for (const auto& [name, b] : module.named_buffers()) I.buffers.push_back(b);
    out() << "Data-parallel: " << world_size() << " processes (" << env_.str() << "), " << comm_->backend()
          << " all-reduce, " << I.averager->buckets().size() << " gradient bucket(s)"
          << (comm_->device_buffers() ? " reduced during backward" : "") << "\n";
  }

  // Sanity check: a few validation batches before training, nothing logged.
  if (run.val && !fast && opts_.num_sanity_val_steps != 0 && run.n_val > 0) {
    const int64_t n = opts_.num_sanity_val_steps < 0 ? run.n_val : std::min(run.n_val, opts_.num_sanity_val_steps);
    Profiler::Scope sc(I.profiler, "sanity_check");
    run.run_eval("sanity", n);
  }

  const int64_t epochs_asked = opts_.max_epochs.value_or(opts_.max_steps >= 0 ? -1 : 1000);
  const int64_t max_epochs = fast ? 1 : (epochs_asked < 0 ? std::numeric_limits<int64_t>::max() : epochs_asked);
  bool first = true;
  if (run.n_train == 0)  // (as Lightning's message; the fit then ends without training)
    out() << "Trainer.fit stopped: no training batches (" << total_train << " in the loader, limit_train_batches "
          << opts_.limit_train_batches.value << ")\n";
  while (epoch_ < max_epochs && !should_stop_ && run.n_train > 0) {
    if (opts_.max_steps >= 0 && global_step_ >= opts_.max_steps) break;
    bool finished;
    {
      Profiler::Scope sc(I.profiler, "run_training_epoch");
      finished = run.train_epoch(resumed && first);
    }
    if (requeued_ || interrupted_) break;
    first = false;
    // Cut short by max_steps: a checkpoint of this position holds the sums of its batches, not what
    // the epoch-end hook adds (the resumed run runs the hook at the epoch's real end).
    std::optional<std::map<std::string, MetricStore::EpochSum>> partial_sums;
    if (!finished) partial_sums = I.train_store.epoch_sums(*comm_);
    {
      Profiler::Scope sc(I.profiler, "on_train_epoch_end");
      InEpochHook hook(I.train_store);
      module.on_train_epoch_end();
    }
    I.train_store.reduce_epoch(*comm_);
    run.finish_bar();
    take_epoch_means(I.train_store, I.train_store.epoch_means());
    const auto train_logged = I.train_store.epoch_means(true);
    for (const auto& [k, v] : train_logged) logged_metrics_[k] = v;
    if (I.loggers) {
      I.loggers->log_metrics(train_logged, std::max<int64_t>(0, global_step_ - 1), epoch_);
      if (opts_.log_histograms) I.loggers->log_histograms(module, global_step_);
      if (I.scaler)
        I.loggers->log_metrics({{"amp_loss_scale", I.scaler->get_scale()},
                                {"amp_skipped_steps", double(I.scaler->skipped_steps())}},
                               std::max<int64_t>(0, global_step_ - 1), epoch_);
      // Each epoch's rows reach metrics.csv at its end (an append), not only every 100 steps as
      // Lightning's: a run stopped later keeps them.
      I.loggers->flush();
    }
    if (I.optim.scheduler && I.optim.interval == "epoch" && finished) I.optim.scheduler->step();
    if (finished) {
      I.resume_epoch = epoch_ + 1;
      I.resume_loader = LoaderState{epoch_ + 1, 0};
    } else {  // (overfit_batches: the cached batches go on from the one the cut stopped before)
      I.resume_epoch = epoch_;
      I.resume_loader = run.overfit.empty() ? run.train->state() : LoaderState{epoch_, run.stopped_at};
    }
    I.resume_sums = std::move(partial_sums);
    if (opts_.max_steps >= 0 && global_step_ >= opts_.max_steps) should_stop_ = true;
    {
      Profiler::Scope sc(I.profiler, "callbacks.on_train_epoch_end");
      run_callbacks(&Callback::on_train_epoch_end, module);
    }
    if (finished) ++epoch_;
    // SIGUSR1 during the epoch's last batch: the checkpoint comes after the epoch's validation, its
    // metrics and its callbacks, and resumes at the next epoch's start (ignored when no epoch is left).
    if (finished && !should_stop_ && epoch_ < max_epochs && stop_signals().preempt) {
      run.preempt(epoch_, LoaderState{epoch_, 0});
      break;
    }
  }
  if (I.averager) {
    broadcast_from_rank0(*comm_, I.buffers);  // rank 0's statistics, as in its checkpoints
    check_ranks_agree(module);
  }
  if (requeued_) finish_preemption();
  if (owns_hpc && !requeued_ && !interrupted_ && is_global_zero()) {
    std::error_code ec;
    fs::remove(hpc, ec);  // the run is complete: a later requeue must not go back to it
  }
  if (!interrupted_) {  // (an interrupted fit did not reach its end: Lightning skips on_fit_end too)
    module.on_fit_end();
    for (auto& c : callbacks_) c->on_fit_end(*this, module);
  }
  if (I.loggers) {
    I.loggers->log_hparams_metrics(module.hyperparameters(), callback_metrics_, global_step_,
                                   !requeued_ && !interrupted_);
    I.loggers->flush();
  }
  if (interrupted_ && is_global_zero()) {
    const ModelCheckpoint* mc = checkpoint_callback();
    const std::string last = mc ? (!mc->last_model_path().empty() ? mc->last_model_path() : mc->best_model_path()) : "";
    out() << "Detected " << (interrupted_ == SIGINT ? "KeyboardInterrupt (SIGINT)" : "SIGTERM")
          << ": stopped at epoch " << epoch_ << ", step " << global_step_ << "; the logs so far are in "
          << (log_dir_.empty() ? std::string("(none)") : log_dir_)
          << (last.empty() ? std::string("; no checkpoint was written") : "; the latest checkpoint is " + last)
          << std::endl;
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (I.scaler && is_global_zero())
    out() << "Mixed precision (" << opts_.precision << "): " << I.scaler->skipped_steps() << " of "
          << I.scaler->steps() << " optimizer steps skipped (Inf/NaN gradients); loss scale now "
          << I.scaler->get_scale() << "\n";
  I.profiler.report(out(), total, "fit");
  for (auto& c : callbacks_)
    if (auto* es = dynamic_cast<EarlyStopping*>(c.get()); es && !es->reason().empty()) out() << es->reason() << "\n";
}

}  // namespace volt
