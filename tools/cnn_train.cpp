// cnn_train: the tutorial's job. Trains the seed CNN with the Trainer (Lightning's flags, progress
// bar, TensorBoard + CSV logs, checkpoints, exact resume), then tests the best checkpoint.
// Defaults follow the tutorial: CIFAR-10 data module, Adam lr 1e-3, batch 128, validation every
// epoch, test at the end with the best checkpoint (lowest val_loss).
#include <volt/volt.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <thread>

#include "data/cifar.h"
#include "data/image_folder.h"
#include "data/mnist.h"
#include "dist/requeue.h"
#include "tools/cnn_train_args.h"

using namespace volt;
namespace fs = std::filesystem;

namespace {

std::unique_ptr<DataModule> make_datamodule(const TrainArgs& a) {
  DataModuleOptions dmo;
  dmo.data_dir = a.data_dir;
  dmo.batch_size = a.batch;
  dmo.num_workers = a.num_workers;
  dmo.download = a.download;
  dmo.download_url = a.download_url;
  dmo.seed = uint64_t(a.seed) + 42;
  dmo.augment = a.augment;
  dmo.cutout = a.cutout;
  dmo.data_on_device = parse_data_on_device(a.data_on_device);
  if (a.dataset == "cifar100") return std::make_unique<CIFAR100DataModule>(dmo);
  if (a.dataset == "mnist") return std::make_unique<MNISTDataModule>(dmo);
  if (a.dataset == "fashion-mnist") return std::make_unique<FashionMNISTDataModule>(dmo);
  if (a.dataset == "folder") return std::make_unique<ImageFolderDataModule>(dmo, a.channels);
  if (a.dataset == "synthetic") {
    SyntheticDataSizes z;
    z.train = a.train_samples;
    z.val = a.val_samples;
    z.test = a.test_samples;
    return std::make_unique<SyntheticDataModule>(dmo, z);
  }
  return std::make_unique<CIFAR10DataModule>(dmo);
}

std::vector<std::string> class_names(const std::string& dataset, const DataModule& dm) {
  if (dataset == "cifar10") return CIFAR10Dataset::class_names();
  if (dataset == "mnist") return MNISTDataset::class_names(MNISTVariant::MNIST);
  if (dataset == "fashion-mnist") return MNISTDataset::class_names(MNISTVariant::FashionMNIST);
  if (dataset == "folder")
    if (auto f = std::dynamic_pointer_cast<const ImageFolderDataset>(dm.test_dataset())) return f->class_names();
  return {};
}

// The optimizer steps of the whole fit, as Lightning's estimated_stepping_batches (for OneCycleLR).
int64_t estimated_steps(const TrainArgs& a, const TrainerOptions& to, int64_t train_batches) {
  int64_t per_epoch = a.fast_dev_run ? std::min(a.fast_dev_run, train_batches)
                                     : (to.overfit_batches.value > 0 ? to.overfit_batches.of(train_batches)
                                                                     : to.limit_train_batches.of(train_batches));
  // (a ceiling and a product that cannot overflow: the flags go up to 2^63 - 1)
  per_epoch = std::max<int64_t>(1, per_epoch / to.accumulate_grad_batches + (per_epoch % to.accumulate_grad_batches != 0));
  const int64_t epochs = a.fast_dev_run ? 1 : a.epochs;
  int64_t total = per_epoch > std::numeric_limits<int64_t>::max() / epochs ? std::numeric_limits<int64_t>::max()
                                                                             : per_epoch * epochs;
  if (a.max_steps > 0) total = std::min(total, a.max_steps);
  return std::max<int64_t>(1, total);
}

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4f", v);
  return b;
}

// The communicator of this run (srun / mpirun: one process per rank), kept where main() can reach
// it: an error on one rank then stops the whole job at once instead of leaving the others waiting.
std::shared_ptr<Communicator> g_comm;

