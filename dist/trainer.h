// Trainer: Lightning's training loop for a LightningModule and a DataModule (fit, validate, test)
// with its flags (limits, validation interval, sanity check, gradient clipping and accumulation,
// fast_dev_run, overfit_batches), loggers (TensorBoard + CSV in <root>/lightning_logs/version_N),
// callbacks, progress bar, profiler and exact resume. Data-parallel: launched by srun or mpirun
// as several processes, each runs this same loop on its shard of the data, gradients are averaged
// over the ranks each step (dist/ddp.h), epoch metrics are reduced over the ranks, and only rank 0
// prints, writes logs and writes checkpoints. One process is world size 1.
#pragma once
#include <cstdint>
#include <iostream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "../data/datamodule.h"
#include "callbacks.h"
#include "communicator.h"
#include "lightning_module.h"

namespace volt {

class Profiler;
struct Checkpoint;

// A count of batches (an integer) or a fraction of them (a floating-point value), as Lightning's
// limit_*_batches and val_check_interval: 5 means 5 batches, 0.25 a quarter, 1.0 all.
struct BatchAmount {
  BatchAmount(double fraction) : value(fraction), is_fraction(true) {}
  template <class T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  BatchAmount(T count) : value(double(count)), is_fraction(false) {}
  // The number of batches out of `total` (a fraction rounds down, but not to 0 when it is > 0).
  int64_t of(int64_t total) const;
  double value;
  bool is_fraction;
};

// fast_dev_run: false, true (1 batch) or n batches of train, val and test.
struct FastDevRun {
  FastDevRun(bool on = false) : batches(on ? 1 : 0) {}
  template <class T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  FastDevRun(T n) : batches(int64_t(n)) {}
  int64_t batches;
};

struct TrainerOptions {
  // -1 = no limit; unset: as Lightning's None, 1000 unless max_steps is set (then no limit)
  std::optional<int64_t> max_epochs;
  int64_t max_steps = -1;     // optimizer steps; -1 = no limit
  std::string accelerator = "auto";  // "cpu", "gpu"/"cuda", "auto"
  // Processes (one per device) on each node: 0 = what the launcher started, -1 = one per GPU, or a
  // count that must match the launcher's tasks per node (Volt does not spawn processes).
  int64_t devices = 0;
  int64_t gpus = 0;                  // the tutorial's gpus=N: accelerator "gpu" and devices=N (-1: every GPU)
  int64_t num_nodes = 0;             // nodes: 0 = what the launcher started, or a count that must match it
  std::string strategy = "auto";     // "auto", "ddp", "dp" (run as ddp)
  // Lightning's sync_batchnorm: with several processes, every BatchNorm2d normalises in training with
  // the statistics of the whole data-parallel batch (sync_batch_norm).
  bool sync_batchnorm = false;
  // "32"; "16-mixed" (float16 compute under Autocast, float32 master weights, dynamic loss scaling:
  // an optimizer step with Inf/NaN gradients is skipped, counted and not seen by a per-step
  // scheduler) or "bf16-mixed" (bfloat16 compute, no scaling); "16" and "bf16" are aliases. On the
  // CPU the mixed modes run the float32 kernels between 16-bit casts: correct, but slower than "32".
  std::string precision = "32";
  FastDevRun fast_dev_run = false;
  BatchAmount overfit_batches = 0.0;  // > 0: the same first batches every epoch, also validated on
  BatchAmount limit_train_batches = 1.0, limit_val_batches = 1.0, limit_test_batches = 1.0;
  BatchAmount val_check_interval = 1.0;  // fraction of the epoch, or every n training batches
  int64_t check_val_every_n_epoch = 1;
  int64_t num_sanity_val_steps = 2;
  double gradient_clip_val = 0.0;          // 0 = off
  std::string gradient_clip_algorithm = "norm";  // "norm" or "value"
  int64_t accumulate_grad_batches = 1;
  int64_t log_every_n_steps = 50;
  std::optional<uint64_t> seed;  // manual_seed(seed) at the start of fit/validate/test
  bool deterministic = false;    // the CPU kernels are deterministic; kept for Lightning's flag
  std::string default_root_dir = ".";  // logs and checkpoints under <root>/lightning_logs/version_N
  bool logger = true;                  // TensorBoard + CSV loggers
  bool enable_checkpointing = true;    // a default ModelCheckpoint when none is given
  bool enable_progress_bar = true;
  bool enable_model_summary = true;
  bool log_histograms = true;  // weight/bias histograms per epoch
  // On a GPU, run the training step as a CUDA graph (captured after two eager steps, then replayed:
  // one launch per step; gradient clipping included) when the step allows it: one process, no
  // gradient accumulation, no profiler, batches of the full batch size (a shorter last batch runs
  // eagerly). Note that training_step then runs on the host only for the eager steps and the
  // capture: its GPU work (forward, loss, log() of device tensors) repeats at each replay, other host
  // side effects do not, and a branch on the host (on batch_idx, the epoch, a counter) stays as the
  // capture took it. A training_step that must branch per step wants cuda_graphs = false.
  bool cuda_graphs = true;
  std::string profiler;        // "", "simple", "advanced"
  std::string resume;          // "" or "last" or a checkpoint path: continue that run exactly
  // Run in this order, except that every ModelCheckpoint runs after the others (ordered_callbacks).
  std::vector<std::shared_ptr<Callback>> callbacks;
  std::ostream* out = nullptr;  // progress, summaries and tables (nullptr = std::cout); rank 0 only
  int progress_tty = -1;        // -1: decide from stdout (a live line on a terminal; plain lines under
                                // mpirun, whose pseudo-terminal may lead to a file); 0/1 force
  // Data-parallel runs: the communicator (nullptr = make_trainer_communicator() for the detected
  // process environment) and the gradient bucket size. A given NCCL communicator is used even
  // alone (world size 1: the same code path as several GPUs).
  std::shared_ptr<Communicator> communicator;
  size_t ddp_bucket_bytes = size_t(25) << 20;
};

class Trainer {
 public:
  // Checks the options and the process layout (dist/process_env.h check_layout); unsupported ones
  // (a GPU or mixed precision on this CPU Trainer, unknown names, a layout that cannot work) throw
  // volt::Error saying why and what is possible.
  explicit Trainer(TrainerOptions opts = {});
  ~Trainer();

