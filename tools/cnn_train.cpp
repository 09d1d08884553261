// cnn_train: trains the seed CNN on CIFAR-10 (default), MNIST or a synthetic dataset through the
// data modules, on the CPU backend; GPU and multi-process training plug in here later.
#include <volt/volt.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "data/datamodule.h"
#include "data/synthetic.h"

using namespace volt;

namespace {

const char* kUsage =
    "usage: cnn_train [options]\n"
    "  --epochs N             epochs to train (default 20)\n"
    "  --batch-size N         images per step (default 128)\n"
    "  --lr X                 learning rate (default 1e-3)\n"
    "  --optimizer NAME       adam | adamw | sgd (default adam)\n"
    "  --momentum X           SGD momentum (default 0.9)\n"
    "  --weight-decay X       weight decay (default 0)\n"
    "  --scheduler NAME       none | step | cosine | onecycle (default none)\n"
    "  --dropout X            dropout probability in the classifier (default 0.2)\n"
    "  --label-smoothing X    cross-entropy label smoothing (default 0)\n"
    "  --data NAME            cifar10 | mnist | synthetic (default cifar10)\n"
    "  --data-dir DIR         dataset folder (default $VOLT_DATA_DIR/<cifar-10|mnist>, else datasets/<...>)\n"
    "  --download             fetch the dataset into --data-dir if it is missing\n"
    "  --download-url URL     base URL to download from (default: the official mirror)\n"
    "  --num-workers N        loader threads (default 2)\n"
    "  --augment              random crop (padding 4) and horizontal flip on training images\n"
    "  --train-samples N      synthetic training samples (default 4096)\n"
    "  --val-samples N        synthetic validation samples (default 1024)\n"
    "  --accelerator NAME     cpu | gpu | auto (default auto: the GPU when there is one)\n"
    "  --threads N            CPU threads (default: all cores)\n"
    "  --seed N               random seed (default 0)\n"
    "  --save PATH            write the final weights (Volt tensor file) to PATH\n"
    "  -h, --help             this text\n";

struct Usage : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  int64_t epochs = 20, batch = 128, train_samples = 4096, val_samples = 1024, seed = 0;
  int threads = int(std::max(1u, std::thread::hardware_concurrency()));
  double lr = 1e-3, momentum = 0.9, weight_decay = 0, dropout = 0.2, label_smoothing = 0;
  int num_workers = 2;
  bool download = false, augment = false;
  std::string optimizer = "adam", scheduler = "none", data = "cifar10", accelerator = "auto", save, data_dir,
              download_url;
};

double to_double(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || !std::isfinite(d)) throw Usage("bad value '" + v + "' for " + flag + ": expected a number");
  return d;
}

int64_t to_int(const std::string& flag, const std::string& v, int64_t min) {
  char* end = nullptr;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || n < min)
    throw Usage("bad value '" + v + "' for " + flag + ": expected an integer >= " + std::to_string(min));
  return n;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i], value;
    const size_t eq = flag.find('=');
    const bool has_eq = flag.rfind("--", 0) == 0 && eq != std::string::npos;
    if (has_eq) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    if (flag == "-h" || flag == "--help") throw Usage("");
    auto next = [&]() -> std::string {
      if (has_eq) return value;
      if (i + 1 >= argc) throw Usage("missing value for " + flag);
      return argv[++i];
    };
    auto choice = [&](std::initializer_list<const char*> allowed) {
      std::string v = next();
      for (const char* c : allowed)
        if (v == c) return v;
      std::string list;
      for (const char* c : allowed) list += std::string(list.empty() ? "" : ", ") + c;
      throw Usage("bad value '" + v + "' for " + flag + ": expected one of " + list);
    };
    if (flag == "--epochs") a.epochs = to_int(flag, next(), 1);
    else if (flag == "--batch-size") a.batch = to_int(flag, next(), 1);
    else if (flag == "--lr") a.lr = to_double(flag, next());
    else if (flag == "--optimizer") a.optimizer = choice({"adam", "adamw", "sgd"});
    else if (flag == "--momentum") a.momentum = to_double(flag, next());
    else if (flag == "--weight-decay") a.weight_decay = to_double(flag, next());
    else if (flag == "--scheduler") a.scheduler = choice({"none", "step", "cosine", "onecycle"});
    else if (flag == "--dropout") a.dropout = to_double(flag, next());
    else if (flag == "--label-smoothing") a.label_smoothing = to_double(flag, next());
    else if (flag == "--data") a.data = choice({"cifar10", "mnist", "synthetic"});
    else if (flag == "--data-dir") a.data_dir = next();
    else if (flag == "--download") a.download = true;
    else if (flag == "--download-url") a.download_url = next();
    else if (flag == "--num-workers") a.num_workers = int(to_int(flag, next(), 0));
    else if (flag == "--augment") a.augment = true;
    else if (flag == "--train-samples") a.train_samples = to_int(flag, next(), 1);
    else if (flag == "--val-samples") a.val_samples = to_int(flag, next(), 1);
    else if (flag == "--accelerator") a.accelerator = choice({"cpu", "gpu", "auto"});
    else if (flag == "--threads") a.threads = int(to_int(flag, next(), 1));
    else if (flag == "--seed") a.seed = to_int(flag, next(), 0);
    else if (flag == "--save") a.save = next();
    else throw Usage("unknown option " + flag);
  }
  if (a.lr <= 0) throw Usage("--lr must be positive");
  if (a.dropout < 0 || a.dropout >= 1) throw Usage("--dropout must be in [0, 1)");
  if (a.label_smoothing < 0 || a.label_smoothing > 1) throw Usage("--label-smoothing must be in [0, 1]");
  return a;
}

