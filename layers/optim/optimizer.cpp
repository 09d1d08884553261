// Optimizer steps over kernels/optim.h (see optimizer.h).
#include "layers/optim/optimizer.h"

#include <set>

#include <cstring>

#include "engine/autograd.h"
#include "engine/cuda_graph.h"
#include "engine/error.h"
#include "engine/gpu.h"
#include "engine/ops/check.h"
#include "kernels/optim.h"

namespace volt {

Optimizer::Optimizer(std::vector<Tensor> params, double lr) : params_(std::move(params)), lr_(lr) {
  VOLT_CHECK(!params_.empty(), "optimizer: got an empty parameter list");
  for (size_t i = 0; i < params_.size(); ++i) {
    // (A frozen leaf, requires_grad off, is accepted as PyTorch's optimizers do: without a gradient it
    // is skipped, and it trains once unfrozen.)
    VOLT_CHECK(params_[i].defined() && params_[i].is_leaf(), "optimizer: parameter ", i,
               " is not a leaf tensor (an op's result; optimize the tensors it came from)");
    VOLT_CHECK(params_[i].dtype() == DType::F32, "optimizer: parameter ", i, " is ", dtype_name(params_[i].dtype()),
               "; optimizers update float32 parameters");
  }
  set_lr(lr);
  host_steps_.assign(params_.size(), 0);
}

const float* Optimizer::skip_ptr() const { return skip_if_.defined() ? skip_if_.data<float>() : nullptr; }

// State made inside a captured CUDA graph would be zeroed again by every replay.
static void check_not_capturing(const char* who, size_t i) {
  VOLT_CHECK(!cuda_graph_capturing(), who, ": the state of parameter ", i,
             " would be created inside a CUDA graph capture (and zeroed at every replay); take an eager step first");
}

int64_t* Optimizer::device_steps(size_t i) {
  const Device dev = params_[i].device();
  const size_t d = size_t(dev.index);
  if (device_steps_.size() <= d) device_steps_.resize(d + 1);
  if (!device_steps_[d].defined()) {
    check_not_capturing(type_name().c_str(), i);
    device_steps_[d] = Tensor::zeros({int64_t(params_.size())}, DType::I64, dev);
  }
  return device_steps_[d].data<int64_t>() + i;
}

std::vector<int64_t> Optimizer::steps_taken() const {
  std::vector<int64_t> out = host_steps_;
  for (const Tensor& t : device_steps_) {
    if (!t.defined()) continue;
    const std::vector<int64_t> dev = t.to_int_vector();  // waits for the device's updates
    for (size_t i = 0; i < params_.size(); ++i)
      if (params_[i].device() == t.device()) out[i] = dev[i];
  }
  return out;
}

void Optimizer::set_steps_taken(const std::vector<int64_t>& steps) {
  host_steps_ = steps;
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].device().is_cuda()) device_steps(i);  // every device in use has its counts
  for (Tensor& t : device_steps_)
    if (t.defined()) t.copy_(Tensor::from_labels(steps));
}

const double* Optimizer::device_step_values(Device dev) {
  static_assert(cpu::kOptimStepValues == 2, "the fill below writes lr and momentum");
  return static_cast<const double*>(step_scalars(dev, 2, [this](uint64_t* v) {
    const double values[2] = {lr_, momentum()};
    std::memcpy(v, values, sizeof(values));
  }));
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

void Optimizer::put_common(OptimizerState& s) const {
  s.type = type_name();
  s.ints["num_params"] = int64_t(params_.size());
  s.reals["lr"] = lr_;
}

void Optimizer::check_common(const OptimizerState& s, std::initializer_list<const char*> kinds) const {
  const std::string who = type_name() + " load_state_dict";
  VOLT_CHECK(s.type == type_name(), who, ": the state is from a ", s.type.empty() ? "(untyped)" : s.type,
             " optimizer, not ", type_name());
  const int64_t n = s.integer("num_params", who);
  VOLT_CHECK(n == int64_t(params_.size()), who, ": the state has ", n, " parameters but the optimizer has ",
             params_.size());
  const double lr = s.real("lr", who);
  VOLT_CHECK(lr >= 0.0, who, ": learning rate must be non-negative, got ", lr);
  std::set<std::string> seen;
  for (const auto& [name, t] : s.tensors) {
    VOLT_CHECK(seen.insert(name).second, who, ": tensor '", name, "' appears twice");
    std::string kind;
    int64_t i = -1;
    bool known = split_indexed_name(name, kind, i);
    if (known) {
      known = false;
      for (const char* k : kinds) known = known || kind == k;
    }
    VOLT_CHECK(known, who, ": unexpected tensor '", name, "' in the state");
    VOLT_CHECK(i < n, who, ": tensor '", name, "' names parameter ", i, " but there are ", n);
    VOLT_CHECK(t.defined(), who, ": tensor '", name, "' is undefined");
    VOLT_CHECK(t.dtype() == DType::F32, who, ": tensor '", name, "' is ", dtype_name(t.dtype()), ", expected float32");
    VOLT_CHECK(t.shape() == params_[size_t(i)].shape(), who, ": tensor '", name, "' has shape ", shape_str(t.shape()),
               " but parameter ", i, " has shape ", shape_str(params_[size_t(i)].shape()));
  }
}

Tensor Optimizer::copy_for_param(const Tensor& src, size_t i) const {
  return src.clone().to(params_[i].device());
}

void Optimizer::check_state_dict(const OptimizerState& s) const { check_state(s); }

void Optimizer::load_state_dict(const OptimizerState& s) {
  check_state(s);
  apply_state(s);
}

static void check_sgd_options(const SGDOptions& o, const char* who) {
  VOLT_CHECK(o.momentum >= 0 && o.weight_decay >= 0, who, ": momentum and weight_decay must be non-negative, got ",
             o.momentum, " and ", o.weight_decay);
  VOLT_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0), who, ": nesterov needs momentum > 0 and dampening 0");
}

