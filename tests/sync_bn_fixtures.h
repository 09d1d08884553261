// What the sync_batch_norm tests share (test_sync_batch_norm on the CPU, test_sync_batch_norm_gpu):
// data-parallel ranks played by threads of one process, and one training pass through a batch norm.
#pragma once
#include <doctest/doctest.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "engine/ops.h"
#include "tests/test_util.h"

namespace volt::test {

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
// batch_norm (no sync) or sync_batch_norm over x with the loss sum(y * probe), every tensor on `dev`.
struct BnPass {
  Tensor y, gx, gw, gb, rm, rv, tracked;
};
inline BnPass bn_pass(const Tensor& x_in, const Tensor& probe, const SumOverRanks& sync, Device dev = Device::cpu()) {
  Tensor x = x_in.to(dev).clone();
  x.requires_grad_();
  const int64_t C = x.size(1);
  Tensor w = rand_tensor({C}, 21, 0.5f, 1.5f).to(dev), b = rand_tensor({C}, 22).to(dev);
  w.requires_grad_();
  b.requires_grad_();
  BnPass p{Tensor(), Tensor(), Tensor(), Tensor(), Tensor::zeros({C}, DType::F32, dev), Tensor::ones({C}, DType::F32, dev),
           Tensor::zeros({1}, DType::I64, dev)};
  p.y = sync ? sync_batch_norm(x, w, b, p.rm, p.rv, 0.1, 1e-5, p.tracked, sync)
             : batch_norm(x, w, b, p.rm, p.rv, true, 0.1, 1e-5, p.tracked);
  sum(mul(p.y, probe.to(dev).to(x.dtype()))).backward();
  p.gx = x.grad();
  p.gw = w.grad();
  p.gb = b.grad();
  return p;
}

inline void check_near(const Tensor& got, const Tensor& want, const char* what) {
  INFO(what);
  const std::vector<float> g = got.to_vector(), w = want.to_vector();
  REQUIRE(g.size() == w.size());
  std::vector<double> wd(w.begin(), w.end());
  CHECK(max_rel_violation(g, wd, 1e-5, 1e-4) <= 1.0);
}

// Two ranks, rank r on rows [2r, 2r + 2) of want's batch of 4: each rank's output and input gradient
// are those rows of the whole batch's, its running statistics the whole batch's; its weight and bias
// gradients are its rows' share (the data-parallel average of the ranks' gradients makes them the
// whole batch's, where each rank's loss is its own rows' mean), so the two add up to want's.
inline void check_two_ranks(const std::vector<BnPass>& got, const BnPass& want) {
  REQUIRE(got.size() == 2);
  for (int r = 0; r < 2; ++r) {
    CAPTURE(r);
    check_near(got[size_t(r)].y, want.y.narrow(2 * r, 2), "y");
    check_near(got[size_t(r)].gx, want.gx.narrow(2 * r, 2), "dx");
    check_near(got[size_t(r)].rm, want.rm, "running_mean");
    check_near(got[size_t(r)].rv, want.rv, "running_var");
  }
  const Device cpu = Device::cpu();
  check_near(add(got[0].gw.to(cpu), got[1].gw.to(cpu)), want.gw, "dweight summed");
  check_near(add(got[0].gb.to(cpu), got[1].gb.to(cpu)), want.gb, "dbias summed");
}

}  // namespace volt::test
