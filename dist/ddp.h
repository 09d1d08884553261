// Data parallelism without the Trainer: make every rank start from rank 0's parameters and
// buffers, and average gradients across ranks in buckets (the gradients of several parameters
// flattened into one contiguous buffer, one all-reduce per bucket, copied back), so that every
// rank ends a step with bitwise-identical gradients and therefore identical parameters. Two
// averagers: GradientAverager on host tensors after backward (the CPU backend over MPI), and
// OverlappedGradientAverager, which reduces each bucket while backward still runs (the GPU
// backend over NCCL).
#pragma once
#include <cstddef>
#include <memory>
#include <unordered_map>
#include <vector>

#include "communicator.h"
#include "../engine/autograd.h"
#include "../engine/tensor.h"

namespace volt {

class Module;

// Copies rank 0's parameters and buffers (in state_dict order) to every other rank. On a device
// communicator the broadcasts of GPU tensors are queued, and Volt's stream waits for them: the host
// does not.
void broadcast_from_rank0(Communicator& comm, const Module& module);
void broadcast_from_rank0(Communicator& comm, const std::vector<Tensor>& tensors);

struct DDPOptions {
  // Gradients are packed into buckets of about this many bytes (PyTorch's default is 25 MiB).
  // A parameter larger than a bucket gets a bucket of its own.
  size_t bucket_bytes = size_t(25) << 20;
};

// Parameter indices per bucket, in reduction order: filled in reverse parameter order (the order
// backward produces gradients), a new bucket when the next parameter would take the current one
// past bucket_bytes (a non-empty bucket always takes at least one parameter).
std::vector<std::vector<size_t>> make_buckets(const std::vector<Tensor>& params, size_t bucket_bytes);

// What the Trainer needs of a gradient averager.
class GradientReducer {
 public:
  virtual ~GradientReducer() = default;
  // Call before the backward pass whose gradients the next all_reduce_gradients() averages (with
  // gradient accumulation, only the last micro-batch's). Does nothing unless the averager
  // overlaps with backward.
  virtual void prepare_for_backward() {}
  // Every rank, before the optimizer step: afterwards every parameter's .grad holds the average
  // over the ranks (sum, then * (1 / size): the same bits everywhere).
  virtual void all_reduce_gradients() = 0;
  // Parameter indices of each bucket, in reduction order.
  virtual const std::vector<std::vector<size_t>>& buckets() const = 0;
};

// Averages the gradients of a fixed list of float32 CPU parameters over the ranks of `comm`, after
// backward. A parameter whose gradient is undefined on a rank counts as zero there, and after the
// reduction every parameter has the averaged gradient on every rank (the ranks must agree on the
// parameter list; nothing else is checked, for speed). With one rank nothing is touched. Made from a
// Module, it takes the parameters that require gradients (frozen ones keep an undefined gradient).
// A parameter that no rank used in the step therefore gets a zero gradient, not an undefined one:
// unlike a single process (whose optimizers skip it), weight decay and momentum still move it.
// PyTorch's DDP refuses such a step unless find_unused_parameters=True; freeze such parameters.
class GradientAverager final : public GradientReducer {
 public:
  GradientAverager(Communicator& comm, std::vector<Tensor> params, DDPOptions opts = {});
  GradientAverager(Communicator& comm, const Module& module, DDPOptions opts = {});

  void all_reduce_gradients() override;
  const std::vector<std::vector<size_t>>& buckets() const override { return buckets_; }
  const std::vector<Tensor>& parameters() const { return params_; }

 private:
  Communicator& comm_;
  std::vector<Tensor> params_;
  DDPOptions opts_;
  std::vector<std::vector<size_t>> buckets_;
  std::vector<float> buffer_;  // the largest bucket, reused
};

// Averages the gradients of a fixed list of float32 parameters on one device while backward runs.
// Each bucket is a slice of one flat buffer on that device. prepare_for_backward() installs an
// autograd gradient-ready listener (engine/autograd.h) on this thread: as each parameter's gradient
// becomes final, it is copied into its slot (one device copy on Volt's stream), and a bucket whose
// slots are all filled is handed to comm.all_reduce_queued(): on a device communicator an event on
// Volt's stream orders the NCCL all-reduce after those copies, on the communicator's own stream,
// while backward goes on. Buckets are launched strictly in bucket order (a complete bucket waits
// for the earlier ones), so every rank issues the same collectives in the same order whatever order
// its gradients become final in. all_reduce_gradients() launches what backward left (buckets with
// a parameter that got no gradient in the pass: its slot is its current .grad, or zeros), makes
// Volt's stream wait for the all-reduces and copies the averages back into every .grad (created
// where undefined): no host synchronisation. Gradients stay separate tensors (not views of the
// bucket): autograd and the optimizers own them as before, at the cost of one device copy each
// way. Works on CPU tensors with a host communicator too (each all-reduce then blocks inside
// backward; the tests use it). Active with several ranks, or on a device communicator (world
// size 1 then runs the NCCL path); otherwise nothing is touched. One backward pass per
// prepare_for_backward(): a gradient that becomes final twice before all_reduce_gradients() is an
// error.
class OverlappedGradientAverager final : public GradientReducer, private autograd::GradReadyListener {
 public:
  OverlappedGradientAverager(Communicator& comm, std::vector<Tensor> params, DDPOptions opts = {});
  OverlappedGradientAverager(Communicator& comm, const Module& module, DDPOptions opts = {});
  ~OverlappedGradientAverager() override;
  OverlappedGradientAverager(const OverlappedGradientAverager&) = delete;
  OverlappedGradientAverager& operator=(const OverlappedGradientAverager&) = delete;

  void prepare_for_backward() override;
  void all_reduce_gradients() override;
  const std::vector<std::vector<size_t>>& buckets() const override { return buckets_; }
  const std::vector<Tensor>& parameters() const { return params_; }
  // The last step's bucket launches in order, and how many of them backward started.
  const std::vector<size_t>& launch_order() const { return launched_; }
  size_t launched_during_backward() const { return launched_in_backward_; }

 private:
  void grad_ready(const Tensor& leaf) override;
  void pack(size_t k);      // parameter k's gradient (or zeros) into its slot
  void launch(size_t b);    // bucket b's all-reduce
  void disarm();
  Communicator& comm_;
  std::vector<Tensor> params_;
  std::vector<std::vector<size_t>> buckets_;
  bool active_ = false;
  Tensor flat_;                  // every bucket, in bucket order: [sum of numel] float32
  std::vector<Tensor> slots_;    // per parameter: its [numel] view of flat_
  std::vector<Tensor> bucket_views_;
  std::vector<size_t> bucket_of_;
  std::unordered_map<const TensorImpl*, size_t> index_;  // parameter -> its index
  // This step: which slots are filled, how many per bucket, the next bucket to launch.
  std::vector<char> packed_;
  std::vector<size_t> filled_;
  size_t next_launch_ = 0;
  bool armed_ = false, unwaited_ = false;
  autograd::GradReadyListener* previous_ = nullptr;
  std::vector<size_t> launched_;
  size_t launched_in_backward_ = 0;
};

// The averager the Trainer uses on `comm`: OverlappedGradientAverager on a device communicator,
// GradientAverager on a host one.
std::unique_ptr<GradientReducer> make_gradient_averager(Communicator& comm, const Module& module, DDPOptions opts = {});

}  // namespace volt
