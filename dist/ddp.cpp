// Rank-0 broadcast of a model's state and bucketed gradient averaging, after backward or overlapped
// with it (see ddp.h).
#include "dist/ddp.h"

#include <algorithm>
#include <cstring>

#include "engine/error.h"
#include "layers/module.h"

namespace volt {

void broadcast_from_rank0(Communicator& comm, const std::vector<Tensor>& tensors) {
  if (comm.size() == 1) return;
  std::vector<std::pair<void*, size_t>> on_device;  // one queued (fused) broadcast for all of them
  for (const Tensor& t : tensors) {
    VOLT_CHECK(t.defined(), "broadcast_from_rank0: undefined tensor");
    if (comm.device_buffers() && t.device().is_cuda()) {
      t.bump_version();
      on_device.emplace_back(t.raw_data(), t.nbytes());
    } else {
      comm.broadcast(t, 0);
    }
  }
  if (!on_device.empty()) comm.broadcast_queued(on_device, 0);
  comm.wait_queued();
}

void broadcast_from_rank0(Communicator& comm, const Module& module) {
  if (comm.size() == 1) return;
  std::vector<Tensor> tensors;
  for (const auto& kv : module.state_dict().items()) tensors.push_back(kv.second);
  broadcast_from_rank0(comm, tensors);
}

std::vector<std::vector<size_t>> make_buckets(const std::vector<Tensor>& params, size_t bucket_bytes) {
  VOLT_CHECK(bucket_bytes > 0, "DDP: bucket_bytes must be positive");
  std::vector<std::vector<size_t>> buckets;
  size_t in_bucket = 0;
  for (size_t k = params.size(); k-- > 0;) {
    const size_t bytes = params[k].nbytes();
    if (buckets.empty() || (in_bucket > 0 && in_bucket + bytes > bucket_bytes)) {
      buckets.emplace_back();
      in_bucket = 0;
    }
    buckets.back().push_back(k);
    in_bucket += bytes;
  }
  return buckets;
}

GradientAverager::GradientAverager(Communicator& comm, std::vector<Tensor> params, DDPOptions opts)
    : comm_(comm), params_(std::move(params)), opts_(opts) {
  VOLT_CHECK(opts_.bucket_bytes > 0, "DDP: bucket_bytes must be positive");
  VOLT_CHECK(!comm_.device_buffers(), "DDP: GradientAverager averages host (CPU) gradients but the ", comm_.backend(),
             " communicator works on device buffers: use OverlappedGradientAverager (make_gradient_averager picks it)");
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    VOLT_CHECK(p.defined(), "DDP: parameter ", i, " is undefined");
    VOLT_CHECK(p.dtype() == DType::F32, "DDP: parameter ", i, " is ", dtype_name(p.dtype()), "; gradients are averaged in float32");
    VOLT_CHECK(p.device().is_cpu(), "DDP: parameter ", i, " is on ", p.device().str(),
               "; this gradient averager works on host (CPU) tensors");
  }
  // Reverse order: the last layers' gradients are ready first in backward.
  buckets_ = make_buckets(params_, opts_.bucket_bytes);
  size_t largest = 0;
  for (const auto& bucket : buckets_) {
    size_t n = 0;
    for (size_t k : bucket) n += size_t(params_[k].numel());
    largest = std::max(largest, n);
  }
  buffer_.resize(largest);
}

namespace {
// The parameters that train: frozen ones (requires_grad off) take no part in the reduction, as in
// PyTorch's DDP, so their gradient stays undefined and the optimizer leaves them alone (weight
// decay and momentum included) as it does in a single process.
std::vector<Tensor> trainable_parameters(const Module& module) {
  std::vector<Tensor> out;
  for (const Tensor& p : module.parameters())
    if (p.requires_grad()) out.push_back(p);
  return out;
}
}  // namespace

GradientAverager::GradientAverager(Communicator& comm, const Module& module, DDPOptions opts)
    : GradientAverager(comm, trainable_parameters(module), opts) {}

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
      g.bump_version();
      std::memcpy(g.data<float>(), buffer_.data() + off, n * sizeof(float));
      off += n;
    }
  }
}

OverlappedGradientAverager::OverlappedGradientAverager(Communicator& comm, std::vector<Tensor> params, DDPOptions opts)
    : comm_(comm), params_(std::move(params)) {
  buckets_ = make_buckets(params_, opts.bucket_bytes);
  active_ = comm_.size() > 1 || comm_.device_buffers();
  if (params_.empty()) return;
  const Device device = params_[0].defined() ? params_[0].device() : Device::cpu();
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    VOLT_CHECK(p.defined(), "DDP: parameter ", i, " is undefined");
    VOLT_CHECK(p.dtype() == DType::F32, "DDP: parameter ", i, " is ", dtype_name(p.dtype()), "; gradients are averaged in float32");
    VOLT_CHECK(p.device() == device, "DDP: parameter ", i, " is on ", p.device().str(), " but parameter 0 on ",
               device.str(), "; the gradient buckets live on one device");
    VOLT_CHECK(index_.emplace(p.impl(), i).second, "DDP: parameter ", i, " appears twice in the parameter list");
  }
  VOLT_CHECK(device.is_cuda() || !comm_.device_buffers(), "DDP: the ", comm_.backend(), " communicator works on GPU "
             "buffers but the parameters are on ", device.str());
  VOLT_CHECK(device.is_cpu() || comm_.device_buffers() || comm_.size() == 1, "DDP: the parameters are on ", device.str(),
             " but the ", comm_.backend(), " communicator works on host buffers; data-parallel training on GPUs needs "
             "the nccl communicator");
  if (!active_) return;
  int64_t total = 0;
  for (const auto& bucket : buckets_)
    for (size_t k : bucket) total += params_[k].numel();
  flat_ = Tensor::zeros({total}, DType::F32, device);
  slots_.resize(params_.size());
  bucket_of_.resize(params_.size());
  int64_t off = 0;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const int64_t start = off;
    for (size_t k : buckets_[b]) {
      slots_[k] = flat_.narrow(off, params_[k].numel());
      bucket_of_[k] = b;
      off += params_[k].numel();
    }
    bucket_views_.push_back(flat_.narrow(start, off - start));
  }
  packed_.assign(params_.size(), 0);
  filled_.assign(buckets_.size(), 0);
}

