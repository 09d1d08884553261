// DDP on GPUs over NCCL (label gpu): alone (world size 1 on one GPU: the same NCCL path) and under
// `mpirun -n N` (one GPU per rank; $VOLT_TEST_WORLD_SIZE says how many). The overlapped averager's
// averages against every rank's local gradients gathered to the host, with buckets launched during
// backward where they can be; the Trainer over NCCL: at world size 1 the local communicator's
// parameters bit for bit, with several ranks a fit whose end-of-fit check finds every rank's
// parameters identical; SyncBatchNorm on the GPUs against one CPU process on the whole batch. Skips (exit 77) where the build has no NCCL communicator, no GPU is
// visible, or this node has fewer GPUs than ranks.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/ddp.h"
#include "dist/process_env.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "layers/layers.h"
#include "layers/optim/optimizer.h"
#include "tests/dist/dist_util.h"
#include "tests/test_util.h"
#include "tests/trainer_fixtures.h"

using namespace volt;
using namespace volt::test;

namespace {

std::shared_ptr<Communicator> comm() {
  static std::shared_ptr<Communicator> c = [] {
    if (!nccl_available()) skip("this build has no NCCL communicator (it needs the CUDA backend, NCCL and MPI)");
    require_gpu();
    const ProcessEnv env = detect_process_env();
    if (env.local_size > cuda_device_count())
      skip(std::to_string(env.local_size) + " ranks on this node but " + std::to_string(cuda_device_count()) +
           " GPU(s) visible: NCCL needs one GPU per rank");
    return std::shared_ptr<Communicator>(make_nccl_communicator(env));
  }();
  return c;
}

Device gpu() { return Device::cuda(process_gpu(detect_process_env(), cuda_device_count())); }

Tensor gpu_param(const Shape& shape, uint64_t seed) {
  Tensor t = rand_tensor(shape, seed).to(gpu());
  t.requires_grad_();
  return t;
}

// Every rank's copy of a host vector is rank 0's, bit for bit (gathered through the staging path).
bool identical_on_all_ranks(const std::vector<float>& v) {
  return volt::test::identical_on_all_ranks(*comm(), v.data(), v.size() * sizeof(float));
}

}  // namespace

TEST_CASE("gpu ddp: the overlapped averager averages every rank's gradients, launching buckets during backward") {
  Communicator& c = *comm();
  const int R = c.size(), me = c.rank();
  for (size_t bucket : {size_t(64), size_t(4096), size_t(1) << 20}) {
    INFO("rank " << me << " of " << R << ", bucket " << bucket << " bytes");
    // W1 [33, 17], b1 [33], W2 [10, 33], b2 [10], and E [10, 33] used on even ranks only (the last
    // parameter: bucket 0, so on odd ranks nothing can launch before all_reduce_gradients()).
    std::vector<Tensor> p = {gpu_param({33, 17}, 1), gpu_param({33}, 2), gpu_param({10, 33}, 3), gpu_param({10}, 4),
                             gpu_param({10, 33}, 5)};
    const Tensor x = rand_tensor({8, 17}, 100 + uint64_t(me)).to(gpu());
    auto loss = [&] {
      const Tensor h = relu(linear(x, p[0], p[1]));
      Tensor y = linear(h, p[2], p[3]);
      if (me % 2 == 0) y = add(y, linear(h, p[4], Tensor()));
      return sum(mul(y, y));
    };
    // This rank's own gradients (zeros for E where unused), then everyone's.
    loss().backward();
    std::vector<std::vector<float>> all(p.size());
    for (size_t k = 0; k < p.size(); ++k) {
      const std::vector<float> mine = p[k].grad().defined() ? p[k].grad().to_vector()
                                                            : std::vector<float>(size_t(p[k].numel()), 0.f);
      all[k].resize(mine.size() * size_t(R));
      c.all_gather(mine.data(), all[k].data(), mine.size() * sizeof(float));
      p[k].set_grad(Tensor());
    }
    OverlappedGradientAverager ddp(c, p, DDPOptions{bucket});
    ddp.prepare_for_backward();
    loss().backward();
    CHECK(ddp.launched_during_backward() == (me % 2 == 0 ? ddp.buckets().size() : 0u));
    ddp.all_reduce_gradients();
    CHECK(ddp.launch_order().size() == ddp.buckets().size());
    const float inv = float(1.0 / R);
    for (size_t k = 0; k < p.size(); ++k) {
      INFO("parameter " << k);
      REQUIRE(p[k].grad().defined());
      CHECK(p[k].grad().device() == gpu());
      const std::vector<float> got = p[k].grad().to_vector();
      const size_t n = got.size();
      size_t bad = 0, worst = 0;
      for (size_t i = 0; i < n; ++i) {
        float s = 0;
        for (int r = 0; r < R; ++r) s += all[k][size_t(r) * n + i];
        const float want = R == 1 ? s : s * inv;  // one or two ranks: NCCL's sum is the same one rounding
        const bool ok = R <= 2 ? got[i] == want : std::fabs(got[i] - want) <= 1e-5f * (1 + std::fabs(want));
        if (!ok) bad++, worst = i;
      }
      INFO("bad " << bad << " of " << n << "; element " << worst << ": " << got[worst]);
      CHECK(bad == 0);
      CHECK(identical_on_all_ranks(got));
    }
  }
}