int run(const TrainArgs& a) {
  const auto t0 = std::chrono::steady_clock::now();
  set_num_threads(a.threads);
  set_float32_matmul_precision(a.float32_matmul_precision);

  TrainerOptions to = a.trainer_options();
  const ProcessEnv env = detect_process_env();
  g_comm = std::shared_ptr<Communicator>(make_trainer_communicator(to, env));  // NCCL between GPU processes
  to.communicator = g_comm;
  const bool rank0 = g_comm->rank() == 0;
  if (rank0 && !a.save.empty()) {  // before the fit, not after it
    const fs::path folder = fs::path(a.save).parent_path().empty() ? fs::path(".") : fs::path(a.save).parent_path();
    VOLT_CHECK(fs::is_directory(folder) && ::access(folder.c_str(), W_OK) == 0, "--save ", a.save, ": folder ",
               folder.string(), fs::exists(folder) ? " is not a folder this process can write to" : " does not exist");
    VOLT_CHECK(!fs::is_directory(a.save), "--save ", a.save, ": is a folder; name the file to write");
  }
  auto dm = make_datamodule(a);

  // Checkpoints: the best by val_loss (the newest without validation) plus last.ckpt, which
  // --resume last continues from.
  const bool validating = to.limit_val_batches.value != 0.0;
  ModelCheckpointOptions mc;
  mc.monitor = validating ? "val_loss" : "";
  mc.save_top_k = 1;
  mc.save_last = true;
  mc.every_n_epochs = a.checkpoint_every;
  mc.filename = validating ? "epoch={epoch}-step={step}-val_loss={val_loss:.4f}" : "epoch={epoch}-step={step}";
  auto checkpoint = std::make_shared<ModelCheckpoint>(mc);
  to.callbacks.push_back(checkpoint);
  // The Trainer checks the options and the process layout before any data is read.
  Trainer trainer(to);
  // The seed CNN starts with an autocast convolution: on a GPU, 16-bit runs take 16-bit batches
  // (half the bytes written by the augment kernel or copied from the host, and no cast).
  if (trainer.device().is_cuda()) dm->set_image_dtype(trainer.compute_dtype());
  trainer.prepare_data(*dm);
  dm->setup("");  // the image size and classes (an image folder's are known only now)
  const Shape chw = dm->image_shape();

  SeedCNNOptions mo;
  mo.in_channels = chw[0];
  mo.height = chw[1];
  mo.width = chw[2];
  mo.num_classes = dm->num_classes();
  mo.dropout = a.dropout;
  manual_seed(uint64_t(a.seed));  // the weights' initialisation
  auto model = std::make_shared<SeedCNN>(mo);

  ClassifierOptions co;
  co.optimizer = a.optimizer;
  co.lr = a.lr;
  co.momentum = a.optimizer == "sgd" ? a.momentum : 0.0;
  co.weight_decay = a.weight_decay;
  co.scheduler = a.scheduler == "none" ? "" : a.scheduler;
  co.max_epochs = a.epochs;
  co.label_smoothing = a.label_smoothing;
  co.total_steps = estimated_steps(a, to, dm->train_loader()->num_batches());
  co.class_names = class_names(a.dataset, *dm);
  co.extra_hparams = {{"dataset", dm->name()},        {"batch_size", double(a.batch)},
                      {"max_epochs", double(a.epochs)}, {"precision", a.precision},
                      {"float32_matmul_precision", a.float32_matmul_precision},
                      {"dropout", a.dropout},          {"augment", a.augment},
                      {"seed", double(a.seed)}};
  ClassifierModule module(model, co);

  if (rank0) {
    const bool tf32 = trainer.device().is_cuda() && a.float32_matmul_precision == "high" &&
                      (a.precision == "32" || a.precision == "32-true");
    // How long it runs: the epochs, unless fast_dev_run or max_steps cuts it shorter.
    std::string length = std::to_string(a.epochs) + " epochs";
    if (a.fast_dev_run > 0)
      length = "fast_dev_run: " + std::to_string(a.fast_dev_run) + " batch(es) of train, val and test, no logs";
    else if (a.max_steps >= 0)
      length += " or " + std::to_string(a.max_steps) + " steps, whichever comes first";
    std::printf("Volt %s: seed CNN (%lld parameters) on %s, %s lr %g, batch %lld, %s, precision %s%s\n", VOLT_VERSION,
                (long long)model->num_parameters(), dm->name().c_str(), a.optimizer.c_str(), a.lr, (long long)a.batch,
                length.c_str(), a.precision.c_str(), tf32 ? " (TF32 convolutions and matrix products)" : "");
    const std::string device = trainer.device().is_cpu()
                                   ? "cpu (" + std::to_string(a.threads) + " threads" +
                                         (a.accelerator == "auto" ? ", no GPU visible)" : ")")
                                   : trainer.device().str();
    std::printf("device: %s; data from %s: %lld train / %lld val / %lld test, %d loader workers%s\n", device.c_str(),
                a.dataset == "synthetic" ? "a seeded generator" : dm->data_dir().c_str(),
                (long long)dm->train_dataset()->size(), (long long)dm->val_dataset()->size(),
                (long long)dm->test_dataset()->size(), a.num_workers, a.augment ? ", augmented" : "");
    if (g_comm->size() > 1)
      std::printf("processes: %d (%s), each training on its 1/%d of the data with batch %lld\n", g_comm->size(),
                  env.str().c_str(), g_comm->size(), (long long)a.batch);
    std::fflush(stdout);
  }

  trainer.fit(module, *dm);
  // Stopped early, and the Trainer said where: Ctrl-C / SIGTERM exit as the shell reports a signal
  // (128 + its number); a pre-emption that Slurm requeued exits 0 (the requeued job goes on), one it
  // could not (no Slurm job, or the requeue failed) 1: the run is unfinished.
  if (trainer.interrupted()) return 128 + trainer.interrupted();
  if (trainer.requeued()) return (trainer.requeue_failed() || env.job_id.empty()) && rank0 ? 1 : 0;
  const double fit_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Test with the best checkpoint (the current weights when none was written: fast_dev_run).
  const std::string ckpt = checkpoint->best_model_path().empty() ? (checkpoint->last_model_path().empty() ? "" : "last")
                                                                  : "best";
  const auto results = trainer.test(module, *dm, ckpt);
  const auto& m = results.at(0);
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!rank0) return 0;

  if (m.empty()) {  // --limit-test-batches 0: nothing tested, nothing to report (not "nan")
    std::printf("test: skipped (no test batches)  (fit %.1f s, total %.1f s wall)\n", fit_s, total_s);
  } else {
    std::ostringstream line;
    line << "test_acc " << fmt(m.count("test_acc") ? m.at("test_acc") : NAN) << "  test_loss "
         << fmt(m.count("test_loss") ? m.at("test_loss") : NAN);
    if (m.count("test_acc_top5")) line << "  test_acc_top5 " << fmt(m.at("test_acc_top5"));
    std::printf("%s  (%s weights; fit %.1f s, total %.1f s wall)\n", line.str().c_str(),
                ckpt.empty() ? "final" : ckpt.c_str(), fit_s, total_s);
  }
  if (trainer.log_dir().empty()) {
    std::printf("logs and checkpoints: none written (fast_dev_run)\n");
  } else {
    std::printf("logs: %s (TensorBoard: tensorboard --logdir %s/lightning_logs; metrics.csv, hparams.yaml)\n",
                trainer.log_dir().c_str(), a.log_dir.c_str());
    if (!checkpoint->best_model_path().empty())
      std::printf("best checkpoint: %s\n", checkpoint->best_model_path().c_str());
    if (!checkpoint->last_model_path().empty())
      std::printf("last checkpoint: %s (continue with --resume last)\n", checkpoint->last_model_path().c_str());
  }
  if (!a.save.empty()) {
    NamedTensors out;
    for (const auto& [n, t] : model->state_dict().items()) out.emplace_back(n, t);
    save_tensors(a.save, out);
    std::printf("saved the %s weights to %s\n", ckpt.empty() ? "final" : ckpt.c_str(), a.save.c_str());
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Slurm's SIGUSR1 (pre-emption warning) may come at any time, even while the data loads: from
  // here on it only raises a flag, which the Trainer acts on at its next step boundary.
  install_requeue_signal();
  TrainArgs args;
  try {
    args = parse_train_args(argc, argv);
  } catch (const UsageError& u) {
    if (std::string(u.what()).empty()) {
      std::fputs(train_usage(), stdout);
      return 0;
    }
    std::fprintf(stderr, "cnn_train: %s\n%s", u.what(), train_usage());
    return 2;
  }
  try {
    const int rc = run(args);
    // The communicator goes now, while MPI and CUDA are still up (MPI_Finalize runs among the static
    // destructors, before a global's), and only once every rank is done with it: the ranks that
    // print nothing return from run() while rank 0 still writes, and tearing down NCCL waits for
    // every rank.
    if (g_comm) {
      if (g_comm->size() > 1) g_comm->io_barrier();
      g_comm.reset();
    }
    return rc;
  } catch (const std::exception& e) {
    // (std::bad_alloc's what() is only its type: say what it means)
    const std::string what = dynamic_cast<const std::bad_alloc*>(&e)
                                 ? std::string("out of host memory (std::bad_alloc): a data set, batch or model "
                                               "larger than this machine holds?")
                                 : e.what();
    if (g_comm && g_comm->size() > 1)  // the other ranks would wait for this one: stop them all
      g_comm->abort(1, "cnn_train: error on rank " + std::to_string(g_comm->rank()) + ": " + what);
    std::fprintf(stderr, "cnn_train: error: %s\n", what.c_str());
    return 1;
  }
}
