// Optimizers with PyTorch's update formulas: SGD (momentum, dampening, nesterov, weight decay),
// Adam and AdamW (optionally AMSGrad). Parameters without a gradient are skipped, as in PyTorch.
#pragma once
#include <vector>

#include "engine/tensor.h"

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

 protected:
  std::vector<Tensor> params_;
  double lr_;
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

 private:
  SGDOptions o_;
  std::vector<Tensor> buf_;  // momentum buffers, created on a parameter's first step
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
  int64_t step_count(size_t i) const { return steps_.at(i); }
  const Tensor& exp_avg(size_t i) const { return m_.at(i); }
  const Tensor& exp_avg_sq(size_t i) const { return v_.at(i); }

 protected:
  Adam(std::vector<Tensor> params, const AdamOptions& opts, bool decoupled);
  AdamOptions o_;
  bool decoupled_;
  std::vector<Tensor> m_, v_, vmax_;
  std::vector<int64_t> steps_;
};

// Adam with decoupled weight decay (default 1e-2, as torch.optim.AdamW).
class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, const AdamOptions& opts);
  static AdamOptions defaults() { AdamOptions o; o.weight_decay = 1e-2; return o; }
};

}  // namespace volt