static SGDOptions sgd_options_of(const OptimizerState& s) {
  const char* who = "SGD load_state_dict";
  SGDOptions o;
  o.lr = s.real("lr", who);
  o.momentum = s.real("momentum", who);
  o.dampening = s.real("dampening", who);
  o.weight_decay = s.real("weight_decay", who);
  o.nesterov = s.integer("nesterov", who) != 0;
  return o;
}

SGD::SGD(std::vector<Tensor> params, const SGDOptions& o) : Optimizer(std::move(params), o.lr), o_(o) {
  check_sgd_options(o, "SGD");
  buf_.resize(params_.size());
}

OptimizerState SGD::state_dict() const {
  OptimizerState s;
  put_common(s);
  s.reals["momentum"] = o_.momentum;
  s.reals["dampening"] = o_.dampening;
  s.reals["weight_decay"] = o_.weight_decay;
  s.ints["nesterov"] = o_.nesterov ? 1 : 0;
  const std::vector<int64_t> steps = steps_taken();
  for (size_t i = 0; i < buf_.size(); ++i)
    if (buf_[i].defined() && steps[i] > 0)
      s.tensors.emplace_back("momentum_buffer." + std::to_string(i), buf_[i].clone());
  return s;
}

void SGD::check_state(const OptimizerState& s) const {
  check_common(s, {"momentum_buffer"});
  check_sgd_options(sgd_options_of(s), "SGD load_state_dict");
}

void SGD::apply_state(const OptimizerState& s) {
  SGDOptions o = sgd_options_of(s);
  std::vector<Tensor> buf(params_.size());
  for (size_t i = 0; i < params_.size(); ++i)
    if (const Tensor* t = s.find_tensor("momentum_buffer." + std::to_string(i))) buf[i] = copy_for_param(*t, i);
  std::vector<int64_t> steps(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) steps[i] = buf[i].defined() ? 1 : 0;  // a buffer: a step was taken
  o_ = o;
  lr_ = o.lr;
  buf_ = std::move(buf);
  set_steps_taken(steps);
}

namespace {
void check_grad_device(const Tensor& p, const Tensor& g, size_t i, const char* who) {
  VOLT_CHECK(g.device() == p.device(), who, ": parameter ", i, " is on ", p.device().str(), " but its gradient is on ",
             g.device().str());
  VOLT_CHECK(g.dtype() == DType::F32 && g.shape() == p.shape(), who, ": parameter ", i, "'s gradient is ",
             dtype_name(g.dtype()), " ", shape_str(g.shape()), ", expected float32 ", shape_str(p.shape()));
}
// State made on one device cannot update a parameter that has since moved to another.
void check_state_device(const Tensor& p, const Tensor& state, size_t i, const char* who) {
  VOLT_CHECK(!state.defined() || state.device() == p.device(), who, ": parameter ", i, " is on ", p.device().str(),
             " but its optimizer state is on ", state.device().str(),
             " (move the model with Module::to before making the optimizer)");
}
}  // namespace

