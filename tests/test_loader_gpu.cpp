// The loader's GPU modes on cuda:0 against the CPU loader (label gpu; every case skips, exit 77, where
// no GPU is visible): the GPU-resident loader (one fused kernel per batch) and the host loader copying
// from pinned memory one batch ahead give the CPU loader's batches bit for bit (float32) over epochs,
// ranks and a mid-epoch resume; float16/bfloat16 resident batches are the float32 ones rounded; the
// placement follows --data-on-device and the free memory, and the Trainer says which mode runs.
#include <doctest/doctest.h>

#include <cmath>

#include "data/datamodule.h"
#include "data/loader.h"
#include "engine/dtype.h"
#include "engine/gpu.h"
#include "engine/random.h"
#include "tests/loader_fixtures.h"
#include "tests/test_util.h"
#include "tests/trainer_fixtures.h"

using namespace volt;
using namespace volt::test;

namespace {

const Device kGpu = Device::cuda(0);

LoaderOptions on_gpu(const LoaderCase& c, DataOnDevice where, int workers = 0) {
  LoaderOptions o = loader_options(c);
  o.device = kGpu;
  o.data_on_device = where;
  o.num_workers = workers;
  return o;
}

// A dataset far larger than any GPU (3 TB of images); nothing is ever read from it.
class HugeDataset : public HashDataset {
 public:
  HugeDataset() : HashDataset(1000000, {3, 1024, 1024}) {}
};

// Unreadable at two indices in different parts of the data set (the resident store is filled by
// several threads, each taking a contiguous range).
class BrokenDataset : public HashDataset {
 public:
  BrokenDataset() : HashDataset(2048, {3, 4, 4}) {}
  int64_t get(int64_t i, uint8_t* dst) const override {
    VOLT_CHECK(i != 300 && i != 1900, "broken dataset: image ", i, " is corrupt");
    return HashDataset::get(i, dst);
  }
};

}  // namespace

TEST_CASE("gpu loader: a resident store's first error, by index, is raised, whichever thread met it") {
  require_gpu();
  LoaderOptions o;
  o.batch_size = 64;
  o.device = kGpu;
  o.data_on_device = DataOnDevice::On;
  DataLoader l(std::make_shared<BrokenDataset>(), o);
  REQUIRE(l.mode() == LoaderMode::Resident);
  Batch b;
  const std::string err = error_of([&] { l.next(b); });
  CHECK(contains(err, "image 300 is corrupt"));
}

TEST_CASE("gpu loader: resident batches on cuda:0 equal the CPU loader's bit for bit, over epochs and ranks") {
  require_gpu();
  for (const LoaderCase& c : loader_cases()) {
    DataLoader l(dataset_of(c), on_gpu(c, DataOnDevice::Auto));
    INFO("shape " << shape_str(c.chw));
    REQUIRE(l.mode() == LoaderMode::Resident);  // a few KB: auto keeps it on the device
    CHECK(contains(l.mode_note(), "GPU-resident on cuda:0"));
    Batch b;
    REQUIRE(l.next(b));
    CHECK(b.images.device() == kGpu);
    CHECK(b.labels.device() == kGpu);
    CHECK(hash_epochs(l) == c.golden);
  }
}

TEST_CASE("gpu loader: pinned host batches copied one step ahead equal the CPU loader's, with 0, 1 and 2 workers") {
  require_gpu();
  for (const LoaderCase& c : loader_cases()) {
    for (int workers : {0, 1, 2}) {
      DataLoader l(dataset_of(c), on_gpu(c, DataOnDevice::Off, workers));
      INFO("shape " << shape_str(c.chw) << ", " << workers << " workers");
      REQUIRE(l.mode() == LoaderMode::HostToDevice);
      CHECK(contains(l.mode_note(), "pinned memory, copied to cuda:0"));
      CHECK(hash_epochs(l) == c.golden);
    }
  }
  CHECK(pinned_memory_stats().system_allocs > 0);  // the batches were made in page-locked memory
}

