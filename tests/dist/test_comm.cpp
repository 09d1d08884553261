// The communicator and DDP across processes: run under `mpirun -n N` or `srun -n N` (CTest does,
// with N = 2 and 3; $VOLT_TEST_WORLD_SIZE says how many ranks to expect, so a launch that silently
// ran single processes fails). Every rank runs every case in the same order; results are checked
// against values computed locally, and every rank's result is gathered to check they are bitwise
// identical. Alone (no launcher) it runs the same cases on the world-size-1 communicator. The
// Trainer's cases across ranks are in test_comm_trainer.cpp (the same program).
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dist/callbacks.h"
#include "dist/communicator.h"
#include "dist/ddp.h"
#include "dist/process_env.h"
#include "dist/requeue.h"
#include "dist/trainer.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "layers/layers.h"
#include "layers/module.h"
#include "layers/optim/optimizer.h"
#include "tests/dist/comm_world.h"
#include "tests/dist/dist_util.h"
#include "tests/test_util.h"
#include "tests/trainer_fixtures.h"

using namespace volt;
using volt::test::comm;
using volt::test::identical_on_all_ranks;
namespace fs = std::filesystem;

namespace {


// A value that differs per rank and element, exactly representable sums not required.
float value(int rank, size_t i) { return float(std::sin(0.7 * double(i) + 1.3 * rank) * (1.0 + rank)); }


struct Model : Sequential {
  explicit Model(uint64_t seed) {
    Generator gen(seed);
    push_back(std::make_shared<Linear>(7, 5, true, &gen));
    push_back(std::make_shared<ReLU>());
    push_back(std::make_shared<Linear>(5, 3, true, &gen));
  }
};

}  // namespace

TEST_CASE("comm: world size is what the launcher asked for") {
  const char* want = std::getenv("VOLT_TEST_WORLD_SIZE");
  INFO("rank " << comm().rank() << ", backend " << comm().backend());
  if (want) CHECK(comm().size() == std::atoi(want));
  CHECK(comm().rank() >= 0);
  CHECK(comm().rank() < comm().size());
  CHECK(std::string(comm().backend()) == (comm().size() == 1 ? "local" : "mpi"));
  const ProcessEnv env = detect_process_env();
  CHECK(env.world_size == comm().size());
  CHECK(env.rank == comm().rank());
}

TEST_CASE("comm: all_reduce sum, avg and max on odd sizes") {
  const int R = comm().size(), me = comm().rank();
  INFO("rank " << me << " of " << R);
  for (size_t n : {size_t(1), size_t(7), size_t(1001), size_t(65537)}) {
    INFO("count " << n);
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max}) {
      INFO("op " << reduce_op_name(op));
      std::vector<float> f(n);
      std::vector<double> d(n);
      std::vector<int64_t> k(n);
      for (size_t i = 0; i < n; ++i) {
        f[i] = value(me, i);
        d[i] = double(value(me, i)) * 1e-3;
        k[i] = int64_t(i % 97) * (me + 1) - 40 + 3 * me;
      }
      comm().all_reduce(f.data(), n, op);
      comm().all_reduce(d.data(), n, op);
      comm().all_reduce(k.data(), n, op);
      double worst_f = 0, worst_d = 0;
      bool ints_ok = true;
      for (size_t i = 0; i < n; ++i) {
        double wf = 0, wd = 0;
        int64_t wk = 0;
        for (int r = 0; r < R; ++r) {
          const double vf = value(r, i), vd = double(value(r, i)) * 1e-3;
          const int64_t vk = int64_t(i % 97) * (r + 1) - 40 + 3 * r;
          if (op == ReduceOp::Max) {
            wf = r == 0 ? vf : std::max(wf, vf);
            wd = r == 0 ? vd : std::max(wd, vd);
            wk = r == 0 ? vk : std::max(wk, vk);
          } else {
            wf += vf;
            wd += vd;
            wk += vk;
          }
        }
        if (op == ReduceOp::Avg) {
          wf /= R;
          wd /= R;
          wk /= R;
        }
        worst_f = std::max(worst_f, std::fabs(f[i] - wf) / (1e-6 + 1e-5 * std::fabs(wf)));
        worst_d = std::max(worst_d, std::fabs(d[i] - wd) / (1e-15 + 1e-13 * std::fabs(wd)));
        ints_ok = ints_ok && k[i] == wk;
      }
      CHECK(worst_f <= 1.0);
      CHECK(worst_d <= 1.0);
      CHECK(ints_ok);
      CHECK(identical_on_all_ranks(f.data(), n * sizeof(float)));
      CHECK(identical_on_all_ranks(d.data(), n * sizeof(double)));
    }
  }
  // Tensor convenience, and one value.
  Tensor t = Tensor::from_vector({3}, {float(me), 1.f, -float(me)});
  comm().all_reduce(t, ReduceOp::Sum);
  const float s = float(R * (R - 1) / 2);
  CHECK(t.to_vector() == std::vector<float>{s, float(R), -s});
  CHECK(comm().all_reduce_value(me + 0.5, ReduceOp::Max) == R - 0.5);
}

