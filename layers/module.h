// Module: the base of every layer and model. Holds named parameters, buffers and child modules,
// a train/eval flag, and state_dict / load_state_dict with PyTorch's dotted names ("block1.0.weight").
#pragma once
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../engine/tensor.h"

namespace volt {

// Ordered name -> tensor list (parameters first, then buffers, depth-first like PyTorch).
class StateDict {
 public:
  void add(const std::string& name, const Tensor& t) { items_.emplace_back(name, t); }
  // nullptr when absent. On a temporary, a copy of the handle instead (std::nullopt when absent), so
  // that `const Tensor* t = m.state_dict().find(n);`, a pointer into a destroyed list, cannot compile.
  const Tensor* find(const std::string& name) const&;
  std::optional<Tensor> find(const std::string& name) && {
    const Tensor* t = static_cast<const StateDict&>(*this).find(name);
    return t ? std::optional<Tensor>(*t) : std::nullopt;
  }
  const std::vector<std::pair<std::string, Tensor>>& items() const& { return items_; }
  // On a temporary (`for (auto& kv : m.state_dict().items())`) return by value, so the loop does
  // not walk a destroyed list.
  std::vector<std::pair<std::string, Tensor>> items() && { return std::move(items_); }
  size_t size() const { return items_.size(); }

 private:
  std::vector<std::pair<std::string, Tensor>> items_;
};

class Module;

// Sees every module call made through Module::operator() (containers call their children that
// way): the profiler's per-layer timing. One process-wide observer; nullptr turns it off.
class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  virtual void before(const Module& m) = 0;
  virtual void after(const Module& m) = 0;
};
void set_forward_observer(ForwardObserver* observer);

// Under an Autocast guard, t in the autocast type: the cast made by the outermost module call when t
// is one of the tree's autocast_parameters(), else cast(t) now; t itself outside a guard, or when
// undefined or not floating.
Tensor autocast_param(const Tensor& t);

class Module {
 public:
  virtual ~Module() = default;
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x);  // forward, seen by the forward observer
  virtual std::string type_name() const = 0;
  virtual std::string extra_repr() const { return ""; }
  // relu(forward(x)) in one pass, for a module that can fuse the ReLU following it (BatchNorm2d):
  // Sequential calls it for such a module followed by a ReLU (unless a forward observer, the
  // per-layer profiler, wants to see each layer).
  virtual bool fuses_relu() const { return false; }
  virtual Tensor forward_relu(const Tensor& x);
  // max_pool2d(forward_relu(x)) over non-overlapping k x k windows: what Sequential calls for such a
  // module followed by a ReLU and a MaxPool2d(k) with stride k and no padding (one pass each way on
  // CUDA for BatchNorm2d).
  virtual Tensor forward_relu_max_pool(const Tensor& x, int64_t k);
  // The parameters this module's forward casts under an Autocast guard (Conv2d, Linear: weight and
  // bias). The outermost module call under a guard casts those of the whole tree on a GPU at once
  // (cast_many: one launch per step instead of one per tensor); the layers then take their cast
  // from autocast_param().
  virtual std::vector<Tensor> autocast_parameters() const { return {}; }

  // Each tensor once, under its first name, when a layer or tensor is registered twice (weight tying),
  // as PyTorch; state_dict() keeps every name.
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }
  int64_t num_parameters() const;

  StateDict state_dict() const;  // shares storage with the module (clone to snapshot); every name
  // Copies values in. strict: every name must match both ways. Shapes must always match.
  // Checks everything before copying anything, so a failed load leaves the module untouched.
  void load_state_dict(const StateDict& sd, bool strict = true);

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad(bool set_to_none = true);
  // Moves every parameter, gradient and buffer (children included) to `device`, in place: tensors
  // handles held elsewhere (layer members, an optimizer built afterwards) see the new storage.
  // Build optimizers after moving the model (their state is made on the parameters' device).
  Module& to(Device device);

 protected:
  Tensor register_parameter(const std::string& name, Tensor t);  // sets requires_grad
  Tensor register_buffer(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  void collect(const std::string& prefix, bool params, std::set<const TensorImpl*>& seen,
               std::vector<std::pair<std::string, Tensor>>& out) const;
  std::vector<std::pair<std::string, Tensor>> params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
  friend std::ostream& operator<<(std::ostream&, const Module&);
};

std::ostream& operator<<(std::ostream& os, const Module& m);  // PyTorch-style tree

// Runs children in order; children are named "0", "1", ... Some neighbours run fused (unless a forward
// observer, the per-layer profiler, watches): a module that fuses_relu() with the ReLU after it (and a
// non-overlapping MaxPool2d after that), and a ReLU with the Dropout after it. The named layers match
// by exact type: a subclass (which may override forward) always runs its own forward.
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<std::shared_ptr<Module>> modules);
  void push_back(std::shared_ptr<Module> m);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Sequential"; }
  size_t size() const { return children().size(); }
  Module& operator[](size_t i) const;
};

}  // namespace volt