  // Tells dm the data-parallel layout and the device, and runs its prepare_data() (downloads on
  // local rank 0 of each node while the others wait). fit/validate/test do it too; call it first
  // to set up the data before building the model (e.g. to learn the image size).
  void prepare_data(DataModule& dm);
  void fit(LightningModule& module, DataModule& dm);
  // Returns the epoch means of the logged metrics, one map per loader (one here); the loggers get
  // them too (those logged with logger=true), as test()'s.
  std::vector<std::map<std::string, double>> validate(LightningModule& module, DataModule& dm,
                                                      const std::string& ckpt = "");
  // ckpt: "" (current weights), "best" (the ModelCheckpoint's best), "last" (its last.ckpt; none
  // saved: the current weights, said), or a path.
  std::vector<std::map<std::string, double>> test(LightningModule& module, DataModule& dm,
                                                  const std::string& ckpt = "");

  // State, as Lightning exposes it to callbacks.
  int64_t current_epoch() const { return epoch_; }
  int64_t global_step() const { return global_step_; }
  const std::map<std::string, double>& callback_metrics() const { return callback_metrics_; }
  const std::map<std::string, double>& logged_metrics() const { return logged_metrics_; }
  const std::string& log_dir() const { return log_dir_; }  // "" when nothing is written
  bool should_stop() const { return should_stop_; }
  // Whether this fit validates (it has validation batches) and the epoch of its latest validation
  // (-1: none yet; the sanity check does not count): callbacks that monitor a metric act when it is new.
  bool has_validation() const { return has_validation_; }
  int64_t last_validated_epoch() const { return last_validated_epoch_; }
  // The global step of the latest validation (-1: none yet): its metrics are of the current weights
  // while this is global_step().
  int64_t last_validated_step() const { return last_validated_step_; }
  // Whether this fit validates within its epochs (val_check_interval below an epoch's batches): then,
  // as in Lightning, the callbacks that monitor a metric act after each of those validations
  // (Callback::on_validation_end), not only at the epoch's end.
  bool validates_mid_epoch() const { return validates_mid_epoch_; }
  // Where the trainer prints (rank 0's stream; the other ranks' prints go nowhere).
  std::ostream& out() const;
  // Stops the fit after this epoch (asked after a validation within the epoch: there). Asked on one
  // rank, it is every rank's: each callback sees the stop that any rank asked for before it (the ranks
  // agree before each one).
  void request_stop() { should_stop_ = true; }
  bool writes_files() const { return opts_.fast_dev_run.batches == 0; }
  const TrainerOptions& options() const { return opts_; }
  const ProcessEnv& process_env() const { return env_; }
  Device device() const { return device_; }  // where the module trains: the process's GPU, or the CPU
  DType compute_dtype() const { return compute_dtype_; }  // the precision's compute type (float32: autocast off)
  Communicator& communicator() const { return *comm_; }
  int world_size() const { return comm_->size(); }
  int global_rank() const { return comm_->rank(); }
  bool is_global_zero() const { return comm_->rank() == 0; }
  ModelCheckpoint* checkpoint_callback() const;  // the first ModelCheckpoint, or nullptr
  const std::vector<std::shared_ptr<Callback>>& callbacks() const { return callbacks_; }
  // Saves the run's exact state (model, optimizer, scheduler, RNG, progress, callbacks) to `path`:
  // rank 0 writes it, and every rank returns once it is complete (call it on every rank). The
  // progress is that of the last epoch end, resume or pre-emption: called from a module in mid-epoch,
  // the run resumed from it repeats the epoch's batches since then.
  void save_checkpoint(const std::string& path) const;
  // The last fit was pre-empted by SIGUSR1: it wrote <root>/hpc_ckpt.ckpt and (under Slurm) asked
  // for a requeue; requeue_message() says what happened, requeue_failed() whether the request failed.
  bool requeued() const { return requeued_; }
  bool requeue_failed() const { return requeue_failed_; }
  const std::string& requeue_message() const { return requeue_message_; }
  // The last fit was stopped by Ctrl-C (SIGINT) or SIGTERM, at a step boundary: the signal's number
  // (0: it was not). As Lightning's graceful shutdown: the logs are on disk, no checkpoint is written
  // (the last one ModelCheckpoint wrote stays), on_fit_end does not run. While it fits, the Trainer
  // handles these two signals (dist/requeue.h: InterruptGuard); a second one ends the process.
  int interrupted() const { return interrupted_; }
  // Counts of the last fit (for tests and reports).
  int64_t train_batches_seen() const { return train_batches_seen_; }

