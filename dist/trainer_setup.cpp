// The Trainer's setup and its data-parallel helpers (see trainer.h): option checks, the device and
// process layout, data preparation on every rank, checkpoint paths, the end-of-fit agreement check
// and Slurm pre-emption. The loops are in trainer.cpp.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "dist/checkpoint.h"
#include "dist/csv_logger.h"
#include "dist/log_dir.h"
#include "dist/requeue.h"
#include "dist/trainer.h"
#include "dist/trainer_internal.h"
#include "engine/device.h"
#include "engine/error.h"
#include "volt/config.h"

namespace volt {

namespace fs = std::filesystem;

namespace trainer_detail {
std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

namespace {
const std::string kSumKey = "trainer.epoch_sum.", kWeightKey = "trainer.epoch_weight.",
                  kShownKey = "trainer.epoch_shown.";
}  // namespace

void put_epoch_sums(const std::map<std::string, MetricStore::EpochSum>& sums,
                    std::map<std::string, std::string>& metadata) {
  for (const auto& [n, s] : sums) {
    if (!(s.weight > 0)) continue;  // not logged in this epoch
    metadata[kSumKey + n] = format_double(s.sum);
    metadata[kWeightKey + n] = format_double(s.weight);
    metadata[kShownKey + n] = std::string(s.prog_bar ? "prog_bar" : "") + (s.prog_bar && s.logger ? "," : "") +
                              (s.logger ? "logger" : "");
  }
}

std::map<std::string, MetricStore::EpochSum> epoch_sums_from_metadata(const std::map<std::string, std::string>& metadata) {
  std::map<std::string, MetricStore::EpochSum> sums;
  std::map<std::string, int> parts;  // of each name: 1 sum, 2 weight, 4 shown
  auto under = [](const std::string& k, const std::string& prefix) {
    return k.size() > prefix.size() && k.compare(0, prefix.size(), prefix) == 0;
  };
  for (const auto& [k, v] : metadata) {
    if (under(k, kSumKey)) {
      const std::string n = k.substr(kSumKey.size());
      sums[n].sum = parse_double("Trainer", k, v);
      parts[n] |= 1;
    } else if (under(k, kWeightKey)) {
      const std::string n = k.substr(kWeightKey.size());
      const double w = parse_double("Trainer", k, v);
      VOLT_CHECK(w > 0 && std::isfinite(w), "Trainer: checkpoint state \"", k, "\" = \"", v,
                 "\" is not a positive batch-size total");
      sums[n].weight = w;
      parts[n] |= 2;
    } else if (under(k, kShownKey)) {
      const std::string n = k.substr(kShownKey.size());
      VOLT_CHECK(v.empty() || v == "prog_bar" || v == "logger" || v == "prog_bar,logger", "Trainer: checkpoint state \"",
                 k, "\" = \"", v, "\" is not one of \"\", prog_bar, logger, prog_bar,logger");
      sums[n].prog_bar = v.rfind("prog_bar", 0) == 0;
      sums[n].logger = v.find("logger") != std::string::npos;
      parts[n] |= 4;
    }
  }
  for (const auto& [n, p] : parts)
    VOLT_CHECK(p == 7, "Trainer: the checkpoint's epoch sums of \"", n, "\" lack their ",
               !(p & 1) ? kSumKey : !(p & 2) ? kWeightKey : kShownKey, n, " entry");
  return sums;
}

}  // namespace trainer_detail

using trainer_detail::lower;

namespace {
std::string hparam_str(const HParamValue& v) {
  if (auto d = std::get_if<double>(&v)) return format_double(*d);
  if (auto b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  return std::get<std::string>(v);
}
}  // namespace

namespace {
bool uses_gpu(const TrainerOptions& o) {
  const std::string acc = lower(o.accelerator);
  return acc == "gpu" || acc == "cuda" || o.gpus != 0 || (acc == "auto" && cuda_device_count() > 0);
}
}  // namespace

std::unique_ptr<Communicator> make_trainer_communicator(const TrainerOptions& opts, const ProcessEnv& env) {
  // Several processes: NCCL between GPU ranks (one GPU each, bootstrapped by MPI), MPI between CPU ranks.
  if (uses_gpu(opts) && env.world_size > 1) return make_nccl_communicator(env);
  return make_communicator(env);
}

namespace {
// Several processes, each checking its own setup (the GPUs it sees, its node's layout): every rank
// learns whether one failed, over the MPI communicator that every rank made first, so that a check
// failing on some ranks only stops all of them with its message instead of leaving the others
// waiting for it in MPI's start-up or the first collective. Also refuses ranks that decided the
// accelerator differently (accelerator="auto" where some nodes see GPUs and others none).
void agree_on_setup(Communicator& host, const std::string& error, bool gpu) {
  // The lowest rank that failed, as size - rank through a Max (0: none did).
  const int failed = host.size() - int(host.all_reduce_value(error.empty() ? 0.0 : double(host.size() - host.rank()),
                                                            ReduceOp::Max));
  if (failed < host.size()) {
    char msg[1024] = {};
    if (host.rank() == failed) std::snprintf(msg, sizeof msg, "%s", error.c_str());
    host.broadcast(msg, sizeof msg, failed);
    VOLT_FAIL(host.rank() == failed ? "" : "rank " + std::to_string(failed) + " cannot train: ", msg);
  }
  const double with_gpu = host.all_reduce_value(gpu ? 1.0 : 0.0, ReduceOp::Sum);
  VOLT_CHECK(with_gpu == 0 || with_gpu == host.size(), int(with_gpu), " of the ", host.size(),
             " processes train on a GPU and the others on the CPU (accelerator=\"auto\" on nodes that do and do not "
             "see GPUs?); every process must use the same accelerator: set it to \"gpu\" or \"cpu\"");
}

// Every rank's host name, in rank order.
std::vector<std::string> host_names(Communicator& host) {
  char mine[256] = {};
  ::gethostname(mine, sizeof mine - 1);
  std::vector<char> all(sizeof mine * size_t(host.size()));
  host.all_gather(mine, all.data(), sizeof mine);
  std::vector<std::string> names;
  for (int r = 0; r < host.size(); ++r) names.emplace_back(all.data() + sizeof mine * size_t(r));
  return names;
}
}  // namespace

Trainer::Trainer(TrainerOptions opts) : opts_(std::move(opts)) {
  env_ = detect_process_env();
  std::unique_ptr<Communicator> host;  // made first by every process of a launched job (see agree_on_setup)
  if (!opts_.communicator && env_.world_size > 1) host = make_communicator(env_);
  // The ranks agree over it, or over a given communicator that spans the launched job (cnn_train
  // makes its own first, to stop every rank on an error; host buffers travel over MPI either way).
  Communicator* agree = host ? host.get()
                        : opts_.communicator && env_.world_size > 1 && opts_.communicator->size() == env_.world_size
                            ? opts_.communicator.get()
                            : nullptr;
  // mpirun does not say which node a rank is on: the host names do (any mapping, uneven nodes).
  const std::vector<std::string> hosts =
      agree && env_.launcher == "mpirun" ? host_names(*agree) : std::vector<std::string>{};
  bool gpu = false;
  std::string error;
  try {
    if (!hosts.empty()) set_nodes_from_hosts(env_, hosts);
    check_options();
    gpu = uses_gpu(opts_);
    check_layout(env_, opts_.devices, cuda_device_count(), gpu, opts_.num_nodes);
    device_ = gpu ? Device::cuda(process_gpu(env_, cuda_device_count())) : Device::cpu();
  } catch (const Error& e) {
    if (!agree) throw;
    error = e.what();
  }
  if (agree) agree_on_setup(*agree, error, gpu);
  if (opts_.communicator)
    comm_ = opts_.communicator;
  else if (host && !gpu)
    comm_ = std::move(host);  // (CPU ranks: the MPI communicator itself)
  else
    comm_ = std::shared_ptr<Communicator>(make_trainer_communicator(opts_, env_));
  VOLT_CHECK(!(device_.is_cuda() && comm_->size() > 1 && !comm_->device_buffers()), "data-parallel training on GPUs "
             "needs a communicator on device buffers (nccl), but the given one is ", comm_->backend(),
             " (host buffers); leave TrainerOptions::communicator unset, or train on the CPU (accelerator=\"cpu\")");
  VOLT_CHECK(!(device_.is_cpu() && comm_->device_buffers()), "training on the CPU needs a communicator on host buffers "
             "(local or mpi), but the given one is ", comm_->backend(), " (GPU buffers); use accelerator=\"gpu\"");
  VOLT_CHECK(comm_->size() == env_.world_size || opts_.communicator, "Trainer: the communicator has ", comm_->size(),
             " ranks but the launcher started ", env_.world_size, " processes");
  impl_ = std::make_unique<Impl>(opts_.profiler);
}

Trainer::~Trainer() = default;

ModelCheckpoint* Trainer::checkpoint_callback() const {
  for (const auto& c : callbacks_)
    if (auto* m = dynamic_cast<ModelCheckpoint*>(c.get())) return m;
  return nullptr;
}

void Trainer::save_checkpoint(const std::string& path) const {
  VOLT_CHECK(impl_->module && impl_->optim.optimizer, "Trainer::save_checkpoint: no run in progress");
  // Written in mid-epoch: the sums of the epoch's batches before the loader position it records,
  // over every rank (the same decision on each: the position is the same), which the resumed run
  // goes on from. The train store's own, unless the position is a resumed checkpoint's or an epoch
  // cut short before its end hook (resume_sums).
  std::map<std::string, MetricStore::EpochSum> sums;
  if (impl_->resume_loader.next_batch > 0)
    sums = impl_->resume_sums ? *impl_->resume_sums : impl_->train_store.epoch_sums(*comm_);
  std::exception_ptr failed;  // rank 0's
  if (is_global_zero()) {
    try {
      std::map<std::string, std::string> hp;
      for (const auto& [k, v] : impl_->module->hyperparameters()) hp[k] = hparam_str(v);
      Checkpoint c = capture(*impl_->module, *impl_->optim.optimizer, impl_->optim.scheduler.get(),
                             impl_->resume_epoch, global_step_, impl_->resume_loader, hp);
      if (impl_->scaler) c.loss_scaler = impl_->scaler->state_dict();
      save_callback_states(callbacks_, c.metadata);
      c.metadata["trainer"] = "volt.Trainer";
      if (!env_.job_id.empty()) c.metadata["slurm_job_id"] = env_.job_id;  // whose requeue may resume it
      if (impl_->resume_loader.next_batch > 0 && !impl_->train_order.empty())
        c.metadata["trainer.train_order"] = impl_->train_order;  // what the position means
      // What the callbacks read at the next epoch end: a run resumed in mid-epoch, after a validation
      // of that epoch, decides there as the uninterrupted run does.
      if (last_validated_epoch_ >= 0) c.metadata["trainer.last_validated_epoch"] = std::to_string(last_validated_epoch_);
      if (last_validated_step_ >= 0) c.metadata["trainer.last_validated_step"] = std::to_string(last_validated_step_);
      for (const auto& [k, v] : callback_metrics_) c.metadata["trainer.callback_metric." + k] = format_double(v);
      trainer_detail::put_epoch_sums(sums, c.metadata);
      ::volt::save_checkpoint(path, c);
    } catch (...) {
      failed = std::current_exception();
    }
  }
  if (world_size() > 1) {
    // The other ranks wait until rank 0's file is complete (a large checkpoint on a slow filesystem
    // may take minutes), then learn whether it was written: a failure is every rank's, or the others
    // would go on alone to the next collective and wait there for a rank that has stopped.
    comm_->io_barrier();
    const bool rank0_failed = comm_->all_reduce_value(failed ? 1.0 : 0.0, ReduceOp::Max) != 0.0;
    if (rank0_failed && !failed) VOLT_FAIL("rank 0 could not write the checkpoint ", path, " (its error says why)");
  }
  if (failed) std::rethrow_exception(failed);
}

std::string Trainer::resume_path_here(const std::string& hpc, bool& owns_hpc) {
  if (!is_requeued_job())
    return opts_.resume.empty() ? std::string() : resolve_resume_path(opts_.default_root_dir, opts_.resume);
  // A requeued Slurm job continues from its own newest checkpoint, without flags and before any
  // `resume` (the job's command line names where it first started, which the job has gone past):
  // the one its pre-empted run left (hpc_ckpt.ckpt) or, after a node failure, the newest last.ckpt
  // when that is further on. Checkpoints another job left in the same folder are not this run's.
  std::string newest;
  int64_t newest_step = -1;
  auto consider = [&](const std::string& path) {
    Checkpoint c;
    try {
      c = load_checkpoint(path);
    } catch (const Error& e) {
      out() << "not resuming from " << path << ": " << e.what() << "\n";
      return false;
    }
    const auto it = c.metadata.find("slurm_job_id");
    const std::string owner = it == c.metadata.end() ? std::string() : it->second;
    if (owner != env_.job_id) {
      out() << path << " was written by " << (owner.empty() ? "a run outside Slurm" : "Slurm job " + owner)
            << ", not by this job (" << env_.job_id << "): not resuming from it (pass --resume to)\n";
      return false;
    }
    if (c.global_step > newest_step) newest = path, newest_step = c.global_step;
    return true;
  };
  if (fs::is_regular_file(hpc)) owns_hpc = consider(hpc);
  for (const std::string& latest : latest_checkpoints(opts_.default_root_dir))  // this job's newest folder
    if (consider(latest)) break;
  if (newest.empty())
    return opts_.resume.empty() ? std::string() : resolve_resume_path(opts_.default_root_dir, opts_.resume);
  if (!opts_.resume.empty())
    out() << "Requeued job " << env_.job_id << ": resuming from its own " << newest << ", not from resume=\""
          << opts_.resume << "\"\n";
  return newest;
}

int64_t BatchAmount::of(int64_t total) const {
  VOLT_CHECK(value >= 0, "a batch limit must be >= 0, got ", value);
  // (compared as a double first: a count of 2^63 or more has no int64 value)
  if (!is_fraction) return value >= double(total) ? total : int64_t(value);
  VOLT_CHECK(value <= 1.0, "a batch fraction must be in [0, 1], got ", value,
             " (pass an integer for a number of batches)");
  const int64_t n = int64_t(std::floor(value * double(total)));
  return value > 0 && n == 0 && total > 0 ? 1 : n;
}

// The loader's host batch on the run's device (a no-op on the CPU).
void batch_to(Batch& b, Device device) {
  if (device.is_cpu()) return;
  b.images = b.images.to(device);
  b.labels = b.labels.to(device);
}

void Trainer::resume_run(const std::string& path, LightningModule& module, DataLoader* train_loader) {
  Impl& I = *impl_;
  Checkpoint c = load_on_every_rank(path);
  // A position in mid-epoch names a batch of that run's order: under another batch size, rank count
  // or seed the batches after it are others, and samples would be seen twice or not at all.
  const auto order = c.metadata.find("trainer.train_order");
  VOLT_CHECK(c.loader.next_batch == 0 || order == c.metadata.end() || order->second == I.train_order, "resume: ",
             path, " stopped in mid-epoch (before batch ", c.loader.next_batch, " of epoch ", c.loader.epoch,
             ") of training batches made as ", order->second, "; this run's are ", I.train_order,
             ", so its batches from there are not the ones that run had left. Resume with the same data, batch "
             "size, device count and seed, or from a checkpoint written at an epoch's end");
  // The Trainer's own state first, then the callbacks': one that does not parse then fails before
  // restore() changes the model; and if restore() refuses the checkpoint, the callbacks get their
  // own states back, so nothing of it is loaded.
  std::map<std::string, double> metrics;
  int64_t validated = -1, validated_step = -1;
  const std::string metric_prefix = "trainer.callback_metric.";
  for (const auto& [k, v] : c.metadata) {
    if (k.compare(0, metric_prefix.size(), metric_prefix) == 0)
      metrics[k.substr(metric_prefix.size())] = parse_double("Trainer", k, v);
    else if (k == "trainer.last_validated_epoch")
      validated = parse_count("Trainer", k, v);
    else if (k == "trainer.last_validated_step")
      validated_step = parse_count("Trainer", k, v);
  }
  auto sums = trainer_detail::epoch_sums_from_metadata(c.metadata);
  const auto own_states = callback_states(callbacks_);
  load_callback_states(callbacks_, c.metadata, out());
  try {
    restore(c, module, *I.optim.optimizer, I.optim.scheduler.get(), train_loader, {}, I.scaler.get());
  } catch (...) {
    put_back_callback_states(callbacks_, own_states);
    throw;
  }
  epoch_ = c.epoch;
  global_step_ = c.global_step;
  module.global_step_ = global_step_;
  I.resume_epoch = c.epoch;  // what a save before the next epoch's end records
  I.resume_loader = c.loader;
  I.resume_sums = std::move(sums);  // (also when empty: the loader position stays the checkpoint's)
  callback_metrics_ = std::move(metrics);
  last_validated_epoch_ = validated;
  // (a checkpoint from before the step was kept: its epoch's validation was of its weights)
  last_validated_step_ = validated_step >= 0 ? validated_step : validated == c.epoch ? c.global_step : -1;
  out() << "Resumed from " << path << " at epoch " << epoch_ << ", step " << global_step_ << "\n";
}

std::string resolve_resume_path(const std::string& root, const std::string& what) {
  if (what != "last") {
    std::error_code ec;  // (a name too long, a folder without access: the reason, not a filesystem_error)
    const fs::file_status st = fs::status(what, ec);
    if (ec == std::errc::no_such_file_or_directory) ec.clear();
    VOLT_CHECK(fs::is_regular_file(st), "resume: checkpoint \"", what, "\" ",
               ec                     ? "cannot be read: " + ec.message()
               : !fs::exists(st)      ? std::string("does not exist")
               : fs::is_directory(st) ? std::string("is a folder (name a .ckpt file in it, or pass \"last\")")
                                      : std::string("is not a regular file"));
    return what;
  }
  const std::vector<std::string> latest = latest_checkpoints(root);
  VOLT_CHECK(!latest.empty(), "resume \"last\": no checkpoint under ", root, "/lightning_logs/version_*/checkpoints");
  return latest.front();
}

std::vector<std::string> latest_checkpoints(const std::string& root) {
  const std::string parent = root + "/lightning_logs";
  std::vector<std::string> out;
  for (int v = next_version(parent) - 1; v >= 0; --v) {
    const std::string dir = parent + "/version_" + std::to_string(v) + "/checkpoints";
    if (!fs::is_directory(dir)) continue;
    if (fs::is_regular_file(dir + "/last.ckpt")) {
      out.push_back(dir + "/last.ckpt");
      continue;
    }
    std::string newest;
    fs::file_time_type t{};
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".ckpt" && (newest.empty() || e.last_write_time() > t)) {
        newest = e.path().string();
        t = e.last_write_time();
      }
    if (!newest.empty()) out.push_back(newest);
  }
  return out;
}

std::ostream& Trainer::out() const {
  if (comm_->rank() == 0) return opts_.out ? *opts_.out : std::cout;
  static std::ostream null_stream(nullptr);  // other ranks print nothing
  return null_stream;
}

void Trainer::prepare_data(DataModule& dm) {
  dm.set_device(device_);  // the loaders deliver batches where the module trains
  if (comm_->size() > 1) {
    // The barrier waits for each node's download: io_barrier's limit, not a collective's.
    dm.set_distributed(comm_->rank(), comm_->size(), env_.local_rank, [c = comm_] { c->io_barrier(); });
  }
  dm.prepare_data();
}

void Trainer::setup_data(DataModule& dm, const std::string& stage) {
  prepare_data(dm);
  dm.setup(stage);
  // setup reads the data (an image folder on a slow shared filesystem may take minutes on one rank):
  // the next collective must not hold it to a collective's short limit.
  if (comm_->size() > 1) comm_->io_barrier();
}

void Trainer::check_options() {
  const std::string acc = lower(opts_.accelerator);
  VOLT_CHECK(acc == "cpu" || acc == "auto" || acc == "gpu" || acc == "cuda", "accelerator \"", opts_.accelerator,
             "\" is not known (choices: cpu, gpu, auto)");
  VOLT_CHECK(opts_.gpus >= -1, "gpus must be a count >= 1, -1 (one per GPU) or 0 (unset), got ", opts_.gpus);
  if (opts_.gpus != 0) {  // gpus=N is accelerator="gpu" with devices=N
    VOLT_CHECK(opts_.devices == 0 || opts_.devices == opts_.gpus, "gpus=", opts_.gpus, " and devices=", opts_.devices,
               " disagree (gpus=N means accelerator=\"gpu\", devices=N: give one of them)");
    VOLT_CHECK(acc != "cpu", "gpus=", opts_.gpus, " asks for GPUs but accelerator is \"cpu\"");
    opts_.devices = opts_.gpus;
  }
  const bool want_gpu = acc == "gpu" || acc == "cuda" || opts_.gpus != 0;
  if (want_gpu) {
    const std::string what = std::string("accelerator \"gpu\"") +
                              (opts_.gpus != 0 ? " (gpus=" + std::to_string(opts_.gpus) + ")" : "");
    VOLT_CHECK(VOLT_HAVE_CUDA, what, ": this build has no CUDA backend (configure with -DVOLT_CUDA=ON on a machine "
               "with the CUDA toolkit, cuDNN and NCCL); use accelerator=\"cpu\" or \"auto\"");
    VOLT_CHECK(cuda_device_count() > 0, what, ": no GPU is visible to this process (the CUDA backend found 0 "
               "devices: ", cuda_unavailable_reason(), "); use accelerator=\"cpu\" or \"auto\"");
  }
  VOLT_CHECK(opts_.devices >= -1, "devices must be a count >= 1, -1 (one per GPU) or 0 (auto), got ",
             opts_.devices);
  VOLT_CHECK(opts_.num_nodes >= 0, "num_nodes must be a count >= 1 or 0 (what was launched), got ", opts_.num_nodes);
  const std::string st = lower(opts_.strategy);
  VOLT_CHECK(st == "auto" || st == "ddp" || st == "dp", "strategy \"", opts_.strategy,
             "\" is not known (choices: auto, ddp, dp — dp runs as ddp)");
  const std::string p = lower(opts_.precision);
  VOLT_CHECK(p != "16-true" && p != "bf16-true", "precision \"", opts_.precision,
             "\": pure 16-bit training (16-bit weights and optimizer state) is not supported; use \"16-mixed\" or "
             "\"bf16-mixed\" (16-bit compute, float32 master weights)");
  if (p == "16-mixed" || p == "16")
    compute_dtype_ = DType::F16;
  else if (p == "bf16-mixed" || p == "bf16")
    compute_dtype_ = DType::BF16;
  else
    VOLT_CHECK(p == "32" || p == "32-true", "precision \"", opts_.precision,
               "\" is not known (choices: 32, 16-mixed, bf16-mixed; 16 and bf16 are aliases of the mixed ones)");
  VOLT_CHECK(!opts_.default_root_dir.empty(), "default_root_dir is empty (\".\" is the current folder)");
  VOLT_CHECK(opts_.max_epochs.value_or(-1) >= -1, "max_epochs must be >= -1, got ", opts_.max_epochs.value_or(-1));
  VOLT_CHECK(opts_.max_steps >= -1, "max_steps must be >= -1, got ", opts_.max_steps);
  VOLT_CHECK(opts_.fast_dev_run.batches >= 0, "fast_dev_run must be true/false or n >= 0, got ",
             opts_.fast_dev_run.batches);
  VOLT_CHECK(opts_.accumulate_grad_batches >= 1, "accumulate_grad_batches must be >= 1, got ",
             opts_.accumulate_grad_batches);
  VOLT_CHECK(opts_.log_every_n_steps >= 1, "log_every_n_steps must be >= 1, got ", opts_.log_every_n_steps);
  VOLT_CHECK(opts_.num_sanity_val_steps >= -1, "num_sanity_val_steps must be >= -1 (all), got ",
             opts_.num_sanity_val_steps);
  VOLT_CHECK(opts_.check_val_every_n_epoch >= 1, "check_val_every_n_epoch must be >= 1");
  VOLT_CHECK(opts_.gradient_clip_val >= 0, "gradient_clip_val must be >= 0, got ", opts_.gradient_clip_val);
  VOLT_CHECK(opts_.gradient_clip_algorithm == "norm" || opts_.gradient_clip_algorithm == "value",
             "gradient_clip_algorithm \"", opts_.gradient_clip_algorithm, "\" is not known (choices: norm, value)");
  for (const BatchAmount* b : {&opts_.limit_train_batches, &opts_.limit_val_batches, &opts_.limit_test_batches,
                               &opts_.overfit_batches, &opts_.val_check_interval}) {
    VOLT_CHECK(b->value >= 0 && (!b->is_fraction || b->value <= 1.0),
               "batch limits and val_check_interval take a fraction in [0, 1] or a count >= 0, got ", b->value);
  }
  VOLT_CHECK(opts_.val_check_interval.value > 0, "val_check_interval must be > 0");
}

void Trainer::run_callbacks(void (Callback::*hook)(Trainer&, LightningModule&), LightningModule& module) {
  // The callbacks decide on every rank whether to stop and whether and where to save, and each
  // decision is followed by collectives (the checkpoint's barrier, the loop's next step): the ranks
  // must decide alike. Metrics logged without sync_dist differ between ranks, so every rank decides
  // on rank 0's values (those the logs show), and a stop asked on any rank (by the module, or a
  // callback's rank-local condition) is every rank's before the next callback looks.
  sync_callback_metrics();
  auto agree_on_stop = [&] {
    if (world_size() > 1) should_stop_ = comm_->all_reduce_value(should_stop_ ? 1.0 : 0.0, ReduceOp::Max) != 0.0;
  };
  for (auto& c : callbacks_) {
    agree_on_stop();
    ((*c).*hook)(*this, module);
  }
  agree_on_stop();
}

void Trainer::sync_callback_metrics() {
  if (world_size() == 1) return;
  std::string bytes;  // name, '\0', the 8 bytes of the value; for each metric
  if (is_global_zero())
    for (const auto& [name, v] : callback_metrics_) {
      bytes.append(name).push_back('\0');
      bytes.append(reinterpret_cast<const char*>(&v), sizeof v);
    }
  broadcast_string(*comm_, bytes);
  if (is_global_zero()) return;
  callback_metrics_.clear();
  for (size_t p = 0; p < bytes.size();) {
    const size_t end = bytes.find('\0', p);
    VOLT_CHECK(end != std::string::npos && end + 1 + sizeof(double) <= bytes.size(),
               "data-parallel: rank 0's callback metrics arrived garbled");
    double v;
    std::memcpy(&v, bytes.data() + end + 1, sizeof v);
    callback_metrics_[bytes.substr(p, end - p)] = v;
    p = end + 1 + sizeof v;
  }
}

// Data-parallel runs end with the same parameters on every rank (the same start, the same
// averaged gradients): a checksum of every parameter and buffer's bytes, compared over the ranks,
// proves it or stops the run with an error instead of saving diverged weights.
std::string Trainer::decided_on_rank0(const std::function<std::string()>& decide) {
  if (world_size() == 1) return decide();
  // Rank 0 sends 'P' and the answer, or 'E' and its error; its own error is rethrown as it was.
  std::string msg;
  std::exception_ptr failed;
  if (is_global_zero()) {
    try {
      msg = "P" + decide();
    } catch (const std::exception& e) {  // any: the other ranks must hear of it, not wait for it
      failed = std::current_exception();
      msg = std::string("E") + e.what();
    } catch (...) {
      failed = std::current_exception();
      msg = "Ean exception that is not a std::exception";
    }
  }
  comm_->io_barrier();  // deciding may read files (checkpoints on a slow shared filesystem)
  broadcast_string(*comm_, msg);
  if (failed) std::rethrow_exception(failed);
  VOLT_CHECK(!msg.empty() && (msg[0] == 'P' || msg[0] == 'E'), "data-parallel: rank 0's decision arrived garbled");
  if (msg[0] == 'E') VOLT_FAIL("on rank 0: ", msg.substr(1));
  return msg.substr(1);
}

Checkpoint Trainer::load_on_every_rank(const std::string& path) {
  if (world_size() == 1) return load_checkpoint(path);
  Checkpoint c;
  std::string error;
  try {
    c = load_checkpoint(path);
  } catch (const Error& e) {
    error = e.what();
  }
  comm_->io_barrier();  // every rank read the file (a large one, all at once, on a slow filesystem)
  // The highest rank that failed, + 1 (0: none did).
  const double failed = comm_->all_reduce_value(error.empty() ? 0.0 : double(global_rank() + 1), ReduceOp::Max);
  const char* hint = "; every rank reads the checkpoint rank 0 chose, so it must be on a filesystem that every node "
                     "shares";
  if (!error.empty()) VOLT_FAIL("rank ", global_rank(), " cannot load ", path, ": ", error, hint);
  if (failed != 0.0) VOLT_FAIL("rank ", int(failed) - 1, " cannot load ", path, hint);
  return c;
}

void Trainer::check_ranks_agree(const Module& module) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the state in state_dict order
  for (const auto& [name, t] : module.state_dict().items()) {
    const Tensor host = t.to(Device::cpu());
    const auto* p = static_cast<const unsigned char*>(host.raw_data());
    for (size_t i = 0; i < host.nbytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
  }
  const int64_t mine = int64_t(h >> 1);
  VOLT_CHECK(all_ranks_agree(*comm_, mine), "data-parallel: the ranks ended training with different parameters "
             "(rank ", comm_->rank(), " checksum ", mine, ")");
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)mine);
  out() << "Parameters and buffers are identical on all " << world_size() << " ranks (checksum " << buf << ")\n";
}