void SGD::step() {
  NoGradGuard no_grad;
  // CPU parameters one by one; CUDA parameters in multi-tensor launches per device.
  std::vector<std::vector<cuda::SgdTensor>> gpu;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    check_grad_device(params_[i], g, i, "SGD");
    const Device dev = params_[i].device();
    check_state_device(params_[i], buf_[i], i, "SGD");
    if (o_.momentum != 0.0 && !buf_[i].defined()) {
      check_not_capturing("SGD", i);
      buf_[i] = Tensor::zeros(params_[i].shape(), DType::F32, dev);
    }
    float* buf = o_.momentum != 0.0 ? buf_[i].data<float>() : nullptr;
    params_[i].bump_version();  // changed in place below: a backward still to run that saved it says so
    if (dev.is_cuda()) {
      if (gpu.size() <= size_t(dev.index)) gpu.resize(size_t(dev.index) + 1);
      gpu[size_t(dev.index)].push_back({params_[i].data<float>(), g.data<float>(), buf, device_steps(i),
                                        params_[i].numel()});
      continue;
    }
    const bool first = o_.momentum != 0.0 && host_steps_[i] == 0;
    if (o_.momentum != 0.0) ++host_steps_[i];  // SGD counts the steps taken with momentum
    cpu::SgdArgs a{lr_, o_.momentum, o_.dampening, o_.weight_decay, o_.nesterov, first};
    cpu::sgd_update(params_[i].numel(), params_[i].data<float>(), g.data<float>(), buf, a);
  }
  for (size_t d = 0; d < gpu.size(); ++d) {
    if (gpu[d].empty()) continue;
    const Device dev = Device::cuda(int(d));
    // Captured at momentum 0, the update has no buffers to take a momentum set later.
    if (o_.momentum == 0.0)
      replay_check(dev, [this] {
        VOLT_CHECK(o_.momentum == 0.0, "SGD: momentum is ", o_.momentum,
                   " but the CUDA graph of the step was captured at momentum 0, without momentum buffers");
      });
    [[maybe_unused]] const double* values = device_step_values(dev);
    [[maybe_unused]] const cpu::SgdArgs a{lr_, o_.momentum, o_.dampening, o_.weight_decay, o_.nesterov, false};
    VOLT_CUDA_ONLY(cuda::sgd_update_multi(gpu[d].data(), int64_t(gpu[d].size()), a, values, skip_ptr(),
                                          cuda_stream(dev)));
  }
}

Adam::Adam(std::vector<Tensor> params, const AdamOptions& o) : Adam(std::move(params), o, false) {}

static void check_adam_options(const AdamOptions& o, const std::string& who) {
  VOLT_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, who, ": betas must be in [0, 1), got (",
             o.beta1, ", ", o.beta2, ")");
  VOLT_CHECK(o.eps >= 0 && o.weight_decay >= 0, who, ": eps and weight_decay must be non-negative");
}

static AdamOptions adam_options_of(const OptimizerState& s, const std::string& who) {
  AdamOptions o;
  o.lr = s.real("lr", who);
  o.beta1 = s.real("beta1", who);
  o.beta2 = s.real("beta2", who);
  o.eps = s.real("eps", who);
  o.weight_decay = s.real("weight_decay", who);
  o.amsgrad = s.integer("amsgrad", who) != 0;
  return o;
}

Adam::Adam(std::vector<Tensor> params, const AdamOptions& o, bool decoupled)
    : Optimizer(std::move(params), o.lr), o_(o), decoupled_(decoupled) {
  check_adam_options(o, "Adam");
  m_.resize(params_.size());
  v_.resize(params_.size());
  vmax_.resize(params_.size());
}