 private:
  struct Impl;
  void check_options();
  // "best" / "last" / a path / "" (keep the current weights) -> the checkpoint file to load, as rank 0
  // resolves it (a collective) or as this process does.
  std::string resolve_ckpt(const std::string& ckpt, const char* who);
  std::string resolve_ckpt_here(const std::string& ckpt, const char* who) const;
  // prepare_data, then dm.setup(stage), then (several ranks) an io_barrier: setup reads files.
  void setup_data(DataModule& dm, const std::string& stage);
  // Loads a checkpoint's model weights into `module` (after checking every name and shape).
  void load_weights(LightningModule& module, const std::string& path);
  // The signals seen by any rank at a step boundary (one collective when there are several):
  // SIGUSR1's pre-emption, and SIGINT/SIGTERM's interruption (the signal; 0 for none).
  struct StopSignals {
    bool preempt = false;
    int interrupt = 0;
  };
  StopSignals stop_signals();
  void finish_preemption();
  // Data-parallel: throws volt::Error unless every rank holds the same parameters and buffers.
  void check_ranks_agree(const Module& module);
  // Data-parallel: every rank's callback metrics become rank 0's (a collective; nothing at size 1).
  void sync_callback_metrics();
  // Loads `path` into the run about to start: the module, optimizer, scheduler, scaler and loader
  // (`train_loader`; none under overfit_batches), the progress, callback states and metrics.
  void resume_run(const std::string& path, LightningModule& module, DataLoader* train_loader);
  // Every callback's `hook`, in order, each deciding on rank 0's metrics and the stop any rank asked for.
  void run_callbacks(void (Callback::*hook)(Trainer&, LightningModule&), LightningModule& module);
  // Rank 0 runs decide() and every rank returns its answer (a collective; at size 1 just decide()):
  // for choices made from what a rank sees on its filesystem, which may differ between nodes. An
  // error on rank 0 is every rank's error.
  std::string decided_on_rank0(const std::function<std::string()>& decide);
  // Where fit() resumes from, as this process sees it (rank 0 decides): `resume`, or in a requeued
  // Slurm job its own newest checkpoint (`hpc`, the pre-empted run's, or a further-on last.ckpt).
  // owns_hpc: `hpc` is this job's.
  std::string resume_path_here(const std::string& hpc, bool& owns_hpc);
  // load_checkpoint(path) on every rank; where any rank cannot read it, every rank throws, naming
  // that rank (a collective).
  Checkpoint load_on_every_rank(const std::string& path);
  // Epoch means of s into callback_metrics, with each forked metric's plain name too.
  void take_epoch_means(const MetricStore& s, const std::map<std::string, double>& means);
  // The shared end of validate() and test(): runs `loader` for up to `limit` batches.
  std::map<std::string, double> run_eval(LightningModule& module, DataLoader& loader, int64_t limit, bool is_test);
  // validate()'s and test()'s epoch means to logged_metrics() and the loggers (those logged with logger=true).
  void log_eval_means();
  // Up to n batches from next(i, batch) (false: no more; the batch on the module's device) through
  // validation_step or test_step, in eval mode under autocast; the epoch means. The store is `s`
  // (stage "test" or "val"); afterwards the module's store is unset and its mode is eval. After each
  // batch, log_step (if set) gets the on_step values it logged with logger=true, if any.
  using StepLog = std::function<void(const std::map<std::string, double>&)>;
  static std::map<std::string, double> eval_loop(LightningModule& module, MetricStore& s,
                                                 const std::function<bool(int64_t, Batch&)>& next, int64_t n,
                                                 bool test, Profiler& prof, Communicator& comm, DType compute,
                                                 const StepLog& log_step);
  // The loggers' log_step for an evaluation (none without loggers): as Lightning's, each batch's on_step
  // values at a step that counts the evaluation batches since the fit, validate or test began.
  StepLog eval_step_logger();
  TrainerOptions opts_;
  ProcessEnv env_;
  Device device_ = Device::cpu();
  DType compute_dtype_ = DType::F32;  // the precision's Autocast type (float32: none)
  std::shared_ptr<Communicator> comm_;
  std::vector<std::shared_ptr<Callback>> callbacks_;
  std::unique_ptr<Impl> impl_;
  int64_t epoch_ = 0, global_step_ = 0, train_batches_seen_ = 0;
  std::map<std::string, double> callback_metrics_, logged_metrics_;
  std::string log_dir_;
  bool should_stop_ = false;
  bool has_validation_ = false;
  int64_t last_validated_epoch_ = -1, last_validated_step_ = -1;
  bool validates_mid_epoch_ = false;
  bool requeued_ = false, requeue_failed_ = false;
  int interrupted_ = 0;
  std::string requeue_message_;
  friend struct TrainerRun;
};

// The communicator a Trainer with these options makes when TrainerOptions::communicator is unset:
// NCCL between processes on GPUs, else make_communicator() (MPI between CPU processes, local for
// one). For a program that keeps the communicator itself (to abort every rank on an error).
std::unique_ptr<Communicator> make_trainer_communicator(const TrainerOptions& opts, const ProcessEnv& env);

// Moves a loader's batch (images and labels) to `device` (nothing on the CPU).
void batch_to(Batch& b, Device device);

// The run's folder for "resume": "last" resolves to the newest version_N/checkpoints/last.ckpt
// under <root>/lightning_logs; anything else is a path. Throws volt::Error when there is none.
std::string resolve_resume_path(const std::string& root, const std::string& what);
// Each version folder's latest checkpoint (its last.ckpt, else its newest .ckpt), newest version
// first: resume "last" takes the first.
std::vector<std::string> latest_checkpoints(const std::string& root);

}  // namespace volt
