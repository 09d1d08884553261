// The Trainer's evaluation: validate() and test() (a checkpoint's weights, the data module's
// loader, a table of the metrics) and the loop they share.
#include <chrono>
#include <cstdio>
#include <ostream>

#include "dist/profiler.h"
#include "dist/trainer.h"
#include "dist/trainer_internal.h"
#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/random.h"

namespace volt {

namespace {

void print_table(std::ostream& os, const std::string& title, const std::map<std::string, double>& m) {
  if (m.empty()) {  // no batches (limit_*_batches 0, as Lightning: nothing to show) or nothing logged
    os << title << "s: none (no batches evaluated, or nothing logged)\n";
    return;
  }
  const std::string rule(60, '-');
  char line[256];
  os << rule << "\n";
  std::snprintf(line, sizeof line, "%-30s %s\n", title.c_str(), "DataLoader 0");
  os << line << rule << "\n";
  for (const auto& [k, v] : m) {
    std::snprintf(line, sizeof line, "%-30s %.6g\n", k.c_str(), v);
    os << line;
  }
  os << rule << "\n";
}

}  // namespace

std::map<std::string, double> Trainer::eval_loop(LightningModule& module, MetricStore& s,
                                                 const std::function<bool(int64_t, Batch&)>& next, int64_t n, bool test,
                                                 Profiler& prof, Communicator& comm, DType compute,
                                                 const StepLog& log_step) {
  module.eval();
  NoGradGuard ng;
  Autocast autocast(compute);
  s.clear_epoch();
  s.clear_step();
  s.set_stage(test ? "test" : "val");
  module.store_ = &s;
  if (test)
    module.on_test_epoch_start();
  else
    module.on_validation_epoch_start();
  for (int64_t i = 0; i < n; ++i) {
    Batch b;
    if (!next(i, b)) break;
    s.set_batch_size(b.labels.numel());
    s.clear_step();
    {
      Profiler::Scope sc(prof, test ? "test_step" : "validation_step");
      if (test)
        module.test_step(b, i);
      else
        module.validation_step(b, i);
    }
    if (log_step) {
      std::map<std::string, double> step_log;
      for (const auto& [k, e] : s.step_values())
        if (e->logger) step_log[k] = e->get();
      if (!step_log.empty()) log_step(step_log);
    }
  }
  if (test)
    module.on_test_epoch_end();
  else
    module.on_validation_epoch_end();
  module.store_ = nullptr;
  s.reduce_epoch(comm);
  return s.epoch_means();
}

std::map<std::string, double> Trainer::run_eval(LightningModule& module, DataLoader& loader, int64_t limit,
                                                bool is_test) {
  const int64_t fast = opts_.fast_dev_run.batches;
  const int64_t total = loader.num_batches();
  const int64_t n = fast ? std::min(fast, total) : limit;
  module.comm_ = world_size() > 1 ? comm_.get() : nullptr;
  struct Detach {
    LightningModule& m;
    ~Detach() { m.comm_ = nullptr; }
  } detach{module};
  module.to(device_);
  loader.set_epoch(0);
  const auto t0 = std::chrono::steady_clock::now();
  Profiler& prof = impl_->profiler;
  prof.clear();  // this stage's rows only, reported at its end
  prof.wrap(module);
  struct Unwrap {
    Profiler& p;
    ~Unwrap() { p.unwrap(); }
  } unwrap{prof};
  const auto next = [&](int64_t, Batch& b) {
    if (!loader.next(b)) return false;
    batch_to(b, device_);
    return true;
  };
  auto m = eval_loop(module, impl_->eval_store, next, n, is_test, impl_->profiler, *comm_, compute_dtype_,
                     eval_step_logger());
  take_epoch_means(impl_->eval_store, m);
  if (is_global_zero())
    prof.report(out(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                is_test ? "test" : "validate");
  return m;
}

void Trainer::take_epoch_means(const MetricStore& s, const std::map<std::string, double>& means) {
  std::map<std::string, double> with_bases = means;
  s.add_base_names(with_bases);
  for (const auto& [k, v] : with_bases) callback_metrics_[k] = v;
}

Trainer::StepLog Trainer::eval_step_logger() {
  if (!impl_->loggers) return {};
  return [this](const std::map<std::string, double>& values) {
    impl_->loggers->log_metrics(values, impl_->eval_log_step++, std::nullopt);
  };
}

void Trainer::log_eval_means() {
  const auto logged = impl_->eval_store.epoch_means(true);  // without those logged with logger=false
  for (const auto& [k, v] : logged) logged_metrics_[k] = v;
  if (impl_->loggers) {
    impl_->loggers->log_metrics(logged, global_step_, epoch_);
    impl_->loggers->flush();
  }
}

std::vector<std::map<std::string, double>> Trainer::validate(LightningModule& module, DataModule& dm,
                                                             const std::string& ckpt) {
  if (opts_.seed) manual_seed(*opts_.seed);
  impl_->eval_log_step = 0;
  const std::string path = resolve_ckpt(ckpt, "validate");
  if (!path.empty()) load_weights(module, path);
  setup_data(dm, "validate");
  auto loader = dm.val_loader();
  auto m = run_eval(module, *loader, opts_.limit_val_batches.of(loader->num_batches()), false);
  log_eval_means();
  print_table(out(), "Validate metric", m);
  return {m};
}

std::vector<std::map<std::string, double>> Trainer::test(LightningModule& module, DataModule& dm,
                                                         const std::string& ckpt) {
  if (opts_.seed) manual_seed(*opts_.seed);
  impl_->eval_log_step = 0;
  const std::string path = resolve_ckpt(ckpt, "test");
  if (!path.empty()) {
    load_weights(module, path);
    out() << "Testing with the weights of " << path << "\n";
  }
  setup_data(dm, "test");
  auto loader = dm.test_loader();
  struct SinkGuard {
    LightningModule& m;
    ~SinkGuard() { m.image_sink_ = nullptr; }
  } sink_guard{module};
  if (impl_->loggers)
    module.image_sink_ = [this](const std::string& tag, const Tensor& image) {
      impl_->loggers->log_image(tag, image, global_step_);
    };
  auto m = run_eval(module, *loader, opts_.limit_test_batches.of(loader->num_batches()), true);
  log_eval_means();
  print_table(out(), "Test metric", m);
  return {m};
}

}  // namespace volt
