// Learning-rate schedules (PyTorch's closed forms): StepLR, CosineAnnealingLR, LinearLR (linear
// warm-up) and OneCycleLR. Constructing one sets the optimizer's lr for step 0; step() advances.
// state_dict / load_state_dict resume a schedule (the schedule's shape comes from its options).
#pragma once
#include <cstdint>
#include <string>

#include "optimizer.h"

namespace volt {

class LRScheduler {
 public:
  explicit LRScheduler(Optimizer& opt);
  virtual ~LRScheduler() = default;
  void step();
  int64_t last_epoch() const { return last_epoch_; }
  double last_lr() const { return opt_.lr(); }
  virtual double lr_at(int64_t t) const = 0;
  void set_last_epoch(int64_t t);  // for resuming
  virtual std::string type_name() const = 0;  // "StepLR", "CosineAnnealingLR", ...

  // type, ints last_epoch, reals base_lr. OneCycleLR's phases derive from its options, so a resumed
  // run constructs it with the same options.
  SchedulerState state_dict() const;
  // Throws volt::Error naming the mismatch (type, a missing or invalid entry); changes nothing.
  void check_state_dict(const SchedulerState& s) const;
  // Restores last_epoch and base_lr. The optimizer's lr and momentum are left alone: they are part
  // of the optimizer's state (load that too).
  void load_state_dict(const SchedulerState& s);

 protected:
  void apply();
  virtual void apply_extra(int64_t) {}
  virtual void check_last_epoch(int64_t, const std::string&) const {}  // throws when out of range
  Optimizer& opt_;
  double base_lr_;
  int64_t last_epoch_ = 0;
};

class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& opt, int64_t step_size, double gamma = 0.1);
  double lr_at(int64_t t) const override;
  std::string type_name() const override { return "StepLR"; }

 private:
  int64_t step_size_;
  double gamma_;
};

class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& opt, int64_t t_max, double eta_min = 0.0);
  double lr_at(int64_t t) const override;
  std::string type_name() const override { return "CosineAnnealingLR"; }

 private:
  int64_t t_max_;
  double eta_min_;
};

// lr = base * (start + (end - start) * min(t, total) / total): linear warm-up.
class LinearLR : public LRScheduler {
 public:
  LinearLR(Optimizer& opt, double start_factor = 1.0 / 3.0, double end_factor = 1.0, int64_t total_iters = 5);
  double lr_at(int64_t t) const override;
  std::string type_name() const override { return "LinearLR"; }

 private:
  double start_, end_;
  int64_t total_;
};

struct OneCycleOptions {
  double max_lr = 0.1;
  int64_t total_steps = 100;
  double pct_start = 0.3;
  bool cos_anneal = true;  // false: linear
  double div_factor = 25.0, final_div_factor = 1e4;
  bool three_phase = false;
  bool cycle_momentum = true;
  double base_momentum = 0.85, max_momentum = 0.95;
};

class OneCycleLR : public LRScheduler {
 public:
  OneCycleLR(Optimizer& opt, const OneCycleOptions& o);
  double lr_at(int64_t t) const override;
  double momentum_at(int64_t t) const;
  std::string type_name() const override { return "OneCycleLR"; }

 private:
  void apply_extra(int64_t t) override;
  void check_last_epoch(int64_t t, const std::string& who) const override;
  struct Phase { double end_step, start_lr, end_lr, start_m, end_m; };
  double anneal(double start, double end, double pct) const;
  template <class F> double interpolate(int64_t t, F pick) const;
  OneCycleOptions o_;
  Phase phases_[3];
  int n_phases_;
};

}  // namespace volt
