// LightningModule's log() and metric bookkeeping, and ClassifierModule (see lightning_module.h).
#include "dist/lightning_module.h"

#include <functional>
#include <vector>

#include "engine/cuda_graph.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace volt {

double MetricStore::Entry::get() const { return value + (device.defined() ? double(device.item()) : 0.0); }

namespace {
struct Flags {
  bool on_step, on_epoch;
  double w;
};
Flags flags_of(const std::string& name, const std::string& stage, bool in_epoch_hook, const LogOptions& o,
               int64_t batch_size, int64_t current) {
  const bool training = stage == "train" && !in_epoch_hook;
  const double w = double(batch_size < 0 ? current : batch_size);
  VOLT_CHECK(w > 0, "log(\"", name, "\"): batch_size must be positive, got ", w);
  return {o.on_step.value_or(training), o.on_epoch.value_or(!training), w};
}

// The step and epoch entries' names: log()'s name, or, logged both on_step and on_epoch, name_step
// and name_epoch (as Lightning, so that the two series do not share one name in the logs).
std::string step_key(const std::string& name, bool forked) { return forked ? name + "_step" : name; }
std::string epoch_key(const std::string& name, bool forked) { return forked ? name + "_epoch" : name; }
}  // namespace

// The host-side bookkeeping of one log() (also what replay_logs() repeats).
void MetricStore::mark(const std::string& name, bool on_step, bool on_epoch, double w, const LogOptions& o) {
  const bool forked = on_step && on_epoch;
  if (on_step) {
    Entry& e = step_[step_key(name, forked)];
    e.base = forked ? name : std::string();
    e.weight = 1.0;
    e.prog_bar = o.prog_bar;
    e.logger = o.logger;
    e.sync_dist = o.sync_dist;
    e.fresh = true;
  }
  if (on_epoch) {
    Entry& e = epoch_[epoch_key(name, forked)];
    e.base = forked ? name : std::string();
    e.weight += w;
    e.prog_bar = e.prog_bar || o.prog_bar;
    e.logger = o.logger;
  }
}

void MetricStore::add(const std::string& name, double value, const LogOptions& o, int64_t batch_size) {
  VOLT_CHECK(!cuda_graph_capturing(), "log(\"", name, "\"): a host value cannot be logged inside a captured CUDA graph "
             "step (it would not change at replays); log a GPU tensor");
  const Flags f = flags_of(name, stage_, in_epoch_hook_, o, batch_size, batch_size_);
  mark(name, f.on_step, f.on_epoch, f.w, o);
  const bool forked = f.on_step && f.on_epoch;
  if (f.on_step) {
    Entry& e = step_[step_key(name, forked)];
    e.value = value;
    if (e.device.defined()) e.device.zero_();
  }
  if (f.on_epoch) epoch_[epoch_key(name, forked)].value += value * f.w;
}

void MetricStore::add(const std::string& name, const Tensor& value, const LogOptions& o, int64_t batch_size) {
  VOLT_CHECK(value.defined() && value.numel() == 1, "log(\"", name, "\"): expected a one-element tensor, got ",
             value.defined() ? shape_str(value.shape()) : std::string("an undefined tensor"));
  if (value.device().is_cpu()) return add(name, double(value.item()), o, batch_size);
  const Flags f = flags_of(name, stage_, in_epoch_hook_, o, batch_size, batch_size_);
  const Tensor v = value.detach().reshape({}).to(DType::F32);
  const bool capturing = cuda_graph_capturing();
  auto slot = [&](Entry& e) -> Tensor& {
    if (!e.device.defined() || e.device.device() != v.device()) {
      // Made (and zeroed) outside a captured step: zeroing inside one would repeat at every replay.
      VOLT_CHECK(!capturing, "log(\"", name, "\"): first logged inside a captured CUDA graph step; log it in the "
                 "steps before the capture too");
      e.device = Tensor::zeros({}, DType::F32, v.device());
    }
    return e.device;
  };
  const bool forked = f.on_step && f.on_epoch;
  if (f.on_step) {
    Entry& e = step_[step_key(name, forked)];
    e.value = 0;
    slot(e).copy_(v);
  }
  if (f.on_epoch) {
    Tensor& acc = slot(epoch_[epoch_key(name, forked)]);
    add_(acc, v, float(f.w));
  }
  // A captured step runs only when replayed: its host side is applied then (replay_logs).
  if (capturing)
    captured_.push_back({name, f.on_step, f.on_epoch, f.w, o});
  else
    mark(name, f.on_step, f.on_epoch, f.w, o);
}

