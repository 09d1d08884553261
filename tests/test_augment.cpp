// The fused augmentation's CPU twin (kernels/augment.h) as the host transform: it reproduces the
// transform Volt had before it, and the host loader's batches are bit for bit those recorded from the
// loader before the change; the resident loader in host memory makes the same batches, resumes
// mid-epoch and converts to float16/bfloat16 by rounding; the placement rule behind
// --data-on-device; and the errors of the augment op and of the loader's device modes.
#include <doctest/doctest.h>

#include <algorithm>

#include "data/loader.h"
#include "data/transform.h"
#include "engine/augment.h"
#include "engine/dtype.h"
#include "engine/error.h"
#include "kernels/philox.h"
#include "tests/loader_fixtures.h"
#include "tests/test_util.h"

using namespace volt;
using namespace volt::test;

namespace {

// The host transform as it was before the fused kernel (data/transform.cpp at commit b7b31fb).
void previous_transform(const TransformOptions& t, const Shape& chw, const uint8_t* in, float* out, uint64_t seed,
                        uint64_t key) {
  const int64_t C = chw[0], H = chw[1], W = chw[2];
  const uint64_t stream = 7000 + (key >> 40), offset = key & ((uint64_t(1) << 40) - 1);
  const Philox4 r = philox4x32_10(uint32_t(offset), uint32_t(offset >> 32), uint32_t(stream), uint32_t(stream >> 32),
                                  uint32_t(seed), uint32_t(seed >> 32));
  int64_t dy = 0, dx = 0;
  if (t.crop_padding > 0) {
    const uint32_t span = uint32_t(2 * t.crop_padding + 1);
    dy = int64_t(r.v[0] % span) - t.crop_padding;
    dx = int64_t(r.v[1] % span) - t.crop_padding;
  }
  const bool flip = t.horizontal_flip && (r.v[2] & 1u);
  for (int64_t c = 0; c < C; ++c) {
    const size_t mc = t.mean.size() == 1 ? 0 : size_t(c);
    const float mean = t.mean.empty() ? 0.f : t.mean[mc];
    const float inv_std = t.std.empty() ? 1.f : 1.f / t.std[mc];
    const float scale = inv_std / 255.f, bias = -mean * inv_std;
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const int64_t sy = y + dy, sx = (flip ? W - 1 - x : x) + dx;
        const float v = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? float(in[(c * H + sy) * W + sx]) : 0.f;
        out[(c * H + y) * W + x] = v * scale + bias;
      }
  }
  if (t.cutout > 0) {
    const int64_t cy = int64_t(r.v[3] % uint32_t(H)), cx = int64_t((r.v[3] >> 16) % uint32_t(W));
    const int64_t y0 = std::max<int64_t>(0, cy - t.cutout / 2), y1 = std::min(H, cy - t.cutout / 2 + t.cutout);
    const int64_t x0 = std::max<int64_t>(0, cx - t.cutout / 2), x1 = std::min(W, cx - t.cutout / 2 + t.cutout);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = x0; x < x1; ++x) out[(c * H + y) * W + x] = 0.f;
  }
}

std::vector<HostBatch> epoch_batches(const LoaderCase& c, LoaderOptions o, int64_t epoch) {
  DataLoader l(dataset_of(c), o);
  l.set_epoch(epoch);
  return drain_to_host(l);
}

}  // namespace

TEST_CASE("augment CPU twin: apply_transform equals the previous host transform bit for bit") {
  std::vector<LoaderCase> cases = loader_cases();
  cases.push_back({{2, 4, 3}, 1, 1, 9, 1, true, {0.5f}, {0.5f}, 0, 1, 31, 0});  // crop padding larger than the image
  cases.push_back({{4, 1, 1}, 1, 1, 1, 1, false, {0.2f, 0.4f, 0.6f, 0.8f}, {0.3f, 0.3f, 0.1f, 2.f}, 0, 1, 32, 0});
  cases.push_back({{1, 3, 40}, 1, 1, 3, 2, true, {}, {}, 0, 1, 33, 0});  // a row longer than a warp
  for (const LoaderCase& c : cases) {
    const TransformOptions t = loader_options(c).transform;
    const int64_t d = shape_numel(c.chw);
    std::vector<uint8_t> px(static_cast<size_t>(d));
    const PreparedTransform prepared = prepare_transform(t, c.chw, c.seed);
    for (uint64_t key : {uint64_t(0), uint64_t(1), uint64_t(2), uint64_t(77), uint64_t(1000003),
                         (uint64_t(1) << 40) + 9, ~uint64_t(0)}) {
      for (int64_t j = 0; j < d; ++j) px[size_t(j)] = uint8_t((key * 31 + uint64_t(j) * 97) >> 2);
      std::vector<float> want(static_cast<size_t>(d)), got(want.size()), prep(want.size());
      previous_transform(t, c.chw, px.data(), want.data(), c.seed, key);
      apply_transform(t, c.chw, px.data(), got.data(), c.seed, key);
      prepared.apply(px.data(), prep.data(), key);
      INFO("shape " << shape_str(c.chw) << " crop " << c.crop << " key " << key);
      CHECK(std::memcmp(got.data(), want.data(), want.size() * 4) == 0);
      CHECK(std::memcmp(prep.data(), want.data(), want.size() * 4) == 0);
    }
  }
}

