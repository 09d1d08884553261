// Reader for PyTorch golden files (../shared/fixtures/README.md): "VOLTGOLD", u32 count, then
// records of {u32 name length, name, u32 ndim, i64 dims[ndim], f64 values}, little-endian.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace volt::test {

struct GoldenTensor {
  Shape shape;
  std::vector<double> values;
};

// Throws volt::Error naming the file on a bad magic, truncation or trailing bytes.
std::map<std::string, GoldenTensor> load_golden(const std::string& path);

// The float32 tensor holding g's values.
Tensor to_tensor(const GoldenTensor& g);

// The whole golden comparison (tests/golden_check.cpp) with the model and data on `device`; skips
// (exit 77) where the fixture is absent.
void check_golden_on(Device device);

}  // namespace volt::test
