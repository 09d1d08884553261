// DDP's logic on the CPU, in one process: bucketing, and the overlapped gradient averager driven by
// autograd's gradient-ready hook, against a recording communicator that pretends to be several
// ranks holding the same gradients (so the average is the local gradient, bit for bit). Checked:
// buckets are launched in bucket order whatever order gradients become final in, during backward
// when they can be, at the end otherwise (a parameter without gradient: zeros); shared parameters,
// gradient accumulation and misuse. The same averager across real ranks is in test_comm.cpp.
#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/ddp.h"
#include "dist/trainer.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "layers/layers.h"
#include "tests/test_util.h"
#include "tests/trainer_fixtures.h"

using namespace volt;
using volt::test::contains;
using volt::test::error_of;

namespace {

// Whether a backward pass is running (a backward observer's pass_begin / pass_end).
struct PassFlag : autograd::BackwardObserver {
  bool in_pass = false;
  void pass_begin() override { in_pass = true; }
  void pass_end() override { in_pass = false; }
  void before(const Node&) override {}
  void after(const Node&) override {}
};

// A host communicator that plays `size` ranks whose other members hold this rank's values: a sum
// multiplies by size, an average changes nothing. Records each float all-reduce.
class RecordingComm final : public Communicator {
 public:
  struct Call {
    size_t count;
    bool in_backward;
  };
  RecordingComm(int size, const PassFlag& flag, bool device = false) : size_(size), flag_(flag), device_(device) {}
  int rank() const override { return 0; }
  int size() const override { return size_; }
  const char* backend() const override { return "recording"; }
  bool device_buffers() const override { return device_; }
  void all_reduce(float* data, size_t count, ReduceOp op) override {
    calls.push_back({count, flag_.in_pass});
    if (op == ReduceOp::Sum)
      for (size_t i = 0; i < count; ++i) data[i] *= float(size_);
  }
  void all_reduce(double*, size_t, ReduceOp) override {}
  void all_reduce(int64_t*, size_t, ReduceOp) override {}
  void broadcast(void*, size_t, int) override {}
  void all_gather(const void* send, void* recv, size_t bytes) override {
    for (int r = 0; r < size_; ++r) std::memcpy(static_cast<char*>(recv) + size_t(r) * bytes, send, bytes);
  }
  void barrier() override {}
  [[noreturn]] void abort(int, const std::string& why) override { VOLT_FAIL("abort: ", why); }
  using Communicator::all_reduce;
  std::vector<size_t> counts() const {
    std::vector<size_t> v;
    for (const Call& c : calls) v.push_back(c.count);
    return v;
  }
  size_t during_backward() const {
    size_t n = 0;
    for (const Call& c : calls) n += c.in_backward;
    return n;
  }
  std::vector<Call> calls;

 private:
  int size_;
  const PassFlag& flag_;
  bool device_;
};

// Observes backward passes for the scope.
struct Observe {
  explicit Observe(PassFlag& f) { autograd::set_backward_observer(&f); }
  ~Observe() { autograd::set_backward_observer(nullptr); }
};

Tensor param(const Shape& shape, uint64_t seed) {
  Tensor t = volt::test::rand_tensor(shape, seed);
  t.requires_grad_();
  return t;
}

// Two linear layers, x [4, 3] -> [4, 5] -> [4, 2]; W1 [5, 3], b1 [5], W2 [2, 5], b2 [2].
struct Net {
  Tensor W1 = param({5, 3}, 1), b1 = param({5}, 2), W2 = param({2, 5}, 3), b2 = param({2}, 4);
  Tensor x = volt::test::rand_tensor({4, 3}, 5);
  Tensor loss() const { return sum(mul(linear(relu(linear(x, W1, b1)), W2, b2), 0.75f)); }
  std::vector<Tensor> all() const { return {W1, b1, W2, b2}; }
  void zero_grad() {
    for (Tensor p : all()) p.set_grad(Tensor());
  }
};

// Each parameter's gradient of one plain backward pass (no averager).
std::vector<std::vector<float>> plain_grads(Net& net) {
  net.zero_grad();
  net.loss().backward();
  std::vector<std::vector<float>> g;
  for (const Tensor& p : net.all()) g.push_back(p.grad().to_vector());
  net.zero_grad();
  return g;
}

}  // namespace

