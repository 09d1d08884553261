// DataModule and the CIFAR-10 / MNIST modules (see datamodule.h).
#include "data/datamodule.h"

#include <cstdlib>

#include "data/cifar.h"
#include "data/download.h"
#include "data/mnist.h"
#include "engine/error.h"

namespace volt {

std::string DataModule::resolve_dir(const std::string& folder) const {
  if (!o_.data_dir.empty()) return o_.data_dir;
  if (const char* d = std::getenv("VOLT_DATA_DIR"); d && *d) return std::string(d) + "/" + folder;
  return "datasets/" + folder;
}

void DataModule::split(std::shared_ptr<const Dataset> full, int64_t val_size) {
  const int64_t n = full->size();
  VOLT_CHECK(val_size > 0 && val_size < n, name(), ": cannot hold out ", val_size, " of ", n, " training images");
  const auto parts = random_split_indices(n, {n - val_size, val_size}, o_.seed);
  train_ = std::make_shared<Subset>(full, parts[0], name() + " train");
  val_ = std::make_shared<Subset>(full, parts[1], name() + " val");
}

std::unique_ptr<DataLoader> DataModule::make_loader(const std::shared_ptr<const Dataset>& d, bool training,
                                                    const char* what) const {
  VOLT_CHECK(d != nullptr, name(), ": no ", what, " set; call setup() first (stage \"",
             std::string(what) == "test" ? "test" : "fit", "\")");
  LoaderOptions lo;
  lo.batch_size = o_.batch_size;
  lo.shuffle = training;
  lo.num_workers = o_.num_workers;
  lo.seed = o_.seed;
  lo.rank = o_.rank;
  lo.world_size = o_.world_size;
  lo.transform = training ? train_transform_ : eval_transform_;
  return std::make_unique<DataLoader>(d, lo);
}

std::unique_ptr<DataLoader> DataModule::train_loader() const { return make_loader(train_, true, "training set"); }
std::unique_ptr<DataLoader> DataModule::val_loader() const { return make_loader(val_, false, "validation set"); }
std::unique_ptr<DataLoader> DataModule::test_loader() const { return make_loader(test_, false, "test"); }

static TransformOptions normalize_half(int64_t channels) {
  TransformOptions t;
  t.mean.assign(size_t(channels), 0.5f);
  t.std.assign(size_t(channels), 0.5f);
  return t;
}

// ---- CIFAR-10 ----
CIFAR10DataModule::CIFAR10DataModule(const DataModuleOptions& o) : DataModule(o) {
  dir_ = resolve_dir("cifar-10");
  eval_transform_ = normalize_half(3);
  train_transform_ = eval_transform_;
  if (o.augment) {
    train_transform_.crop_padding = 4;
    train_transform_.horizontal_flip = true;
  }
  train_transform_.cutout = o.cutout;
}

// With download on, local rank 0 of each node fetches what is missing while the others wait at the
// barrier; without it the files must already be there (setup() says where and how to get them).
static DatasetDownloadOptions download_options(const DataModuleOptions& o) {
  DatasetDownloadOptions d;
  d.download = o.local_rank == 0;
  d.barrier = o.barrier;
  return d;
}

void CIFAR10DataModule::prepare_data() {
  if (!o_.download) {
    if (o_.barrier) o_.barrier();
    return;
  }
  prepare_cifar10(dir_, o_.download_url.empty() ? kCifar10BaseUrl : o_.download_url, download_options(o_));
}

void CIFAR10DataModule::setup(const std::string& stage) {
  VOLT_CHECK(stage.empty() || stage == "fit" || stage == "validate" || stage == "test", name(),
             ": unknown stage '", stage, "' (fit, validate, test)");
  if (stage.empty() || stage == "fit" || stage == "validate") {
    auto full = std::make_shared<CIFAR10Dataset>(dir_, /*train=*/true);
    // 5,000 of 50,000 for validation; the same 10% when fewer training batches are present.
    split(full, full->size() / 10);
  }
  if (stage.empty() || stage == "test") test_ = std::make_shared<CIFAR10Dataset>(dir_, /*train=*/false);
}

// ---- MNIST ----
MNISTDataModule::MNISTDataModule(const DataModuleOptions& o) : DataModule(o) {
  dir_ = resolve_dir("mnist");
  eval_transform_ = normalize_half(1);
  train_transform_ = eval_transform_;
  train_transform_.cutout = o.cutout;
}

void MNISTDataModule::prepare_data() {
  if (!o_.download) {
    if (o_.barrier) o_.barrier();
    return;
  }
  prepare_mnist(dir_, o_.download_url.empty() ? kMnistBaseUrl : o_.download_url, download_options(o_));
}

void MNISTDataModule::setup(const std::string& stage) {
  VOLT_CHECK(stage.empty() || stage == "fit" || stage == "validate" || stage == "test", name(),
             ": unknown stage '", stage, "' (fit, validate, test)");
  if (stage.empty() || stage == "fit" || stage == "validate") {
    auto full = std::make_shared<MNISTDataset>(dir_, /*train=*/true);
    split(full, full->size() * 5000 / 60000);  // 55,000 / 5,000
  }
  if (stage.empty() || stage == "test") test_ = std::make_shared<MNISTDataset>(dir_, /*train=*/false);
}

}  // namespace volt