OverlappedGradientAverager::OverlappedGradientAverager(Communicator& comm, const Module& module, DDPOptions opts)
    : OverlappedGradientAverager(comm, trainable_parameters(module), opts) {}

OverlappedGradientAverager::~OverlappedGradientAverager() {
  disarm();
  // A step cut short (an exception) may leave all-reduces writing flat_: Volt's stream waits for
  // them before anything it queues can reuse the memory.
  if (unwaited_) {
    try {
      comm_.wait_queued();
    } catch (...) {
    }
  }
}

void OverlappedGradientAverager::disarm() {
  if (armed_ && autograd::grad_ready_listener() == this) autograd::set_grad_ready_listener(previous_);
  armed_ = false;
}

void OverlappedGradientAverager::prepare_for_backward() {
  if (!active_ || armed_) return;
  VOLT_CHECK(next_launch_ == 0, "DDP: prepare_for_backward() again before all_reduce_gradients() averaged the "
             "previous backward's gradients");
  launched_.clear();
  launched_in_backward_ = 0;
  previous_ = autograd::set_grad_ready_listener(this);
  armed_ = true;
}

void OverlappedGradientAverager::grad_ready(const Tensor& leaf) {
  if (previous_) previous_->grad_ready(leaf);  // a listener installed before this one still hears
  auto it = index_.find(leaf.impl());
  if (it == index_.end()) return;  // a leaf that is not one of the parameters
  const size_t k = it->second;
  VOLT_CHECK(!packed_[k], "DDP: the gradient of parameter ", k, " became final twice before the optimizer step "
             "(two backward passes after one prepare_for_backward()?)");
  pack(k);
  // Launch in bucket order only: every rank issues the same collectives in the same order.
  if (++filled_[bucket_of_[k]] < buckets_[bucket_of_[k]].size()) return;
  while (next_launch_ < buckets_.size() && filled_[next_launch_] == buckets_[next_launch_].size()) {
    launch(next_launch_++);
    ++launched_in_backward_;
  }
}

void OverlappedGradientAverager::pack(size_t k) {
  const Tensor& p = params_[k];
  const Tensor g = p.grad();
  if (g.defined()) {
    VOLT_CHECK(g.numel() == p.numel() && g.device() == p.device(), "DDP: the gradient of parameter ", k, " (",
               shape_str(g.shape()), " on ", g.device().str(), ") does not match it (", shape_str(p.shape()), " on ",
               p.device().str(), ")");
    slots_[k].copy_(g.reshape({p.numel()}));  // converts a gradient of another type
  } else {
    slots_[k].zero_();  // no gradient on this rank: it counts as zero
  }
  packed_[k] = 1;
}

void OverlappedGradientAverager::launch(size_t b) {
  const Tensor& v = bucket_views_[b];
  comm_.all_reduce_queued(v.data<float>(), size_t(v.numel()), ReduceOp::Avg);
  launched_.push_back(b);
  unwaited_ = true;
}

void OverlappedGradientAverager::all_reduce_gradients() {
  if (!active_) return;
  disarm();
  if (next_launch_ == 0) {  // prepare_for_backward() was not called: nothing launched yet
    launched_.clear();
    launched_in_backward_ = 0;
  }
  // What backward left, in order: buckets with a parameter whose gradient never became final.
  for (; next_launch_ < buckets_.size(); ++next_launch_) {
    for (size_t k : buckets_[next_launch_])
      if (!packed_[k]) pack(k);
    launch(next_launch_);
  }
  comm_.wait_queued();  // Volt's stream, not the host, waits for the all-reduces
  unwaited_ = false;
  for (size_t k = 0; k < params_.size(); ++k) {
    Tensor& p = params_[k];
    Tensor g = p.grad();
    if (!g.defined() || g.dtype() != DType::F32) {
      g = Tensor::empty(p.shape(), DType::F32, p.device());
      p.set_grad(g);
    }
    g.reshape({p.numel()}).copy_(slots_[k]);
  }
  std::fill(packed_.begin(), packed_.end(), 0);
  std::fill(filled_.begin(), filled_.end(), 0);
  next_launch_ = 0;
}

std::unique_ptr<GradientReducer> make_gradient_averager(Communicator& comm, const Module& module, DDPOptions opts) {
  if (comm.device_buffers()) return std::make_unique<OverlappedGradientAverager>(comm, module, opts);
  return std::make_unique<GradientAverager>(comm, module, opts);
}

}  // namespace volt
