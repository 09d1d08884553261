// GradScaler (see grad_scaler.h).
#include "layers/optim/grad_scaler.h"

#include <cmath>
#include <vector>

#include "engine/error.h"
#include "engine/gpu.h"
#include "engine/ops.h"
#include "volt/config.h"

namespace volt {

GradScaler::GradScaler(const GradScalerOptions& o) : o_(o), scale_(float(o.init_scale)) {
  VOLT_CHECK(std::isfinite(o.init_scale) && o.init_scale > 0 && std::isfinite(float(o.init_scale)),
             "GradScaler: init_scale must be a positive float32 value, got ", o.init_scale);
  VOLT_CHECK(o.growth_factor > 1.0, "GradScaler: growth_factor must be > 1, got ", o.growth_factor);
  VOLT_CHECK(o.backoff_factor > 0.0 && o.backoff_factor < 1.0, "GradScaler: backoff_factor must be in (0, 1), got ",
             o.backoff_factor);
  VOLT_CHECK(o.growth_interval >= 1, "GradScaler: growth_interval must be >= 1, got ", o.growth_interval);
}

void GradScaler::ensure_device(Device d) {
  if (scale_t_.defined() && scale_t_.device() == d) return;
  read_device();  // the values so far, from the device used before (if any)
  scale_t_ = Tensor::empty({}, DType::F32, d);
  inv_scale_t_ = Tensor::empty({}, DType::F32, d);
  found_inf_t_ = Tensor::zeros({}, DType::F32, d);
  counts_t_ = d.is_cuda() ? Tensor::empty({3}, DType::I64, d) : Tensor();
  write_device();
}

void GradScaler::write_device() {
  if (!scale_t_.defined()) return;
  scale_t_.fill_(scale_);
  inv_scale_t_.fill_(cpu::inverse_scale(scale_));
  if (counts_t_.defined())
    counts_t_.copy_(Tensor::from_labels({counts_.growth_tracker, counts_.skipped, counts_.steps}));
}

// Read every time on a GPU: the device also updates them in replays of a captured step, which the host
// never sees, so a host copy can never be known to be current.
void GradScaler::read_device() const {
  if (!on_gpu()) return;
  scale_ = scale_t_.item();  // waits for the device's updates
  const std::vector<int64_t> c = counts_t_.to_int_vector();
  counts_ = cpu::LossScaleCounts{c[0], c[1], c[2]};
}

Tensor GradScaler::scale(const Tensor& loss) {
  VOLT_CHECK(loss.defined() && loss.numel() == 1, "GradScaler::scale: needs a one-element loss");
  ensure_device(loss.device());
  // In float32: the scale (65536 at first) is past float16's range.
  return mul(cast(loss, DType::F32), scale_t_.reshape(loss.shape()));
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
  if (grads.empty()) {  // nothing to check: this step is clean
    if (found_inf_t_.defined()) found_inf_t_.zero_();
    return;
  }
  ensure_device(grads[0].device());
  found_inf_t_.zero_();
  for (const Tensor& g : grads) g.bump_version();  // unscaled in place below
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
    const float inv = cpu::inverse_scale(scale_);
    float* found = found_inf_t_.data<float>();
    for (const Tensor& g : grads) cpu::unscale_grads(g.numel(), g.data<float>(), inv, found);
  }
}

bool GradScaler::step(Optimizer& opt) {
  VOLT_CHECK(!stepped_, "GradScaler::step: called twice without update() in between");
  if (!unscaled_) unscale_(opt);
  stepped_ = true;
  if (on_gpu()) {  // the optimizer's kernels skip on the device's flag: no host read, no wait
    opt.set_skip_if(found_inf_t_);
    struct Clear {
      Optimizer& o;
      ~Clear() { o.set_skip_if(Tensor()); }
    } clear{opt};
    opt.step();
    return true;
  }
  found_inf_ = found_inf_t_.defined() && found_inf_t_.item() != 0.f;
  last_skipped_ = found_inf_;
  if (found_inf_) return false;
  opt.step();
  return true;
}

void GradScaler::update() {
  VOLT_CHECK(stepped_, "GradScaler::update: call step() first");
  unscaled_ = stepped_ = false;
  if (on_gpu()) {
    scale_t_.bump_version();  // a scaled loss recorded before must not run its backward with the new scale
    inv_scale_t_.bump_version();
#if VOLT_HAVE_CUDA
    cuda::loss_scale_update(found_inf_t_.data<float>(), scale_t_.data<float>(), inv_scale_t_.data<float>(),
                            counts_t_.data<int64_t>(), o_.growth_factor, o_.backoff_factor, o_.growth_interval,
                            cuda_stream(found_inf_t_.device()));
#endif
    return;
  }
  const float before = scale_;
  scale_ = cpu::loss_scale_update(scale_, counts_, found_inf_, o_.growth_factor, o_.backoff_factor, o_.growth_interval);
  if (scale_ != before) write_device();
  found_inf_ = false;
}

bool GradScaler::last_step_taken() const {
  if (on_gpu()) return found_inf_t_.item() == 0.f;  // waits for the step
  return !last_skipped_;
}

double GradScaler::get_scale() const {
  read_device();
  return scale_;
}
int64_t GradScaler::growth_tracker() const {
  read_device();
  return counts_.growth_tracker;
}
int64_t GradScaler::skipped_steps() const {
  read_device();
  return counts_.skipped;
}
int64_t GradScaler::steps() const {
  read_device();
  return counts_.steps;
}

LossScalerState GradScaler::state_dict() const {
  read_device();
  LossScalerState s;
  s.type = "GradScaler";
  s.reals = {{"scale", double(scale_)}, {"growth_factor", o_.growth_factor}, {"backoff_factor", o_.backoff_factor}};
  s.ints = {{"growth_interval", o_.growth_interval}, {"growth_tracker", counts_.growth_tracker},
            {"skipped_steps", counts_.skipped}, {"steps", counts_.steps}};
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
  scale_ = float(scale);
  counts_ = cpu::LossScaleCounts{tracker, skipped, steps};
  unscaled_ = stepped_ = found_inf_ = last_skipped_ = false;
  write_device();
}

}  // namespace volt