TEST_CASE("ddp: make_buckets fills buckets in reverse parameter order, a big parameter alone") {
  const std::vector<Tensor> p = {Tensor::zeros({10}), Tensor::zeros({3}), Tensor::zeros({100}), Tensor::zeros({2}),
                                 Tensor::zeros({2})};  // 40, 12, 400, 8, 8 bytes
  CHECK(make_buckets(p, 20) == std::vector<std::vector<size_t>>{{4, 3}, {2}, {1}, {0}});
  CHECK(make_buckets(p, 64) == std::vector<std::vector<size_t>>{{4, 3}, {2}, {1, 0}});
  CHECK(make_buckets(p, 1) == std::vector<std::vector<size_t>>{{4}, {3}, {2}, {1}, {0}});
  CHECK(make_buckets(p, 1 << 20) == std::vector<std::vector<size_t>>{{4, 3, 2, 1, 0}});
  CHECK(make_buckets({}, 16).empty());
  CHECK(contains(error_of([&] { make_buckets(p, 0); }), "bucket_bytes must be positive"));
}

TEST_CASE("ddp overlapped: buckets launch in bucket order during backward, whatever order gradients are final in") {
  PassFlag flag;
  Observe obs(flag);
  Net net;
  const auto want = plain_grads(net);
  // Listed first layer last: buckets [b1], [W1], [b2], [W2]. Backward finalises W2 and b2 first,
  // but bucket 0 (b1) is final only at the very end: nothing may launch before it.
  RecordingComm comm(2, flag);
  OverlappedGradientAverager ddp(comm, std::vector<Tensor>{net.W2, net.b2, net.W1, net.b1}, DDPOptions{4});
  REQUIRE(ddp.buckets() == std::vector<std::vector<size_t>>{{3}, {2}, {1}, {0}});
  for (int step = 0; step < 2; ++step) {
    INFO("step " << step);
    comm.calls.clear();
    ddp.prepare_for_backward();
    net.loss().backward();
    CHECK(ddp.launched_during_backward() == 4);
    CHECK(comm.during_backward() == 4);
    CHECK(comm.counts() == std::vector<size_t>{5, 15, 2, 10});  // b1, W1, b2, W2
    ddp.all_reduce_gradients();
    CHECK(comm.calls.size() == 4);  // nothing left for the end
    CHECK(ddp.launch_order() == std::vector<size_t>{0, 1, 2, 3});
    const auto all = net.all();
    for (size_t i = 0; i < all.size(); ++i) CHECK(all[i].grad().to_vector() == want[i]);
    net.zero_grad();
  }
  CHECK(autograd::grad_ready_listener() == nullptr);  // only armed between prepare and the reduction

  // In backward order (W1, b1, W2, b2: buckets [b2], [W2], [b1], [W1]): each launches once complete.
  comm.calls.clear();
  OverlappedGradientAverager in_order(comm, net.all(), DDPOptions{4});
  in_order.prepare_for_backward();
  net.loss().backward();
  CHECK(comm.during_backward() == 4);
  CHECK(comm.counts() == std::vector<size_t>{2, 10, 5, 15});
  in_order.all_reduce_gradients();
  net.zero_grad();

  // One bucket for everything: launched when its last gradient is final.
  comm.calls.clear();
  OverlappedGradientAverager one(comm, net.all());
  one.prepare_for_backward();
  net.loss().backward();
  CHECK(comm.during_backward() == 1);
  CHECK(comm.counts() == std::vector<size_t>{32});
  one.all_reduce_gradients();
  const auto all = net.all();
  for (size_t i = 0; i < all.size(); ++i) CHECK(all[i].grad().to_vector() == want[i]);
}

