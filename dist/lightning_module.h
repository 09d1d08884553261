// LightningModule: the model side of the Trainer, as in PyTorch Lightning (training_step,
// validation_step, test_step, configure_optimizers, log, epoch hooks). ClassifierModule wraps any
// Module with cross-entropy and logs train_loss, val_loss, val_acc, test_loss and test_acc.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "../data/loader.h"
#include "communicator.h"
#include "hparams.h"
#include "../layers/metrics.h"
#include "../layers/module.h"
#include "../layers/optim/optimizer.h"
#include "../layers/optim/scheduler.h"

namespace volt {

// Lightning's log() flags. Unset on_step/on_epoch take Lightning's defaults: in training_step
// on_step=true, on_epoch=false; in validation_step/test_step and the epoch hooks on_step=false,
// on_epoch=true. With both, the logs get "<name>_step" and "<name>_epoch" (callback_metrics also
// "<name>": the step value during the epoch, the epoch mean after it), as Lightning's.
struct LogOptions {
  std::optional<bool> on_step, on_epoch;
  bool prog_bar = false;
  bool logger = true;
  // on_step values: average this one over the ranks where the Trainer logs or records it (every
  // log_every_n_steps optimizer steps and at the epoch's last batch: a collective then). Epoch
  // values are always reduced over the ranks (weighted by batch size), so every rank sees the same
  // metrics and makes the same checkpoint and early-stopping decisions.
  bool sync_dist = false;
};

// What configure_optimizers() returns: the optimizer and optionally a scheduler stepped once per
// epoch ("epoch") or per optimizer step ("step").
struct OptimizerConfig {
  std::shared_ptr<Optimizer> optimizer;
  std::shared_ptr<LRScheduler> scheduler;
  std::string interval = "epoch";
};

// The values logged in one stage: the current step's on_step values and the batch-size-weighted
// epoch accumulators. The Trainer owns it and reads it; log() writes into it. A value logged as a
// GPU tensor stays on the GPU (copied, or accumulated in place into a float32 scalar there): reading
// it (Entry::get) is the only synchronisation, which the Trainer does only when it prints or logs.
class MetricStore {
 public:
  struct Entry {
    double value = 0;  // step: the last host value; epoch: the weighted sum of host values
    double weight = 0;
    Tensor device;     // the same for values logged on a GPU (float32 [], updated in place)
    bool prog_bar = false, logger = true, sync_dist = false;
    bool fresh = false;  // step entries: logged in the current step
    // Logged with both on_step and on_epoch (Lightning's "forked" metric): the entries are
    // "<name>_step" and "<name>_epoch", and `base` is <name>, which callback_metrics also holds.
    std::string base;
    double get() const;  // value (+ the device part, read from the GPU)
  };
  void set_stage(const std::string& stage) { stage_ = stage; }  // "train", "val", "test", "sanity"
  const std::string& stage() const { return stage_; }
  // Set by the Trainer while on_train_epoch_start/end run: log()'s defaults there are on_epoch, as
  // Lightning's, not the training steps' on_step.
  void set_in_epoch_hook(bool in_hook) { in_epoch_hook_ = in_hook; }
  void set_batch_size(int64_t n) { batch_size_ = n; }
  void add(const std::string& name, double value, const LogOptions& o, int64_t batch_size);
  void add(const std::string& name, const Tensor& value, const LogOptions& o, int64_t batch_size);
  // Entries are reset in place (their device scalars stay where a captured CUDA graph writes them).
  void clear_step();
  void clear_epoch();
  // The step entries logged in the current step.
  std::map<std::string, const Entry*> step_values() const;
  // While a CUDA graph is captured (engine/cuda_graph.h), the host side of each log() is recorded;
  // replay_logs() applies it again after every replay of the graph (the GPU side is in the graph).
  void replay_logs();
  void forget_captured_logs() { captured_.clear(); }
  // Epoch means (sum of value*batch_size / sum of batch_size) of the on_epoch values.
  std::map<std::string, double> epoch_means(bool logger_only = false) const;
  // For callback_metrics: adds to `means` (epoch_means()' keys) each forked metric's plain name.
  void add_base_names(std::map<std::string, double>& means) const;
  std::map<std::string, double> epoch_prog_bar() const;
  // Data-parallel runs: sums the epoch accumulators over the ranks (which must have logged the
  // same names: checked), and averages the on_step values logged with sync_dist.
  void reduce_epoch(Communicator& comm);
  void reduce_step(Communicator& comm);
  // A checkpoint written in mid-epoch keeps the epoch's sums so far, and the run resumed from it
  // goes on from them, so its epoch means are the uninterrupted run's. epoch_sums(): the on_epoch
  // accumulators summed over the ranks (a collective, unless reduce_epoch() has run since the
  // epoch began). restore_epoch_sums(): one rank takes the values, the others the names with zero
  // (the ranks' sums add up to them at the epoch's end).
  struct EpochSum {
    double sum = 0, weight = 0;
    bool prog_bar = false, logger = true;
  };
  std::map<std::string, EpochSum> epoch_sums(Communicator& comm) const;
  void restore_epoch_sums(const std::map<std::string, EpochSum>& sums, bool take_values);