void MetricStore::replay_logs() {
  for (const Captured& c : captured_) mark(c.name, c.on_step, c.on_epoch, c.weight, c.options);
}

void MetricStore::clear_step() {
  for (auto& [n, e] : step_) e.fresh = false;
}

void MetricStore::clear_epoch() {
  reduced_ = false;
  for (auto& [n, e] : epoch_) {
    e.value = e.weight = 0;
    if (e.device.defined()) e.device.zero_();
  }
}

std::map<std::string, const MetricStore::Entry*> MetricStore::step_values() const {
  std::map<std::string, const Entry*> out;
  for (const auto& [n, e] : step_)
    if (e.fresh) out[n] = &e;
  return out;
}

std::map<std::string, double> MetricStore::epoch_means(bool logger_only) const {
  std::map<std::string, double> out;
  for (const auto& [n, e] : epoch_)
    if (e.weight > 0 && (!logger_only || e.logger)) out[n] = e.get() / e.weight;
  return out;
}

void MetricStore::add_base_names(std::map<std::string, double>& means) const {
  for (const auto& [n, e] : epoch_)
    if (!e.base.empty())
      if (auto it = means.find(n); it != means.end()) means[e.base] = it->second;
}

std::map<std::string, double> MetricStore::epoch_prog_bar() const {
  std::map<std::string, double> out;
  for (const auto& [n, e] : epoch_)
    if (e.weight > 0 && e.prog_bar) out[n] = e.get() / e.weight;
  return out;
}

namespace {
// The same names on every rank, or the reductions would mix different metrics (or, where one rank
// has none, leave the others waiting in an all-reduce it never joins).
void check_same_names(Communicator& comm, const std::string& names, const char* what) {
  const int64_t h = int64_t(std::hash<std::string>{}(names) & 0x7fffffffffffffffLL);
  VOLT_CHECK(all_ranks_agree(comm, h), "metrics: the ranks logged different ", what, " (this rank: ",
             names.empty() ? std::string("none") : names, "); every rank must log the same names");
}
}  // namespace

void MetricStore::reduce_epoch(Communicator& comm) {
  if (comm.size() == 1 || reduced_) return;
  const auto sums = epoch_sums(comm);  // the device parts join the host sums
  reduced_ = true;
  for (auto& [n, e] : epoch_) {
    const EpochSum& s = sums.at(n);
    e.value = s.sum;
    e.weight = s.weight;
    if (e.device.defined()) e.device.zero_();
  }
}

std::map<std::string, MetricStore::EpochSum> MetricStore::epoch_sums(Communicator& comm) const {
  std::map<std::string, EpochSum> out;
  std::vector<double> v;
  std::string names;
  for (const auto& [n, e] : epoch_) {
    v.insert(v.end(), {e.get(), e.weight});
    names += n + '\n';
  }
  if (comm.size() > 1 && !reduced_) {
    check_same_names(comm, names, "epoch metrics");
    if (!v.empty()) comm.all_reduce(v.data(), v.size(), ReduceOp::Sum);
  }
  size_t i = 0;
  for (const auto& [n, e] : epoch_) {
    EpochSum& s = out[n];
    s.sum = v[i++];
    s.weight = v[i++];
    s.prog_bar = e.prog_bar;
    s.logger = e.logger;
  }
  return out;
}

void MetricStore::restore_epoch_sums(const std::map<std::string, EpochSum>& sums, bool take_values) {
  for (const auto& [n, s] : sums) {
    Entry& e = epoch_[n];  // in place: a captured CUDA graph may write its device scalar
    e.value = take_values ? s.sum : 0.0;
    e.weight = take_values ? s.weight : 0.0;
    if (e.device.defined()) e.device.zero_();
    e.prog_bar = s.prog_bar;
    e.logger = s.logger;
  }
}

