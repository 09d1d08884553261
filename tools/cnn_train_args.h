// cnn_train's command line: every flag, its default (the tutorial's recipe) and its check. A bad
// flag or value throws UsageError naming it and the valid choices (cnn_train exits with 2).
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "dist/trainer.h"

namespace volt {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;  // an empty message means --help
};

struct TrainArgs {
  // Model and optimisation.
  int64_t epochs = 20, max_steps = -1, batch = 128, seed = 42;
  double lr = 1e-3, momentum = 0.9, dropout = 0.2, label_smoothing = 0;
  std::optional<double> weight_decay;  // unset: the optimizer's default (0.01 for adamw, else 0)
  std::string optimizer = "adam", scheduler = "none", precision = "32";
  std::string float32_matmul_precision = "highest";  // highest | high (TF32 on the GPU), set process-wide
  // Data.
  std::string dataset = "cifar10", data_dir, download_url;
  std::string data_on_device = "auto";  // auto | on | off
  bool download = false, augment = false;
  int64_t cutout = 0, channels = 3;
  int64_t train_samples = 45000, val_samples = 5000, test_samples = 10000;  // synthetic
  int num_workers = 3;
  // Hardware.
  std::string accelerator = "auto", strategy = "auto";
  int64_t devices = 0, gpus = 0, num_nodes = 0;  // devices, num_nodes 0: auto
  int threads = 0;  // 0: all cores
  bool cuda_graphs = true;
  // The loop.
  int64_t fast_dev_run = 0;
  BatchAmount overfit_batches = 0.0, limit_train_batches = 1.0, limit_val_batches = 1.0, limit_test_batches = 1.0;
  BatchAmount val_check_interval = 1.0;
  int64_t check_val_every_n_epoch = 1, num_sanity_val_steps = 2, accumulate_grad_batches = 1, log_every_n_steps = 50;
  double gradient_clip_val = 0;
  std::string gradient_clip_algorithm = "norm", profiler;
  bool deterministic = false, progress = true, sync_batchnorm = false;
  // Output.
  std::string log_dir = ".", resume, save;
  int64_t checkpoint_every = 1;

  // The Trainer's options for these flags (callbacks are added by cnn_train).
  TrainerOptions trainer_options() const;
};

TrainArgs parse_train_args(int argc, char** argv);
const char* train_usage();

}  // namespace volt