 private:
  struct Captured {
    std::string name;
    bool on_step, on_epoch;
    double weight;
    LogOptions options;
  };
  void mark(const std::string& name, bool on_step, bool on_epoch, double w, const LogOptions& o);
  std::string stage_ = "train";
  int64_t batch_size_ = 1;
  bool in_epoch_hook_ = false;
  std::map<std::string, Entry> step_, epoch_;
  bool reduced_ = false;  // reduce_epoch() has run since clear_epoch()
  std::vector<Captured> captured_;
};

class Trainer;

class LightningModule : public Module {
 public:
  std::string type_name() const override { return "LightningModule"; }

  virtual Tensor training_step(const Batch& batch, int64_t batch_idx) = 0;  // returns the loss
  virtual void validation_step(const Batch&, int64_t) {}
  virtual void test_step(const Batch&, int64_t) {}
  virtual OptimizerConfig configure_optimizers() = 0;
  // Written to hparams.yaml and TensorBoard's HPARAMS tab (with the final metrics).
  virtual HParams hyperparameters() const { return {}; }

  virtual void on_fit_start() {}
  virtual void on_fit_end() {}
  virtual void on_train_epoch_start() {}
  virtual void on_train_epoch_end() {}
  virtual void on_validation_epoch_start() {}
  virtual void on_validation_epoch_end() {}
  virtual void on_test_epoch_start() {}
  virtual void on_test_epoch_end() {}

  // batch_size < 0: the current batch's size. Outside a Trainer's loop it does nothing.
  void log(const std::string& name, double value, const LogOptions& opts = {}, int64_t batch_size = -1);
  void log(const std::string& name, const Tensor& value, const LogOptions& opts = {}, int64_t batch_size = -1);
  // An image for TensorBoard's IMAGES tab (uint8 [H, W, C], C = 1, 3 or 4) at the current global
  // step. Outside a Trainer that writes logs it does nothing.
  void log_image(const std::string& tag, const Tensor& image);
  // Whether log_image goes anywhere (so that an image is made only when it is written).
  bool logs_images() const { return image_sink_ != nullptr; }

  int64_t current_epoch() const { return epoch_; }
  int64_t global_step() const { return global_step_; }
  // The Trainer's communicator while it runs this module with several processes, else nullptr:
  // for reducing a module's own accumulators (e.g. a confusion matrix) over the ranks.
  Communicator* communicator() const { return comm_; }

 private:
  friend class Trainer;
  friend struct TrainerRun;
  MetricStore* store_ = nullptr;
  std::function<void(const std::string&, const Tensor&)> image_sink_;
  Communicator* comm_ = nullptr;
  int64_t epoch_ = 0, global_step_ = 0;
};

struct ClassifierOptions {
  std::string optimizer = "adam";  // "adam", "adamw", "sgd"
  double lr = 1e-3, momentum = 0.0;
  // Unset: the optimizer's own default, as in PyTorch (0 for adam and sgd, 0.01 for adamw).
  std::optional<double> weight_decay;
  // "", "cosine" (over max_epochs, per epoch), "step" (StepLR, x0.1 every third of max_epochs),
  // "onecycle" (OneCycleLR peaking at lr, per optimizer step over total_steps)
  std::string scheduler;
  int64_t max_epochs = 1;          // for "cosine"/"step"
  int64_t total_steps = 0;         // for "onecycle": the optimizer steps of the whole fit
  double label_smoothing = 0.0;
  std::vector<std::string> class_names;  // for per-class test accuracy names (default: the index)
  HParams extra_hparams;                 // added to hyperparameters() (data set, batch size, ...)
};

// Any Module (registered as child "model") trained with cross-entropy. Logs train_loss (step,
// prog_bar), val_loss/val_acc/val_acc_top5 and test_loss/test_acc/test_acc_top5 (epoch means,
// val_acc on the progress bar), test_acc_class/<name> per class (up to 20 classes), and the test
// confusion matrix as an image ("test_confusion_matrix", up to 2048 classes).
class ClassifierModule : public LightningModule {
 public:
  ClassifierModule(std::shared_ptr<Module> model, const ClassifierOptions& opts = {});
  Tensor forward(const Tensor& x) override { return (*model_)(x); }  // (through operator(): the profiler sees it)
  std::string type_name() const override { return "ClassifierModule"; }
  Tensor training_step(const Batch& batch, int64_t batch_idx) override;
  void validation_step(const Batch& batch, int64_t batch_idx) override;
  void test_step(const Batch& batch, int64_t batch_idx) override;
  void on_validation_epoch_start() override;
  void on_validation_epoch_end() override;
  void on_test_epoch_start() override;
  void on_test_epoch_end() override;
  OptimizerConfig configure_optimizers() override;
  HParams hyperparameters() const override;
  Module& model() const { return *model_; }

 private:
  // Top-k hits and the confusion matrix of the current validation or test epoch.
  void update_metrics(const Tensor& logits, const Tensor& labels);
  void reduce_metrics();
  double effective_weight_decay() const;  // the option, else the optimizer's default
  std::shared_ptr<Module> model_;
  ClassifierOptions o_;
  std::optional<ClassificationMetrics> metrics_;
};

}  // namespace volt
