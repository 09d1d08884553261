// Sampler, random_split, transforms, the DataLoader (workers, order, resume) and the data modules.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>

#include "data/datamodule.h"
#include "data/loader.h"
#include "data/sampler.h"
#include "data/transform.h"
#include "engine/error.h"
#include "engine/threads.h"
#include "tests/test_util.h"

using namespace volt;
using test::contains;
using test::error_of;

namespace {

// n images of shape [c, h, w]; pixel j of image i is (i * 7 + j) % 256, label i % classes.
class CountingDataset : public Dataset {
 public:
  CountingDataset(int64_t n, Shape chw, int64_t classes = 10) : n_(n), chw_(std::move(chw)), classes_(classes) {}
  int64_t size() const override { return n_; }
  Shape image_shape() const override { return chw_; }
  int64_t num_classes() const override { return classes_; }
  std::string name() const override { return "counting"; }
  int64_t get(int64_t i, uint8_t* dst) const override {
    VOLT_CHECK(i >= 0 && i < n_, "counting: bad index ", i);
    for (int64_t j = 0; j < shape_numel(chw_); ++j) dst[j] = uint8_t((i * 7 + j) % 256);
    return i % classes_;
  }

 private:
  int64_t n_;
  Shape chw_;
  int64_t classes_;
};

std::vector<std::pair<std::vector<float>, std::vector<int64_t>>> drain(DataLoader& l) {
  std::vector<std::pair<std::vector<float>, std::vector<int64_t>>> out;
  Batch b;
  while (l.next(b)) out.emplace_back(b.images.to_vector(), b.labels.to_int_vector());
  return out;
}

}  // namespace

TEST_CASE("sampler: shards over 1, 2 and 3 ranks cover every index with equal counts") {
  for (int64_t n : {10, 11, 12}) {
    for (int64_t world : {1, 2, 3}) {
      std::multiset<int64_t> seen;
      std::vector<int64_t> counts;
      for (int64_t r = 0; r < world; ++r) {
        SamplerOptions o;
        o.shuffle = true;
        o.seed = 5;
        o.rank = r;
        o.world_size = world;
        DistributedSampler s(n, o);
        s.set_epoch(3);
        const auto idx = s.indices();
        counts.push_back(int64_t(idx.size()));
        CHECK(int64_t(idx.size()) == s.num_samples());
        seen.insert(idx.begin(), idx.end());
      }
      INFO("n " << n << ", world " << world);
      CHECK(std::all_of(counts.begin(), counts.end(), [&](int64_t c) { return c == counts[0]; }));
      CHECK(counts[0] == (n + world - 1) / world);
      for (int64_t i = 0; i < n; ++i) CHECK(seen.count(i) >= 1);  // padding repeats a few
      CHECK(int64_t(seen.size()) == counts[0] * world);
    }
  }
}

TEST_CASE("sampler: each epoch's order differs and is reproducible, and drop_last truncates") {
  SamplerOptions o;
  o.shuffle = true;
  o.seed = 9;
  DistributedSampler a(100, o), b(100, o);
  a.set_epoch(0);
  const auto e0 = a.indices();
  a.set_epoch(1);
  const auto e1 = a.indices();
  b.set_epoch(1);
  CHECK(e0 != e1);
  CHECK(e1 == b.indices());
  std::vector<int64_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(100);
  std::iota(iota.begin(), iota.end(), 0);
  CHECK(sorted == iota);
  o.drop_last = true;
  o.world_size = 3;
  DistributedSampler d(100, o);
  CHECK(d.num_samples() == 33);
  SamplerOptions unshuffled;
  DistributedSampler u(5, unshuffled);
  CHECK(u.indices() == std::vector<int64_t>{0, 1, 2, 3, 4});
  CHECK(contains(error_of([] { SamplerOptions bad; bad.rank = 2; bad.world_size = 2; DistributedSampler s(4, bad); }),
                 "rank 2"));
}

