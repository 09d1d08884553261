// The seed CNN against PyTorch's float64 golden values on the GPU in precision 32 (label gpu; skipped
// without a GPU or without the fixture: on the GPU machine, carry ../shared/fixtures in .carry/fixtures,
// which tests/gpu_session.sh passes as $VOLT_FIXTURES_DIR).
#include <doctest/doctest.h>

#include "tests/golden.h"
#include "tests/test_util.h"

TEST_CASE("gpu seed CNN matches PyTorch on cuda:0: forward, loss, gradients, running stats, Adam, eval") {
  volt::test::require_gpu();
  volt::test::check_golden_on(volt::Device::cuda(0));
}