TEST_CASE("augment CPU twin: the host loader's batches are those recorded before the fused kernel") {
  for (const LoaderCase& c : loader_cases()) {
    for (int workers : {0, 2}) {
      LoaderOptions o = loader_options(c);
      o.num_workers = workers;
      DataLoader l(dataset_of(c), o);
      INFO("shape " << shape_str(c.chw) << ", " << workers << " workers");
      CHECK(l.mode() == LoaderMode::Host);
      CHECK(hash_epochs(l) == c.golden);
    }
  }
}

TEST_CASE("resident loader in host memory (data on device on, CPU): the host loader's batches, resumable") {
  for (const LoaderCase& c : loader_cases()) {
    LoaderOptions o = loader_options(c);
    o.data_on_device = DataOnDevice::On;
    {
      DataLoader l(dataset_of(c), o);
      INFO("shape " << shape_str(c.chw));
      CHECK(l.mode() == LoaderMode::Resident);
      CHECK(contains(l.mode_note(), "resident in host memory"));
      CHECK(hash_epochs(l) == c.golden);
    }
    // Resume in the middle of epoch 2: the rest of the epoch equals the host loader's.
    LoaderOptions host = loader_options(c);
    host.num_workers = 1;
    std::vector<HostBatch> want = epoch_batches(c, host, 2);
    DataLoader l(dataset_of(c), o);
    Batch b;
    REQUIRE(l.next(b));  // epoch 0 started, then abandoned
    l.load_state({2, 1});
    CHECK(batches_differ(drain_to_host(l), std::vector<HostBatch>(want.begin() + 1, want.end())) == "");
  }
}

TEST_CASE("loader image dtype: float16 and bfloat16 batches are the float32 batches rounded, in every mode") {
  const LoaderCase& c = loader_cases()[0];
  const std::vector<HostBatch> f32 = epoch_batches(c, loader_options(c), 1);
  for (DType t : {DType::F16, DType::BF16}) {
    for (DataOnDevice where : {DataOnDevice::Off, DataOnDevice::On}) {
      LoaderOptions o = loader_options(c);
      o.image_dtype = t;
      o.data_on_device = where;
      const std::vector<HostBatch> got = epoch_batches(c, o, 1);
      REQUIRE(got.size() == f32.size());
      INFO(dtype_name(t) << ", data on device " << data_on_device_name(where));
      for (size_t i = 0; i < got.size(); ++i) {
        CHECK(got[i].dtype == t);
        CHECK(got[i].labels == f32[i].labels);
        size_t bad = 0;
        for (size_t j = 0; j < got[i].images.size(); ++j) {
          const float v = f32[i].images[j];
          const float want = t == DType::F16 ? half_to_float(float_to_half(v)) : bf16_to_float(float_to_bf16(v));
          bad += got[i].images[j] != want;
        }
        CHECK(bad == 0);
      }
    }
  }
}