TEST_CASE("random_split: a seed-stable partition into disjoint parts") {
  const auto p = random_split_indices(50, {45, 5}, 42);
  REQUIRE(p.size() == 2);
  CHECK(p[0].size() == 45);
  CHECK(p[1].size() == 5);
  std::set<int64_t> all(p[0].begin(), p[0].end());
  all.insert(p[1].begin(), p[1].end());
  CHECK(all.size() == 50);
  CHECK(random_split_indices(50, {45, 5}, 42) == p);
  CHECK(random_split_indices(50, {45, 5}, 43) != p);
  CHECK(contains(error_of([] { random_split_indices(10, {3, 4}, 1); }), "sum to 7"));
}

TEST_CASE("transform: scaling and Normalize, flip, crop shift and cutout") {
  const Shape chw{2, 2, 3};
  const std::vector<uint8_t> px = {0, 51, 102, 153, 204, 255, 10, 20, 30, 40, 50, 60};
  std::vector<float> out(12);
  TransformOptions t;
  t.mean = {0.5f, 0.25f};
  t.std = {0.5f, 0.25f};
  apply_transform(t, chw, px.data(), out.data(), 1, 0);
  CHECK(out[0] == doctest::Approx(-1.0));
  CHECK(out[5] == doctest::Approx(1.0));
  CHECK(out[6] == doctest::Approx((10 / 255.0 - 0.25) / 0.25));
  // Flip decides per key; across keys both outcomes occur and a flipped row is reversed.
  TransformOptions f;
  f.horizontal_flip = true;
  int flipped = 0;
  for (uint64_t key = 0; key < 64; ++key) {
    apply_transform(f, chw, px.data(), out.data(), 3, key);
    const bool is_flipped = out[0] == doctest::Approx(102 / 255.0) && out[2] == doctest::Approx(0.0);
    const bool is_plain = out[0] == doctest::Approx(0.0) && out[2] == doctest::Approx(102 / 255.0);
    CHECK((is_flipped || is_plain));
    flipped += is_flipped;
  }
  CHECK(flipped > 10);
  CHECK(flipped < 54);
  // Crop with padding: every output pixel is either zero padding or an input pixel shifted by one offset.
  TransformOptions c;
  c.crop_padding = 1;
  for (uint64_t key = 0; key < 16; ++key) {
    apply_transform(c, chw, px.data(), out.data(), 4, key);
    for (float v : out) CHECK((v == 0.f || std::find_if(px.begin(), px.end(), [&](uint8_t p) {
                                 return std::abs(p / 255.f - v) < 1e-6f;
                               }) != px.end()));
  }
  TransformOptions k;
  k.cutout = 2;
  std::vector<uint8_t> white(12, 255);
  apply_transform(k, chw, white.data(), out.data(), 5, 1);
  CHECK(std::count(out.begin(), out.end(), 0.f) >= 2);
  CHECK(contains(error_of([] { TransformOptions bad; bad.mean = {0.5f}; bad.std = {0.f}; check_transform(bad, {1, 2, 2}); }),
                 "std must be positive"));
}

TEST_CASE("loader workers run their kernels on one thread each, not a team of every core apiece") {
  // OpenMP's thread count is per thread: a worker started with every core's team, so N workers
  // converting 16-bit batches ran N teams beside the training loop.
  struct Probe : CountingDataset {
    using CountingDataset::CountingDataset;
    int64_t get(int64_t i, uint8_t* dst) const override {
      int seen = most.load();
      while (volt::get_num_threads() > seen && !most.compare_exchange_weak(seen, volt::get_num_threads())) {
      }
      return CountingDataset::get(i, dst);
    }
    mutable std::atomic<int> most{0};
  };
  auto ds = std::make_shared<Probe>(64, Shape{1, 4, 4});
  LoaderOptions o;
  o.batch_size = 8;
  o.num_workers = 2;
  DataLoader loader(ds, o);
  Batch b;
  int batches = 0;
  while (loader.next(b)) ++batches;
  CHECK(batches == 8);
  CHECK(ds->most.load() == 1);
}

