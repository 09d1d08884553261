// Rank-0 broadcast of a model's state and bucketed gradient averaging (see ddp.h).
#include "dist/ddp.h"

#include <algorithm>
#include <cstring>

#include "engine/error.h"
#include "layers/module.h"

namespace volt {

void broadcast_from_rank0(Communicator& comm, const std::vector<Tensor>& tensors) {
  if (comm.size() == 1) return;
  for (const Tensor& t : tensors) {
    VOLT_CHECK(t.defined(), "broadcast_from_rank0: undefined tensor");
    comm.broadcast(t, 0);
  }
}

void broadcast_from_rank0(Communicator& comm, const Module& module) {
  if (comm.size() == 1) return;
  std::vector<Tensor> tensors;
  for (const auto& kv : module.state_dict().items()) tensors.push_back(kv.second);
  broadcast_from_rank0(comm, tensors);
}

GradientAverager::GradientAverager(Communicator& comm, std::vector<Tensor> params, DDPOptions opts)
    : comm_(comm), params_(std::move(params)), opts_(opts) {
  VOLT_CHECK(opts_.bucket_bytes > 0, "DDP: bucket_bytes must be positive");
  VOLT_CHECK(!comm_.device_buffers(), "DDP: GradientAverager averages host (CPU) gradients but the ", comm_.backend(),
             " communicator works on device buffers (the bucketed GPU all-reduce is not built yet)");
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    VOLT_CHECK(p.defined(), "DDP: parameter ", i, " is undefined");
    VOLT_CHECK(p.dtype() == DType::F32, "DDP: parameter ", i, " is ", dtype_name(p.dtype()), "; gradients are averaged in float32");
    VOLT_CHECK(p.device().is_cpu(), "DDP: parameter ", i, " is on ", p.device().str(),
               "; this gradient averager works on host (CPU) tensors");
  }
  // Reverse order: the last layers' gradients are ready first in backward.
  size_t in_bucket = 0, largest = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const size_t bytes = params_[k].nbytes();
    if (buckets_.empty() || (in_bucket > 0 && in_bucket + bytes > opts_.bucket_bytes)) {
      buckets_.emplace_back();
      in_bucket = 0;
    }
    buckets_.back().push_back(k);
    in_bucket += bytes;
    largest = std::max(largest, in_bucket);
  }
  buffer_.resize(largest / sizeof(float));
}

GradientAverager::GradientAverager(Communicator& comm, const Module& module, DDPOptions opts)
    : GradientAverager(comm, module.parameters(), opts) {}

void GradientAverager::all_reduce_gradients() {
  if (comm_.size() == 1) return;
  for (const std::vector<size_t>& bucket : buckets_) {
    // Pack: [grad of bucket[0] | grad of bucket[1] | ...]
    size_t off = 0;
    for (size_t k : bucket) {
      const Tensor& p = params_[k];
      const size_t n = size_t(p.numel());
      const Tensor g = p.grad();
      if (g.defined()) {
        VOLT_CHECK(g.numel() == p.numel() && g.dtype() == DType::F32 && g.device().is_cpu(),
                   "DDP: the gradient of parameter ", k, " is not a float32 CPU tensor of its shape");
        std::memcpy(buffer_.data() + off, g.data<float>(), n * sizeof(float));
      } else {
        std::fill_n(buffer_.data() + off, n, 0.f);
      }
      off += n;
    }
    comm_.all_reduce(buffer_.data(), off, ReduceOp::Avg);
    // Unpack into each gradient (created where it was undefined).
    off = 0;
    for (size_t k : bucket) {
      Tensor& p = params_[k];
      const size_t n = size_t(p.numel());
      Tensor g = p.grad();
      if (!g.defined()) {
        g = Tensor::empty(p.shape(), DType::F32);
        p.set_grad(g);
      }
      std::memcpy(g.data<float>(), buffer_.data() + off, n * sizeof(float));
      off += n;
    }
  }
}

}  // namespace volt
