// GradScaler (see grad_scaler.h).
#include "layers/optim/grad_scaler.h"

#include <cmath>
#include <vector>

#include "engine/cuda_graph.h"
#include "engine/error.h"
#include "engine/gpu.h"
#include "engine/ops.h"
#include "kernels/optim.h"
#include "volt/config.h"

namespace volt {

GradScaler::GradScaler(const GradScalerOptions& o) : o_(o), scale_(o.init_scale) {
  VOLT_CHECK(std::isfinite(o.init_scale) && o.init_scale > 0, "GradScaler: init_scale must be positive, got ",
             o.init_scale);
  VOLT_CHECK(o.growth_factor > 1.0, "GradScaler: growth_factor must be > 1, got ", o.growth_factor);
  VOLT_CHECK(o.backoff_factor > 0.0 && o.backoff_factor < 1.0, "GradScaler: backoff_factor must be in (0, 1), got ",
             o.backoff_factor);
  VOLT_CHECK(o.growth_interval >= 1, "GradScaler: growth_interval must be >= 1, got ", o.growth_interval);
}

void GradScaler::ensure_device(Device d) {
  if (scale_t_.defined() && scale_t_.device() == d) return;
  scale_t_ = Tensor::empty({}, DType::F32, d);
  inv_scale_t_ = Tensor::empty({}, DType::F32, d);
  found_inf_t_ = Tensor::zeros({}, DType::F32, d);
  write_scale();
}

void GradScaler::write_scale() {
  if (!scale_t_.defined()) return;
  scale_t_.fill_(float(scale_));
  inv_scale_t_.fill_(float(1.0 / scale_));  // as torch: the reciprocal in double, then float
}

Tensor GradScaler::scale(const Tensor& loss) {
  VOLT_CHECK(loss.defined() && loss.numel() == 1, "GradScaler::scale: needs a one-element loss");
  ensure_device(loss.device());
  return mul(loss, scale_t_.to(loss.dtype()).reshape(loss.shape()));
}

void GradScaler::unscale_(Optimizer& opt) {
  VOLT_CHECK(!unscaled_, "GradScaler::unscale_: already called since the last update() (once per optimizer step)");
  std::vector<Tensor> grads;
  for (const Tensor& p : opt.params()) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    VOLT_CHECK(g.dtype() == DType::F32, "GradScaler: gradients must be float32 (float32 master parameters), got ",
               dtype_name(g.dtype()));
    grads.push_back(g);
  }
  unscaled_ = true;
  if (grads.empty()) return;
  ensure_device(grads[0].device());
  found_inf_t_.zero_();
  if (grads[0].device().is_cuda()) {
#if VOLT_HAVE_CUDA
    std::vector<cuda::GradTensor> list;
    for (const Tensor& g : grads) {
      VOLT_CHECK(g.device() == grads[0].device(), "GradScaler: gradients on several devices");
      list.push_back({g.data<float>(), g.numel()});
    }
    cuda::unscale_grads_multi(list.data(), int64_t(list.size()), inv_scale_t_.data<float>(),
                              found_inf_t_.data<float>(), cuda_stream(grads[0].device()));
#endif
  } else {
    const float inv = float(1.0 / scale_);
    float* found = found_inf_t_.data<float>();
    for (const Tensor& g : grads) cpu::unscale_grads(g.numel(), g.data<float>(), inv, found);
  }
}

bool GradScaler::step(Optimizer& opt) {
  VOLT_CHECK(!stepped_, "GradScaler::step: called twice without update() in between");
  if (!unscaled_) unscale_(opt);
  stepped_ = true;
  if (cuda_graph_capturing()) {  // the flag is decided on the device; after_replay() reads it
    opt.set_skip_if(found_inf_t_);
    struct Clear {
      Optimizer& o;
      ~Clear() { o.set_skip_if(Tensor()); }
    } clear{opt};
    opt.step();
    return true;
  }
  ++steps_;
  found_inf_ = found_inf_t_.defined() && found_inf_t_.item() != 0.f;  // the step's one host read
  if (found_inf_) {
    ++skipped_;
    return false;
  }
  opt.step();
  return true;
}

void GradScaler::update() {
  VOLT_CHECK(stepped_, "GradScaler::update: call step() first");
  if (cuda_graph_capturing()) {
    unscaled_ = stepped_ = false;
    return;
  }
  adjust();
}

bool GradScaler::after_replay(Optimizer& opt) {
  VOLT_CHECK(found_inf_t_.defined(), "GradScaler::after_replay: no captured step has used this scaler");
  ++steps_;
  found_inf_ = found_inf_t_.item() != 0.f;  // waits for the replay
  if (found_inf_) {
    ++skipped_;
    opt.revert_last_step();
  }
  stepped_ = true;
  adjust();
  return !found_inf_;
}

void GradScaler::adjust() {
  if (found_inf_) {
    scale_ *= o_.backoff_factor;
    growth_tracker_ = 0;
    write_scale();
  } else if (++growth_tracker_ == o_.growth_interval) {
    const double grown = scale_ * o_.growth_factor;
    if (std::isfinite(float(grown))) scale_ = grown;  // as torch: never grow to Inf
    growth_tracker_ = 0;
    write_scale();
  }
  unscaled_ = stepped_ = found_inf_ = false;
}

LossScalerState GradScaler::state_dict() const {
  LossScalerState s;
  s.type = "GradScaler";
  s.reals = {{"scale", scale_}, {"growth_factor", o_.growth_factor}, {"backoff_factor", o_.backoff_factor}};
  s.ints = {{"growth_interval", o_.growth_interval}, {"growth_tracker", growth_tracker_}, {"skipped_steps", skipped_},
            {"steps", steps_}};
  return s;
}

void GradScaler::load_state_dict(const LossScalerState& s) {
  const char* who = "GradScaler::load_state_dict";
  VOLT_CHECK(s.type == "GradScaler", who, ": state of a ", s.type.empty() ? "(untyped)" : s.type, ", not a GradScaler");
  const double scale = s.real("scale", who);
  VOLT_CHECK(std::isfinite(scale) && scale > 0, who, ": scale ", scale, " is not a positive finite number");
  GradScalerOptions o;
  o.init_scale = scale;
  o.growth_factor = s.real("growth_factor", who);
  o.backoff_factor = s.real("backoff_factor", who);
  o.growth_interval = s.integer("growth_interval", who);
  const int64_t tracker = s.integer("growth_tracker", who), skipped = s.integer("skipped_steps", who),
                steps = s.integer("steps", who);
  VOLT_CHECK(tracker >= 0 && tracker < o.growth_interval && skipped >= 0 && steps >= skipped, who,
             ": inconsistent counters (growth_tracker ", tracker, ", skipped_steps ", skipped, ", steps ", steps, ")");
  GradScaler checked(o);  // the option checks, before anything changes
  o_ = o;
  scale_ = scale;
  growth_tracker_ = tracker;
  skipped_ = skipped;
  steps_ = steps;
  unscaled_ = stepped_ = found_inf_ = false;
  write_scale();
}

}  // namespace volt