TEST_CASE("loader: 0, 1 and 3 workers give identical batches in identical order, with augmentation") {
  auto data = std::make_shared<CountingDataset>(103, Shape{3, 8, 8});
  LoaderOptions o;
  o.batch_size = 10;
  o.shuffle = true;
  o.seed = 7;
  o.transform.mean = {0.5f};
  o.transform.std = {0.5f};
  o.transform.crop_padding = 2;
  o.transform.horizontal_flip = true;
  std::vector<std::vector<std::pair<std::vector<float>, std::vector<int64_t>>>> runs;
  for (int workers : {0, 1, 3}) {
    o.num_workers = workers;
    DataLoader l(data, o);
    CHECK(l.num_batches() == 11);
    l.set_epoch(2);
    runs.push_back(drain(l));
  }
  REQUIRE(runs[0].size() == 11);
  CHECK(runs[0].back().second.size() == 3);  // last, partial batch kept
  CHECK(runs[0] == runs[1]);
  CHECK(runs[0] == runs[2]);
  o.num_workers = 2;
  DataLoader l(data, o);
  l.set_epoch(3);
  CHECK(drain(l) != runs[0]);  // another epoch, another order
  o.drop_last = true;
  DataLoader d(data, o);
  CHECK(d.num_batches() == 10);
  // A batch size past the data set's size is one partial batch, up to INT64_MAX (whose rounding up
  // overflowed); with drop_last it is refused.
  o.drop_last = false;
  o.num_workers = 0;
  o.batch_size = std::numeric_limits<int64_t>::max();
  DataLoader huge(data, o);
  CHECK(huge.num_batches() == 1);
  huge.set_epoch(0);
  CHECK(drain(huge).at(0).second.size() == 103);
  o.drop_last = true;
  CHECK(contains(error_of([&] { DataLoader none(data, o); }), "fewer than one batch"));
}

TEST_CASE("loader: state resumes at the exact next batch") {
  auto data = std::make_shared<CountingDataset>(64, Shape{1, 4, 4});
  LoaderOptions o;
  o.batch_size = 8;
  o.shuffle = true;
  o.num_workers = 2;
  o.transform.horizontal_flip = true;
  DataLoader full(data, o);
  full.set_epoch(1);
  const auto all = drain(full);
  DataLoader part(data, o);
  part.set_epoch(1);
  Batch b;
  for (int i = 0; i < 3; ++i) REQUIRE(part.next(b));
  const LoaderState s = part.state();
  CHECK(s.epoch == 1);
  CHECK(s.next_batch == 3);
  DataLoader resumed(data, o);
  resumed.load_state(s);
  const auto rest = drain(resumed);
  REQUIRE(rest.size() == all.size() - 3);
  for (size_t i = 0; i < rest.size(); ++i) CHECK(rest[i] == all[i + 3]);
  CHECK(contains(error_of([&] { resumed.load_state({0, 99}); }), "cannot resume at batch 99"));
}

TEST_CASE("loader: a failing dataset surfaces as volt::Error from next(), with and without workers") {
  class Broken : public CountingDataset {
   public:
    Broken() : CountingDataset(20, Shape{1, 2, 2}) {}
    int64_t get(int64_t i, uint8_t* dst) const override {
      VOLT_CHECK(i != 13, "broken: record 13 is unreadable");
      return CountingDataset::get(i, dst);
    }
  };
  for (int workers : {0, 2}) {
    LoaderOptions o;
    o.batch_size = 4;
    o.num_workers = workers;
    DataLoader l(std::make_shared<Broken>(), o);
    Batch b;
    std::string msg = error_of([&] {
      while (l.next(b)) {
      }
    });
    CHECK(contains(msg, "record 13"));
  }
  CHECK(contains(error_of([] { LoaderOptions o; o.batch_size = 0; DataLoader l(std::make_shared<CountingDataset>(4, Shape{1, 1, 1}), o); }),
                 "batch_size"));
}

// Ends the process with a message when a call that must return hangs instead (a retry waiting on a
// worker that has exited): a failure in seconds rather than at CTest's 15-minute timeout. It times
// nothing: the limit is far above what the calls take.
class HangGuard {
 public:
  explicit HangGuard(const char* what) : what_(what), thread_([this] { watch(); }) {}
  ~HangGuard() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  void watch() {
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_for(lock, std::chrono::seconds(60), [&] { return done_; })) return;
    std::fprintf(stderr, "FAILED: %s did not return (hang)\n", what_);
    std::fflush(stderr);
    std::_Exit(1);
  }
  const char* what_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

