// sync_batch_norm (SyncBatchNorm on the CPU backend): against batch_norm on one rank and on the whole
// batch split over two ranks played by threads, its argument checks, and set_sync_batch_norm on a model.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "engine/ops.h"
#include "engine/random.h"
#include "layers/layers.h"
#include "layers/models/seed_cnn.h"
#include "tests/sync_bn_fixtures.h"
#include "tests/test_util.h"

using namespace volt;
using test::bn_pass;
using test::BnPass;
using test::check_near;
using test::check_two_ranks;
using test::contains;
using test::error_of;
using test::ThreadRanks;

TEST_CASE("sync_batch_norm: one rank is batch_norm, two ranks on halves are batch_norm on the whole batch") {
  const Tensor x = test::rand_tensor({4, 3, 5, 6}, 20, -2.f, 3.f), probe = test::rand_tensor({4, 3, 5, 6}, 23);
  const BnPass want = bn_pass(x, probe, {});
  {
    ThreadRanks one(1);
    const BnPass got = bn_pass(x, probe, one.for_rank(0));
    CHECK(one.calls() == 3);  // two sums in forward (mean, variance), one in backward
    for (const auto& [g, w, what] : {std::tuple{got.y, want.y, "y"}, {got.gx, want.gx, "dx"}, {got.gw, want.gw, "dweight"},
                                      {got.gb, want.gb, "dbias"}, {got.rm, want.rm, "running_mean"},
                                      {got.rv, want.rv, "running_var"}})
      check_near(g, w, what);
    CHECK(got.tracked.data<int64_t>()[0] == 1);
  }
  // Rank r holds rows [2r, 2r + 2) (check_two_ranks says what each must hold).
  ThreadRanks two(2);
  std::vector<BnPass> got(2);
  {
    std::vector<std::thread> ranks;
    for (int r = 0; r < 2; ++r)
      ranks.emplace_back([&, r] { got[size_t(r)] = bn_pass(x.narrow(2 * r, 2), probe.narrow(2 * r, 2), two.for_rank(r)); });
    for (auto& t : ranks) t.join();
  }
  check_two_ranks(got, want);
  // Bad input gets a clear error.
  CHECK(contains(error_of([&] { sync_batch_norm(Tensor::zeros({2, 3}), Tensor(), Tensor(), Tensor(), Tensor(), 0.1,
                                                1e-5, Tensor(), two.for_rank(0)); }),
                 "sync_batch_norm: expected input [N, C, H, W], got shape [2, 3]"));
  CHECK(contains(error_of([&] { sync_batch_norm(x, Tensor::ones({4}), Tensor(), Tensor(), Tensor(), 0.1, 1e-5,
                                                Tensor(), two.for_rank(0)); }),
                 "weight must be a float32 tensor [3] on the input's device (cpu), got [4]"));
  // Three elements in another shape are not three channels' (batch_norm refuses them too).
  CHECK(contains(error_of([&] { sync_batch_norm(x, Tensor::ones({3, 1}), Tensor(), Tensor(), Tensor(), 0.1, 1e-5,
                                                Tensor(), two.for_rank(0)); }),
                 "weight must be a float32 tensor [3] on the input's device (cpu), got [3, 1]"));
  CHECK(contains(error_of([&] { sync_batch_norm(x, Tensor(), Tensor(), Tensor::zeros({3}), Tensor(), 0.1, 1e-5,
                                                Tensor(), two.for_rank(0)); }),
                 "running_mean and running_var are given together or not at all"));
  CHECK(contains(error_of([&] { sync_batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), 0.1, 0.0, Tensor(),
                                                two.for_rank(0)); }),
                 "eps must be positive, got 0"));
}

TEST_CASE("set_sync_batch_norm reaches every BatchNorm2d of a model, and a synced one trains as before on one rank") {
  auto make = [] {
    SeedCNNOptions o;
    o.height = o.width = 16;
    o.num_classes = 4;
    o.dropout = 0.0;
    manual_seed(4);
    return std::make_shared<SeedCNN>(o);
  };
  auto plain = make(), synced = make();
  ThreadRanks one(1);
  const int n = set_sync_batch_norm(*synced, one.for_rank(0));
  CHECK(n > 0);
  const Tensor x = test::rand_tensor({6, 3, 16, 16}, 30);
  Tensor yp = (*plain)(x), ys = (*synced)(x);
  check_near(ys, yp, "logits");
  sum(ys).backward();
  sum(yp).backward();
  CHECK(one.calls() == 3 * n);
  const auto gp = plain->named_parameters(), gs = synced->named_parameters();
  for (size_t i = 0; i < gp.size(); ++i) check_near(gs[i].second.grad(), gp[i].second.grad(), gp[i].first.c_str());
  CHECK(set_sync_batch_norm(*synced, nullptr) == n);
  (*synced)(x);
  CHECK(one.calls() == 3 * n);  // off again
}
