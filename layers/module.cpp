// Module bookkeeping: names, state_dict, train/eval, printing.
#include "layers/module.h"

#include <atomic>
#include <ostream>
#include <set>
#include <sstream>
#include <typeinfo>
#include <unordered_map>

#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "layers/layers.h"
#include "engine/error.h"

namespace volt {

namespace {
std::atomic<ForwardObserver*> g_observer{nullptr};
}

void set_forward_observer(ForwardObserver* observer) { g_observer.store(observer); }

namespace {
// The casts of the outermost module call on this thread under an Autocast guard (see
// Module::autocast_parameters); dropped when that call returns, so a later step casts afresh.
struct AutocastCasts {
  int depth = 0;  // module calls in progress
  DType dtype = DType::F32;
  std::unordered_map<const TensorImpl*, Tensor> casts;
};
thread_local AutocastCasts g_casts;

void collect_autocast(const Module& m, std::vector<Tensor>& out, std::set<const TensorImpl*>& seen) {
  for (const Tensor& t : m.autocast_parameters())
    if (t.defined() && t.device().is_cuda() && t.dtype() == DType::F32 && seen.insert(t.impl()).second)
      out.push_back(t);
  for (const auto& [name, child] : m.children()) collect_autocast(*child, out, seen);
}

// Entered by every Module::operator(); the outermost one under a guard casts the tree's parameters.
struct AutocastScope {
  explicit AutocastScope(const Module& m) {
    const DType dt = autocast_dtype();
    if (g_casts.depth == 0 && dt != DType::F32) {
      std::vector<Tensor> params;
      std::set<const TensorImpl*> seen;
      collect_autocast(m, params, seen);
      if (params.size() >= 2) {
        const std::vector<Tensor> cast = cast_many(params, dt);  // a throw here leaves nothing behind
        g_casts.casts.clear();
        g_casts.dtype = dt;
        for (size_t i = 0; i < params.size(); ++i) g_casts.casts.insert_or_assign(params[i].impl(), cast[i]);
      }
    }
    ++g_casts.depth;
  }
  ~AutocastScope() {
    if (--g_casts.depth == 0) g_casts.casts.clear();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;
};
}  // namespace

Tensor autocast_param(const Tensor& t) {
  const DType dt = autocast_dtype();
  if (dt == DType::F32 || !t.defined() || !is_floating(t.dtype())) return t;
  if (dt == g_casts.dtype) {
    auto it = g_casts.casts.find(t.impl());
    if (it != g_casts.casts.end()) return it->second;
  }
  return cast(t, dt);
}

Tensor Module::operator()(const Tensor& x) {
  AutocastScope autocast_scope(*this);
  ForwardObserver* obs = g_observer.load(std::memory_order_relaxed);
  if (!obs) return forward(x);
  obs->before(*this);
  Tensor y = forward(x);
  obs->after(*this);
  return y;
}

const Tensor* StateDict::find(const std::string& name) const& {
  for (const auto& [n, t] : items_)
    if (n == name) return &t;
  return nullptr;
}

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  VOLT_CHECK(t.defined(), "register_parameter: '", name, "' is undefined");
  t.requires_grad_(true);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  VOLT_CHECK(t.defined(), "register_buffer: '", name, "' is undefined");
  buffers_.emplace_back(name, t);
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  VOLT_CHECK(m != nullptr, "register_module: '", name, "' is null");
  for (const auto& c : children_) VOLT_CHECK(c.first != name, "register_module: '", name, "' is registered twice");
  children_.emplace_back(name, std::move(m));
}

// A tensor already in `seen` (registered twice: weight tying) is one parameter, stepped once.
void Module::collect(const std::string& prefix, bool params, std::set<const TensorImpl*>& seen,
                     std::vector<std::pair<std::string, Tensor>>& out) const {
  for (const auto& [n, t] : params ? params_ : buffers_)
    if (seen.insert(t.impl()).second) out.emplace_back(prefix + n, t);
  for (const auto& [n, c] : children_) c->collect(prefix + n + ".", params, seen, out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::set<const TensorImpl*> seen;
  collect("", true, seen, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& p : named_parameters()) out.push_back(p.second);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::set<const TensorImpl*> seen;
  collect("", false, seen, out);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& p : named_parameters()) n += p.second.numel();
  return n;
}

StateDict Module::state_dict() const {
  // PyTorch orders each module's parameters then buffers, module by module; keep that order.
  StateDict sd;
  struct Walk {
    static void run(const Module& m, const std::string& prefix, StateDict& sd) {
      for (const auto& [n, t] : m.params_) sd.add(prefix + n, t);
      for (const auto& [n, t] : m.buffers_) sd.add(prefix + n, t);
      for (const auto& [n, c] : m.children_) run(*c, prefix + n + ".", sd);
    }
  };
  Walk::run(*this, "", sd);
  return sd;
}

void Module::load_state_dict(const StateDict& sd, bool strict) {
  StateDict mine = state_dict();
  std::vector<std::string> missing, unexpected;
  std::set<std::string> mine_names;
  for (const auto& [n, t] : mine.items()) {
    mine_names.insert(n);
    const Tensor* src = sd.find(n);
    if (!src) {
      missing.push_back(n);
      continue;
    }
    VOLT_CHECK(src->defined(), "load_state_dict: '", n, "' is undefined");
    VOLT_CHECK(src->shape() == t.shape(), "load_state_dict: '", n, "' has shape ", shape_str(src->shape()),
               " in the state dict but ", shape_str(t.shape()), " in the model");
  }
  for (const auto& [n, t] : sd.items())
    if (!mine_names.count(n)) unexpected.push_back(n);
  if (strict && (!missing.empty() || !unexpected.empty())) {
    std::ostringstream os;
    os << "load_state_dict: keys do not match.";
    if (!missing.empty()) {
      os << " Missing:";
      for (auto& n : missing) os << " " << n;
      os << ".";
    }
    if (!unexpected.empty()) {
      os << " Unexpected:";
      for (auto& n : unexpected) os << " " << n;
      os << ".";
    }
    VOLT_FAIL(os.str());
  }
  NoGradGuard no_grad;
  for (const auto& [n, t] : mine.items()) {
    const Tensor* src = sd.find(n);
    if (!src) continue;
    Tensor dst = t;
    dst.copy_(*src);
  }
}

void Module::train(bool on) {
  training_ = on;
  for (auto& c : children_) c.second->train(on);
}

void Module::zero_grad(bool set_to_none) {
  for (auto& p : named_parameters()) {
    Tensor g = p.second.grad();
    if (!g.defined()) continue;
    if (set_to_none) p.second.set_grad(Tensor());
    else g.zero_();
  }
}

namespace {
// A copy of `src` (all of its bytes) on `device`.
std::shared_ptr<Storage> storage_on(const Storage& src, Device device) {
  auto dst = std::make_shared<Storage>(src.bytes, device);
  if (src.device.is_cpu()) {
    backend_for(device).copy_from_host(dst->data, src.data, src.bytes, device.index);
  } else if (device.is_cpu()) {
    backend_for(src.device).copy_to_host(dst->data, src.data, src.bytes, src.device.index);
  } else {  // between two GPUs, through the host
    Storage host(src.bytes, Device::cpu());
    backend_for(src.device).copy_to_host(host.data, src.data, src.bytes, src.device.index);
    backend_for(device).copy_from_host(dst->data, host.data, src.bytes, device.index);
  }
  return dst;
}
}  // namespace

Module& Module::to(Device device) {
  // Storages are moved once each, so tensors that share one (views, tied weights) still share it.
  std::unordered_map<const Storage*, std::shared_ptr<Storage>> moved;
  auto move = [&](TensorImpl* impl) {
    if (!impl || !impl->storage || impl->storage->device == device) return;
    auto it = moved.find(impl->storage.get());
    if (it == moved.end()) it = moved.emplace(impl->storage.get(), storage_on(*impl->storage, device)).first;
    impl->storage = it->second;
  };
  for (auto& [name, p] : named_parameters()) {
    move(p.impl());
    if (p.impl()->grad) move(p.impl()->grad.get());
  }
  for (auto& [name, b] : named_buffers()) move(b.impl());
  return *this;
}

static void print_module(std::ostream& os, const Module& m, int indent) {
  os << m.type_name() << "(" << m.extra_repr();
  if (!m.children().empty()) {
    os << "\n";
    for (const auto& [n, c] : m.children()) {
      os << std::string(size_t(indent + 2), ' ') << "(" << n << "): ";
      print_module(os, *c, indent + 2);
      os << "\n";
    }
    os << std::string(size_t(indent), ' ');
  }
  os << ")";
}

std::ostream& operator<<(std::ostream& os, const Module& m) {
  print_module(os, m, 0);
  return os;
}

Sequential::Sequential(std::vector<std::shared_ptr<Module>> modules) {
  for (auto& m : modules) push_back(std::move(m));
}

void Sequential::push_back(std::shared_ptr<Module> m) { register_module(std::to_string(children().size()), std::move(m)); }

Tensor Module::forward_relu(const Tensor& x) { return relu(forward(x)); }
Tensor Module::forward_relu_max_pool(const Tensor& x, int64_t k) { return max_pool2d(forward_relu(x), {k, k}, {k, k}); }

namespace {
// m as a T when it is exactly a T: a subclass may override forward, so it never runs fused.
template <class T>
T* exactly(Module* m) {
  return typeid(*m) == typeid(T) ? static_cast<T*>(m) : nullptr;
}
}  // namespace

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  const auto& cs = children();
  const bool observed = g_observer.load(std::memory_order_relaxed) != nullptr;
  for (size_t i = 0; i < cs.size(); ++i) {
    Module& m = *cs[i].second;
    // Conv2d, BatchNorm2d, ReLU, MaxPool2d(k, stride k): one op (its backward never stores the
    // convolution's output gradient where the CUDA kernels allow).
    if (!observed && i + 3 < cs.size()) {
      auto* conv = exactly<Conv2d>(&m);
      auto* bn = exactly<BatchNorm2d>(cs[i + 1].second.get());
      auto* pool = exactly<MaxPool2d>(cs[i + 3].second.get());
      if (conv && bn && exactly<ReLU>(cs[i + 2].second.get()) && pool && pool->non_overlapping()) {
        h = conv->forward_bn_relu_max_pool(h, *bn, pool->kernel_size());
        i += 3;
        continue;
      }
    }
    if (!observed && m.fuses_relu() && i + 1 < cs.size() && exactly<ReLU>(cs[i + 1].second.get())) {
      const auto* pool = i + 2 < cs.size() ? exactly<MaxPool2d>(cs[i + 2].second.get()) : nullptr;
      if (pool && pool->non_overlapping()) {
        h = m.forward_relu_max_pool(h, pool->kernel_size());  // the ReLU and the pool are done: skip them
        i += 2;
        continue;
      }
      h = m.forward_relu(h);  // the ReLU is done: skip it
      ++i;
      continue;
    }
    if (!observed && exactly<ReLU>(&m) && i + 1 < cs.size()) {
      if (auto* drop = exactly<Dropout>(cs[i + 1].second.get())) {
        h = drop->forward_after_relu(h);  // ReLU and Dropout in one pass
        ++i;
        continue;
      }
    }
    h = m(h);
  }
  return h;
}

Module& Sequential::operator[](size_t i) const {
  VOLT_CHECK(i < children().size(), "Sequential: index ", i, " is out of range (size ", children().size(), ")");
  return *children()[i].second;
}

}  // namespace volt