void MetricStore::reduce_step(Communicator& comm) {
  if (comm.size() == 1) return;
  std::vector<double> v;
  std::string names;
  for (const auto& [n, e] : step_)
    if (e.fresh && e.sync_dist) {
      v.push_back(e.get());
      names += n + '\n';
    }
  check_same_names(comm, names, "sync_dist step metrics");
  if (v.empty()) return;
  comm.all_reduce(v.data(), v.size(), ReduceOp::Avg);
  size_t i = 0;
  for (auto& [n, e] : step_)
    if (e.fresh && e.sync_dist) {
      e.value = v[i++];
      if (e.device.defined()) e.device.zero_();
    }
}

void LightningModule::log(const std::string& name, double value, const LogOptions& opts, int64_t batch_size) {
  if (store_) store_->add(name, value, opts, batch_size);
}

void LightningModule::log(const std::string& name, const Tensor& value, const LogOptions& opts, int64_t batch_size) {
  VOLT_CHECK(value.defined() && value.numel() == 1, "log(\"", name, "\"): expected a one-element tensor, got ",
             value.defined() ? shape_str(value.shape()) : std::string("an undefined tensor"));
  if (store_) store_->add(name, value, opts, batch_size);
}

void LightningModule::log_image(const std::string& tag, const Tensor& image) {
  if (image_sink_) image_sink_(tag, image);
}

ClassifierModule::ClassifierModule(std::shared_ptr<Module> model, const ClassifierOptions& opts)
    : model_(register_module("model", std::move(model))), o_(opts) {
  VOLT_CHECK(model_ != nullptr, "ClassifierModule: no model given");
}

Tensor ClassifierModule::training_step(const Batch& batch, int64_t) {
  Tensor logits = forward(batch.images);
  Tensor loss = cross_entropy(logits, batch.labels, Reduction::Mean, o_.label_smoothing);
  LogOptions lo;
  lo.prog_bar = true;
  log("train_loss", loss, lo);
  return loss;
}

void ClassifierModule::update_metrics(const Tensor& logits, const Tensor& labels) {
  if (!metrics_ || metrics_->num_classes() != logits.size(1)) metrics_.emplace(logits.size(1));
  metrics_->update(logits, labels);
}

void ClassifierModule::validation_step(const Batch& batch, int64_t) {
  Tensor logits = forward(batch.images);
  LogOptions bar;
  bar.prog_bar = true;
  log("val_loss", cross_entropy(logits, batch.labels));
  log("val_acc", batch_accuracy(logits, batch.labels), bar);
  update_metrics(logits, batch.labels);
}

void ClassifierModule::test_step(const Batch& batch, int64_t) {
  Tensor logits = forward(batch.images);
  log("test_loss", cross_entropy(logits, batch.labels));
  log("test_acc", batch_accuracy(logits, batch.labels));
  update_metrics(logits, batch.labels);
}

void ClassifierModule::on_validation_epoch_start() {
  if (metrics_) metrics_->reset();
}

void ClassifierModule::on_test_epoch_start() {
  if (metrics_) metrics_->reset();
}

// Sums the counts over the ranks of a data-parallel run (every rank ran at least one batch).
void ClassifierModule::reduce_metrics() {
  Communicator* c = communicator();
  if (!c || !metrics_) return;
  std::vector<int64_t> v = metrics_->counts();
  c->all_reduce(v.data(), v.size(), ReduceOp::Sum);
  metrics_->load_counts(v);
}

// Epoch-level values are logged with weight 1: their epoch mean is the value itself.
void ClassifierModule::on_validation_epoch_end() {
  reduce_metrics();
  if (!metrics_ || metrics_->count() == 0) return;
  const ClassificationResult r = metrics_->compute();
  if (auto it = r.topk.find(5); it != r.topk.end()) log("val_acc_top5", it->second, {}, 1);
}