namespace {

struct RunResult {
  StateDict state;
  std::string out;
};

// A short fit of the small CNN on synthetic data with `c` (nullptr: the local communicator).
RunResult fit(const std::shared_ptr<Communicator>& c, const std::string& root, const std::string& precision,
              int64_t accumulate) {
  SynthDM dm(256, 32, 32);
  Quiet q;
  TrainerOptions o = q.base(root);
  o.accelerator = "gpu";
  o.max_epochs = 1;
  o.limit_train_batches = 6;
  o.num_sanity_val_steps = 0;
  o.logger = false;
  o.enable_checkpointing = false;
  o.enable_progress_bar = false;
  o.seed = 5;
  o.precision = precision;
  o.accumulate_grad_batches = accumulate;
  o.ddp_bucket_bytes = 8192;  // several buckets
  o.cuda_graphs = false;      // both runs eager: the comparison is about the NCCL path
  if (c) o.communicator = c;
  else o.communicator = std::make_shared<LocalCommunicator>();
  manual_seed(5);
  ClassifierModule m(small_cnn(0.3), adam(2e-3));
  Trainer t(o);
  t.fit(m, dm);
  return {snapshot(m), q.os.str()};
}

size_t differing(const StateDict& a, const StateDict& b, std::string* first) {
  size_t n = 0;
  const auto x = a.items(), y = b.items();
  REQUIRE(x.size() == y.size());
  for (size_t i = 0; i < x.size(); ++i)
    if (!same_values(x[i].second, y[i].second)) {
      if (n++ == 0) *first = x[i].first;
    }
  return n;
}

}  // namespace

TEST_CASE("gpu Trainer over NCCL: world size 1 gives the local communicator's parameters; N ranks agree") {
  const std::shared_ptr<Communicator> c = comm();
  TempDir dir("volt_ddp_gpu_");
  for (const auto& [precision, accumulate] : std::vector<std::pair<std::string, int64_t>>{{"32", 1}, {"16-mixed", 2}}) {
    INFO("precision " << precision << ", accumulate_grad_batches " << accumulate);
    const RunResult nccl = fit(c, dir / ("nccl" + precision), precision, accumulate);
    if (c->rank() == 0) {
      CHECK(contains(nccl.out, "nccl all-reduce"));
      CHECK(contains(nccl.out, "reduced during backward"));
      CHECK(contains(nccl.out, "identical on all " + std::to_string(c->size()) + " ranks"));
    }
    if (c->size() > 1) continue;  // the Trainer's own end-of-fit check compared the ranks
    const RunResult local = fit(nullptr, dir / ("local" + precision), precision, accumulate);
    std::string first;
    const size_t n = differing(nccl.state, local.state, &first);
    if (n != 0) {
      // Tell a difference from the NCCL path apart from kernels that are not deterministic.
      const RunResult again = fit(nullptr, dir / ("again" + precision), precision, accumulate);
      std::string f2;
      INFO("first differing tensor " << first << "; two local runs differ in " << differing(local.state, again.state, &f2)
                                     << " tensors");
      CHECK(n == 0);
    }
  }
}

TEST_CASE("gpu ddp with SyncBatchNorm: R GPU ranks at batch B train the seed CNN like one CPU process at batch R*B") {
  Communicator& c = *comm();
  const int R = c.size(), me = c.rank();
  INFO("rank " << me << " of " << R);
  const int64_t B = 3;
  const Tensor x_all = rand_tensor({R * B, 3, 16, 16}, 78);
  std::vector<int64_t> y_all(size_t(R * B)), y_mine;
  for (size_t i = 0; i < y_all.size(); ++i) y_all[i] = int64_t((i * 5 + 1) % 4);
  y_mine.assign(y_all.begin() + me * B, y_all.begin() + (me + 1) * B);
  const Tensor x_mine = x_all.narrow(me * B, B).to(gpu()), labels_all = Tensor::from_labels(y_all),
               labels_mine = Tensor::from_labels(y_mine, gpu());
  auto make = [](uint64_t seed) {
    manual_seed(seed);
    return small_cnn(0.0);
  };
  auto ddp_model = make(2000 + uint64_t(me)), reference = make(2000);
  ddp_model->to(gpu());
  broadcast_from_rank0(c, *ddp_model);
  CHECK(set_sync_batch_norm(*ddp_model, [&c](std::vector<double>& v) {
          c.all_reduce(v.data(), v.size(), ReduceOp::Sum);
        }) == 2);  // the seed CNN's two
  SGD ddp_opt(ddp_model->parameters(), sgd_options(0.1, 0.9));
  SGD ref_opt(reference->parameters(), sgd_options(0.1, 0.9));
  OverlappedGradientAverager averager(c, *ddp_model, DDPOptions{});
  CrossEntropyLoss loss;
  for (int step = 0; step < 3; ++step) {
    ddp_model->zero_grad();
    averager.prepare_for_backward();
    loss((*ddp_model)(x_mine), labels_mine).backward();
    averager.all_reduce_gradients();
    ddp_opt.step();
    reference->zero_grad();
    loss((*reference)(x_all), labels_all).backward();
    ref_opt.step();
  }
  check_near_and_identical(c, ddp_model->state_dict().items(), reference->state_dict().items(), 1e-3);
}