TEST_CASE("ddp overlapped: a parameter without gradient holds back later buckets and is averaged as zeros") {
  PassFlag flag;
  Observe obs(flag);
  Net net;
  const auto want = plain_grads(net);
  Tensor unused = param({3}, 9);
  RecordingComm comm(3, flag);
  {
    // unused is bucket 0: nothing can launch during backward; everything goes at the end, in order.
    OverlappedGradientAverager ddp(comm, std::vector<Tensor>{net.W2, net.b2, net.W1, net.b1, unused}, DDPOptions{4});
    ddp.prepare_for_backward();
    net.loss().backward();
    CHECK(comm.calls.empty());
    ddp.all_reduce_gradients();
    CHECK(comm.counts() == std::vector<size_t>{3, 5, 15, 2, 10});
    CHECK(comm.during_backward() == 0);
    CHECK(ddp.launched_during_backward() == 0);
    REQUIRE(unused.grad().defined());
    CHECK(unused.grad().to_vector() == std::vector<float>(3, 0.f));
    CHECK(net.b1.grad().to_vector() == want[1]);
  }
  net.zero_grad();
  unused.set_grad(Tensor());
  comm.calls.clear();
  {
    // unused is the last bucket: the others launch in backward, it at the end.
    OverlappedGradientAverager ddp(comm, std::vector<Tensor>{unused, net.W2, net.b2, net.W1, net.b1}, DDPOptions{4});
    ddp.prepare_for_backward();
    net.loss().backward();
    CHECK(comm.during_backward() == 4);
    ddp.all_reduce_gradients();
    CHECK(comm.counts() == std::vector<size_t>{5, 15, 2, 10, 3});
    CHECK(ddp.launch_order() == std::vector<size_t>{0, 1, 2, 3, 4});
    CHECK(unused.grad().to_vector() == std::vector<float>(3, 0.f));
  }
}

TEST_CASE("ddp: a frozen parameter takes no part in the reduction and keeps an undefined gradient") {
  // As in a single process (and PyTorch's DDP): the optimizer then skips it, weight decay and
  // momentum included, instead of stepping it with a zero gradient.
  PassFlag flag;
  Observe obs(flag);
  RecordingComm comm(2, flag);
  Generator gen(5);
  Sequential model;
  model.push_back(std::make_shared<Linear>(3, 4, true, &gen));
  model.push_back(std::make_shared<ReLU>());
  model.push_back(std::make_shared<Linear>(4, 2, true, &gen));
  std::vector<Tensor> params = model.parameters();
  REQUIRE(params.size() == 4);
  params[0].requires_grad_(false);  // the first layer's weight
  const Tensor x = volt::test::rand_tensor({5, 3}, 7);
  for (const bool overlapped : {false, true}) {
    CAPTURE(overlapped);
    for (Tensor& p : params) p.set_grad(Tensor());
    comm.calls.clear();
    std::unique_ptr<GradientReducer> ddp;
    if (overlapped) ddp = std::make_unique<OverlappedGradientAverager>(comm, model);
    else ddp = std::make_unique<GradientAverager>(comm, model);
    ddp->prepare_for_backward();
    sum(model(x)).backward();
    ddp->all_reduce_gradients();
    CHECK_FALSE(params[0].grad().defined());
    for (size_t i = 1; i < params.size(); ++i) CHECK(params[i].grad().defined());
    size_t reduced = 0;
    for (size_t n : comm.counts()) reduced += n;
    CHECK(reduced == size_t(4 + 2 * 4 + 2));  // every trainable element, the frozen 12 not
  }
}

TEST_CASE("ddp overlapped: a shared weight is packed once, with every contribution") {
  PassFlag flag;
  Observe obs(flag);
  Tensor W = param({4, 4}, 21), b1 = param({4}, 22), b2 = param({4}, 23);
  const Tensor x = volt::test::rand_tensor({3, 4}, 24);
  auto loss = [&] { return sum(linear(relu(linear(x, W, b1)), W, b2)); };  // W used twice
  loss().backward();
  const std::vector<float> want_W = W.grad().to_vector(), want_b1 = b1.grad().to_vector();
  W.set_grad(Tensor());
  b1.set_grad(Tensor());
  b2.set_grad(Tensor());
  RecordingComm comm(2, flag);
  OverlappedGradientAverager ddp(comm, std::vector<Tensor>{W, b1, b2}, DDPOptions{4});  // [b2], [b1], [W]
  ddp.prepare_for_backward();
  loss().backward();
  CHECK(comm.counts() == std::vector<size_t>{4, 4, 16});
  CHECK(comm.during_backward() == 3);
  ddp.all_reduce_gradients();
  CHECK(W.grad().to_vector() == want_W);
  CHECK(b1.grad().to_vector() == want_b1);
}

