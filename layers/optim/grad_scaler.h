// GradScaler: the dynamic loss scaling of float16 mixed precision, as torch.amp.GradScaler: the loss
// is multiplied by the scale before backward, so small gradients survive float16; before the
// optimizer step the float32 gradients are divided by it in one pass that also finds Inf/NaN. A step
// with Inf/NaN gradients is skipped and the scale halves; after growth_interval clean steps in a row
// it doubles. The scale and the Inf/NaN flag live on the parameters' device (one float each), so
// scaling and unscaling need no host value; step() reads the flag (one 4-byte copy: the only host
// synchronisation of a mixed-precision step).
#pragma once
#include <cstdint>

#include "engine/tensor.h"
#include "layers/optim/component_state.h"
#include "layers/optim/optimizer.h"

namespace volt {

struct GradScalerOptions {
  double init_scale = 65536.0;
  double growth_factor = 2.0, backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

class GradScaler {
 public:
  explicit GradScaler(const GradScalerOptions& o = {});

  // loss * scale (differentiable in loss).
  Tensor scale(const Tensor& loss);
  // Divides the gradients of opt's parameters by the scale, once per step (a second call before
  // update() throws), and records whether any was Inf or NaN. Call it before clipping gradients.
  void unscale_(Optimizer& opt);
  // unscale_ (unless done), then opt.step() unless a gradient was Inf/NaN. Returns whether it stepped.
  bool step(Optimizer& opt);
  // Adjusts the scale after step(): halve after a skipped step, double after growth_interval clean ones.
  void update();
  // In a captured CUDA step (engine/cuda_graph.h) step() cannot read the flag: the optimizer's kernels
  // skip on the device instead, and update() leaves the host alone. After each replay, after_replay()
  // reads the flag, counts the step, gives back the optimizer's step counts if it was skipped, and
  // adjusts the scale for the next replay; it returns whether the step was taken.
  bool after_replay(Optimizer& opt);
  // Forgets a step begun but not finished (a capture that failed between unscale_ and update()).
  void abandon_step() { unscaled_ = stepped_ = found_inf_ = false; }

  double get_scale() const { return scale_; }
  int64_t growth_tracker() const { return growth_tracker_; }
  int64_t skipped_steps() const { return skipped_; }  // since construction, or as loaded
  int64_t steps() const { return steps_; }             // step() calls, likewise

  // type "GradScaler"; reals scale, growth_factor, backoff_factor; ints growth_interval,
  // growth_tracker, skipped_steps, steps.
  LossScalerState state_dict() const;
  // Checks everything first (type, a positive finite scale): a bad state changes nothing.
  void load_state_dict(const LossScalerState& s);

 private:
  void ensure_device(Device d);
  void adjust();       // the scale after a step, from found_inf_

  void write_scale();  // scale_ -> the device's scale and 1/scale
  GradScalerOptions o_;
  double scale_;
  int64_t growth_tracker_ = 0, skipped_ = 0, steps_ = 0;
  bool unscaled_ = false, stepped_ = false, found_inf_ = false;
  Tensor scale_t_, inv_scale_t_, found_inf_t_;  // float32 [] on the device in use
};

}  // namespace volt
