// Checkpoints (dist/checkpoint.h): optimizer state (the scheduler's is in test_scheduler.cpp), the
// file format's round trip and its rejection of corrupt, truncated or foreign files, refusal of a
// checkpoint of another model, and exact resume: a run interrupted and restored ends with
// bit-identical weights.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>

#include "data/loader.h"
#include "data/synthetic.h"
#include "dist/checkpoint.h"
#include "engine/binary_io.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/threads.h"
#include "layers/models/seed_cnn.h"
#include "tests/test_util.h"

using namespace volt;
using test::contains;
using test::error_of;

namespace {

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("volt_ckpt_") {}
};

std::string read_all(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_all(const std::string& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

// Recomputes the trailing checksum, so a test reaches the checks behind it.
std::string with_fixed_crc(std::string bytes) {
  const uint32_t crc = crc32(bytes.data(), bytes.size() - 4);
  std::memcpy(&bytes[bytes.size() - 4], &crc, 4);
  return bytes;
}

// Byte offset of section `tag`'s header in a checkpoint file (npos when absent).
size_t find_section(const std::string& bytes, const std::string& tag) {
  size_t pos = 16;
  while (pos + 12 <= bytes.size() - 4) {
    uint64_t len;
    std::memcpy(&len, bytes.data() + pos + 4, 8);
    if (bytes.compare(pos, 4, tag) == 0) return pos;
    pos += 12 + size_t(len);
  }
  return std::string::npos;
}

bool bit_identical(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

bool same_state(const ComponentState& a, const ComponentState& b) {
  if (a.type != b.type || a.reals != b.reals || a.ints != b.ints || a.tensors.size() != b.tensors.size()) return false;
  for (size_t i = 0; i < a.tensors.size(); ++i)
    if (a.tensors[i].first != b.tensors[i].first || !bit_identical(a.tensors[i].second, b.tensors[i].second)) return false;
  return true;
}

struct ThreadsGuard {  // conv weight-gradient reduction order depends on the thread count
  int saved = get_num_threads();
  explicit ThreadsGuard(int n) { set_num_threads(n); }
  ~ThreadsGuard() { set_num_threads(saved); }
};

SeedCNNOptions small_cnn(int64_t channels = 3) {
  SeedCNNOptions o;
  o.in_channels = channels;
  o.height = o.width = 16;
  return o;
}

// A few Adam steps on a fixed batch, so the optimizer and scheduler have state.
void train_steps(Module& m, Optimizer& opt, LRScheduler* sched, int steps, int64_t channels = 3) {
  const Tensor x = test::rand_tensor({4, channels, 16, 16}, 21);
  const Tensor y = Tensor::from_labels({0, 3, 5, 9});
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    Tensor l = cross_entropy(m(x), y);
    l.backward();
    opt.step();
    if (sched) sched->step();
  }
}

}  // namespace

TEST_CASE("optimizer state_dict / load_state_dict continue exactly") {
  SUBCASE("SGD with momentum and nesterov") {
    Tensor a = test::param({0.5f, -1.f, 2.f}), b = test::param({1.5f, 0.25f});
    SGD opt({a, b}, test::sgd_options(0.1, 0.9, 0.0, 0.01, true));
    test::set_grad(a, {0.1, 0.2, -0.3});
    opt.step();  // b has no gradient: no momentum buffer
    const OptimizerState s = opt.state_dict();
    CHECK(s.type == "SGD");
    CHECK(s.find_tensor("momentum_buffer.0") != nullptr);
    CHECK(s.find_tensor("momentum_buffer.1") == nullptr);

    Tensor a2 = a.detach().clone(), b2 = b.detach().clone();
    a2.requires_grad_();
    b2.requires_grad_();
    SGD fresh({a2, b2}, test::sgd_options(0.5));  // other hyperparameters: the state's win
    fresh.load_state_dict(s);
    CHECK(fresh.lr() == 0.1);
    CHECK(fresh.momentum() == 0.9);
    CHECK(fresh.options().nesterov);
    for (auto* p : {&a, &b, &a2, &b2}) test::set_grad(*p, std::vector<double>(size_t(p->numel()), 0.7));
    opt.step();
    fresh.step();
    CHECK(bit_identical(a, a2));
    CHECK(bit_identical(b, b2));
  }
  SUBCASE("Adam and AdamW with amsgrad") {
    for (bool decoupled : {false, true}) {
      Tensor p = test::param({0.5f, -1.f, 2.f});
      AdamOptions o = test::adam_options(0.01, 0.8, 0.99, 1e-8, 0.1, true);
      std::unique_ptr<Adam> opt = decoupled ? std::make_unique<AdamW>(std::vector<Tensor>{p}, o)
                                            : std::make_unique<Adam>(std::vector<Tensor>{p}, o);
      for (int i = 0; i < 3; ++i) {
        test::set_grad(p, {0.3 * i, -0.2, 0.1});
        opt->step();
      }
      const OptimizerState s = opt->state_dict();
      CHECK(s.type == (decoupled ? "AdamW" : "Adam"));
      CHECK(s.ints.at("step.0") == 3);
      CHECK(s.find_tensor("max_exp_avg_sq.0") != nullptr);

      Tensor q = p.detach().clone();
      q.requires_grad_();
      std::unique_ptr<Adam> fresh = decoupled ? std::make_unique<AdamW>(std::vector<Tensor>{q}, AdamOptions{})
                                              : std::make_unique<Adam>(std::vector<Tensor>{q}, AdamOptions{});
      fresh->load_state_dict(s);
      CHECK(fresh->step_count(0) == 3);
      CHECK(fresh->momentum() == 0.8);
      CHECK(fresh->options().amsgrad);
      CHECK(same_state(fresh->state_dict(), s));
      // The loaded state is a copy: stepping the original does not change it.
      test::set_grad(p, {1.0, 1.0, 1.0});
      test::set_grad(q, {1.0, 1.0, 1.0});
      opt->step();
      fresh->step();
      CHECK(bit_identical(p, q));
      CHECK(bit_identical(opt->exp_avg_sq(0), fresh->exp_avg_sq(0)));
    }
  }
}

TEST_CASE("optimizer load_state_dict rejects a state that does not fit and changes nothing") {
  Tensor a = test::param({1.f, 2.f, 3.f}), b = test::param({4.f, 5.f});
  Adam opt({a, b}, test::adam_options(0.01));
  test::set_grad(a, {0.1, 0.2, 0.3});
  test::set_grad(b, {0.4, 0.5});
  opt.step();
  const OptimizerState before = opt.state_dict();

  SUBCASE("another optimizer type") {
    Tensor c = test::param({1.f, 2.f, 3.f}), d = test::param({4.f, 5.f});
    SGD sgd({c, d}, test::sgd_options(0.1, 0.9));
    const std::string msg = error_of([&] { sgd.load_state_dict(before); });
    CHECK(contains(msg, "Adam"));
    CHECK(contains(msg, "SGD"));
  }
  SUBCASE("a tensor of the wrong shape") {
    OptimizerState s = before;
    for (auto& [n, t] : s.tensors)
      if (n == "exp_avg_sq.1") t = Tensor::zeros({3});
    s.reals["lr"] = 123.0;
    const std::string msg = error_of([&] { opt.load_state_dict(s); });
    CHECK(contains(msg, "exp_avg_sq.1"));
    CHECK(contains(msg, "[3]"));
  }
  SUBCASE("another parameter count") {
    OptimizerState s = before;
    s.ints["num_params"] = 3;
    CHECK(contains(error_of([&] { opt.load_state_dict(s); }), "3 parameters"));
  }
  SUBCASE("step count without moments") {
    OptimizerState s = before;
    s.tensors.erase(s.tensors.begin());  // exp_avg.0
    CHECK(contains(error_of([&] { opt.load_state_dict(s); }), "exp_avg"));
  }
  SUBCASE("an unknown tensor") {
    OptimizerState s = before;
    s.tensors.emplace_back("velocity.0", Tensor::zeros({3}));
    CHECK(contains(error_of([&] { opt.load_state_dict(s); }), "velocity.0"));
  }
  SUBCASE("a tensor named with a leading zero (accepted, it would then be dropped)") {
    OptimizerState s = before;
    for (auto& [n, t] : s.tensors)
      if (n == "exp_avg.1") n = "exp_avg.01";
    CHECK(contains(error_of([&] { opt.load_state_dict(s); }), "unexpected tensor 'exp_avg.01'"));
  }
  SUBCASE("an invalid hyperparameter") {
    OptimizerState s = before;
    s.reals["beta1"] = 1.5;
    CHECK(contains(error_of([&] { opt.load_state_dict(s); }), "betas"));
  }
  CHECK(same_state(opt.state_dict(), before));
  CHECK(opt.lr() == 0.01);
}

TEST_CASE("a checkpoint round-trips every section") {
  TempDir dir;
  manual_seed(3);
  SeedCNN model(small_cnn());
  Adam opt(model.parameters(), test::adam_options(1e-3, 0.9, 0.999, 1e-8, 0.0, true));
  CosineAnnealingLR sched(opt, 8);
  train_steps(model, opt, &sched, 2);
  Generator extra(77, 5);
  extra.next_u32();
  Checkpoint c = capture(model, opt, &sched, 1, 2, LoaderState{1, 3}, {{"lr", "0.001"}, {"batch_size", "16"}},
                         {{"augment", &extra}});
  c.metadata = {{"volt_version", "0.1.0"}, {"note", std::string("bytes\0inside", 12)}};
  LossScalerState ls;
  ls.type = "GradScaler";
  ls.reals["scale"] = 65536.0;
  ls.ints["growth_tracker"] = 17;
  c.loss_scaler = ls;
  const std::string path = dir.path + "/run.ckpt";
  save_checkpoint(path, c);
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path)) files += e.path().filename() == "run.ckpt" ? 1 : 100;
  CHECK(files == 1);  // no temporary left behind

  const Checkpoint r = load_checkpoint(path);
  CHECK(r.source == path);
  REQUIRE(r.model.size() == c.model.size());
  for (size_t i = 0; i < c.model.size(); ++i) {
    CHECK(r.model[i].first == c.model[i].first);
    CHECK(bit_identical(r.model[i].second, c.model[i].second));
  }
  REQUIRE(r.optim.has_value());
  CHECK(same_state(*r.optim, *c.optim));
  REQUIRE(r.scheduler.has_value());
  CHECK(same_state(*r.scheduler, *c.scheduler));
  REQUIRE(r.loss_scaler.has_value());
  CHECK(same_state(*r.loss_scaler, ls));
  REQUIRE(r.rng.size() == 5);
  for (size_t i = 0; i < 5; ++i) {
    CHECK(r.rng[i].name == c.rng[i].name);
    CHECK(r.rng[i].seed == c.rng[i].seed);
    CHECK(r.rng[i].stream == c.rng[i].stream);
    CHECK(r.rng[i].offset == c.rng[i].offset);
  }
  CHECK(r.rng[1].name == "default.dropout");
  CHECK(r.rng[1].offset == default_generator(kStreamDropout).offset());
  CHECK(r.rng[1].offset > 0);  // dropout drew masks
  CHECK(r.rng[4].name == "augment");
  CHECK(r.epoch == 1);
  CHECK(r.global_step == 2);
  CHECK(r.loader.epoch == 1);
  CHECK(r.loader.next_batch == 3);
  CHECK(r.hparams == c.hparams);
  CHECK(r.metadata == c.metadata);

  // Without optional sections.
  Checkpoint bare;
  bare.model = c.model;
  save_checkpoint(path, bare);
  const Checkpoint rb = load_checkpoint(path);
  CHECK_FALSE(rb.optim.has_value());
  CHECK_FALSE(rb.scheduler.has_value());
  CHECK_FALSE(rb.loss_scaler.has_value());
  CHECK(rb.rng.empty());

  // Restore puts every generator back, the extra one included.
  Generator extra2(1, 1);
  manual_seed(1234);
  SeedCNN model2(small_cnn());
  Adam opt2(model2.parameters(), AdamOptions{});
  CosineAnnealingLR sched2(opt2, 8);
  restore(r, model2, opt2, &sched2, nullptr, {{"augment", &extra2}});
  CHECK(test::same_state(model2, test::snapshot(model)));
  CHECK(same_state(opt2.state_dict(), opt.state_dict()));
  CHECK(sched2.last_epoch() == 2);
  CHECK(extra2.seed() == 77);
  CHECK(extra2.stream() == 5);
  CHECK(extra2.offset() == extra.offset());
  for (uint64_t s = 0; s < 4; ++s) CHECK(default_generator(s).offset() == c.rng[s].offset);
  CHECK(contains(error_of([&] { restore(r, model2, opt2, &sched2, nullptr, {{"missing", &extra2}}); }), "missing"));
}

