// The training step as CUDA-graph replays (see graphed_step.h).
#include "dist/graphed_step.h"

namespace volt {

GraphedStep::~GraphedStep() {
  if (graph_) {
    graph_.reset();
    store_.forget_captured_logs();
  }
}

void GraphedStep::disable(const std::string& why) {
  if (!off_ && why != "off") out_() << "CUDA graphs: off (" << why << "); the training step runs eagerly\n";
  off_ = true;
}

bool GraphedStep::run(const Batch& b, int64_t full_batch, int64_t eager_taken,
                      const std::function<void(const Batch&)>& body, const std::function<void()>& undo) {
  if (off_ || b.labels.numel() != full_batch || b.images.device() != device_) return false;
  // (A batch of the full size but other images than the captured step's runs eagerly too.)
  if (graph_ && (b.images.shape() != input_.images.shape() || b.images.dtype() != input_.images.dtype() ||
                 b.labels.dtype() != input_.labels.dtype()))
    return false;
  if (!graph_) {
    // Warm-up: two eager steps, so that the optimizer's state (made by its first step, whether the
    // device then takes or skips it), the cuDNN plans and the allocator's cache exist before the capture.
    if (eager_taken < 2) return false;
    input_.images = b.images.clone();
    input_.labels = b.labels.clone();
    input_.index = b.index;
    auto g = std::make_unique<CudaGraph>(device_);
    try {
      g->capture([&] { body(input_); });
    } catch (const Error& e) {
      off_ = true;
      store_.forget_captured_logs();
      undo();
      out_() << e.what() << "\n";
      return false;
    }
    graph_ = std::move(g);
    out_() << "CUDA graphs: the training step is captured (" << graph_->nodes() << " nodes); each batch of "
         << full_batch << " is one replay\n";
  } else {
    input_.images.copy_(b.images);
    input_.labels.copy_(b.labels);
  }
  try {
    graph_->replay();  // a failed replay_check throws before anything runs
  } catch (const Error& e) {
    graph_.reset();
    store_.forget_captured_logs();
    disable(e.what());
    return false;
  }
  store_.replay_logs();
  return true;
}

}  // namespace volt