TEST_CASE("comm: broadcast from every root, all_gather and barrier") {
  const int R = comm().size(), me = comm().rank();
  INFO("rank " << me << " of " << R);
  for (int root = 0; root < R; ++root) {
    std::vector<float> v(333);
    for (size_t i = 0; i < v.size(); ++i) v[i] = value(me, i);
    comm().broadcast(v.data(), v.size() * sizeof(float), root);
    bool ok = true;
    for (size_t i = 0; i < v.size(); ++i) ok = ok && v[i] == value(root, i);
    CHECK(ok);
  }
  Tensor t = Tensor::from_vector({2, 3}, {float(me), 1, 2, 3, 4, float(10 * me)});
  Tensor g = comm().all_gather(t);
  REQUIRE(g.shape() == Shape{R, 2, 3});
  for (int r = 0; r < R; ++r) {
    CHECK(g.at({r, 0, 0}) == float(r));
    CHECK(g.at({r, 1, 2}) == float(10 * r));
    CHECK(g.at({r, 0, 1}) == 1.f);
  }
  std::vector<int64_t> ranks(size_t(R), -1);
  const int64_t mine = me;
  comm().all_gather(&mine, ranks.data(), sizeof(int64_t));
  for (int r = 0; r < R; ++r) CHECK(ranks[size_t(r)] == r);
  Tensor labels = Tensor::from_labels({int64_t(me), 5});
  comm().broadcast(labels, R - 1);
  CHECK(labels.to_int_vector() == std::vector<int64_t>{R - 1, 5});
  for (int i = 0; i < 3; ++i) comm().barrier();
  CHECK(volt::test::contains(volt::test::error_of([&] { comm().broadcast(t, R); }), "root"));
}

TEST_CASE("ddp: parameters and buffers bitwise identical after broadcast_from_rank0") {
  const int me = comm().rank();
  INFO("rank " << me);
  Model model(1000 + uint64_t(me));  // a different initialisation on every rank
  BatchNorm2d bn(3);
  bn.named_buffers()[0].second.fill_(float(me) + 0.25f);  // running_mean differs per rank
  broadcast_from_rank0(comm(), model);
  broadcast_from_rank0(comm(), bn);
  const Model reference(1000);  // what rank 0 started with
  const auto mine = model.state_dict().items();
  const auto want = reference.state_dict().items();
  REQUIRE(mine.size() == want.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    INFO(mine[i].first);
    CHECK(volt::test::same_values(mine[i].second, want[i].second));
    CHECK(identical_on_all_ranks(mine[i].second.raw_data(), mine[i].second.nbytes()));
  }
  CHECK(bn.named_buffers()[0].second.to_vector() == std::vector<float>(3, 0.25f));
}