TEST_CASE("gpu loader: both device modes resume mid-epoch and survive an abandoned epoch") {
  require_gpu();
  const LoaderCase& c = loader_cases()[0];
  DataLoader cpu(dataset_of(c), loader_options(c));
  cpu.set_epoch(2);
  const std::vector<HostBatch> want = drain_to_host(cpu);
  for (DataOnDevice where : {DataOnDevice::On, DataOnDevice::Off}) {
    INFO("data on device " << data_on_device_name(where));
    DataLoader l(dataset_of(c), on_gpu(c, where, 2));
    Batch b;
    REQUIRE(l.next(b));  // epoch 0 begun (and, host to device, batch 1 already copying), then left
    REQUIRE(l.next(b));
    l.load_state({2, 3});
    CHECK(batches_differ(drain_to_host(l), std::vector<HostBatch>(want.begin() + 3, want.end())) == "");
    l.set_epoch(2);
    CHECK(batches_differ(drain_to_host(l), want) == "");
  }
  // Dropped with a copy in flight: the pinned buffers are released only after it completed.
  for (int i = 0; i < 3; ++i) {
    DataLoader l(dataset_of(c), on_gpu(c, DataOnDevice::Off, 1));
    Batch b;
    REQUIRE(l.next(b));
  }
  cuda_synchronize(0);
}

TEST_CASE("gpu loader: float16 and bfloat16 resident batches are the float32 batches rounded") {
  require_gpu();
  const LoaderCase& c = loader_cases()[0];
  DataLoader ref(dataset_of(c), on_gpu(c, DataOnDevice::On));
  ref.set_epoch(1);
  const std::vector<HostBatch> f32 = drain_to_host(ref);
  for (DType t : {DType::F16, DType::BF16}) {
    LoaderOptions o = on_gpu(c, DataOnDevice::On);
    o.image_dtype = t;
    DataLoader l(dataset_of(c), o);
    l.set_epoch(1);
    const std::vector<HostBatch> got = drain_to_host(l);
    REQUIRE(got.size() == f32.size());
    size_t bad = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      CHECK(got[i].dtype == t);
      CHECK(got[i].labels == f32[i].labels);
      for (size_t j = 0; j < got[i].images.size(); ++j) {
        const float v = f32[i].images[j];
        bad += got[i].images[j] != (t == DType::F16 ? half_to_float(float_to_half(v)) : bf16_to_float(float_to_bf16(v)));
      }
    }
    INFO(dtype_name(t));
    CHECK(bad == 0);
  }
}

TEST_CASE("gpu loader: a dataset larger than the GPU is loaded from the host, and forcing it resident is an error") {
  require_gpu();
  auto huge = std::make_shared<HugeDataset>();
  LoaderOptions o;
  o.batch_size = 2;
  o.device = kGpu;
  DataLoader l(huge, o);
  CHECK(l.mode() == LoaderMode::HostToDevice);
  CHECK(contains(l.mode_note(), "exceed a quarter of the"));
  o.data_on_device = DataOnDevice::On;
  const std::string err = error_of([&] { DataLoader forced(huge, o); });
  CHECK(contains(err, "data on device: on, but hash's 3.1 TB"));
  CHECK(contains(err, "do not fit in the"));
}

TEST_CASE("gpu Trainer: the log says which data mode runs, and training from either mode matches") {
  require_gpu();
  struct ModeDM : SynthDM {
    explicit ModeDM(DataOnDevice where) : SynthDM(96, 32, 16) { o_.data_on_device = where; }
  };
  std::vector<double> losses;
  for (DataOnDevice where : {DataOnDevice::Auto, DataOnDevice::Off}) {
    TempDir dir("volt_loader_gpu_");
    ModeDM dm(where);
    Quiet q;
    auto o = q.base(dir.path);
    o.accelerator = "gpu";
    o.max_epochs = 1;
    o.seed = 3;
    Trainer t(o);
    manual_seed(3);  // the same initial weights in both runs
    ClassifierModule m(small_cnn(0.0), adam(1e-3));
    t.fit(m, dm);
    INFO(q.os.str());
    CHECK(contains(q.os.str(), where == DataOnDevice::Auto ? "train data: GPU-resident on cuda:0"
                                                           : "train data: host loader (0 workers) into pinned memory"));
    REQUIRE(t.callback_metrics().count("train_loss") == 1);
    losses.push_back(t.callback_metrics().at("train_loss"));
  }
  // The same batches: the same training, up to cuDNN's choice of algorithms.
  CHECK(std::abs(losses[0] - losses[1]) <= 1e-4 * std::abs(losses[0]) + 1e-5);
}