TEST_CASE("load_checkpoint rejects damaged and foreign files, naming the file") {
  TempDir dir;
  manual_seed(4);
  SeedCNN model(small_cnn());
  Adam opt(model.parameters(), AdamOptions{});
  StepLR sched(opt, 2);
  train_steps(model, opt, &sched, 1);
  const std::string good = dir.path + "/good.ckpt";
  save_checkpoint(good, capture(model, opt, &sched, 0, 1, LoaderState{0, 1}, {{"k", "v"}}));
  const std::string bytes = read_all(good);
  REQUIRE(bytes.size() > 1000);
  const std::string p = dir.path + "/bad.ckpt";

  SUBCASE("a flipped byte fails the checksum") {
    for (size_t at : {size_t(14), size_t(40), bytes.size() / 2, bytes.size() - 30, bytes.size() - 1}) {
      std::string bad = bytes;
      bad[at] = char(bad[at] ^ 0x04);
      write_all(p, bad);
      const std::string msg = error_of([&] { load_checkpoint(p); });
      INFO("flipped byte " << at << ": " << msg);
      CHECK(contains(msg, p));
      CHECK(contains(msg, "checksum"));
    }
  }
  SUBCASE("truncated") {
    for (size_t keep : {bytes.size() - 1, bytes.size() - 4, bytes.size() / 2, size_t(19), size_t(12), size_t(8),
                        size_t(3), size_t(0)}) {
      write_all(p, bytes.substr(0, keep));
      const std::string msg = error_of([&] { load_checkpoint(p); });
      INFO("kept " << keep << " bytes: " << msg);
      CHECK(contains(msg, p));
    }
  }
  SUBCASE("wrong magic") {
    std::string bad = bytes;
    std::memcpy(&bad[0], "VOLTTENS", 8);
    write_all(p, bad);
    const std::string msg = error_of([&] { load_checkpoint(p); });
    CHECK(contains(msg, p));
    CHECK(contains(msg, "magic"));
    // A tensor file is not a checkpoint.
    save_tensors(p, {{"w", Tensor::ones({2})}});
    CHECK(contains(error_of([&] { load_checkpoint(p); }), "magic"));
  }
  SUBCASE("another format version") {
    std::string bad = bytes;
    const uint32_t v = 2;
    std::memcpy(&bad[8], &v, 4);
    write_all(p, with_fixed_crc(bad));
    const std::string msg = error_of([&] { load_checkpoint(p); });
    CHECK(contains(msg, p));
    CHECK(contains(msg, "version 2"));
  }
  SUBCASE("a section length that disagrees with its contents (checksum intact)") {
    const size_t at = find_section(bytes, "PROG");
    REQUIRE(at != std::string::npos);
    std::string bad = bytes;
    uint64_t len;
    std::memcpy(&len, &bad[at + 4], 8);
    len -= 8;
    std::memcpy(&bad[at + 4], &len, 8);
    write_all(p, with_fixed_crc(bad));
    const std::string msg = error_of([&] { load_checkpoint(p); });
    CHECK(contains(msg, p));
    CHECK(contains(msg, "PROG"));
    len += 1000000;
    std::memcpy(&bad[at + 4], &len, 8);
    write_all(p, with_fixed_crc(bad));
    CHECK(contains(error_of([&] { load_checkpoint(p); }), "PROG"));
  }
  SUBCASE("unknown sections: required ones fail, optional (lower-case) ones are skipped") {
    const size_t at = find_section(bytes, "META");
    REQUIRE(at != std::string::npos);
    std::string bad = bytes;
    std::memcpy(&bad[at], "ZZZZ", 4);
    write_all(p, with_fixed_crc(bad));
    const std::string msg = error_of([&] { load_checkpoint(p); });
    CHECK(contains(msg, p));
    CHECK(contains(msg, "ZZZZ"));
    std::memcpy(&bad[at], "zext", 4);
    write_all(p, with_fixed_crc(bad));
    const Checkpoint c = load_checkpoint(p);
    CHECK(c.metadata.empty());
    CHECK(c.hparams.at("k") == "v");
  }
  SUBCASE("a missing file and a directory") {
    CHECK(contains(error_of([&] { load_checkpoint(dir.path + "/nope.ckpt"); }), "nope.ckpt"));
    CHECK(contains(error_of([&] { load_checkpoint(dir.path); }), dir.path));
  }
  SUBCASE("a failed save leaves the old checkpoint and no temporary") {
    Checkpoint c = capture(model, opt, &sched, 0, 1, LoaderState{0, 1});
    c.model.emplace_back("undefined", Tensor());
    CHECK(contains(error_of([&] { save_checkpoint(good, c); }), "undefined"));
    CHECK(read_all(good) == bytes);
    c.model.pop_back();
    CHECK(contains(error_of([&] { save_checkpoint(dir.path + "/no_dir/x.ckpt", c); }), "no_dir"));
    int files = 0;
    for (auto& e : std::filesystem::directory_iterator(dir.path)) files += e.path().filename() == "good.ckpt" ? 1 : 100;
    CHECK(files == 1);
  }
}