TEST_CASE("loader: next() after a worker's error fails the same way again, and the epoch can go on past it") {
  // Record 13 fails, always or only on its first read (a transient error: a file briefly unreadable).
  class Broken : public CountingDataset {
   public:
    explicit Broken(bool once) : CountingDataset(20, Shape{1, 2, 2}), once_(once) {}
    int64_t get(int64_t i, uint8_t* dst) const override {
      if (i == 13 && !(once_ && failed_.exchange(true))) VOLT_FAIL("broken: record 13 is unreadable");
      return CountingDataset::get(i, dst);
    }

   private:
    bool once_;
    mutable std::atomic<bool> failed_{false};
  };
  HangGuard guard("DataLoader::next() after a worker's error");
  for (int workers : {0, 1, 2, 3}) {
    INFO(workers << " workers");
    LoaderOptions o;
    o.batch_size = 4;  // record 13 is in batch 3 of 5
    o.num_workers = workers;
    DataLoader l(std::make_shared<Broken>(false), o);
    Batch b;
    for (int i = 0; i < 3; ++i) REQUIRE(l.next(b));
    // The failed batch is not consumed: each retry makes it again and fails again.
    for (int retry = 0; retry < 3; ++retry) {
      CHECK(contains(error_of([&] { l.next(b); }), "record 13"));
      CHECK(l.state().next_batch == 3);
    }
    // Skipping it (load_state at the next batch) delivers the rest of the epoch.
    l.load_state({0, 4});
    REQUIRE(l.next(b));
    CHECK(b.index == 4);
    CHECK(b.labels.to_int_vector() == std::vector<int64_t>{16 % 10, 17 % 10, 18 % 10, 19 % 10});
    CHECK(!l.next(b));

    // A transient error: the retry delivers the batch, and the epoch continues in order.
    DataLoader t(std::make_shared<Broken>(true), o);
    for (int i = 0; i < 3; ++i) REQUIRE(t.next(b));
    CHECK(contains(error_of([&] { t.next(b); }), "record 13"));
    std::vector<int64_t> indices;
    while (t.next(b)) indices.push_back(b.index);
    CHECK(indices == std::vector<int64_t>{3, 4});
  }
}

TEST_CASE("MNIST data module: 55,000 / 5,000 / 10,000 from the real files") {
  const std::string dir = test::datasets_dir();
  if (dir.empty()) test::skip("no datasets folder ($VOLT_DATA_DIR or ../shared/datasets)");
  DataModuleOptions o;
  o.data_dir = dir + "/mnist";
  o.batch_size = 1000;
  o.num_workers = 2;
  MNISTDataModule dm(o);
  dm.prepare_data();
  dm.setup("");
  CHECK(dm.train_dataset()->size() == 55000);
  CHECK(dm.val_dataset()->size() == 5000);
  CHECK(dm.test_dataset()->size() == 10000);
  auto test = dm.test_loader();
  Batch b;
  REQUIRE(test->next(b));
  CHECK(b.images.shape() == Shape{1000, 1, 28, 28});
  const std::vector<float> v = b.images.to_vector();
  CHECK(*std::min_element(v.begin(), v.end()) == doctest::Approx(-1.0));
  CHECK(*std::max_element(v.begin(), v.end()) == doctest::Approx(1.0));
}

TEST_CASE("CIFAR-10 data module: one training batch present keeps the 90/10 split") {
  const std::string dir = test::datasets_dir();
  if (dir.empty()) test::skip("no datasets folder ($VOLT_DATA_DIR or ../shared/datasets)");
  DataModuleOptions o;
  o.data_dir = dir + "/cifar-10";
  o.batch_size = 500;
  o.augment = true;
  CIFAR10DataModule dm(o);
  dm.setup("fit");
  CHECK(dm.train_dataset()->size() == 9000);
  CHECK(dm.val_dataset()->size() == 1000);
  CHECK(contains(error_of([&] { dm.test_loader(); }), "setup()"));
  dm.setup("test");
  CHECK(dm.test_dataset()->size() == 10000);
  auto train = dm.train_loader();
  CHECK(train->num_batches() == 18);
}
