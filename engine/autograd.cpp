// The backward pass: reverse topological walk over recorded nodes (see autograd.h).
#include "engine/autograd.h"

#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/error.h"
#include "engine/ops.h"

namespace volt {

namespace {
thread_local bool g_grad_enabled = true;
thread_local const void* g_tag = nullptr;
thread_local autograd::BackwardObserver* g_backward_observer = nullptr;
thread_local autograd::GradReadyListener* g_grad_ready = nullptr;

// The gradient-ready hook's bookkeeping for one pass: how many edges into each leaf are still to be
// processed. Does nothing without a listener.
struct LeafEdges {
  autograd::GradReadyListener* listener;
  std::unordered_map<TensorImpl*, int> left;
  void add(const Edge& e) {
    if (listener && e.leaf) ++left[e.leaf.get()];
  }
  void processed(const Edge& e) {
    if (!listener || !e.leaf) return;
    auto it = left.find(e.leaf.get());
    if (it != left.end() && --it->second == 0) listener->grad_ready(Tensor(e.leaf));
  }
};

// The gradients of casts into float32 leaves on a GPU, converted together: such a cast's node hands its
// leaf a new float32 tensor at once and queues the conversion; flush() converts every queued one in one
// launch (cast_into). The pass flushes before anything reads a queued tensor: before a gradient is added
// to a leaf, and at its end. Each queued destination is held weakly, so that the leaf's .grad is its only
// owner and takes it without a copy (accumulate_leaf).
class DeferredCasts {
 public:
  ~DeferredCasts() {
    if (src_.empty()) return;
    try {  // a pass that threw: the gradients are not trusted anyway, but no queued one stays unwritten
      flush();
    } catch (...) {
    }
  }
  // n's gradient for its input, queued, when n is a cast from a float32 leaf on a GPU (and no listener
  // reads gradients mid-pass); undefined otherwise.
  Tensor defer(const Node& n, const Tensor& g) {
    if (!n.is_cast() || g_grad_ready || n.next().size() != 1 || !g.defined()) return {};
    const Edge& e = n.next()[0];
    if (!e.leaf || e.dtype != DType::F32 || !g.device().is_cuda() || g.dtype() == DType::F32 || g.shape() != e.shape)
      return {};
    Tensor dst = Tensor::empty(e.shape, DType::F32, g.device());
    src_.push_back(g);
    dst_.push_back(dst.impl_ptr());
    return dst;
  }
  void flush() {
    if (src_.empty()) return;
    std::vector<Tensor> src, dst;
    for (size_t i = 0; i < src_.size(); ++i)
      if (auto d = dst_[i].lock()) {  // (a destination whose leaf is gone: nothing can read it)
        src.push_back(src_[i]);
        dst.push_back(Tensor(std::move(d)));
      }
    src_.clear();
    dst_.clear();
    cast_into(src, dst);
  }