TEST_CASE("restoring a checkpoint of another model fails, naming the tensor, and changes nothing") {
  TempDir dir;
  manual_seed(5);
  SeedCNN gray(small_cnn(1));  // 1 input channel
  Adam gray_opt(gray.parameters(), AdamOptions{});
  train_steps(gray, gray_opt, nullptr, 1, 1);
  const std::string path = dir.path + "/gray.ckpt";
  save_checkpoint(path, capture(gray, gray_opt, nullptr, 0, 1, LoaderState{}));
  const Checkpoint c = load_checkpoint(path);

  manual_seed(6);
  SeedCNN rgb(small_cnn(3));
  Adam opt(rgb.parameters(), AdamOptions{});
  CosineAnnealingLR sched(opt, 4);
  train_steps(rgb, opt, &sched, 1);
  const StateDict before = test::snapshot(rgb);
  const OptimizerState opt_before = opt.state_dict();
  const uint64_t dropout_offset = default_generator(kStreamDropout).offset();

  std::string msg = error_of([&] { restore(c, rgb, opt, nullptr); });
  INFO(msg);
  CHECK(contains(msg, path));
  CHECK(contains(msg, "block1.0.weight"));
  CHECK(contains(msg, "[64, 1, 5, 5]"));
  CHECK(contains(msg, "[64, 3, 5, 5]"));
  CHECK_FALSE(contains(msg, "block1.0.bias"));  // same shape in both
  CHECK(test::same_state(rgb, before));
  CHECK(same_state(opt.state_dict(), opt_before));
  CHECK(default_generator(kStreamDropout).offset() == dropout_offset);

  // Missing and unexpected names are listed too.
  Checkpoint renamed = c;
  renamed.model[0].first = "block9.weight";
  msg = error_of([&] { restore(renamed, rgb, opt, nullptr); });
  CHECK(contains(msg, "block9.weight"));
  CHECK(contains(msg, "Missing"));
  CHECK(contains(msg, "Unexpected"));
  CHECK(test::same_state(rgb, before));

  // A matching model but a scheduler the checkpoint lacks: still nothing changes.
  manual_seed(5);
  SeedCNN gray2(small_cnn(1));
  Adam gray2_opt(gray2.parameters(), AdamOptions{});
  CosineAnnealingLR gray2_sched(gray2_opt, 4);
  const StateDict gray2_before = test::snapshot(gray2);
  msg = error_of([&] { restore(c, gray2, gray2_opt, &gray2_sched); });
  CHECK(contains(msg, "scheduler"));
  CHECK(test::same_state(gray2, gray2_before));
  CHECK(gray2_opt.step_count(0) == 0);
}

