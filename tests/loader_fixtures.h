// Shared by the loader tests (test_augment, test_loader_gpu): a dataset of pseudo-random pixels, the
// loader configurations whose host batches were recorded before the fused augmentation kernel
// existed (FNV-1a hashes made by the loader of commit b7b31fb), and helpers that drain and hash batches.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "data/loader.h"
#include "engine/error.h"

namespace volt::test {

// n images of shape chw; byte j of image i is a hash of (i, j); label i % 10.
class HashDataset : public Dataset {
 public:
  HashDataset(int64_t n, Shape chw) : n_(n), chw_(std::move(chw)) {}
  int64_t size() const override { return n_; }
  Shape image_shape() const override { return chw_; }
  int64_t num_classes() const override { return 10; }
  std::string name() const override { return "hash"; }
  int64_t get(int64_t i, uint8_t* dst) const override {
    VOLT_CHECK(i >= 0 && i < n_, "hash dataset: bad index ", i);
    for (int64_t j = 0; j < shape_numel(chw_); ++j)
      dst[j] = uint8_t(((uint32_t(i) * 2654435761u) ^ (uint32_t(j) * 40503u)) >> 7);
    return i % 10;
  }

 private:
  int64_t n_;
  Shape chw_;
};

struct LoaderCase {
  Shape chw;
  int64_t n, batch, crop, cutout;
  bool flip;
  std::vector<float> mean, std;
  int64_t rank, world;
  uint64_t seed;
  uint64_t golden;  // hash of epochs 0 and 3 (hash_epochs) from the host loader before the fused kernel
};

inline const std::vector<LoaderCase>& loader_cases() {
  static const std::vector<LoaderCase> cases = {
      {{3, 32, 32}, 50, 7, 4, 8, true, {0.4914f, 0.4822f, 0.4465f}, {0.247f, 0.243f, 0.261f}, 1, 2, 123,
       0x042b3aa72dfddfa5ull},
      {{1, 28, 28}, 33, 8, 0, 0, false, {0.1307f}, {0.3081f}, 0, 1, 5, 0xab0abd43d1370a91ull},
      {{3, 5, 7}, 21, 4, 2, 3, true, {}, {}, 0, 3, 77, 0x7ce543e25e321430ull},
      {{4, 9, 6}, 17, 5, 3, 0, true, {0.5f}, {0.5f}, 2, 3, 9, 0xf6d74887a44756c2ull},
  };
  return cases;
}

inline LoaderOptions loader_options(const LoaderCase& c) {
  LoaderOptions o;
  o.batch_size = c.batch;
  o.shuffle = true;
  o.seed = c.seed;
  o.rank = c.rank;
  o.world_size = c.world;
  o.transform.mean = c.mean;
  o.transform.std = c.std;
  o.transform.crop_padding = c.crop;
  o.transform.horizontal_flip = c.flip;
  o.transform.cutout = c.cutout;
  return o;
}

inline std::shared_ptr<const Dataset> dataset_of(const LoaderCase& c) { return std::make_shared<HashDataset>(c.n, c.chw); }

// FNV-1a over the float32 image bytes and the labels of epochs 0 and 3 (batches copied to the host).
inline uint64_t hash_epochs(DataLoader& l) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t e : {0, 3}) {
    l.set_epoch(e);
    Batch b;
    while (l.next(b)) {
      for (float v : b.images.to(Device::cpu()).to_vector()) {
        uint32_t u;
        std::memcpy(&u, &v, 4);
        for (int k = 0; k < 4; ++k) h = (h ^ ((u >> (8 * k)) & 255)) * 1099511628211ull;
      }
      for (int64_t v : b.labels.to(Device::cpu()).to_int_vector()) h = (h ^ uint64_t(v)) * 1099511628211ull;
    }
  }
  return h;
}

// Every remaining batch of the epoch, on the host: (images as stored, bit patterns kept; labels).
struct HostBatch {
  std::vector<float> images;
  std::vector<int64_t> labels;
  int64_t index;
  DType dtype;
};
inline std::vector<HostBatch> drain_to_host(DataLoader& l) {
  std::vector<HostBatch> out;
  Batch b;
  while (l.next(b))
    out.push_back({b.images.to(Device::cpu()).to_vector(), b.labels.to(Device::cpu()).to_int_vector(), b.index,
                   b.images.dtype()});
  return out;
}

// "" when a and b are the same batches bit for bit, else what differs first.
inline std::string batches_differ(const std::vector<HostBatch>& a, const std::vector<HostBatch>& b) {
  if (a.size() != b.size()) return std::to_string(a.size()) + " vs " + std::to_string(b.size()) + " batches";
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string at = "batch " + std::to_string(i) + ": ";
    if (a[i].index != b[i].index) return at + "index " + std::to_string(a[i].index) + " vs " + std::to_string(b[i].index);
    if (a[i].labels != b[i].labels) return at + "labels differ";
    if (a[i].dtype != b[i].dtype) return at + "image dtypes differ";
    if (a[i].images.size() != b[i].images.size()) return at + "image sizes differ";
    for (size_t j = 0; j < a[i].images.size(); ++j)
      if (std::memcmp(&a[i].images[j], &b[i].images[j], sizeof(float)) != 0)
        return at + "element " + std::to_string(j) + ": " + std::to_string(a[i].images[j]) + " vs " +
               std::to_string(b[i].images[j]);
  }
  return "";
}

}  // namespace volt::test
