// cnn_train's flags (see cnn_train_args.h).
#include "tools/cnn_train_args.h"

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>

#include "engine/threads.h"

namespace volt {

const char* train_usage() {
  return "usage: cnn_train [options]   (defaults: the tutorial's recipe)\n"
         "training:\n"
         "  --epochs N                  epochs to train (default 20)\n"
         "  --max-steps N               stop after N optimizer steps (default: no limit)\n"
         "  --batch-size N              images per step and process (default 128)\n"
         "  --lr X                      learning rate (default 1e-3)\n"
         "  --optimizer NAME            adam | adamw | sgd (default adam)\n"
         "  --momentum X                SGD momentum, with --optimizer sgd (default 0.9)\n"
         "  --weight-decay X            weight decay (default 0; 0.01 for adamw)\n"
         "  --scheduler NAME            none | step | cosine | onecycle (default none)\n"
         "  --dropout X                 dropout probability in the classifier (default 0.2)\n"
         "  --label-smoothing X         cross-entropy label smoothing (default 0)\n"
         "  --precision P               32 | 16-mixed | bf16-mixed (16 = 16-mixed; default 32)\n"
         "  --float32-matmul-precision P highest | high: on a GPU, float32 convolutions and matrix products\n"
         "                              in plain FP32 (default) or in TF32 on the tensor cores\n"
         "  --seed N                    seed of weights, split, shuffling and dropout (default 42)\n"
         "  --deterministic             Lightning's flag (Volt's CPU kernels are deterministic anyway)\n"
         "data:\n"
         "  --dataset NAME              cifar10 | cifar100 | mnist | fashion-mnist | folder | synthetic\n"
         "                              (default cifar10; --data is an alias)\n"
         "  --data-dir DIR              dataset folder (default $VOLT_DATA_DIR/<cifar-10|cifar-100|mnist|\n"
         "                              fashion-mnist>, else datasets/<...>; folder: DIR/train, DIR/test)\n"
         "  --download                  fetch the dataset into --data-dir if it is missing\n"
         "  --download-url URL          base URL to download from (default: the official mirror)\n"
         "  --num-workers N             loader threads, 0..256 (default 3)\n"
         "  --data-on-device MODE       auto | on | off: on a GPU, keep the dataset there as uint8 and augment\n"
         "                              each batch in one kernel (auto: when it fits in a quarter of the free\n"
         "                              memory; off: host workers, pinned copies one batch ahead)\n"
         "  --augment                   random crop (padding 4) and horizontal flip (not for mnist) on training\n"
         "                              images\n"
         "  --cutout N                  cutout square of side N on training images (default 0: off)\n"
         "  --channels N                image channels for --dataset folder (1, 3 or 4; default 3)\n"
         "  --train-samples N           synthetic train / val / test sizes (default 45000 / 5000 / 10000,\n"
         "  --val-samples N             CIFAR-10's)\n"
         "  --test-samples N\n"
         "hardware:\n"
         "  --accelerator NAME          cpu | gpu | auto (default auto: the GPU when there is one)\n"
         "  --devices N                 processes (devices) per node: a count that must match the launcher's\n"
         "                              tasks per node, -1 one per GPU, auto what was launched (default)\n"
         "  --gpus N                    the tutorial's gpus=N: --accelerator gpu --devices N (-1: one per\n"
         "                              GPU; 0: the CPU, as in Lightning)\n"
         "  --num-nodes N               nodes, a count that must match the launcher's (default auto: what was\n"
         "                              launched); several processes are started by srun or mpirun\n"
         "  --strategy NAME             ddp | dp (dp runs as ddp; default: ddp when several processes;\n"
         "                              --distributed-backend is the tutorial's older name)\n"
         "  --sync-batchnorm            with several processes, BatchNorm over the whole batch of all\n"
         "                              ranks (SyncBatchNorm)\n"
         "  --threads N                 CPU threads, 1..1024 (default: the cores this process may use, as\n"
         "                              srun --cpus-per-task or mpirun's binding left them)\n"
         "  --cuda-graphs on|off        on a GPU, replay the training step as one CUDA graph (default on)\n"
         "the loop (Lightning's Trainer flags):\n"
         "  --fast-dev-run [N]          run N (default 1) batches of train, val and test; no logs/checkpoints\n"
         "  --overfit-batches X         train and validate on the same first X batches (count or fraction)\n"
         "  --limit-train-batches X     batches per epoch (count, or fraction like 0.25)\n"
         "  --limit-val-batches X       validation batches (0 turns validation off)\n"
         "  --limit-test-batches X      test batches\n"
         "  --val-check-interval X      validate every X training batches (count) or fraction of an epoch\n"
         "  --check-val-every-n-epoch N validate every N epochs (default 1)\n"
         "  --num-sanity-val-steps N    validation batches before training (default 2; -1 all)\n"
         "  --gradient-clip-val X       clip gradients (default 0: off)\n"
         "  --gradient-clip-algorithm A norm | value (default norm)\n"
         "  --accumulate-grad-batches N accumulate N batches per optimizer step (default 1)\n"
         "  --log-every-n-steps N       step metrics to the loggers every N steps (default 50)\n"
         "  --profiler NAME             simple (time per hook) | advanced (per-layer time)\n"
         "  --no-progress               no progress bar\n"
         "output:\n"
         "  --log-dir DIR               runs go to DIR/lightning_logs/version_N (default .)\n"
         "  --checkpoint-every N        ranked checkpoints every N epochs (default 1; last.ckpt every epoch)\n"
         "  --resume last|PATH          continue a run exactly (last: newest run's last.ckpt in --log-dir)\n"
         "  --save PATH                 also write the tested weights (the best checkpoint's, else the final\n"
         "                              ones) to PATH (Volt tensor file)\n"
         "  -h, --help                  this text\n";
}

namespace {

double to_double(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || !std::isfinite(d)) throw UsageError("bad value '" + v + "' for " + flag + ": expected a number");
  return d;
}

// An integer in [min, max]; out of range of int64 too ("99999999999999999999") is refused, not clamped.
int64_t to_int(const std::string& flag, const std::string& v, int64_t min,
               int64_t max = std::numeric_limits<int64_t>::max()) {
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || errno == ERANGE || n < min || n > max)
    throw UsageError("bad value '" + v + "' for " + flag + ": expected an integer >= " + std::to_string(min) +
                     (max == std::numeric_limits<int64_t>::max() ? "" : " and <= " + std::to_string(max)));
  return n;
}

