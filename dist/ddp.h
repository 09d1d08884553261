// Data parallelism without the Trainer: make every rank start from rank 0's parameters and
// buffers, and average gradients across ranks in buckets (the gradients of several parameters
// flattened into one contiguous buffer, one all-reduce per bucket, copied back), so that every
// rank ends a step with bitwise-identical gradients and therefore identical parameters.
#pragma once
#include <cstddef>
#include <vector>

#include "dist/communicator.h"
#include "engine/tensor.h"

namespace volt {

class Module;

// Copies rank 0's parameters and buffers (in state_dict order) to every other rank.
void broadcast_from_rank0(Communicator& comm, const Module& module);
void broadcast_from_rank0(Communicator& comm, const std::vector<Tensor>& tensors);

struct DDPOptions {
  // Gradients are packed into buckets of about this many bytes (PyTorch's default is 25 MiB).
  // A parameter larger than a bucket gets a bucket of its own.
  size_t bucket_bytes = size_t(25) << 20;
};

// Averages the gradients of a fixed list of float32 CPU parameters over the ranks of `comm`.
// Buckets are filled in reverse parameter order (the order backward produces gradients). A
// parameter whose gradient is undefined on a rank counts as zero there, and after the reduction
// every parameter has the averaged gradient on every rank (the ranks must agree on the parameter
// list; nothing else is checked, for speed). With one rank nothing is touched.
class GradientAverager {
 public:
  GradientAverager(Communicator& comm, std::vector<Tensor> params, DDPOptions opts = {});
  GradientAverager(Communicator& comm, const Module& module, DDPOptions opts = {});

  // sum over ranks, then * (1 / size) on every rank: the same bits everywhere.
  void all_reduce_gradients();

  // Parameter indices of each bucket, in reduction order.
  const std::vector<std::vector<size_t>>& buckets() const { return buckets_; }
  const std::vector<Tensor>& parameters() const { return params_; }

 private:
  Communicator& comm_;
  std::vector<Tensor> params_;
  DDPOptions opts_;
  std::vector<std::vector<size_t>> buckets_;
  std::vector<float> buffer_;  // the largest bucket, reused
};

}  // namespace volt