void ClassifierModule::on_test_epoch_end() {
  reduce_metrics();
  if (!metrics_ || metrics_->count() == 0) return;
  const ClassificationResult r = metrics_->compute();
  if (auto it = r.topk.find(5); it != r.topk.end()) log("test_acc_top5", it->second, {}, 1);
  const auto& per_class = r.per_class_accuracy;
  if (per_class.size() <= 20)
    for (size_t c = 0; c < per_class.size(); ++c) {
      const std::string name = c < o_.class_names.size() ? o_.class_names[c] : std::to_string(c);
      log("test_acc_class/" + name, per_class[c], {}, 1);
    }
  // 16 px a class up to 128 classes, then smaller cells for a side of at most 2048 px; past 2048
  // classes no image (a cell would be less than a pixel).
  const int64_t C = metrics_->num_classes();
  if (logs_images() && C <= 2048)
    log_image("test_confusion_matrix", metrics_->confusion_image(std::min<int64_t>(16, 2048 / C)));
}

double ClassifierModule::effective_weight_decay() const {
  if (o_.weight_decay) return *o_.weight_decay;
  return o_.optimizer == "adamw" ? AdamW::defaults().weight_decay : 0.0;
}

OptimizerConfig ClassifierModule::configure_optimizers() {
  OptimizerConfig c;
  // Every parameter, frozen ones too (requires_grad off: no gradient, so no update, until unfrozen).
  const std::vector<Tensor> params = parameters();
  if (o_.optimizer == "adam" || o_.optimizer == "adamw") {
    AdamOptions a = o_.optimizer == "adamw" ? AdamW::defaults() : AdamOptions{};
    a.lr = o_.lr;
    a.weight_decay = effective_weight_decay();
    if (o_.optimizer == "adamw")
      c.optimizer = std::make_shared<AdamW>(params, a);
    else
      c.optimizer = std::make_shared<Adam>(params, a);
  } else if (o_.optimizer == "sgd") {
    SGDOptions s;
    s.lr = o_.lr;
    s.momentum = o_.momentum;
    s.weight_decay = effective_weight_decay();
    c.optimizer = std::make_shared<SGD>(params, s);
  } else {
    VOLT_FAIL("ClassifierModule: unknown optimizer \"", o_.optimizer, "\" (choices: adam, adamw, sgd)");
  }
  if (o_.scheduler == "cosine") {
    c.scheduler = std::make_shared<CosineAnnealingLR>(*c.optimizer, std::max<int64_t>(1, o_.max_epochs));
  } else if (o_.scheduler == "step") {
    c.scheduler = std::make_shared<StepLR>(*c.optimizer, std::max<int64_t>(1, o_.max_epochs / 3));
  } else if (o_.scheduler == "onecycle") {
    VOLT_CHECK(o_.total_steps > 0, "ClassifierModule: scheduler \"onecycle\" needs total_steps > 0");
    OneCycleOptions oc;
    oc.max_lr = o_.lr;
    oc.total_steps = o_.total_steps;
    c.scheduler = std::make_shared<OneCycleLR>(*c.optimizer, oc);
    c.interval = "step";
    return c;
  } else {
    VOLT_CHECK(o_.scheduler.empty() || o_.scheduler == "none", "ClassifierModule: unknown scheduler \"", o_.scheduler,
               "\" (choices: none, cosine, step, onecycle)");
  }
  c.interval = "epoch";
  return c;
}

HParams ClassifierModule::hyperparameters() const {
  HParams h;
  h["model"] = model_->type_name();
  h["optimizer"] = o_.optimizer;
  h["lr"] = o_.lr;
  h["momentum"] = o_.momentum;
  h["weight_decay"] = effective_weight_decay();
  h["scheduler"] = o_.scheduler.empty() ? std::string("none") : o_.scheduler;
  h["num_parameters"] = double(model_->num_parameters());
  if (o_.label_smoothing != 0) h["label_smoothing"] = o_.label_smoothing;
  for (const auto& [k, v] : o_.extra_hparams) h[k] = v;
  return h;
}

}  // namespace volt