TEST_CASE("ddp: bucketed gradient averages for every bucket size") {
  const int R = comm().size(), me = comm().rank();
  // Linear(7,5) weight 140 B, bias 20 B; Linear(5,3) weight 60 B, bias 12 B.
  for (size_t bucket : {size_t(4), size_t(24), size_t(100), size_t(150), size_t(1) << 20}) {
    INFO("rank " << me << " of " << R << ", bucket " << bucket << " bytes");
    Model model(7);
    auto params = model.parameters();
    for (size_t p = 0; p < params.size(); ++p) {
      // Rank 0 has no gradient for the first bias: it counts as 0 (with one rank nothing changes).
      if (p == 1 && me == 0 && R > 1) continue;
      std::vector<float> g(size_t(params[p].numel()));
      for (size_t i = 0; i < g.size(); ++i) g[i] = value(me, 100 * p + i);
      params[p].set_grad(Tensor::from_vector(params[p].shape(), g));
    }
    GradientAverager ddp(comm(), model, DDPOptions{bucket});
    if (bucket == 4) CHECK(ddp.buckets().size() == params.size());
    if (bucket == (size_t(1) << 20)) CHECK(ddp.buckets().size() == 1);
    if (bucket == 150) CHECK(ddp.buckets().size() == 2);  // {bias2, weight2, bias1}, {weight1}
    ddp.all_reduce_gradients();
    for (size_t p = 0; p < params.size(); ++p) {
      INFO("parameter " << p);
      const Tensor g = params[p].grad();
      REQUIRE(g.defined());
      const std::vector<float> got = g.to_vector();
      double worst = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        double want = 0;
        for (int r = 0; r < R; ++r) want += (p == 1 && r == 0 && R > 1) ? 0.0 : double(value(r, 100 * p + i));
        want /= R;
        worst = std::max(worst, std::fabs(got[i] - want) / (1e-6 + 1e-5 * std::fabs(want)));
      }
      CHECK(worst <= 1.0);
      CHECK(identical_on_all_ranks(g.raw_data(), g.nbytes()));
    }
  }
}

TEST_CASE("ddp: R ranks at batch B train like one process at batch R*B") {
  const int R = comm().size(), me = comm().rank();
  INFO("rank " << me << " of " << R);
  const int64_t B = 5;
  // The whole batch, the same on every rank; rank r trains on rows [r*B, (r+1)*B).
  const Tensor x_all = volt::test::rand_tensor({R * B, 7}, 77);
  std::vector<int64_t> y_all(size_t(R * B)), y_mine;
  for (size_t i = 0; i < y_all.size(); ++i) y_all[i] = int64_t((i * 7 + 3) % 3);
  y_mine.assign(y_all.begin() + me * B, y_all.begin() + (me + 1) * B);
  const Tensor x_mine = x_all.narrow(me * B, B), labels_all = Tensor::from_labels(y_all),
               labels_mine = Tensor::from_labels(y_mine);

  Model ddp_model(1000 + uint64_t(me)), reference(1000);
  broadcast_from_rank0(comm(), ddp_model);
  SGD ddp_opt(ddp_model.parameters(), volt::test::sgd_options(0.2, 0.9));
  SGD ref_opt(reference.parameters(), volt::test::sgd_options(0.2, 0.9));
  GradientAverager averager(comm(), ddp_model, DDPOptions{64});
  CrossEntropyLoss loss;
  for (int step = 0; step < 4; ++step) {
    ddp_model.zero_grad();
    loss(ddp_model(x_mine), labels_mine).backward();
    averager.all_reduce_gradients();
    ddp_opt.step();
    reference.zero_grad();
    loss(reference(x_all), labels_all).backward();
    ref_opt.step();
  }
  volt::test::check_near_and_identical(comm(), ddp_model.named_parameters(), reference.named_parameters(), 1e-4);
}

TEST_CASE("ddp with SyncBatchNorm: R ranks at batch B train the seed CNN like one process at batch R*B") {
  // Without it each rank normalises with its own rows' statistics, and the two differ.
  const int R = comm().size(), me = comm().rank();
  INFO("rank " << me << " of " << R);
  const int64_t B = 3;
  const Tensor x_all = volt::test::rand_tensor({R * B, 3, 16, 16}, 78);
  std::vector<int64_t> y_all(size_t(R * B)), y_mine;
  for (size_t i = 0; i < y_all.size(); ++i) y_all[i] = int64_t((i * 5 + 1) % 4);
  y_mine.assign(y_all.begin() + me * B, y_all.begin() + (me + 1) * B);
  const Tensor x_mine = x_all.narrow(me * B, B), labels_all = Tensor::from_labels(y_all),
               labels_mine = Tensor::from_labels(y_mine);
  auto make = [](uint64_t seed) {
    manual_seed(seed);
    return volt::test::small_cnn(0.0);
  };
  auto ddp_model = make(2000 + uint64_t(me)), reference = make(2000);
  broadcast_from_rank0(comm(), *ddp_model);
  CHECK(set_sync_batch_norm(*ddp_model, [](std::vector<double>& v) {
          comm().all_reduce(v.data(), v.size(), ReduceOp::Sum);
        }) == 2);  // the seed CNN's two
  SGD ddp_opt(ddp_model->parameters(), volt::test::sgd_options(0.1, 0.9));
  SGD ref_opt(reference->parameters(), volt::test::sgd_options(0.1, 0.9));
  GradientAverager averager(comm(), *ddp_model, DDPOptions{});
  CrossEntropyLoss loss;
  for (int step = 0; step < 3; ++step) {
    ddp_model->zero_grad();
    loss((*ddp_model)(x_mine), labels_mine).backward();
    averager.all_reduce_gradients();
    ddp_opt.step();
    reference->zero_grad();
    loss((*reference)(x_all), labels_all).backward();
    ref_opt.step();
  }
  volt::test::check_near_and_identical(comm(), ddp_model->state_dict().items(), reference->state_dict().items(), 1e-3);
}