TEST_CASE("placement rule: auto is resident on a GPU when the store fits in a quarter of the free memory") {
  const Device gpu = Device::cuda(0), cpu = Device::cpu();
  const int64_t mb = 1000000;
  const size_t free = size_t(1000) * size_t(mb);
  CHECK(choose_placement(DataOnDevice::Auto, gpu, "d", 150 * mb, free).mode == LoaderMode::Resident);
  CHECK(choose_placement(DataOnDevice::Auto, gpu, "d", 250 * mb, free).mode == LoaderMode::Resident);
  const LoaderPlacement big = choose_placement(DataOnDevice::Auto, gpu, "d", 251 * mb, free);
  CHECK(big.mode == LoaderMode::HostToDevice);
  CHECK(contains(big.why, "exceed a quarter of the 1.0 GB free on cuda:0"));
  CHECK(choose_placement(DataOnDevice::Off, gpu, "d", 1, free).mode == LoaderMode::HostToDevice);
  CHECK(choose_placement(DataOnDevice::On, gpu, "d", 900 * mb, free).mode == LoaderMode::Resident);
  CHECK(choose_placement(DataOnDevice::Auto, cpu, "d", 1, 0).mode == LoaderMode::Host);
  CHECK(choose_placement(DataOnDevice::Off, cpu, "d", 1, 0).mode == LoaderMode::Host);
  CHECK(choose_placement(DataOnDevice::On, cpu, "d", 1, 0).mode == LoaderMode::Resident);
  const std::string err = error_of([&] { choose_placement(DataOnDevice::On, gpu, "CIFAR-10 train", 1200 * mb, free); });
  CHECK(contains(err, "CIFAR-10 train's 1.2 GB"));
  CHECK(contains(err, "do not fit in the 1.0 GB free on cuda:0"));
  CHECK(contains(error_of([&] { choose_placement(DataOnDevice::On, gpu, "d", int64_t(3e12), free); }), "d's 3.0 TB"));
  CHECK(parse_data_on_device("auto") == DataOnDevice::Auto);
  CHECK(parse_data_on_device("off") == DataOnDevice::Off);
  CHECK(std::string(data_on_device_name(parse_data_on_device("on"))) == "on");
  CHECK(contains(error_of([] { parse_data_on_device("yes"); }), "'yes' is not one of auto, on, off"));
}

TEST_CASE("augment op and loader errors name the problem") {
  const Shape chw{3, 4, 5};
  AugmentSpec s;
  s.channels = 3;
  s.height = 4;
  s.width = 5;
  AugmentSource src;
  src.images = Tensor::zeros({6, 3, 4, 5}, DType::U8);
  src.labels = Tensor::from_labels({0, 1, 2, 3, 4, 5});
  src.order = Tensor::from_labels({5, 4, 3});
  src.lut = Tensor::zeros({3, 256});
  Tensor img, lab;
  augment_batch(src, s, 1, 2, 0, 1, DType::F32, img, lab);
  CHECK(img.shape() == Shape{2, 3, 4, 5});
  CHECK(lab.to_int_vector() == std::vector<int64_t>{4, 3});
  CHECK(contains(error_of([&] { augment_batch(src, s, 2, 2, 0, 1, DType::F32, img, lab); }),
                 "positions [2, 4) are outside the order's 3"));
  CHECK(contains(error_of([&] { augment_batch(src, s, 0, 1, 0, 1, DType::I64, img, lab); }),
                 "float32, float16 or bfloat16, not int64"));
  AugmentSource bad = src;
  bad.images = Tensor::zeros({6, 3, 4, 5});
  CHECK(contains(error_of([&] { augment_batch(bad, s, 0, 1, 0, 1, DType::F32, img, lab); }),
                 "images must be uint8 [6, 3, 4, 5], got float32"));
  bad = src;
  bad.order = Tensor::from_labels({9});
  CHECK(contains(error_of([&] { augment_batch(bad, s, 0, 1, 0, 1, DType::F32, img, lab); }),
                 "order[0] = 9 is outside [0, 6)"));
  bad = src;
  bad.lut = Tensor::zeros({1, 256});
  CHECK(contains(error_of([&] { augment_batch(bad, s, 0, 1, 0, 1, DType::F32, img, lab); }), "lut must be float32 [3, 256]"));

  LoaderOptions o;
  o.image_dtype = DType::U8;
  CHECK(contains(error_of([&] { DataLoader l(std::make_shared<HashDataset>(4, chw), o); }),
                 "image_dtype must be float32, float16 or bfloat16, got uint8"));
  if (cuda_device_count() == 0) {  // a GPU loader where there is none says so
    LoaderOptions g;
    g.device = Device::cuda(0);
    CHECK(contains(error_of([&] { DataLoader l(std::make_shared<HashDataset>(4, chw), g); }), "cuda"));
  }
}
