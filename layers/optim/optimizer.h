// Optimizers with PyTorch's update formulas: SGD (momentum, dampening, nesterov, weight decay),
// Adam and AdamW (optionally AMSGrad). Parameters without a gradient are skipped, as in PyTorch.
// state_dict / load_state_dict carry everything a resumed run needs (see component_state.h).
#pragma once
#include <initializer_list>
#include <string>
#include <vector>

#include "../../engine/tensor.h"
#include "component_state.h"

namespace volt {

class Optimizer {
 public:
  Optimizer(std::vector<Tensor> params, double lr);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  void zero_grad(bool set_to_none = true);
  double lr() const { return lr_; }
  void set_lr(double lr);
  // The momentum-like hyperparameter OneCycleLR cycles (SGD momentum, Adam beta1).
  virtual double momentum() const = 0;
  virtual void set_momentum(double m) = 0;
  const std::vector<Tensor>& params() const { return params_; }
  virtual std::string type_name() const = 0;  // "SGD", "Adam", "AdamW"

  // A deep copy of the resumable state: type, ints "num_params", the hyperparameters (lr included)
  // and the per-parameter state as tensors "<kind>.<param index>" (see each class).
  virtual OptimizerState state_dict() const = 0;
  // Throws volt::Error naming the first mismatch (type, parameter count, a tensor's shape or dtype,
  // an unknown or inconsistent entry, an invalid hyperparameter); changes nothing.
  void check_state_dict(const OptimizerState& s) const;
  // check_state_dict, then replaces the per-parameter state and hyperparameters with copies of s's
  // (on each parameter's device), so a failed load leaves the optimizer untouched.
  void load_state_dict(const OptimizerState& s);

  // Mixed precision on a GPU (GradScaler): while `flag` (a one-element float32 tensor on the
  // parameters' device) is set, step()'s CUDA updates do nothing when the flag holds a non-zero value
  // when they run, and the step is not counted (CPU parameters ignore the flag). The host never waits
  // for it: the counts of steps taken live on the device (see steps_taken()).
  void set_skip_if(const Tensor& flag) { skip_if_ = flag; }

  // The updates each parameter has taken (Adam's step; for SGD the updates with momentum: its buffer
  // starts from the gradient while the count is 0). CPU parameters keep theirs on the host; CUDA
  // parameters on their device, advanced by the update kernels, so reading them waits for the device.
  std::vector<int64_t> steps_taken() const;

 protected:
  virtual void check_state(const OptimizerState& s) const = 0;  // the class-specific checks
  virtual void apply_state(const OptimizerState& s) = 0;        // called only after every check passed
  // Common checks: type, num_params, lr >= 0, and every tensor named "<kind>.<i>" with kind in
  // `kinds`, i a parameter index, parameter i's shape and float32.
  void check_common(const OptimizerState& s, std::initializer_list<const char*> kinds) const;
  Tensor copy_for_param(const Tensor& src, size_t i) const;  // deep copy on parameter i's device
  void put_common(OptimizerState& s) const;                   // type, num_params, lr

  // The skip flag as a device pointer for the CUDA update (or null).
  const float* skip_ptr() const;
  // CUDA parameter i's count of steps taken, in device memory (zero when first asked for).
  int64_t* device_steps(size_t i);
  // Replaces every count (after load_state_dict's checks).
  void set_steps_taken(const std::vector<int64_t>& steps);
  // The step's values for the CUDA updates (kernels/optim.h: lr and momentum()) in device memory,
  // formed when the step runs (now, or before each replay of a captured step).
  const double* device_step_values(Device dev);

  std::vector<Tensor> params_;
  double lr_;
  Tensor skip_if_;
  std::vector<int64_t> host_steps_;    // CPU parameters' counts of steps taken
  std::vector<Tensor> device_steps_;   // per CUDA device index: int64 [params], CUDA parameters' counts
};

struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, const SGDOptions& opts);
  void step() override;
  double momentum() const override { return o_.momentum; }
  void set_momentum(double m) override { o_.momentum = m; }
  std::string type_name() const override { return "SGD"; }
  // reals lr, momentum, dampening, weight_decay; ints nesterov; tensors "momentum_buffer.<i>" for
  // the parameters that have taken a step with momentum.
  OptimizerState state_dict() const override;
  const SGDOptions& options() const { return o_; }

 private:
  void check_state(const OptimizerState& s) const override;
  void apply_state(const OptimizerState& s) override;
  SGDOptions o_;
  std::vector<Tensor> buf_;  // momentum buffers, created on a parameter's first step (they hold a value
                             // once a step was taken: steps_taken() > 0)
};

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool amsgrad = false;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, const AdamOptions& opts);
  void step() override;
  double momentum() const override { return o_.beta1; }
  void set_momentum(double m) override { o_.beta1 = m; }
  int64_t step_count(size_t i) const { return steps_taken().at(i); }
  const Tensor& exp_avg(size_t i) const { return m_.at(i); }
  const Tensor& exp_avg_sq(size_t i) const { return v_.at(i); }
  std::string type_name() const override { return decoupled_ ? "AdamW" : "Adam"; }
  // reals lr, beta1, beta2, eps, weight_decay; ints amsgrad and "step.<i>" for every parameter;
  // tensors "exp_avg.<i>", "exp_avg_sq.<i>" (and "max_exp_avg_sq.<i>" with amsgrad) for the
  // parameters that have taken a step.
  OptimizerState state_dict() const override;
  const AdamOptions& options() const { return o_; }

 protected:
  void check_state(const OptimizerState& s) const override;
  void apply_state(const OptimizerState& s) override;
  Adam(std::vector<Tensor> params, const AdamOptions& opts, bool decoupled);
  AdamOptions o_;
  bool decoupled_;
  std::vector<Tensor> m_, v_, vmax_;
};

// Adam with decoupled weight decay (default 1e-2, as torch.optim.AdamW).
class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, const AdamOptions& opts);
  static AdamOptions defaults() { AdamOptions o; o.weight_decay = 1e-2; return o; }
};

}  // namespace volt