// Lightning's int-or-float batch amounts: "10" is 10 batches, "0.25" a quarter, "1.0" all.
BatchAmount to_amount(const std::string& flag, const std::string& v) {
  const bool fraction = v.find_first_of(".eE") != std::string::npos;
  if (!fraction) return BatchAmount(to_int(flag, v, 0));
  const double d = to_double(flag, v);
  if (d < 0 || d > 1)
    throw UsageError("bad value '" + v + "' for " + flag + ": expected a fraction in [0, 1] or a count of batches");
  return BatchAmount(d);
}

// Digits, optionally after a '-' (a negative count is the optional value given wrongly, not a flag).
bool is_count(const char* s) {
  if (*s == '-') ++s;
  if (!*s) return false;
  for (; *s; ++s)
    if (*s < '0' || *s > '9') return false;
  return true;
}

}  // namespace

TrainArgs parse_train_args(int argc, char** argv) {
  TrainArgs a;
  bool momentum_given = false;  // refused with adam and adamw, not ignored
  bool gpus_zero = false;       // --gpus 0: the CPU, as in Lightning
  std::set<std::string> given;  // the flags on the command line
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i], value;
    const size_t eq = flag.find('=');
    const bool has_eq = flag.rfind("--", 0) == 0 && eq != std::string::npos;
    if (has_eq) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    if (flag == "-h" || flag == "--help") throw UsageError("");
    given.insert(flag);
    auto next = [&]() -> std::string {
      if (has_eq) return value;
      if (i + 1 >= argc) throw UsageError("missing value for " + flag);
      return argv[++i];
    };
    auto path = [&] {  // a folder, file or URL: an empty one (--log-dir=) would mean somewhere else
      std::string v = next();
      if (v.empty()) throw UsageError("empty value for " + flag + ": expected a path");
      // "--log-dir --no-progress": the next flag, not a path (argparse refuses it too; a path that
      // starts with "--" can be given as --log-dir=./--name or --log-dir=--name)
      if (!has_eq && v.rfind("--", 0) == 0) throw UsageError("missing value for " + flag + " (got the flag " + v + ")");
      return v;
    };
    auto choice = [&](std::initializer_list<const char*> allowed) {
      std::string v = next();
      for (const char* c : allowed)
        if (v == c) return v;
      std::string list;
      for (const char* c : allowed) list += std::string(list.empty() ? "" : ", ") + c;
      throw UsageError("bad value '" + v + "' for " + flag + ": expected one of " + list);
    };
    auto flag_only = [&] {
      if (has_eq) throw UsageError(flag + " takes no value");
      return true;
    };
    if (flag == "--epochs") a.epochs = to_int(flag, next(), 1);
    else if (flag == "--max-steps") a.max_steps = to_int(flag, next(), 1);
    else if (flag == "--batch-size") a.batch = to_int(flag, next(), 1);
    else if (flag == "--lr") a.lr = to_double(flag, next());
    else if (flag == "--optimizer") a.optimizer = choice({"adam", "adamw", "sgd"});
    else if (flag == "--momentum") {
      a.momentum = to_double(flag, next());
      momentum_given = true;
    }
    else if (flag == "--weight-decay") a.weight_decay = to_double(flag, next());
    else if (flag == "--scheduler") a.scheduler = choice({"none", "step", "cosine", "onecycle"});
    else if (flag == "--dropout") a.dropout = to_double(flag, next());
    else if (flag == "--label-smoothing") a.label_smoothing = to_double(flag, next());
    else if (flag == "--precision") a.precision = choice({"32", "32-true", "16-mixed", "16", "bf16-mixed", "bf16"});
    else if (flag == "--float32-matmul-precision") a.float32_matmul_precision = choice({"highest", "high"});
    else if (flag == "--seed") a.seed = to_int(flag, next(), 0);
    else if (flag == "--deterministic") a.deterministic = flag_only();
    else if (flag == "--dataset" || flag == "--data")
      a.dataset = choice({"cifar10", "cifar100", "mnist", "fashion-mnist", "folder", "synthetic"});
    else if (flag == "--data-dir") a.data_dir = path();
    else if (flag == "--download") a.download = flag_only();
    else if (flag == "--download-url") a.download_url = path();
    else if (flag == "--num-workers") a.num_workers = int(to_int(flag, next(), 0, 256));  // DataLoader's range
    else if (flag == "--data-on-device") a.data_on_device = choice({"auto", "on", "off"});
    else if (flag == "--cuda-graphs") a.cuda_graphs = choice({"on", "off"}) == "on";
    else if (flag == "--augment") a.augment = flag_only();
    else if (flag == "--cutout") a.cutout = to_int(flag, next(), 0);
    else if (flag == "--channels") a.channels = std::stoll(choice({"1", "3", "4"}));
    // (at most 2^31 - 1 each: the three are added and multiplied by image sizes)
    else if (flag == "--train-samples") a.train_samples = to_int(flag, next(), 1, INT32_MAX);
    else if (flag == "--val-samples") a.val_samples = to_int(flag, next(), 1, INT32_MAX);
    else if (flag == "--test-samples") a.test_samples = to_int(flag, next(), 1, INT32_MAX);
    else if (flag == "--accelerator") a.accelerator = choice({"cpu", "gpu", "cuda", "auto"});
    else if (flag == "--devices") {
      const std::string v = next();
      if (v == "0") throw UsageError("bad value '0' for --devices: expected auto, -1 (one per GPU) or a count >= 1");
      a.devices = v == "auto" ? 0 : v == "-1" ? -1 : to_int(flag, v, 1);
    } else if (flag == "--gpus") {
      const std::string v = next();
      a.gpus = v == "-1" ? -1 : to_int(flag, v, 0);
      gpus_zero = a.gpus == 0;  // Lightning's gpus=0: no GPU
    } else if (flag == "--num-nodes") {
      const std::string v = next();
      a.num_nodes = v == "auto" ? 0 : to_int(flag, v, 1);
    }
    else if (flag == "--strategy" || flag == "--distributed-backend") a.strategy = choice({"auto", "ddp", "dp"});
    else if (flag == "--sync-batchnorm") a.sync_batchnorm = flag_only();
    else if (flag == "--threads") a.threads = int(to_int(flag, next(), 1, 1024));
    else if (flag == "--fast-dev-run") {
      if (has_eq) a.fast_dev_run = to_int(flag, value, 0);
      else if (i + 1 < argc && is_count(argv[i + 1])) a.fast_dev_run = to_int(flag, argv[++i], 0);
      else a.fast_dev_run = 1;
    } else if (flag == "--overfit-batches") a.overfit_batches = to_amount(flag, next());
    else if (flag == "--limit-train-batches") a.limit_train_batches = to_amount(flag, next());
    else if (flag == "--limit-val-batches") a.limit_val_batches = to_amount(flag, next());
    else if (flag == "--limit-test-batches") a.limit_test_batches = to_amount(flag, next());
    else if (flag == "--val-check-interval") {
      a.val_check_interval = to_amount(flag, next());
      if (a.val_check_interval.value == 0) throw UsageError("bad value '0' for --val-check-interval: expected > 0");
    } else if (flag == "--check-val-every-n-epoch") a.check_val_every_n_epoch = to_int(flag, next(), 1);
    else if (flag == "--num-sanity-val-steps") a.num_sanity_val_steps = to_int(flag, next(), -1);
    else if (flag == "--gradient-clip-val") a.gradient_clip_val = to_double(flag, next());
    else if (flag == "--gradient-clip-algorithm") a.gradient_clip_algorithm = choice({"norm", "value"});
    else if (flag == "--accumulate-grad-batches") a.accumulate_grad_batches = to_int(flag, next(), 1);
    else if (flag == "--log-every-n-steps") a.log_every_n_steps = to_int(flag, next(), 1);
    else if (flag == "--profiler") a.profiler = choice({"simple", "advanced"});
    else if (flag == "--no-progress") a.progress = !flag_only();
    else if (flag == "--log-dir") a.log_dir = path();
    else if (flag == "--checkpoint-every") a.checkpoint_every = to_int(flag, next(), 1);
    else if (flag == "--resume") a.resume = path();
    else if (flag == "--save") a.save = path();
    else throw UsageError("unknown option " + flag);
  }
  if (a.lr <= 0) throw UsageError("bad value for --lr: it must be positive");
  if (a.dropout < 0 || a.dropout >= 1) throw UsageError("bad value for --dropout: it must be in [0, 1)");
  if (a.label_smoothing < 0 || a.label_smoothing > 1)
    throw UsageError("bad value for --label-smoothing: it must be in [0, 1]");
  if (a.gradient_clip_val < 0) throw UsageError("bad value for --gradient-clip-val: it must be >= 0");
  if (a.weight_decay && *a.weight_decay < 0) throw UsageError("bad value for --weight-decay: it must be >= 0");
  if (a.momentum < 0) throw UsageError("bad value for --momentum: it must be >= 0");
  if (momentum_given && a.optimizer != "sgd")  // not silently ignored: Adam's betas are fixed
    throw UsageError("--momentum is SGD's (--optimizer sgd); " + a.optimizer + " uses betas 0.9, 0.999");
  // A flag the chosen data set or options have no use for is refused, not silently ignored.
  const auto refuse = [&](const char* flag, bool useless, const std::string& why) {
    if (useless && given.count(flag)) throw UsageError(std::string(flag) + " " + why);
  };
  for (const char* f : {"--train-samples", "--val-samples", "--test-samples"})
    refuse(f, a.dataset != "synthetic", "sizes --dataset synthetic; " + a.dataset + " has its own split");
  refuse("--channels", a.dataset != "folder", "is for --dataset folder; " + a.dataset + " has its own");
  refuse("--data-dir", a.dataset == "synthetic", "is not read by --dataset synthetic (its data is generated)");
  for (const char* f : {"--download", "--download-url"})
    refuse(f, a.dataset == "synthetic" || a.dataset == "folder",
           "fetches cifar10, cifar100, mnist or fashion-mnist, not --dataset " + a.dataset);
  refuse("--gradient-clip-algorithm", !given.count("--gradient-clip-val"),
         "chooses how --gradient-clip-val clips, and no --gradient-clip-val is given");
  if (gpus_zero) {
    if (a.accelerator == "gpu" || a.accelerator == "cuda")
      throw UsageError("--gpus 0 means the CPU but --accelerator is " + a.accelerator);
    a.accelerator = "cpu";
  }
  if (a.threads == 0) a.threads = available_cpus();
  return a;
}