// Rank 0 asks Slurm to requeue the job once every rank is past its last collective: `scontrol
// requeue` ends the running job's tasks at once, so the logs are on disk first.
void Trainer::finish_preemption() {
  if (world_size() > 1) comm_->barrier();
  if (!is_global_zero()) return;
  if (impl_->loggers) impl_->loggers->flush();
  const std::string path = requeue_checkpoint_path(opts_.default_root_dir);
  requeue_message_ = "Pre-empted (SIGUSR1) at epoch " + std::to_string(epoch_) + ", step " +
                     std::to_string(global_step_) + ": checkpoint " + path + "; ";
  if (env_.job_id.empty()) {
    requeue_message_ += "not a Slurm job, so nothing to requeue; continue with --resume " + path;
  } else {
    out() << requeue_message_ << "requeueing job " << env_.requeue_id << std::endl;
    try {
      requeue_message_ += requeue_job(env_.requeue_id) + "; the requeued job resumes from it";
    } catch (const Error& e) {
      requeue_failed_ = true;
      requeue_message_ += std::string(e.what()) + "; continue with --resume " + path;
    }
  }
  out() << requeue_message_ << std::endl;
}

Trainer::StopSignals Trainer::stop_signals() {
  // fast_dev_run writes no checkpoint and ends in seconds: a warning signal is absorbed, not acted on.
  int64_t raised[2] = {requeue_signal_raised() && !opts_.fast_dev_run.batches ? 1 : 0, interrupt_signal_raised()};
  if (world_size() > 1) comm_->all_reduce(raised, 2, ReduceOp::Max);  // every rank stops at the same step
  return {raised[0] != 0, int(raised[1])};
}