 private:
  std::vector<Tensor> src_;
  std::vector<std::weak_ptr<TensorImpl>> dst_;
};
}  // namespace

void Node::set_saved(const std::vector<Tensor>& saved) {
  saved_.clear();
  saved_.reserve(saved.size());
  for (const Tensor& t : saved)
    if (t.defined()) saved_.push_back({t.impl_ptr(), t.impl()->storage, t.version()});
}

std::vector<Tensor> Node::apply(const Tensor& grad_out) {
  VOLT_CHECK(!released_, "backward: the graph through '", name_,
             "' was already freed by an earlier backward(); run the forward pass again");
  for (size_t i = 0; i < saved_.size(); ++i) {
    const std::shared_ptr<Storage> st = saved_[i].storage.lock();
    const std::shared_ptr<TensorImpl> t = saved_[i].tensor.lock();
    VOLT_CHECK(!t || t->storage == st, "backward through '", name_, "': a tensor it saved (", i + 1, " of ",
               saved_.size(), ") was given other memory after the op used it (Module::to moves a module's "
               "tensors): run the forward pass again after moving the module");
    VOLT_CHECK(!st || st->version == saved_[i].version, "backward through '", name_, "': a tensor it saved (",
               i + 1, " of ", saved_.size(), ", in a buffer of ", st->bytes,
               " bytes) was changed in place after the op used it (version ", saved_[i].version, ", now ", st->version,
               "): its gradient would come from the new values. Change it after backward(), or give the op a "
               "clone()");
  }
  if (!g_backward_observer) return fn_(grad_out, needs_);
  autograd::BackwardObserver* obs = g_backward_observer;
  obs->before(*this);
  std::vector<Tensor> grads = fn_(grad_out, needs_);
  obs->after(*this);
  return grads;
}

namespace {
// What a node owns that may own further nodes: its edges and its backward function's captures.
struct NodeParts {
  std::vector<Edge> next;
  BackwardFn fn;
};
// Set while a Node destructor frees its parts: the nodes that this frees in turn hand their parts to
// `pending` instead of freeing them inside it, and the outermost destructor frees them one by one.
thread_local bool t_freeing = false;
thread_local std::vector<NodeParts>* t_pending = nullptr;
}  // namespace

Node::~Node() {
  NodeParts mine;
  mine.next.swap(next_);
  mine.fn.swap(fn_);
  if (t_freeing) {
    t_pending->push_back(std::move(mine));
    return;
  }
  std::vector<NodeParts> pending;
  t_freeing = true;
  t_pending = &pending;
  pending.push_back(std::move(mine));
  while (!pending.empty()) {
    NodeParts parts = std::move(pending.back());
    pending.pop_back();
    // (freed here, at this depth: the nodes it held push their own parts onto `pending`)
    parts.next.clear();
    parts.fn = nullptr;
  }
  t_freeing = false;
  t_pending = nullptr;
}

void Node::release() {
  fn_ = nullptr;
  saved_.clear();
  next_.clear();
  released_ = true;
}

namespace autograd {

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool enabled) { g_grad_enabled = enabled; }
const void* current_tag() { return g_tag; }
void set_current_tag(const void* tag) { g_tag = tag; }
void set_backward_observer(BackwardObserver* observer) { g_backward_observer = observer; }
GradReadyListener* grad_ready_listener() { return g_grad_ready; }
GradReadyListener* set_grad_ready_listener(GradReadyListener* listener) {
  GradReadyListener* prev = g_grad_ready;
  g_grad_ready = listener;
  return prev;
}

bool would_record(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

namespace {
void record_node(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn, bool is_cast) {
  std::vector<bool> needs(inputs.size(), false);
  for (size_t i = 0; i < inputs.size(); ++i) needs[i] = inputs[i].defined() && inputs[i].requires_grad();
  std::vector<Edge> next(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!needs[i]) continue;
    next[i].shape = inputs[i].shape();
    next[i].dtype = inputs[i].dtype();
    if (inputs[i].grad_fn()) next[i].node = inputs[i].grad_fn();
    else next[i].leaf = inputs[i].impl_ptr();
  }
  out.impl()->grad_fn = std::make_shared<Node>(name, std::move(next), std::move(needs), std::move(fn), g_tag, is_cast);
}
}  // namespace

void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn,
            const std::vector<Tensor>& saved) {
  if (!would_record(inputs)) return;
  record_node(name, out, inputs, std::move(fn), false);
  if (!saved.empty()) out.impl()->grad_fn->set_saved(saved);
}

void record_cast(Tensor& out, const Tensor& in) {
  if (!would_record({in})) return;
  const DType from = in.dtype();
  record_node("cast", out, {in}, [from](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{g.detach().to(from)};
  }, true);
}

// The first gradient to reach a leaf becomes its .grad: g itself when nothing else can see it (its only
// handle, over memory of its own), which saves a copy per parameter per step (a graph node each on a
// GPU); otherwise a copy, as g may alias another gradient or a tensor of the caller's.
// `casts` (may be null): the pass's queued conversions, which the sum may read.
static void accumulate_leaf(TensorImpl* leaf, Tensor g, DeferredCasts* casts) {
  const Device at = leaf->storage->device;
  VOLT_CHECK(g.device() == at, "backward: a gradient computed on ", g.device().str(), " for a tensor on ", at.str(),
             " (moved, e.g. by Module::to, after the forward pass?): run the forward pass again after moving");
  if (!leaf->grad) {
    const bool sole = g.impl_ptr().use_count() == 1 && g.impl()->storage.use_count() == 1;
    leaf->grad = sole ? g.impl_ptr() : g.clone().impl_ptr();
  } else {
    if (casts) casts->flush();
    Tensor acc(leaf->grad);
    add_(acc, g);
  }
}