// Mean loss and accuracy over a loader in eval mode.
std::pair<double, double> evaluate(SeedCNN& model, DataLoader& loader) {
  model.eval();
  NoGradGuard no_grad;
  loader.set_epoch(0);
  double loss = 0, correct = 0;
  int64_t seen = 0;
  Batch b;
  while (loader.next(b)) {
    const int64_t n = b.labels.numel();
    Tensor logits = model(b.images);
    loss += double(cross_entropy(logits, b.labels).item()) * double(n);
    correct += accuracy(logits, b.labels) * double(n);
    seen += n;
  }
  return {loss / double(seen), correct / double(seen)};
}

int run(const Args& a) {
  if (a.accelerator == "gpu")
    throw Error("--accelerator gpu: this build of Volt has no CUDA backend yet; use --accelerator cpu");
  set_num_threads(a.threads);
  manual_seed(uint64_t(a.seed));

  // Data: a data module (CIFAR-10, MNIST) or the synthetic set split the same way.
  DataModuleOptions dmo;
  dmo.data_dir = a.data_dir;
  dmo.batch_size = a.batch;
  dmo.num_workers = a.num_workers;
  dmo.download = a.download;
  dmo.download_url = a.download_url;
  dmo.seed = uint64_t(a.seed) + 42;
  dmo.augment = a.augment;
  std::unique_ptr<DataModule> dm;
  std::unique_ptr<DataLoader> train, val, test;
  Shape chw;
  std::string data_desc;
  if (a.data == "synthetic") {
    SyntheticOptions so;
    so.seed = uint64_t(a.seed) + 1000;
    so.size = a.train_samples + a.val_samples;
    auto full = std::make_shared<SyntheticDataset>(so);
    std::vector<int64_t> tr(static_cast<size_t>(a.train_samples)), va(static_cast<size_t>(a.val_samples));
    for (int64_t i = 0; i < a.train_samples; ++i) tr[size_t(i)] = i;
    for (int64_t i = 0; i < a.val_samples; ++i) va[size_t(i)] = a.train_samples + i;
    LoaderOptions lo;
    lo.batch_size = a.batch;
    lo.num_workers = a.num_workers;
    lo.seed = dmo.seed;
    lo.transform.mean = {0.5f};
    lo.transform.std = {0.5f};
    val = std::make_unique<DataLoader>(std::make_shared<Subset>(full, va, "synthetic val"), lo);
    lo.shuffle = true;
    train = std::make_unique<DataLoader>(std::make_shared<Subset>(full, tr, "synthetic train"), lo);
    chw = full->image_shape();
    data_desc = "synthetic, " + std::to_string(a.train_samples) + " train / " + std::to_string(a.val_samples) +
                " val images of 3x32x32, 10 classes";
  } else {
    if (a.data == "mnist") dm = std::make_unique<MNISTDataModule>(dmo);
    else dm = std::make_unique<CIFAR10DataModule>(dmo);
    dm->prepare_data();
    dm->setup("");
    train = dm->train_loader();
    val = dm->val_loader();
    test = dm->test_loader();
    chw = dm->image_shape();
    data_desc = dm->name() + " from " + dm->data_dir() + ": " + std::to_string(dm->train_dataset()->size()) +
                " train / " + std::to_string(dm->val_dataset()->size()) + " val / " +
                std::to_string(dm->test_dataset()->size()) + " test" + (a.augment ? ", augmented" : "");
  }

  SeedCNNOptions mo;
  mo.in_channels = chw[0];
  mo.height = chw[1];
  mo.width = chw[2];
  mo.dropout = a.dropout;
  SeedCNN model(mo);
  std::unique_ptr<Optimizer> opt;
  if (a.optimizer == "sgd") opt = std::make_unique<SGD>(model.parameters(), SGDOptions{a.lr, a.momentum, 0, a.weight_decay});
  else {
    AdamOptions ao;
    ao.lr = a.lr;
    ao.weight_decay = a.weight_decay;
    if (a.optimizer == "adam") opt = std::make_unique<Adam>(model.parameters(), ao);
    else opt = std::make_unique<AdamW>(model.parameters(), ao);
  }
  const int64_t steps_per_epoch = train->num_batches();
  std::unique_ptr<LRScheduler> sched;  // stepped per epoch (step, cosine) or per batch (onecycle)
  if (a.scheduler == "step") sched = std::make_unique<StepLR>(*opt, std::max<int64_t>(1, a.epochs / 3), 0.1);
  else if (a.scheduler == "cosine") sched = std::make_unique<CosineAnnealingLR>(*opt, a.epochs);
  else if (a.scheduler == "onecycle") {
    OneCycleOptions oc;
    oc.max_lr = a.lr;
    oc.total_steps = a.epochs * steps_per_epoch;
    sched = std::make_unique<OneCycleLR>(*opt, oc);
  }

  std::printf("Volt %s: seed CNN (%lld parameters), %s optimizer, lr %g, batch %lld, %lld epochs\n", VOLT_VERSION,
              (long long)model.num_parameters(), a.optimizer.c_str(), a.lr, (long long)a.batch, (long long)a.epochs);
  std::printf("device: cpu (%d threads)%s\n", a.threads,
              a.accelerator == "auto" ? "; auto picked the CPU: this build has no CUDA backend" : "");
  std::printf("data: %s; host loader, %d worker threads\n", data_desc.c_str(), a.num_workers);
  std::fflush(stdout);

  const CrossEntropyLoss loss_fn(Reduction::Mean, a.label_smoothing);
  for (int64_t epoch = 0; epoch < a.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    model.train();
    train->set_epoch(epoch);
    double loss_sum = 0;
    int64_t seen = 0;
    Batch b;
    while (train->next(b)) {
      const int64_t n = b.labels.numel();
      if (n < 2) continue;  // BatchNorm needs more than one sample
      opt->zero_grad();
      Tensor loss = loss_fn(model(b.images), b.labels);
      loss.backward();
      opt->step();
      if (a.scheduler == "onecycle") sched->step();
      const float l = loss.item();
      if (!std::isfinite(l)) throw Error("training diverged: loss is " + std::to_string(l) + " at epoch " +
                                         std::to_string(epoch + 1) + ", batch " + std::to_string(b.index + 1) +
                                         "; try a lower --lr");
      loss_sum += double(l) * double(n);
      seen += n;
    }
    if (sched && a.scheduler != "onecycle") sched->step();
    const double train_sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto [val_loss, val_acc] = evaluate(model, *val);
    std::printf("epoch %lld/%lld  train_loss %.4f  val_loss %.4f  val_acc %.4f  lr %.3g  %.1f s  %.0f img/s\n",
                (long long)epoch + 1, (long long)a.epochs, loss_sum / double(std::max<int64_t>(seen, 1)), val_loss,
                val_acc, opt->lr(), train_sec, double(seen) / train_sec);
    std::fflush(stdout);
  }
  if (test) {
    const auto [test_loss, test_acc] = evaluate(model, *test);
    std::printf("test  loss %.4f  acc %.4f  (%lld images)\n", test_loss, test_acc,
                (long long)dm->test_dataset()->size());
  }
  if (!a.save.empty()) {
    NamedTensors out;
    for (const auto& [n, t] : model.state_dict().items()) out.emplace_back(n, t);
    save_tensors(a.save, out);
    std::printf("saved weights to %s\n", a.save.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse(argc, argv);
  } catch (const Usage& u) {
    if (std::string(u.what()).empty()) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::fprintf(stderr, "cnn_train: %s\n%s", u.what(), kUsage);
    return 2;
  }
  try {
    return run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cnn_train: error: %s\n", e.what());
    return 1;
  }
}
