// Reverse-mode autograd: ops record a Node per output while grad mode is on and an input needs a
// gradient; Tensor::backward() walks the nodes in reverse topological order, accumulates into
// leaf .grad, and frees the graph (saved tensors and edges) as it goes.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor.h"

namespace volt {

// Where a gradient flows: an upstream node, or a leaf tensor that accumulates it.
struct Edge {
  std::shared_ptr<Node> node;
  std::shared_ptr<TensorImpl> leaf;
  Shape shape;               // the input's shape: backward results are checked against it
  DType dtype = DType::F32;  // and its type: a gradient of another type is converted to it
};

// grad_out -> one gradient per input (undefined where needs[i] is false).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out, const std::vector<bool>& needs)>;

class Node {
 public:
  Node(std::string name, std::vector<Edge> next, std::vector<bool> needs, BackwardFn fn, const void* tag = nullptr,
       bool is_cast = false)
      : name_(std::move(name)), next_(std::move(next)), needs_(std::move(needs)), fn_(std::move(fn)), tag_(tag),
        is_cast_(is_cast) {}
  // Frees what this node alone kept alive without recursing once per node: a graph of a million
  // nodes dropped without a backward would overflow the stack (see autograd.cpp).
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  const std::string& name() const { return name_; }
  // A node recorded by record_cast: its backward only converts the gradient to its input's type.
  bool is_cast() const { return is_cast_; }
  // What was running when the node was recorded (autograd::current_tag(): the profiler sets it to
  // the layer whose forward made the node); nullptr when nothing was set.
  const void* tag() const { return tag_; }
  const std::vector<Edge>& next() const { return next_; }
  const std::vector<bool>& needs() const { return needs_; }
  bool released() const { return released_; }
  // The tensors the backward function reads, and their versions now: apply() refuses to run when one
  // has been changed in place since (its gradients would be computed from the new values).
  void set_saved(const std::vector<Tensor>& saved);
  std::vector<Tensor> apply(const Tensor& grad_out);
  void release();  // drops saved tensors and edges

 private:
  struct SavedVersion {
    std::weak_ptr<TensorImpl> tensor;  // alive while the backward function holds it
    std::weak_ptr<Storage> storage;    // its memory then (Module::to gives a tensor other memory)
    uint64_t version;
  };
  std::vector<SavedVersion> saved_;
  std::string name_;
  std::vector<Edge> next_;
  std::vector<bool> needs_;
  BackwardFn fn_;
  const void* tag_ = nullptr;
  bool is_cast_ = false;
  bool released_ = false;
};

namespace autograd {

bool grad_enabled();
void set_grad_enabled(bool enabled);

// Connects `out` to `inputs` through `fn` (a no-op when grad mode is off or no input needs a gradient).
// Undefined inputs (an absent bias) are allowed. `fn` must not capture `out` itself (use out.detach()).
// `saved`: the tensors `fn` reads that a caller can reach (inputs, the output; not the op's own
// temporaries), whose in-place change before the backward is an error there, as in PyTorch.
void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn,
            const std::vector<Tensor>& saved = {});
// record() for a change of floating type: out is `in` converted to out's type. Its backward converts
// the gradient back; on a GPU, backward() converts the float16/bfloat16 gradients of float32 leaves
// (mixed precision's master weights) in one launch for the whole pass instead of one each (see
// backward()).
void record_cast(Tensor& out, const Tensor& in);
// Whether record() keeps a node for these inputs (grad mode on and one of them requires grad): an op
// can then skip saving what only its backward reads.
bool would_record(const std::vector<Tensor>& inputs);

// Accumulates d(root)/d(leaf) into every leaf's .grad that root depends on. The gradients of casts into
// float32 leaves on a GPU (record_cast's nodes) are converted together, in one launch, before anything
// reads them: before another gradient is added to such a leaf, and when the pass ends; not while a
// gradient-ready listener is installed (it reads each leaf's gradient the moment it is final).
void backward(const Tensor& root, const Tensor& grad_root);

// Profiling hooks (thread-local, off by default). Nodes recorded while a tag is set carry it;
// a backward observer is told when a backward pass starts and ends, and before and after each
// node's backward function runs.
const void* current_tag();
void set_current_tag(const void* tag);
class BackwardObserver {
 public:
  virtual ~BackwardObserver() = default;
  virtual void pass_begin() {}
  virtual void pass_end() {}
  virtual void before(const Node& n) = 0;
  virtual void after(const Node& n) = 0;
};
void set_backward_observer(BackwardObserver* observer);

// Gradient-ready hook (thread-local, off by default; data-parallel training starts a leaf's
// all-reduce from it). During backward(), grad_ready(leaf) is called once per leaf that the pass
// reaches, as soon as its .grad is final for the pass: every edge into the leaf from the nodes the
// pass visits has been processed (a leaf used several times, e.g. a shared weight, is reported
// once, after its last contribution was accumulated). An edge whose gradient came back undefined,
// or that hangs below a branch no gradient reached, counts as processed: the leaf is still
// reported, and its .grad is then whatever it held (undefined when nothing was ever accumulated).
// Leaves the pass does not reach are not reported; nor are any after backward() throws. The
// accumulation's kernels are queued (not finished) on the leaf's device stream when it is called.
// Without a listener the pass counts nothing.
class GradReadyListener {
 public:
  virtual ~GradReadyListener() = default;
  virtual void grad_ready(const Tensor& leaf) = 0;
};
// Installs `listener` for backward passes on this thread (nullptr: none); returns the previous one.
GradReadyListener* set_grad_ready_listener(GradReadyListener* listener);
GradReadyListener* grad_ready_listener();

}  // namespace autograd

// Disables graph recording in a scope (evaluation, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(autograd::grad_enabled()) { autograd::set_grad_enabled(false); }
  ~NoGradGuard() { autograd::set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace volt
