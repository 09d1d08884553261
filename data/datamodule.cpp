// DataModule and its modules: CIFAR-10/100, (Fashion-)MNIST, image folder, synthetic (datamodule.h).
#include "data/datamodule.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include "data/cifar.h"
#include "data/download.h"
#include "data/image_folder.h"
#include "data/synthetic.h"
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
  lo.device = device_;
  lo.data_on_device = o_.data_on_device;
  lo.image_dtype = image_dtype_;
  return std::make_unique<DataLoader>(d, lo);
}

void DataModule::set_distributed(int64_t rank, int64_t world_size, int64_t local_rank, std::function<void()> barrier) {
  VOLT_CHECK(world_size >= 1 && rank >= 0 && rank < world_size && local_rank >= 0, name(), ": bad layout rank ", rank,
             " of ", world_size, " (local rank ", local_rank, ")");
  o_.rank = rank;
  o_.world_size = world_size;
  o_.local_rank = local_rank;
  o_.barrier = std::move(barrier);
}

void DataModule::set_image_dtype(DType t) {
  VOLT_CHECK(t == DType::F32 || t == DType::F16 || t == DType::BF16, name(),
             ": batch images must be float32, float16 or bfloat16, got ", dtype_name(t));
  image_dtype_ = t;
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

// Every stage name setup() accepts, and which datasets a stage needs.
static void check_stage(const DataModule& dm, const std::string& stage) {
  VOLT_CHECK(stage.empty() || stage == "fit" || stage == "validate" || stage == "test", dm.name(),
             ": unknown stage '", stage, "' (fit, validate, test)");
}
static bool wants_train(const std::string& stage) { return stage.empty() || stage == "fit" || stage == "validate"; }
static bool wants_test(const std::string& stage) { return stage.empty() || stage == "test"; }

// With download on, local rank 0 of each node fetches what is missing while the others wait at the
// barrier; without it the files must already be there (setup() says where and how to get them).
static DatasetDownloadOptions download_options(const DataModuleOptions& o) {
  DatasetDownloadOptions d;
  d.download = o.local_rank == 0;
  d.barrier = o.barrier;
  return d;
}

// prepare_data() of the downloadable modules: fetch (rank 0 of the node) or only meet the barrier.
template <class Fetch>
static void prepare_or_wait(const DataModuleOptions& o, const std::string& dir, const char* default_url, Fetch fetch) {
  if (!o.download) {
    if (o.barrier) o.barrier();
    return;
  }
  fetch(dir, o.download_url.empty() ? default_url : o.download_url, download_options(o));
}

// The tutorial's transforms: Normalize(0.5, 0.5) for evaluation; training adds the augmentation asked for.
void DataModule::set_transforms(int64_t channels, bool flip) {
  eval_transform_ = normalize_half(channels);
  train_transform_ = eval_transform_;
  if (o_.augment) {
    train_transform_.crop_padding = 4;
    train_transform_.horizontal_flip = flip;
  }
  train_transform_.cutout = o_.cutout;
}

// ---- CIFAR-10 ----
CIFAR10DataModule::CIFAR10DataModule(const DataModuleOptions& o) : DataModule(o) {
  dir_ = resolve_dir("cifar-10");
  set_transforms(3, true);
}

void CIFAR10DataModule::prepare_data() {
  prepare_or_wait(o_, dir_, kCifar10BaseUrl, prepare_cifar10);
}

void CIFAR10DataModule::setup(const std::string& stage) {
  check_stage(*this, stage);
  if (wants_train(stage) && !train_) {
    auto full = std::make_shared<CIFAR10Dataset>(dir_, /*train=*/true);
    // 5,000 of 50,000 for validation; the same 10% when fewer training batches are present.
    split(full, full->size() / 10);
  }
  if (wants_test(stage) && !test_) test_ = std::make_shared<CIFAR10Dataset>(dir_, /*train=*/false);
}

// ---- CIFAR-100 ----
CIFAR100DataModule::CIFAR100DataModule(const DataModuleOptions& o) : DataModule(o) {
  dir_ = resolve_dir("cifar-100");
  set_transforms(3, true);
}

void CIFAR100DataModule::prepare_data() {
  prepare_or_wait(o_, dir_, kCifar100BaseUrl, prepare_cifar100);
}

void CIFAR100DataModule::setup(const std::string& stage) {
  check_stage(*this, stage);
  if (wants_train(stage) && !train_) {
    auto full = std::make_shared<CIFAR100Dataset>(dir_, /*train=*/true);
    split(full, full->size() / 10);
  }
  if (wants_test(stage) && !test_) test_ = std::make_shared<CIFAR100Dataset>(dir_, /*train=*/false);
}

// ---- MNIST and Fashion-MNIST ----
MNISTDataModule::MNISTDataModule(const DataModuleOptions& o, MNISTVariant variant) : DataModule(o), variant_(variant) {
  dir_ = resolve_dir(variant == MNISTVariant::MNIST ? "mnist" : "fashion-mnist");
  set_transforms(1, /*flip=*/variant != MNISTVariant::MNIST);  // a mirrored garment is the same garment
}

std::string MNISTDataModule::name() const { return variant_ == MNISTVariant::MNIST ? "MNIST" : "Fashion-MNIST"; }

void MNISTDataModule::prepare_data() {
  if (variant_ == MNISTVariant::MNIST)
    prepare_or_wait(o_, dir_, kMnistBaseUrl, prepare_mnist);
  else
    prepare_or_wait(o_, dir_, kFashionMnistBaseUrl, prepare_fashion_mnist);
}

void MNISTDataModule::setup(const std::string& stage) {
  check_stage(*this, stage);
  if (wants_train(stage) && !train_) {
    auto full = std::make_shared<MNISTDataset>(dir_, /*train=*/true, variant_);
    split(full, full->size() * 5000 / 60000);  // 55,000 / 5,000
  }
  if (wants_test(stage) && !test_) test_ = std::make_shared<MNISTDataset>(dir_, /*train=*/false, variant_);
}

// ---- Image folder ----
ImageFolderDataModule::ImageFolderDataModule(const DataModuleOptions& o, int64_t channels)
    : DataModule(o), channels_(channels) {
  VOLT_CHECK(!o.data_dir.empty(), "ImageFolder: a data directory is needed (--data-dir DIR, holding train/<class>/ "
                                  "and test/<class>/ image folders)");
  dir_ = o.data_dir;
  set_transforms(channels, true);
}

namespace {
std::shared_ptr<ImageFolderDataset> open_folder(const std::string& dir, const char* part, int64_t channels) {
  namespace fs = std::filesystem;
  const std::string path = dir + "/" + part;
  std::error_code ec;
  VOLT_CHECK(fs::is_directory(path, ec), "ImageFolder: ", path, " does not exist; the data directory must hold ",
             "train/<class>/ and test/<class>/ folders of PNG/JPEG/BMP images (val/<class>/ optional)");
  return std::make_shared<ImageFolderDataset>(path, channels);
}

void check_same(const ImageFolderDataset& a, const ImageFolderDataset& b) {
  VOLT_CHECK(a.class_names() == b.class_names(), "ImageFolder: ", b.name(), " has ", b.num_classes(),
             " classes that differ from the ", a.num_classes(), " of ", a.name(), "; both need the same class folders");
  VOLT_CHECK(a.image_shape() == b.image_shape(), "ImageFolder: ", b.name(), " has images of ",
             shape_str(b.image_shape()), " but ", a.name(), " has ", shape_str(a.image_shape()));
}
}  // namespace

void ImageFolderDataModule::setup(const std::string& stage) {
  check_stage(*this, stage);
  // Labels are positions in the sorted class list, so a part with other classes would mean other
  // classes by the same labels: each part is checked against the first one read, in any call.
  auto against_ref = [this](const std::shared_ptr<ImageFolderDataset>& part) {
    if (ref_) {
      check_same(*ref_, *part);
      return;
    }
    ref_ = part;
    shape_ = part->image_shape();
    classes_ = part->num_classes();
  };
  if (wants_train(stage) && !train_) {
    auto train = open_folder(dir_, "train", channels_);
    std::error_code ec;
    if (std::filesystem::is_directory(dir_ + "/val", ec)) {
      auto val = open_folder(dir_, "val", channels_);
      check_same(*train, *val);
      against_ref(train);
      train_ = train;
      val_ = val;
    } else {
      against_ref(train);
      split(train, std::max<int64_t>(1, train->size() / 10));
    }
  }
  if (wants_test(stage) && !test_) {
    auto test = open_folder(dir_, "test", channels_);
    against_ref(test);
    test_ = test;
  }
}

Shape ImageFolderDataModule::image_shape() const {
  VOLT_CHECK(!shape_.empty(), "ImageFolder: the image size is known after setup()");
  return shape_;
}

int64_t ImageFolderDataModule::num_classes() const {
  VOLT_CHECK(classes_ > 0, "ImageFolder: the classes are known after setup()");
  return classes_;
}

// ---- Synthetic ----
SyntheticDataModule::SyntheticDataModule(const DataModuleOptions& o, const SyntheticDataSizes& z)
    : DataModule(o), z_(z) {
  VOLT_CHECK(z.train > 0 && z.val > 0 && z.test > 0, "synthetic data: train, val and test sizes must be > 0, got ",
             z.train, "/", z.val, "/", z.test);
  set_transforms(z.channels, true);
}

void SyntheticDataModule::setup(const std::string& stage) {
  check_stage(*this, stage);
  // One set of class patterns; train+val come first, the test images after them.
  SyntheticOptions so;
  so.size = z_.train + z_.val + z_.test;
  so.channels = z_.channels;
  so.height = z_.height;
  so.width = z_.width;
  so.num_classes = z_.num_classes;
  so.seed = o_.seed + 1000;
  auto full = std::make_shared<SyntheticDataset>(so);
  if (wants_train(stage) && !train_) {
    std::vector<int64_t> first(static_cast<size_t>(z_.train + z_.val));
    for (size_t i = 0; i < first.size(); ++i) first[i] = int64_t(i);
    split(std::make_shared<Subset>(full, first, "synthetic train+val"), z_.val);
  }
  if (wants_test(stage) && !test_) {
    std::vector<int64_t> rest(static_cast<size_t>(z_.test));
    for (size_t i = 0; i < rest.size(); ++i) rest[i] = z_.train + z_.val + int64_t(i);
    test_ = std::make_shared<Subset>(full, rest, "synthetic test");
  }
}

}  // namespace volt