TrainerOptions TrainArgs::trainer_options() const {
  TrainerOptions t;
  t.max_epochs = epochs;
  t.max_steps = max_steps;
  t.accelerator = accelerator;
  t.devices = devices;
  t.gpus = gpus;
  t.num_nodes = num_nodes;
  t.strategy = strategy;
  t.sync_batchnorm = sync_batchnorm;
  t.precision = precision;
  t.fast_dev_run = fast_dev_run;
  t.overfit_batches = overfit_batches;
  t.limit_train_batches = limit_train_batches;
  t.limit_val_batches = limit_val_batches;
  t.limit_test_batches = limit_test_batches;
  t.val_check_interval = val_check_interval;
  t.check_val_every_n_epoch = check_val_every_n_epoch;
  t.num_sanity_val_steps = num_sanity_val_steps;
  t.gradient_clip_val = gradient_clip_val;
  t.gradient_clip_algorithm = gradient_clip_algorithm;
  t.accumulate_grad_batches = accumulate_grad_batches;
  t.log_every_n_steps = log_every_n_steps;
  t.seed = uint64_t(seed);
  t.deterministic = deterministic;
  t.default_root_dir = log_dir;
  t.profiler = profiler;
  t.resume = resume;
  t.enable_progress_bar = progress;
  t.cuda_graphs = cuda_graphs;
  return t;
}

}  // namespace volt
