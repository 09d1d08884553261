// sync_batch_norm (SyncBatchNorm on the CPU backend): against batch_norm on one rank and on the whole
// batch split over two ranks played by threads, its argument checks, and set_sync_batch_norm on a model.
#include <doctest/doctest.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "engine/ops.h"
#include "engine/random.h"
#include "layers/layers.h"
#include "layers/models/seed_cnn.h"
#include "tests/test_util.h"

using namespace volt;
using test::contains;
using test::error_of;

namespace {
// sum_over_ranks for R threads in one process: each thread's vector becomes the sum of all of them.
class ThreadRanks {
 public:
  explicit ThreadRanks(int R) : R_(R), parts_(size_t(R)) {}
  SumOverRanks for_rank(int r) {
    return [this, r](std::vector<double>& v) {
      std::unique_lock<std::mutex> lock(mu_);
      const uint64_t gen = gen_;
      parts_[size_t(r)] = v;
      if (++arrived_ == R_) {
        sum_.assign(v.size(), 0.0);
        for (const auto& p : parts_)
          for (size_t i = 0; i < p.size(); ++i) sum_[i] += p[i];
        arrived_ = 0;
        ++gen_;
        cv_.notify_all();
      } else {
        cv_.wait(lock, [&] { return gen_ != gen; });
      }
      v = sum_;
      ++calls_;
    };
  }
  int calls() const { return calls_; }

 private:
  int R_, arrived_ = 0, calls_ = 0;
  uint64_t gen_ = 0;
  std::vector<std::vector<double>> parts_;
  std::vector<double> sum_;
  std::mutex mu_;
  std::condition_variable cv_;
};

// x's gradient, weight's and bias's, the output and the running statistics of one training pass of
// `norm` (batch_norm or sync_batch_norm) over x with the loss sum(y * probe).
struct BnPass {
  Tensor y, gx, gw, gb, rm, rv, tracked;
};
BnPass bn_pass(const Tensor& x_in, const Tensor& probe, const SumOverRanks& sync) {
  Tensor x = x_in.clone();
  x.requires_grad_();
  const int64_t C = x.size(1);
  Tensor w = test::rand_tensor({C}, 21, 0.5f, 1.5f), b = test::rand_tensor({C}, 22);
  w.requires_grad_();
  b.requires_grad_();
  BnPass p{Tensor(), Tensor(), Tensor(), Tensor(), Tensor::zeros({C}), Tensor::ones({C}), Tensor::zeros({1}, DType::I64)};
  p.y = sync ? sync_batch_norm(x, w, b, p.rm, p.rv, 0.1, 1e-5, p.tracked, sync)
             : batch_norm(x, w, b, p.rm, p.rv, true, 0.1, 1e-5, p.tracked);
  sum(mul(p.y, probe)).backward();
  p.gx = x.grad();
  p.gw = w.grad();
  p.gb = b.grad();
  return p;
}

void check_near(const Tensor& got, const Tensor& want, const char* what) {
  INFO(what);
  const std::vector<float> g = got.to_vector(), w = want.to_vector();
  REQUIRE(g.size() == w.size());
  std::vector<double> wd(w.begin(), w.end());
  CHECK(test::max_rel_violation(g, wd, 1e-5, 1e-4) <= 1.0);
}
}  // namespace

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
  // Rank r holds rows [2r, 2r + 2): its output and input gradient are those rows of the whole
  // batch's; its weight and bias gradients are its rows' share (the data-parallel average of the
  // ranks' gradients makes them the whole batch's, where each rank's loss is its own rows' mean).
  ThreadRanks two(2);
  std::vector<BnPass> got(2);
  {
    std::vector<std::thread> ranks;
    for (int r = 0; r < 2; ++r)
      ranks.emplace_back([&, r] { got[size_t(r)] = bn_pass(x.narrow(2 * r, 2), probe.narrow(2 * r, 2), two.for_rank(r)); });
    for (auto& t : ranks) t.join();
  }
  for (int r = 0; r < 2; ++r) {
    CAPTURE(r);
    check_near(got[size_t(r)].y, want.y.narrow(2 * r, 2), "y");
    check_near(got[size_t(r)].gx, want.gx.narrow(2 * r, 2), "dx");
    check_near(got[size_t(r)].rm, want.rm, "running_mean");
    check_near(got[size_t(r)].rv, want.rv, "running_var");
  }
  check_near(add(got[0].gw, got[1].gw), want.gw, "dweight summed");
  check_near(add(got[0].gb, got[1].gb), want.gb, "dbias summed");
  // Bad input gets a clear error.
  CHECK(contains(error_of([&] { sync_batch_norm(Tensor::zeros({2, 3}), Tensor(), Tensor(), Tensor(), Tensor(), 0.1,
                                                1e-5, Tensor(), two.for_rank(0)); }),
                 "sync_batch_norm: expected input [N, C, H, W], got shape [2, 3]"));
  CHECK(contains(error_of([&] { sync_batch_norm(x, Tensor::ones({4}), Tensor(), Tensor(), Tensor(), 0.1, 1e-5,
                                                Tensor(), two.for_rank(0)); }),
                 "weight must be a float32 CPU tensor of 3 elements, got [4]"));
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