TEST_CASE("ddp overlapped: the same bits as the averager after backward, with a parameter only some ranks use") {
  const int R = comm().size(), me = comm().rank();
  // E is used on even ranks only: there its bucket (bucket 0: it is the last parameter) completes
  // in backward and every bucket launches during backward; on odd ranks E never gets a gradient,
  // nothing can launch before the end, and the collectives still match in order and size.
  for (size_t bucket : {size_t(4), size_t(100), size_t(1) << 20}) {
    INFO("rank " << me << " of " << R << ", bucket " << bucket << " bytes");
    Model after(7), overlapped(7);
    Tensor E_after = volt::test::rand_tensor({3, 5}, 8).requires_grad_(), E_over = E_after.clone().requires_grad_();
    std::vector<Tensor> p_after = after.parameters(), p_over = overlapped.parameters();
    p_after.push_back(E_after);
    p_over.push_back(E_over);
    GradientAverager classic(comm(), p_after, DDPOptions{bucket});
    OverlappedGradientAverager ddp(comm(), p_over, DDPOptions{bucket});
    REQUIRE(classic.buckets() == ddp.buckets());
    SGD opt_after(p_after, volt::test::sgd_options(0.1, 0.9)), opt_over(p_over, volt::test::sgd_options(0.1, 0.9));
    auto loss = [&](const std::vector<Tensor>& p, int step) {
      const Tensor x = volt::test::rand_tensor({4, 7}, 100 + uint64_t(me) + 17 * uint64_t(step));
      const Tensor h = relu(linear(x, p[0], p[1]));
      Tensor y = linear(h, p[2], p[3]);
      if (me % 2 == 0) y = add(y, linear(h, p[4], Tensor()));
      return sum(mul(y, y));
    };
    for (int step = 0; step < 2; ++step) {
      for (Tensor& p : p_after) p.set_grad(Tensor());
      for (Tensor& p : p_over) p.set_grad(Tensor());
      loss(p_after, step).backward();
      classic.all_reduce_gradients();
      ddp.prepare_for_backward();
      loss(p_over, step).backward();
      CHECK(ddp.launched_during_backward() == (R == 1 ? 0u : me % 2 == 0 ? ddp.buckets().size() : 0u));
      ddp.all_reduce_gradients();
      for (size_t k = 0; k < p_over.size(); ++k) {
        INFO("step " << step << ", parameter " << k);
        if (R == 1) continue;  // one rank: neither touches anything (E's gradient stays undefined)
        REQUIRE(p_over[k].grad().defined());
        CHECK(volt::test::same_values(p_over[k].grad(), p_after[k].grad()));
        CHECK(identical_on_all_ranks(p_over[k].grad().raw_data(), p_over[k].grad().nbytes()));
      }
      if (R == 1) break;
      opt_after.step();
      opt_over.step();
    }
  }
}

TEST_CASE("comm: io_barrier waits past the collective timeout, for one rank's slow input or output") {
  // A communicator of its own with a 1 s collective limit: rank 0 arrives 2.5 s late, as after a
  // download or a checkpoint write; io_barrier's limit (30 s here) lets every rank wait for it.
  CommOptions opts;
  opts.timeout_s = 1;
  opts.io_timeout_s = 30;
  opts.abort_on_failure = false;
  const char* env_limit = std::getenv("VOLT_COMM_TIMEOUT");  // CTest's would replace the 1 s
  const std::string saved = env_limit ? env_limit : "";
  unsetenv("VOLT_COMM_TIMEOUT");
  const std::unique_ptr<Communicator> c = make_communicator(detect_process_env(), opts);
  if (env_limit) setenv("VOLT_COMM_TIMEOUT", saved.c_str(), 1);
  if (c->rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  CHECK_NOTHROW(c->io_barrier());
  CHECK_NOTHROW(c->barrier());  // the collective limit again, for a barrier all reach at once
}
