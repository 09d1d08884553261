// Learning-rate schedules (see scheduler.h), following torch/optim/lr_scheduler.py.
#include "layers/optim/scheduler.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace volt {

LRScheduler::LRScheduler(Optimizer& opt) : opt_(opt), base_lr_(opt.lr()) {}

void LRScheduler::apply() {
  opt_.set_lr(lr_at(last_epoch_));
  apply_extra(last_epoch_);
}

void LRScheduler::step() {
  ++last_epoch_;
  apply();
}

void LRScheduler::set_last_epoch(int64_t t) {
  VOLT_CHECK(t >= 0, "scheduler: epoch must be non-negative, got ", t);
  last_epoch_ = t;
  apply();
}

SchedulerState LRScheduler::state_dict() const {
  SchedulerState s;
  s.type = type_name();
  s.ints["last_epoch"] = last_epoch_;
  s.reals["base_lr"] = base_lr_;
  return s;
}

void LRScheduler::check_state_dict(const SchedulerState& s) const {
  const std::string who = type_name() + " load_state_dict";
  VOLT_CHECK(s.type == type_name(), who, ": the state is from a ", s.type.empty() ? "(untyped)" : s.type,
             " scheduler, not ", type_name());
  const int64_t t = s.integer("last_epoch", who);
  VOLT_CHECK(t >= 0, who, ": last_epoch must be non-negative, got ", t);
  const double base = s.real("base_lr", who);
  VOLT_CHECK(base >= 0, who, ": base_lr must be non-negative, got ", base);
  VOLT_CHECK(s.tensors.empty(), who, ": unexpected tensor '", s.tensors.empty() ? "" : s.tensors[0].first, "' in the state");
  check_last_epoch(t, who);
}

void LRScheduler::load_state_dict(const SchedulerState& s) {
  check_state_dict(s);
  last_epoch_ = s.integer("last_epoch", "");
  base_lr_ = s.real("base_lr", "");
}

StepLR::StepLR(Optimizer& opt, int64_t step_size, double gamma) : LRScheduler(opt), step_size_(step_size), gamma_(gamma) {
  VOLT_CHECK(step_size > 0, "StepLR: step_size must be positive, got ", step_size);
  apply();
}

double StepLR::lr_at(int64_t t) const { return base_lr_ * std::pow(gamma_, double(t / step_size_)); }

CosineAnnealingLR::CosineAnnealingLR(Optimizer& opt, int64_t t_max, double eta_min)
    : LRScheduler(opt), t_max_(t_max), eta_min_(eta_min) {
  VOLT_CHECK(t_max > 0, "CosineAnnealingLR: T_max must be positive, got ", t_max);
  apply();
}

double CosineAnnealingLR::lr_at(int64_t t) const {
  const double pi = std::acos(-1.0);
  return eta_min_ + (base_lr_ - eta_min_) * (1.0 + std::cos(pi * double(t) / double(t_max_))) / 2.0;
}

LinearLR::LinearLR(Optimizer& opt, double start, double end, int64_t total)
    : LRScheduler(opt), start_(start), end_(end), total_(total) {
  VOLT_CHECK(start > 0 && start <= 1 && end >= 0 && end <= 1, "LinearLR: factors must be in (0, 1] and [0, 1], got ",
             start, " and ", end);
  VOLT_CHECK(total > 0, "LinearLR: total_iters must be positive, got ", total);
  apply();
}

double LinearLR::lr_at(int64_t t) const {
  const double f = start_ + (end_ - start_) * double(std::min(t, total_)) / double(total_);
  return base_lr_ * f;
}

OneCycleLR::OneCycleLR(Optimizer& opt, const OneCycleOptions& o) : LRScheduler(opt), o_(o) {
  VOLT_CHECK(o.total_steps > 0, "OneCycleLR: total_steps must be positive, got ", o.total_steps);
  VOLT_CHECK(o.pct_start >= 0 && o.pct_start <= 1, "OneCycleLR: pct_start must be in [0, 1], got ", o.pct_start);
  VOLT_CHECK(o.max_lr > 0 && o.div_factor > 0 && o.final_div_factor > 0, "OneCycleLR: max_lr and div factors must be positive");
  const double initial = o.max_lr / o.div_factor, min_lr = initial / o.final_div_factor;
  const double total = double(o.total_steps);
  if (o.three_phase) {
    phases_[0] = {o.pct_start * total - 1, initial, o.max_lr, o.max_momentum, o.base_momentum};
    phases_[1] = {2 * o.pct_start * total - 2, o.max_lr, initial, o.base_momentum, o.max_momentum};
    phases_[2] = {total - 1, initial, min_lr, o.max_momentum, o.max_momentum};
    n_phases_ = 3;
  } else {
    phases_[0] = {o.pct_start * total - 1, initial, o.max_lr, o.max_momentum, o.base_momentum};
    phases_[1] = {total - 1, o.max_lr, min_lr, o.base_momentum, o.max_momentum};
    n_phases_ = 2;
  }
  // A phase is entered by a step t with previous end < t <= its end (the first from t = 0, the last
  // for every t past the one before): one that spans no steps there would divide by zero (PyTorch
  // raises ZeroDivisionError), giving a NaN momentum and learning rate.
  VOLT_CHECK(phases_[0].end_step != 0 && phases_[n_phases_ - 1].end_step != phases_[n_phases_ - 2].end_step,
             "OneCycleLR: pct_start ", o.pct_start, " with total_steps ", o.total_steps, " leaves the ",
             phases_[0].end_step == 0 ? "first" : "last", " phase no steps (pct_start * total_steps must not be 1",
             o.three_phase ? ", nor (total_steps + 1) / 2" : ", and pct_start below 1", ")");
  base_lr_ = initial;
  apply();
}

double OneCycleLR::anneal(double start, double end, double pct) const {
  if (o_.cos_anneal) return end + (start - end) / 2.0 * (std::cos(std::acos(-1.0) * pct) + 1.0);
  return (end - start) * pct + start;
}

template <class F>
double OneCycleLR::interpolate(int64_t t, F pick) const {
  VOLT_CHECK(t <= o_.total_steps, "OneCycleLR: stepped ", t, " times but total_steps is ", o_.total_steps);
  double start_step = 0;
  for (int i = 0; i < n_phases_; ++i) {
    const Phase& ph = phases_[i];
    if (double(t) <= ph.end_step || i == n_phases_ - 1) {
      const double pct = (double(t) - start_step) / (ph.end_step - start_step);
      return pick(ph, pct);
    }
    start_step = ph.end_step;
  }
  return 0.0;
}

double OneCycleLR::lr_at(int64_t t) const {
  // At t == total_steps (after the last optimizer step) PyTorch extrapolates the last phase; with
  // linear annealing that is negative, which set_lr rejects, so clamp at 0 (the value is never used).
  return std::max(0.0, interpolate(t, [&](const Phase& ph, double pct) { return anneal(ph.start_lr, ph.end_lr, pct); }));
}

double OneCycleLR::momentum_at(int64_t t) const {
  return interpolate(t, [&](const Phase& ph, double pct) { return anneal(ph.start_m, ph.end_m, pct); });
}

void OneCycleLR::check_last_epoch(int64_t t, const std::string& who) const {
  VOLT_CHECK(t <= o_.total_steps, who, ": last_epoch ", t, " is past total_steps ", o_.total_steps);
}

void OneCycleLR::apply_extra(int64_t t) {
  if (o_.cycle_momentum) opt_.set_momentum(momentum_at(t));
}

}  // namespace volt
