// What the dataset tests share: dataset files written byte by byte (CIFAR records with a known
// pixel pattern) and reads of labels and pixels through Dataset::get().
#pragma once
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "tests/test_util.h"

namespace volt::test {

using Bytes = std::vector<uint8_t>;

struct DatasetDir : TempDir {
  DatasetDir() : TempDir("volt_test_datasets_") {}
};

inline void write_file(const std::string& path, const Bytes& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  REQUIRE(out.good());
}

// A distinct, non-trivial byte for (image, position).
inline uint8_t pixel(int64_t image, int64_t pos) { return uint8_t((image * 37 + pos * 11 + pos / 7) % 251); }

// CIFAR records: `label_bytes` labels then 3072 pixel bytes, for each entry of labels.
inline Bytes cifar_records(const std::vector<std::vector<uint8_t>>& labels) {
  Bytes out;
  for (size_t i = 0; i < labels.size(); ++i) {
    out.insert(out.end(), labels[i].begin(), labels[i].end());
    for (int64_t p = 0; p < 3072; ++p) out.push_back(pixel(int64_t(i), p));
  }
  return out;
}

inline std::vector<int64_t> first_labels(const Dataset& ds, int64_t n) {
  std::vector<int64_t> out;
  Bytes img(size_t(ds.image_bytes()));
  for (int64_t i = 0; i < n; ++i) out.push_back(ds.get(i, img.data()));
  return out;
}

// Pixel (c, y, x) of image i via get().
inline int pixel_at(const Dataset& ds, int64_t i, int64_t c, int64_t y, int64_t x) {
  const Shape s = ds.image_shape();
  Bytes img(size_t(ds.image_bytes()));
  ds.get(i, img.data());
  return img[size_t((c * s[1] + y) * s[2] + x)];
}

}  // namespace volt::test