std::string Trainer::resolve_ckpt(const std::string& ckpt, const char* who) {
  return decided_on_rank0([&] { return resolve_ckpt_here(ckpt, who); });
}

std::string Trainer::resolve_ckpt_here(const std::string& ckpt, const char* who) const {
  if (ckpt == "best") {
    ModelCheckpoint* mc = checkpoint_callback();
    VOLT_CHECK(mc && !mc->best_model_path().empty(), who,
               "(ckpt=\"best\"): no best checkpoint; fit with a ModelCheckpoint (and checkpointing on) first");
    return mc->best_model_path();
  }
  if (ckpt == "last") {
    // As Lightning: this trainer's own last.ckpt only (the newest under the root may be another
    // run's); without one, the current weights, said.
    ModelCheckpoint* mc = checkpoint_callback();
    if (mc && !mc->last_model_path().empty()) return mc->last_model_path();
    out() << who << "(ckpt=\"last\"): this trainer saved no last checkpoint (ModelCheckpoint save_last); the "
          << "current weights are used\n";
    return "";
  }
  return ckpt;
}

void Trainer::load_weights(LightningModule& module, const std::string& path) {
  Checkpoint c = load_on_every_rank(path);
  check_model_matches(c, module);
  StateDict sd;
  for (const auto& [n, t] : c.model) sd.add(n, t);
  module.load_state_dict(sd);
}

}  // namespace volt
