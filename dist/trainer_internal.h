// What trainer.cpp and trainer_setup.cpp share and nobody else needs.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "../data/loader.h"
#include "ddp.h"
#include "lightning_module.h"
#include "profiler.h"
#include "progress_bar.h"
#include "trainer.h"
#include "trainer_logging.h"
#include "../layers/optim/grad_scaler.h"

namespace volt::trainer_detail {

std::string lower(std::string s);  // ASCII lower case, for option names

// The train epoch's sums so far in a checkpoint's metadata (CHECKPOINT_FORMAT.md): written with a
// checkpoint taken in mid-epoch, and read back (volt::Error naming a key whose value does not parse).
void put_epoch_sums(const std::map<std::string, MetricStore::EpochSum>& sums,
                    std::map<std::string, std::string>& metadata);
std::map<std::string, MetricStore::EpochSum> epoch_sums_from_metadata(const std::map<std::string, std::string>& metadata);

}  // namespace volt::trainer_detail

namespace volt {

struct Trainer::Impl {
  explicit Impl(const std::string& profiler) : profiler(profiler) {}
  Profiler profiler;
  std::unique_ptr<RunLoggers> loggers;
  std::unique_ptr<ProgressBar> bar;
  MetricStore train_store, eval_store;
  LightningModule* module = nullptr;
  OptimizerConfig optim;
  int64_t resume_epoch = 0;
  LoaderState resume_loader;
  std::string train_order;  // the train loader's order_signature(), kept with a mid-epoch position
  // The training epoch's on_epoch sums that go with resume_loader, when they are not the train
  // store's own now: those of a checkpoint resumed from (until the loader position moves on), or
  // those before the epoch-end hook of an epoch that max_steps cut short.
  std::optional<std::map<std::string, MetricStore::EpochSum>> resume_sums;
  std::map<std::string, double> val_prog_bar;
  int64_t eval_log_step = 0;  // the loggers' step of evaluation batches' on_step values (eval_step_logger)
  std::unique_ptr<GradientReducer> averager;   // data-parallel runs (dist/ddp.h)
  std::vector<Tensor> ddp_params;              // the module's parameters when the averager was made,
  std::vector<bool> ddp_requires_grad;         // and their requires_grad then
  std::vector<Tensor> buffers;                 // the module's buffers (BatchNorm statistics)
  std::unique_ptr<GradScaler> scaler;          // precision "16-mixed"
};

}  // namespace volt