TEST_CASE("ddp overlapped: gradient accumulation reduces only the armed pass, with the sum of both") {
  PassFlag flag;
  Observe obs(flag);
  Net net;
  net.zero_grad();
  net.loss().backward();
  net.loss().backward();
  std::vector<std::vector<float>> want;
  for (const Tensor& p : net.all()) want.push_back(p.grad().to_vector());
  net.zero_grad();
  RecordingComm comm(2, flag);
  OverlappedGradientAverager ddp(comm, net.all(), DDPOptions{4});
  net.loss().backward();  // a first micro-batch: not armed, nothing reduced
  CHECK(comm.calls.empty());
  ddp.prepare_for_backward();
  net.loss().backward();
  CHECK(comm.during_backward() == 4);
  ddp.all_reduce_gradients();
  const auto all = net.all();
  for (size_t i = 0; i < all.size(); ++i) CHECK(all[i].grad().to_vector() == want[i]);

  // Without prepare_for_backward() every bucket goes at the end, in order.
  net.zero_grad();
  comm.calls.clear();
  net.loss().backward();
  ddp.all_reduce_gradients();
  CHECK(comm.counts() == std::vector<size_t>{2, 10, 5, 15});
  CHECK(comm.during_backward() == 0);
}

TEST_CASE("ddp overlapped: misuse, world size 1 and a listener installed before it") {
  PassFlag flag;
  Observe obs(flag);
  Net net;
  {
    RecordingComm comm(2, flag);
    OverlappedGradientAverager ddp(comm, net.all(), DDPOptions{4});
    ddp.prepare_for_backward();
    net.loss().backward();
    CHECK(contains(error_of([&] { net.loss().backward(); }), "became final twice"));
  }
  CHECK(autograd::grad_ready_listener() == nullptr);  // the destructor uninstalled it
  net.zero_grad();

  // One local rank: nothing to do, nothing touched, no listener.
  LocalCommunicator local;
  OverlappedGradientAverager alone(local, net.all());
  alone.prepare_for_backward();
  CHECK(autograd::grad_ready_listener() == nullptr);
  net.loss().backward();
  const std::vector<float> before = net.W1.grad().to_vector();
  alone.all_reduce_gradients();
  CHECK(net.W1.grad().to_vector() == before);

  // The parameters must fit the communicator: one device, float32, GPU buffers for a device one.
  RecordingComm device_comm(2, flag, /*device=*/true);
  CHECK(contains(error_of([&] { OverlappedGradientAverager(device_comm, net.all()); }), "works on GPU buffers"));
  CHECK(contains(error_of([&] { OverlappedGradientAverager(local, std::vector<Tensor>{Tensor::zeros({2}, DType::I64)}); }),
                 "int64"));
  CHECK(contains(error_of([&] { OverlappedGradientAverager(local, std::vector<Tensor>{net.b1, net.b1}); }), "twice"));
  CHECK(dynamic_cast<GradientAverager*>(make_gradient_averager(local, Linear(2, 2)).get()) != nullptr);

  // A listener installed before the averager still hears every leaf.
  struct Count : autograd::GradReadyListener {
    int n = 0;
    void grad_ready(const Tensor&) override { ++n; }
  } count;
  autograd::set_grad_ready_listener(&count);
  {
    RecordingComm comm(2, flag);
    OverlappedGradientAverager ddp(comm, net.all(), DDPOptions{4});
    net.zero_grad();
    ddp.prepare_for_backward();
    net.loss().backward();
    ddp.all_reduce_gradients();
    CHECK(comm.during_backward() == 4);
  }
  CHECK(count.n == 4);
  CHECK(autograd::grad_ready_listener() == &count);
  autograd::set_grad_ready_listener(nullptr);
}

TEST_CASE("ddp: the Trainer refuses a communicator on GPU buffers for CPU training") {
  PassFlag flag;
  TrainerOptions o;
  o.accelerator = "cpu";
  o.communicator = std::make_shared<RecordingComm>(1, flag, /*device=*/true);
  CHECK(contains(error_of([&] { Trainer t(o); }), "training on the CPU needs a communicator on host buffers"));
}

