// The seed CNN against PyTorch's float64 golden values on the CPU (tests/golden_check.cpp).
#include <doctest/doctest.h>

#include "tests/golden.h"

TEST_CASE("seed CNN matches PyTorch: forward, loss, gradients, running stats, Adam, eval") {
  volt::test::check_golden_on(volt::Device::cpu());
}
