// What the gpu-labelled test programs share: the GPU they run on, and a comparison of a tensor on
// any device with a reference (|got - want| <= atol + rtol * |want|, the worst element printed).
#pragma once
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "engine/tensor.h"
#include "tests/test_util.h"

namespace volt::test {

inline const Device kGpu = Device::cuda(0);

inline std::vector<double> dvec(const Tensor& t) {
  std::vector<double> out;
  for (float v : t.to_vector()) out.push_back(double(v));
  return out;
}

inline void check_near(const Tensor& got, const Tensor& want, double atol, double rtol, const std::string& what) {
  INFO(what);
  REQUIRE(got.defined());
  REQUIRE(want.defined());
  REQUIRE(shape_str(got.shape()) == shape_str(want.shape()));
  std::string where;
  const double v = max_rel_violation(got.to_vector(), dvec(want), atol, rtol, &where);
  INFO("worst element: " << where << " (violation " << v << ", atol " << atol << ", rtol " << rtol << ")");
  CHECK(v <= 1.0);
}

}  // namespace volt::test