void backward(const Tensor& root, const Tensor& grad_root) {
  VOLT_CHECK(root.defined(), "backward: the tensor is undefined");
  VOLT_CHECK(root.requires_grad(), "backward: the tensor does not require grad and has no grad_fn "
             "(was it computed under NoGradGuard, or from tensors without requires_grad?)");
  Tensor g0 = grad_root;
  if (!g0.defined()) {
    VOLT_CHECK(root.numel() == 1, "backward: the output has shape ", shape_str(root.shape()),
               "; backward() without a gradient needs a one-element loss");
    g0 = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  VOLT_CHECK(g0.shape() == root.shape(), "backward: gradient shape ", shape_str(g0.shape()),
             " does not match output shape ", shape_str(root.shape()));
  VOLT_CHECK(g0.device() == root.device(), "backward: the gradient is on ", g0.device().str(), " but the output is on ",
             root.device().str());
  VOLT_CHECK(is_floating(g0.dtype()), "backward: the gradient is ", dtype_name(g0.dtype()),
             ", not a floating-point tensor");
  NoGradGuard no_grad;
  // In the output's dtype, as PyTorch does: each backward reads its gradient as its output's type.
  if (g0.dtype() != root.dtype()) g0 = g0.to(root.dtype());
  if (root.is_leaf()) {
    accumulate_leaf(root.impl(), g0, nullptr);
    if (g_grad_ready) g_grad_ready->grad_ready(root);
    return;
  }
  struct Pass {  // tells the observer (if any) where this pass begins and ends, even on a throw
    BackwardObserver* obs;
    explicit Pass(BackwardObserver* o) : obs(o) {
      if (obs) obs->pass_begin();
    }
    ~Pass() {
      if (obs) obs->pass_end();
    }
  } pass(g_backward_observer);
  // Count, for each node reachable from the root, how many edges point at it. `alive` owns every
  // reachable node until the walk ends: an intermediate output's node may be owned only by edges
  // that release() drops. With a gradient-ready listener, the edges into each leaf are counted too.
  LeafEdges leaves{g_grad_ready, {}};
  std::unordered_map<Node*, int> deps;
  std::unordered_map<Node*, std::shared_ptr<Node>> alive;
  std::vector<Node*> stack{root.grad_fn().get()};
  deps[root.grad_fn().get()] = 0;
  alive[root.grad_fn().get()] = root.grad_fn();
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next()) {
      leaves.add(e);
      if (!e.node) continue;
      auto it = deps.find(e.node.get());
      if (it == deps.end()) {
        deps[e.node.get()] = 1;
        alive[e.node.get()] = e.node;
        stack.push_back(e.node.get());
      } else {
        it->second += 1;
      }
    }
  }
  std::shared_ptr<Node> keep = root.grad_fn();
  std::unordered_map<Node*, Tensor> pending;
  pending[keep.get()] = g0;
  std::vector<Node*> ready{keep.get()};
  DeferredCasts casts;
  while (!ready.empty()) {
    Node* n = ready.back();
    ready.pop_back();
    Tensor g = pending[n];
    pending.erase(n);
    Tensor queued = casts.defer(*n, g);
    std::vector<Tensor> grads = queued.defined() ? std::vector<Tensor>{std::move(queued)} : n->apply(g);
    VOLT_CHECK(grads.size() == n->next().size(), "backward: '", n->name(), "' returned ", grads.size(),
               " gradients for ", n->next().size(), " inputs");
    std::vector<Edge> edges = n->next();  // copy: release() clears them
    const std::string name = n->name();
    n->release();
    for (size_t i = 0; i < edges.size(); ++i) {
      const Edge& e = edges[i];
      if (!e.node && !e.leaf) continue;
      // A gradient has its input's type (an op working in another precision returns it converted).
      Tensor gi = std::move(grads[i]);  // moved: a gradient nothing else holds can become a leaf's .grad
      if (gi.defined() && gi.dtype() != e.dtype) gi = gi.to(e.dtype);
      if (gi.defined()) {
        VOLT_CHECK(gi.shape() == e.shape, "backward: '", name, "' produced a gradient of shape ",
                   shape_str(gi.shape()), " for input ", i, " of shape ", shape_str(e.shape));
        if (e.leaf) {
          accumulate_leaf(e.leaf.get(), std::move(gi), &casts);
        } else {
          auto it = pending.find(e.node.get());
          if (it == pending.end()) pending[e.node.get()] = std::move(gi);
          else it->second = add(it->second, gi);
        }
      }
      leaves.processed(e);  // a leaf's last edge: its gradient is final
      if (e.node && --deps[e.node.get()] == 0) {
        if (pending.count(e.node.get())) {
          ready.push_back(e.node.get());
        } else {
          // No gradient reached this node: nothing flows further, but free its graph too.
          std::vector<Node*> drop{e.node.get()};
          while (!drop.empty()) {
            Node* d = drop.back();
            drop.pop_back();
            for (const Edge& de : d->next()) {
              leaves.processed(de);  // no gradient flows along it: the leaf gets nothing from here
              if (de.node && --deps[de.node.get()] == 0) {
                if (pending.count(de.node.get())) ready.push_back(de.node.get());
                else drop.push_back(de.node.get());
              }
            }
            d->release();
          }
        }
      }
    }
  }
  casts.flush();  // the last queued conversions (an error here reaches the caller)
}

}  // namespace autograd
}  // namespace volt
