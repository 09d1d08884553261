// GradScaler: the dynamic loss scaling of float16 mixed precision, as torch.amp.GradScaler: the loss
// is multiplied by the scale before backward, so small gradients survive float16; before the
// optimizer step the float32 gradients are divided by it in one pass that also finds Inf/NaN. A step
// with Inf/NaN gradients is skipped and the scale halves; after growth_interval clean steps in a row
// it doubles. The scale, the Inf/NaN flag and the counters live on the parameters' device. On a GPU
// nothing waits for the device: the optimizer's kernels skip on the flag, and a one-thread kernel
// updates the scale and the counters (as torch's fused optimizers with _amp_update_scale_ do); the
// host reads them only when asked (get_scale(), skipped_steps(), state_dict(), last_step_taken()).
// On the CPU the same arithmetic runs on the host.
#pragma once
#include <cstdint>

#include "../../engine/tensor.h"
#include "../../kernels/optim.h"
#include "component_state.h"
#include "optimizer.h"

namespace volt {

struct GradScalerOptions {
  double init_scale = 65536.0;
  double growth_factor = 2.0, backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

class GradScaler {
 public:
  explicit GradScaler(const GradScalerOptions& o = {});

  // loss * scale in float32 (differentiable in loss), whatever the loss's floating type.
  Tensor scale(const Tensor& loss);
  // Divides the gradients of opt's parameters by the scale, once per step (a second call before
  // update() throws), and records whether any was Inf or NaN. Call it before clipping gradients.
  void unscale_(Optimizer& opt);
  // unscale_ (unless done), then opt.step() unless a gradient was Inf/NaN. On the CPU returns whether
  // it stepped. On a GPU the update is issued with the optimizer's skip flag set and true is returned
  // at once: whether the device took it is last_step_taken()'s question.
  bool step(Optimizer& opt);
  // Adjusts the scale after step(): halve after a skipped step, double after growth_interval clean
  // ones; counts the step (and a skipped one). On a GPU a kernel does it, also inside a captured step.
  void update();
  // Whether the last step()'s update was taken (no Inf/NaN). On a GPU this reads the device's flag,
  // so it waits for the step: call it only when the host needs to know (a per-step scheduler).
  bool last_step_taken() const;
  // Forgets a step begun but not finished (a capture that failed between unscale_ and update()).
  void abandon_step() { unscaled_ = stepped_ = found_inf_ = false; }

  // These read the device's values on a GPU (a synchronisation when the device has changed them).
  double get_scale() const;
  int64_t growth_tracker() const;
  int64_t skipped_steps() const;  // since construction, or as loaded
  int64_t steps() const;          // update() calls, likewise

  // type "GradScaler"; reals scale, growth_factor, backoff_factor; ints growth_interval,
  // growth_tracker, skipped_steps, steps.
  LossScalerState state_dict() const;
  // Checks everything first (type, a positive finite scale): a bad state changes nothing.
  void load_state_dict(const LossScalerState& s);

 private:
  void ensure_device(Device d);
  bool on_gpu() const { return found_inf_t_.defined() && found_inf_t_.device().is_cuda(); }
  void read_device() const;  // on a GPU: the device's scale and counters -> the host's copies (waits)
  void write_device();       // the host's copies -> the device's scale, 1/scale and counters

  GradScalerOptions o_;
  // Host copies (on a GPU, of the device's values as last read).
  mutable float scale_;
  mutable cpu::LossScaleCounts counts_{0, 0, 0};
  bool unscaled_ = false, stepped_ = false, found_inf_ = false;
  bool last_skipped_ = false;  // the CPU's answer to last_step_taken()
  Tensor scale_t_, inv_scale_t_, found_inf_t_;  // float32 [] on the device in use
  Tensor counts_t_;                              // int64 [3] there: growth tracker, skipped, steps
};

}  // namespace volt