namespace {

// One training run of the seed CNN (dropout 0.2) on 64 synthetic images: Adam, cosine schedule
// stepped per epoch, shuffled loader with 2 workers, batch 16 (4 batches per epoch).
struct Run {
  std::unique_ptr<SeedCNN> model;
  std::unique_ptr<Adam> opt;
  std::unique_ptr<CosineAnnealingLR> sched;
  std::unique_ptr<DataLoader> loader;
  int64_t global_step = 0;

  explicit Run(uint64_t seed) {
    manual_seed(seed);
    SyntheticOptions so;
    so.size = 64;
    so.height = so.width = 16;
    so.seed = 42;
    model = std::make_unique<SeedCNN>(small_cnn(3));
    opt = std::make_unique<Adam>(model->parameters(), test::adam_options(2e-3));
    sched = std::make_unique<CosineAnnealingLR>(*opt, 4);
    LoaderOptions lo;
    lo.batch_size = 16;
    lo.shuffle = true;
    lo.num_workers = 2;
    lo.seed = 9;
    loader = std::make_unique<DataLoader>(std::make_shared<SyntheticDataset>(so), lo);
  }

  // Trains from `from` up to the end of epoch end_epoch - 1; with stop_epoch >= 0, returns early
  // once batch stop_batch of epoch stop_epoch is next. Returns the loader position reached.
  LoaderState train(LoaderState from, int64_t end_epoch, int64_t stop_epoch = -1, int64_t stop_batch = -1) {
    loader->load_state(from);
    for (int64_t e = from.epoch; e < end_epoch; ++e) {
      if (e != from.epoch) loader->set_epoch(e);
      Batch b;
      while (loader->next(b)) {
        opt->zero_grad();
        Tensor loss = cross_entropy((*model)(b.images), b.labels);
        loss.backward();
        opt->step();
        ++global_step;
        if (e == stop_epoch && loader->state().next_batch == stop_batch) return loader->state();
      }
      sched->step();
    }
    return {end_epoch, 0};
  }
};

void check_bit_identical(const Module& got, const Module& want) {
  const auto a = got.state_dict().items(), b = want.state_dict().items();
  REQUIRE(a.size() == b.size());
  int differing = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].first == b[i].first);
    if (!bit_identical(a[i].second, b[i].second)) {
      ++differing;
      MESSAGE("differs: " << a[i].first);
    }
  }
  CHECK(differing == 0);
}

}  // namespace

