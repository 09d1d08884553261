// Optimizer steps over kernels/optim.h (see optimizer.h).
#include "layers/optim/optimizer.h"

#include "engine/autograd.h"
#include "engine/error.h"
#include "kernels/optim.h"

namespace volt {

Optimizer::Optimizer(std::vector<Tensor> params, double lr) : params_(std::move(params)), lr_(lr) {
  VOLT_CHECK(!params_.empty(), "optimizer: got an empty parameter list");
  for (size_t i = 0; i < params_.size(); ++i) {
    VOLT_CHECK(params_[i].defined() && params_[i].is_leaf() && params_[i].requires_grad(), "optimizer: parameter ", i,
               " is not a leaf tensor that requires grad");
    VOLT_CHECK(params_[i].dtype() == DType::F32, "optimizer: parameter ", i, " is ", dtype_name(params_[i].dtype()),
               "; optimizers update float32 parameters");
  }
  set_lr(lr);
}

void Optimizer::set_lr(double lr) {
  VOLT_CHECK(lr >= 0.0, "optimizer: learning rate must be non-negative, got ", lr);
  lr_ = lr;
}

void Optimizer::zero_grad(bool set_to_none) {
  for (Tensor& p : params_) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (set_to_none) p.set_grad(Tensor());
    else g.zero_();
  }
}

SGD::SGD(std::vector<Tensor> params, const SGDOptions& o) : Optimizer(std::move(params), o.lr), o_(o) {
  VOLT_CHECK(o.momentum >= 0 && o.weight_decay >= 0, "SGD: momentum and weight_decay must be non-negative, got ",
             o.momentum, " and ", o.weight_decay);
  VOLT_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0), "SGD: nesterov needs momentum > 0 and dampening 0");
  buf_.resize(params_.size());
}

void SGD::step() {
  NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    const bool first = !buf_[i].defined();
    if (o_.momentum != 0.0 && first) buf_[i] = Tensor::empty(params_[i].shape());
    cpu::SgdArgs a{lr_, o_.momentum, o_.dampening, o_.weight_decay, o_.nesterov, first};
    cpu::sgd_update(params_[i].numel(), params_[i].data<float>(), g.data<float>(),
                    o_.momentum != 0.0 ? buf_[i].data<float>() : nullptr, a);
  }
}

Adam::Adam(std::vector<Tensor> params, const AdamOptions& o) : Adam(std::move(params), o, false) {}

Adam::Adam(std::vector<Tensor> params, const AdamOptions& o, bool decoupled)
    : Optimizer(std::move(params), o.lr), o_(o), decoupled_(decoupled) {
  VOLT_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, "Adam: betas must be in [0, 1), got (",
             o.beta1, ", ", o.beta2, ")");
  VOLT_CHECK(o.eps >= 0 && o.weight_decay >= 0, "Adam: eps and weight_decay must be non-negative");
  m_.resize(params_.size());
  v_.resize(params_.size());
  vmax_.resize(params_.size());
  steps_.assign(params_.size(), 0);
}

void Adam::step() {
  NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    if (!m_[i].defined()) {
      m_[i] = Tensor::zeros(params_[i].shape());
      v_[i] = Tensor::zeros(params_[i].shape());
      if (o_.amsgrad) vmax_[i] = Tensor::zeros(params_[i].shape());
    }
    steps_[i] += 1;
    cpu::AdamArgs a{lr_, o_.beta1, o_.beta2, o_.eps, o_.weight_decay, steps_[i], decoupled_, o_.amsgrad};
    cpu::adam_update(params_[i].numel(), params_[i].data<float>(), g.data<float>(), m_[i].data<float>(),
                     v_[i].data<float>(), o_.amsgrad ? vmax_[i].data<float>() : nullptr, a);
  }
}

AdamW::AdamW(std::vector<Tensor> params, const AdamOptions& o) : Adam(std::move(params), o, true) {}

}  // namespace volt