void Adam::step() {
  NoGradGuard no_grad;
  std::vector<std::vector<cuda::AdamTensor>> gpu;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    check_grad_device(params_[i], g, i, decoupled_ ? "AdamW" : "Adam");
    const Device dev = params_[i].device();
    check_state_device(params_[i], m_[i], i, decoupled_ ? "AdamW" : "Adam");
    if (!m_[i].defined()) {
      check_not_capturing(type_name().c_str(), i);
      m_[i] = Tensor::zeros(params_[i].shape(), DType::F32, dev);
      v_[i] = Tensor::zeros(params_[i].shape(), DType::F32, dev);
      if (o_.amsgrad) vmax_[i] = Tensor::zeros(params_[i].shape(), DType::F32, dev);
    }
    float* vmax = o_.amsgrad ? vmax_[i].data<float>() : nullptr;
    params_[i].bump_version();
    if (dev.is_cuda()) {
      if (gpu.size() <= size_t(dev.index)) gpu.resize(size_t(dev.index) + 1);
      gpu[size_t(dev.index)].push_back({params_[i].data<float>(), g.data<float>(), m_[i].data<float>(),
                                        v_[i].data<float>(), vmax, device_steps(i), params_[i].numel()});
      continue;
    }
    ++host_steps_[i];
    cpu::AdamArgs a{lr_, o_.beta1, o_.beta2, o_.eps, o_.weight_decay, host_steps_[i], decoupled_, o_.amsgrad};
    cpu::adam_update(params_[i].numel(), params_[i].data<float>(), g.data<float>(), m_[i].data<float>(),
                     v_[i].data<float>(), vmax, a);
  }
  for (size_t d = 0; d < gpu.size(); ++d) {
    if (gpu[d].empty()) continue;
    const Device dev = Device::cuda(int(d));
    // The step counts advance on the device, and the bias corrections and learning rate are formed
    // there when the step runs (at once, or at each replay of a captured step: see cuda_graph.h).
    [[maybe_unused]] const double* values = device_step_values(dev);
    [[maybe_unused]] const cpu::AdamArgs a{lr_, o_.beta1, o_.beta2, o_.eps, o_.weight_decay, 0, decoupled_, o_.amsgrad};
    VOLT_CUDA_ONLY(cuda::adam_update_multi(gpu[d].data(), int64_t(gpu[d].size()), a, values, skip_ptr(),
                                           cuda_stream(dev)));
  }
}

OptimizerState Adam::state_dict() const {
  OptimizerState s;
  put_common(s);
  s.reals["beta1"] = o_.beta1;
  s.reals["beta2"] = o_.beta2;
  s.reals["eps"] = o_.eps;
  s.reals["weight_decay"] = o_.weight_decay;
  s.ints["amsgrad"] = o_.amsgrad ? 1 : 0;
  // A parameter whose steps were all skipped (mixed precision) has state that no step has touched:
  // it is left out, as if the state did not exist yet.
  const std::vector<int64_t> steps = steps_taken();
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string idx = std::to_string(i);
    s.ints["step." + idx] = steps[i];
    if (!m_[i].defined() || steps[i] == 0) continue;
    s.tensors.emplace_back("exp_avg." + idx, m_[i].clone());
    s.tensors.emplace_back("exp_avg_sq." + idx, v_[i].clone());
    if (vmax_[i].defined()) s.tensors.emplace_back("max_exp_avg_sq." + idx, vmax_[i].clone());
  }
  return s;
}

void Adam::check_state(const OptimizerState& s) const {
  const std::string who = type_name() + " load_state_dict";
  check_common(s, {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"});
  const AdamOptions o = adam_options_of(s, who);
  check_adam_options(o, who);
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string idx = std::to_string(i);
    const int64_t step = s.integer("step." + idx, who);
    const bool m = s.find_tensor("exp_avg." + idx), v = s.find_tensor("exp_avg_sq." + idx);
    const bool vmax = s.find_tensor("max_exp_avg_sq." + idx);
    VOLT_CHECK(step >= 0, who, ": step.", idx, " is negative (", step, ")");
    VOLT_CHECK(m == v && m == (step > 0), who, ": parameter ", idx, " has step ", step, " but ",
               m ? "" : "no ", "exp_avg and ", v ? "" : "no ", "exp_avg_sq");
    VOLT_CHECK(!(o.amsgrad && m) || vmax, who, ": amsgrad is on but parameter ", idx, " has no max_exp_avg_sq");
  }
}

void Adam::apply_state(const OptimizerState& s) {
  const std::string who = type_name() + " load_state_dict";
  const AdamOptions o = adam_options_of(s, who);
  const size_t n = params_.size();
  std::vector<Tensor> m(n), v(n), vmax(n);
  std::vector<int64_t> steps(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const std::string idx = std::to_string(i);
    steps[i] = s.integer("step." + idx, who);
    if (const Tensor* t = s.find_tensor("exp_avg." + idx)) m[i] = copy_for_param(*t, i);
    if (const Tensor* t = s.find_tensor("exp_avg_sq." + idx)) v[i] = copy_for_param(*t, i);
    if (const Tensor* t = s.find_tensor("max_exp_avg_sq." + idx)) vmax[i] = copy_for_param(*t, i);
  }
  o_ = o;
  lr_ = o.lr;
  m_ = std::move(m);
  v_ = std::move(v);
  vmax_ = std::move(vmax);
  set_steps_taken(steps);
}

AdamW::AdamW(std::vector<Tensor> params, const AdamOptions& o) : Adam(std::move(params), o, true) {}

}  // namespace volt