TEST_CASE("exact resume: an interrupted run ends bit-identical to an uninterrupted one") {
  ThreadsGuard threads(2);
  TempDir dir;
  const std::string path = dir.path + "/resume.ckpt";

  Run full(1);
  full.train({0, 0}, 4);
  CHECK(full.global_step == 16);
  const uint64_t full_dropout_offset = default_generator(kStreamDropout).offset();

  auto resume = [&](const LoaderState& at, int64_t epoch) {
    std::unique_ptr<Run> fresh = std::make_unique<Run>(999);  // a different seed: state must come from the file
    Checkpoint c = load_checkpoint(path);
    CHECK_FALSE(bit_identical(fresh->model->state_dict().items()[0].second, c.model[0].second));
    restore(c, *fresh->model, *fresh->opt, fresh->sched.get(), fresh->loader.get());
    fresh->global_step = c.global_step;
    CHECK(c.epoch == epoch);
    CHECK(c.loader.epoch == at.epoch);
    CHECK(c.loader.next_batch == at.next_batch);
    CHECK(c.hparams.at("optimizer") == "Adam");
    fresh->train(c.loader, 4);
    return fresh;
  };

  SUBCASE("at an epoch boundary (after epoch 2 of 4)") {
    {
      Run first(1);
      first.train({0, 0}, 2);
      CHECK(first.sched->last_epoch() == 2);
      save_checkpoint(path, capture(*first.model, *first.opt, first.sched.get(), 2, first.global_step, LoaderState{2, 0},
                                    {{"optimizer", "Adam"}}));
    }  // everything of the first half is destroyed
    std::unique_ptr<Run> resumed = resume({2, 0}, 2);
    CHECK(resumed->global_step == 16);
    CHECK(resumed->sched->last_epoch() == 4);
    CHECK(resumed->opt->lr() == full.opt->lr());
    CHECK(default_generator(kStreamDropout).offset() == full_dropout_offset);
    check_bit_identical(*resumed->model, *full.model);
    CHECK(same_state(resumed->opt->state_dict(), full.opt->state_dict()));
  }
  SUBCASE("mid-epoch (after batch 2 of epoch 2)") {
    {
      Run first(1);
      const LoaderState at = first.train({0, 0}, 4, 1, 2);
      CHECK(at.epoch == 1);
      CHECK(at.next_batch == 2);
      CHECK(first.global_step == 6);
      save_checkpoint(path, capture(*first.model, *first.opt, first.sched.get(), 1, first.global_step, at,
                                    {{"optimizer", "Adam"}}));
    }
    std::unique_ptr<Run> resumed = resume({1, 2}, 1);
    CHECK(resumed->global_step == 16);
    check_bit_identical(*resumed->model, *full.model);
    CHECK(same_state(resumed->opt->state_dict(), full.opt->state_dict()));
  }
  SUBCASE("control: without the dropout stream's state the runs diverge") {
    {
      Run first(1);
      first.train({0, 0}, 2);
      save_checkpoint(path, capture(*first.model, *first.opt, first.sched.get(), 2, first.global_step, LoaderState{2, 0},
                                    {{"optimizer", "Adam"}}));
    }
    Run fresh(999);
    Checkpoint c = load_checkpoint(path);
    restore(c, *fresh.model, *fresh.opt, fresh.sched.get(), fresh.loader.get());
    default_generator(kStreamDropout).set_offset(0);  // forget where dropout was
    fresh.train(c.loader, 4);
    bool all_same = true;
    const auto a = fresh.model->state_dict().items(), b = full.model->state_dict().items();
    for (size_t i = 0; i < a.size(); ++i) all_same = all_same && bit_identical(a[i].second, b[i].second);
    CHECK_FALSE(all_same);
  }
}
