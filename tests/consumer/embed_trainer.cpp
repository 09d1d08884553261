// Embedding Volt in another C++ project: its own layer, model module, in-memory dataset and data
// module, trained by Volt's Trainer through the installed package. Exits non-zero unless the run
// trains (loss falls, test accuracy well above chance) and writes its logs and checkpoint.
#include <volt/volt.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace {

// A custom layer: a learnable per-channel gain, y = x * gain[c] (gain broadcast over [N, C, H, W]).
class ChannelGain : public volt::Module {
 public:
  explicit ChannelGain(int64_t channels) {
    gain_ = register_parameter("gain", volt::Tensor::ones({1, channels, 1, 1}));
  }
  volt::Tensor forward(const volt::Tensor& x) override { return x * gain_; }
  std::string type_name() const override { return "ChannelGain"; }

 private:
  volt::Tensor gain_;
};

// Images of 1x8x8: class c (of 4) lights up quadrant c; the rest is low noise. Deterministic.
class QuadrantDataset : public volt::Dataset {
 public:
  QuadrantDataset(int64_t n, uint32_t seed) : n_(n), seed_(seed) {}
  int64_t size() const override { return n_; }
  volt::Shape image_shape() const override { return {1, 8, 8}; }
  int64_t num_classes() const override { return 4; }
  std::string name() const override { return "quadrants"; }
  int64_t get(int64_t index, uint8_t* dst) const override {
    VOLT_CHECK(index >= 0 && index < n_, "quadrants: index ", index, " out of range");
    uint32_t s = seed_ ^ uint32_t(index * 2654435761u);
    auto next = [&s] { return s = s * 1664525u + 1013904223u; };
    const int64_t label = int64_t(next() >> 30);  // 0..3
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x) {
        const bool lit = (y / 4) * 2 + (x / 4) == label;
        dst[y * 8 + x] = uint8_t((lit ? 150 : 0) + (next() >> 27) * 3);
      }
    return label;
  }

 private:
  int64_t n_;
  uint32_t seed_;
};

class QuadrantDataModule : public volt::DataModule {
 public:
  explicit QuadrantDataModule(const volt::DataModuleOptions& o) : DataModule(o) { set_transforms(1, false); }
  std::string name() const override { return "quadrants"; }
  void setup(const std::string& stage) override {
    if (!train_ && stage != "test") split(std::make_shared<QuadrantDataset>(640, 1), 128);
    if (!test_ && stage != "fit") test_ = std::make_shared<QuadrantDataset>(256, 2);
  }
  volt::Shape image_shape() const override { return {1, 8, 8}; }
  int64_t num_classes() const override { return 4; }
};

// The model module: a custom layer stack, its own steps, SGD with a per-step LR schedule.
class QuadrantNet : public volt::LightningModule {
 public:
  QuadrantNet() {
    net_ = register_module("net", std::make_shared<volt::Sequential>(std::vector<std::shared_ptr<volt::Module>>{
                                          std::make_shared<volt::Conv2d>(1, 8, 3, 1, 1),
                                          std::make_shared<ChannelGain>(8), std::make_shared<volt::ReLU>(),
                                          std::make_shared<volt::MaxPool2d>(2), std::make_shared<volt::Flatten>(),
                                          std::make_shared<volt::Linear>(8 * 4 * 4, 4)}));
  }
  volt::Tensor forward(const volt::Tensor& x) override { return (*net_)(x); }
  std::string type_name() const override { return "QuadrantNet"; }

  volt::Tensor training_step(const volt::Batch& b, int64_t) override {
    volt::Tensor loss = volt::cross_entropy(forward(b.images), b.labels);
    volt::LogOptions bar;
    bar.prog_bar = true;
    log("train_loss", loss, bar);
    volt::LogOptions epoch;
    epoch.on_step = false;
    epoch.on_epoch = true;
    log("train_loss_epoch_mean", loss, epoch);
    if (first_loss_ < 0) first_loss_ = loss.item();
    last_loss_ = loss.item();
    return loss;
  }
  void validation_step(const volt::Batch& b, int64_t) override {
    volt::Tensor logits = forward(b.images);
    log("val_loss", volt::cross_entropy(logits, b.labels));
    log("val_acc", volt::accuracy(logits, b.labels));
  }
  void test_step(const volt::Batch& b, int64_t) override {
    log("test_acc", volt::accuracy(forward(b.images), b.labels));
  }
  volt::OptimizerConfig configure_optimizers() override {
    volt::SGDOptions s;
    s.lr = 0.1;
    s.momentum = 0.9;
    volt::OptimizerConfig c;
    c.optimizer = std::make_shared<volt::SGD>(parameters(), s);
    c.scheduler = std::make_shared<volt::StepLR>(*c.optimizer, 20, 0.5);
    c.interval = "step";
    return c;
  }
  volt::HParams hyperparameters() const override { return {{"lr", 0.1}, {"model", std::string("QuadrantNet")}}; }

  float first_loss_ = -1, last_loss_ = -1;

 private:
  std::shared_ptr<volt::Sequential> net_;
};

}  // namespace

int main(int argc, char** argv) {
  const std::string root = argc > 1 ? argv[1] : "embed_runs";
  std::filesystem::remove_all(root);
  try {
    volt::manual_seed(7);
    volt::DataModuleOptions dmo;
    dmo.batch_size = 32;
    dmo.num_workers = 1;
    QuadrantDataModule dm(dmo);
    QuadrantNet model;

    volt::TrainerOptions to;
    to.max_epochs = 3;
    to.accelerator = "cpu";
    to.default_root_dir = root;
    to.enable_progress_bar = false;
    to.log_every_n_steps = 5;
    volt::Trainer trainer(to);
    trainer.fit(model, dm);
    const auto test = trainer.test(model, dm, "best");
    const double acc = test.at(0).at("test_acc");
    std::printf("embed_trainer: %lld steps, train loss %.4f -> %.4f, test_acc %.4f, logs in %s\n",
                (long long)trainer.global_step(), model.first_loss_, model.last_loss_, acc, trainer.log_dir().c_str());
    bool ok = true;
    auto expect = [&ok](bool cond, const char* what) {
      if (!cond) std::fprintf(stderr, "embed_trainer: FAILED: %s\n", what);
      ok = ok && cond;
    };
    expect(trainer.global_step() == 3 * 16, "3 epochs of 512/32 = 16 steps");
    expect(model.last_loss_ < 0.5f * model.first_loss_, "the training loss halves");
    expect(acc > 0.9, "test accuracy above 90% (chance is 25%)");
    expect(trainer.callback_metrics().count("train_loss_epoch_mean") == 1, "an on_epoch metric reaches the Trainer");
    expect(std::filesystem::exists(trainer.log_dir() + "/metrics.csv"), "metrics.csv written");
    expect(trainer.checkpoint_callback() && std::filesystem::exists(trainer.checkpoint_callback()->best_model_path()),
           "a checkpoint written");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "embed_trainer: error: %s\n", e.what());
    return 1;
  }
}