namespace {

// Plays rank 0 of two whose partner logs each value plus 10 (a double average adds 5) and holds the
// same gradients and buffers; counts the double averages.
class PartnerPlusTen final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 2; }
  const char* backend() const override { return "partner+10"; }
  bool device_buffers() const override { return false; }
  void all_reduce(float* data, size_t count, ReduceOp op) override {
    if (op == ReduceOp::Sum)
      for (size_t i = 0; i < count; ++i) data[i] *= 2.f;
  }
  void all_reduce(double* data, size_t count, ReduceOp op) override {
    if (op == ReduceOp::Avg) ++averages;
    for (size_t i = 0; i < count; ++i) data[i] = op == ReduceOp::Avg ? data[i] + 5 : 2 * data[i];
  }
  void all_reduce(int64_t* data, size_t count, ReduceOp op) override {
    if (op == ReduceOp::Sum)
      for (size_t i = 0; i < count; ++i) data[i] *= 2;
  }
  void broadcast(void*, size_t, int) override {}
  void all_gather(const void* send, void* recv, size_t bytes) override {
    for (int r = 0; r < 2; ++r) std::memcpy(static_cast<char*>(recv) + size_t(r) * bytes, send, bytes);
  }
  void barrier() override {}
  [[noreturn]] void abort(int, const std::string& why) override { VOLT_FAIL("abort: ", why); }
  using Communicator::all_reduce;
  int averages = 0;
};

// Logs its batch index as an on_step value averaged over the ranks.
class LogsBatchIndex : public volt::test::Counting {
 public:
  LogsBatchIndex() : Counting(volt::test::small_cnn(), volt::test::adam()) {}
  Tensor training_step(const Batch& b, int64_t i) override {
    LogOptions o;
    o.on_step = true;
    o.on_epoch = false;
    o.sync_dist = true;
    log("idx", double(i), o);
    return Counting::training_step(b, i);
  }
};

}  // namespace

TEST_CASE("ddp: sync_dist step values are the ranks' mean, averaged only where they are logged") {
  volt::test::TempDir dir("volt_ddp_sync_");
  manual_seed(5);
  volt::test::SynthDM dm(512, 32, 32);  // 16 training batches, 8 on each of the two ranks
  LogsBatchIndex m;
  volt::test::Quiet q;
  auto o = q.base(dir.path);
  o.accelerator = "cpu";
  o.max_epochs = 1;
  o.log_every_n_steps = 3;  // logged after steps 3 and 6, and recorded at the last (8th) batch
  o.num_sanity_val_steps = 0;
  o.enable_progress_bar = false;
  auto comm = std::make_shared<PartnerPlusTen>();
  o.communicator = comm;
  Trainer t(o);
  t.fit(m, dm);
  INFO(q.os.str());
  CHECK(m.train_calls == 8);
  CHECK(t.callback_metrics().at("idx") == 7.0 + 5.0);  // the last batch's index, with the partner's
  CHECK(t.logged_metrics().at("idx") == 5.0 + 5.0);    // the last logged step (the 6th batch)
  CHECK(comm->averages == 3);
}

TEST_CASE("ddp: sync_batchnorm replaces a model's own SyncBatchNorm sums only for the fit") {
  volt::test::TempDir dir("volt_ddp_syncbn_");
  manual_seed(5);
  volt::test::SynthDM dm(128, 32, 32);
  volt::test::Counting m(volt::test::small_cnn(), volt::test::adam());
  int own_calls = 0;
  const int n = set_sync_batch_norm(m, [&own_calls](std::vector<double>&) { ++own_calls; });
  REQUIRE(n > 0);
  volt::test::Quiet q;
  auto o = q.cpu_fit(dir.path, 1);
  o.sync_batchnorm = true;
  o.communicator = std::make_shared<PartnerPlusTen>();
  Trainer t(o);
  t.fit(m, dm);
  INFO(q.os.str());
  CHECK(contains(q.os.str(), "sync_batchnorm: " + std::to_string(n) + " BatchNorm2d layer(s)"));
  CHECK(own_calls == 0);  // the fit summed over its communicator's ranks
  for (BatchNorm2d* bn : batch_norms(m)) {
    REQUIRE(bn->synced());
    std::vector<double> v{1.0};
    bn->sync()(v);
  }
  CHECK(own_calls == n);  // the model's own function again after the fit
}
