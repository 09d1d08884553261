// sync_batch_norm on a GPU (label gpu, in test_cuda_training) against the CPU: one rank against
// batch_norm, and the whole batch split over a GPU rank and a CPU rank (threads) against the CPU's
// batch_norm on the whole batch: the output and input gradient rows, the running statistics, the
// weight and bias gradients summed over the ranks. Skipped where no GPU is visible.
#include <doctest/doctest.h>

#include <thread>
#include <tuple>
#include <vector>

#include "engine/ops.h"
#include "tests/gpu_check.h"
#include "tests/sync_bn_fixtures.h"
#include "tests/test_util.h"

using namespace volt;
using namespace volt::test;

TEST_CASE("gpu sync_batch_norm: one GPU rank, and a GPU rank with a CPU rank, match batch_norm on the CPU") {
  require_gpu();
  const Tensor x = rand_tensor({4, 3, 5, 6}, 20, -2.f, 3.f), probe = rand_tensor({4, 3, 5, 6}, 23);
  const BnPass want = bn_pass(x, probe, {});
  {
    ThreadRanks one(1);
    const BnPass got = bn_pass(x, probe, one.for_rank(0), kGpu);
    CHECK(one.calls() == 3);  // two sums in forward (mean, variance), one in backward
    CHECK(got.y.device() == kGpu);
    CHECK(got.gx.device() == kGpu);
    for (const auto& [g, w, what] : {std::tuple{got.y, want.y, "y"}, {got.gx, want.gx, "dx"}, {got.gw, want.gw, "dweight"},
                                      {got.gb, want.gb, "dbias"}, {got.rm, want.rm, "running_mean"},
                                      {got.rv, want.rv, "running_var"}})
      check_near(g, w, what);
    CHECK(got.tracked.to(Device::cpu()).data<int64_t>()[0] == 1);
  }
  // Rows [0, 2) on the GPU, rows [2, 4) on the CPU.
  ThreadRanks two(2);
  std::vector<BnPass> got(2);
  std::thread cpu_rank([&] { got[1] = bn_pass(x.narrow(2, 2), probe.narrow(2, 2), two.for_rank(1)); });
  got[0] = bn_pass(x.narrow(0, 2), probe.narrow(0, 2), two.for_rank(0), kGpu);
  cpu_rank.join();
  check_two_ranks(got, want);
  // 16-bit activations are normalised in float32 and cast back.
  {
    ThreadRanks one(1);
    const BnPass half = bn_pass(x.to(DType::F16), probe, one.for_rank(0), kGpu);
    CHECK(half.y.dtype() == DType::F16);
    const std::vector<float> g = half.y.to_vector(), w = want.y.to_vector();
    std::vector<double> wd(w.begin(), w.end());
    CHECK(max_rel_violation(g, wd, 1e-2, 1e-2) <= 1.0);
  }
  // Parameters on another device than the input, or more channels than the kernels take: clear
  // errors, before any collective.
  ThreadRanks one(1);
  CHECK(contains(error_of([&] {
                   sync_batch_norm(Tensor::zeros({2, 65536, 1, 1}, DType::F32, kGpu), Tensor(), Tensor(), Tensor(),
                                   Tensor(), 0.1, 1e-5, Tensor(), one.for_rank(0));
                 }),
                 "sync_batch_norm: at most 65535 channels on a GPU, got 65536"));
  CHECK(one.calls() == 0);
  CHECK(contains(error_of([&] {
                   sync_batch_norm(x.to(kGpu), Tensor::ones({3}), Tensor(), Tensor(), Tensor(), 0.1, 1e-5, Tensor(),
                                   one.for_rank(0));
                 }),
                 "weight must be a float32 tensor [3] on the input's device (cuda:0), got [3] float32 on cpu"));
}
