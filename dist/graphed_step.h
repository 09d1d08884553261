// The Trainer's training step as CUDA-graph replays (TrainerOptions::cuda_graphs): after two eager
// steps that called the optimizer, the step (training_step, backward, the optimizer's update) is
// captured once on a copy of the batch, and every later batch of the full size is copied into that
// input and replayed, with the step's log() calls applied again on the host. A step that a graph
// cannot hold falls back to eager for the rest of the fit, saying why once.
#pragma once
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <utility>

#include "../data/loader.h"
#include "lightning_module.h"
#include "../engine/cuda_graph.h"

namespace volt {

class GraphedStep {
 public:
  // out: the stream for its messages, asked for each one (the Trainer's ends a live progress line first).
  GraphedStep(Device device, std::function<std::ostream&()> out, MetricStore& store)
      : device_(device), out_(std::move(out)), store_(store) {}
  ~GraphedStep();
  // Stops using graphs; `why` is printed once unless it is "off" (graphs not asked for or no GPU).
  void disable(const std::string& why);
  bool disabled() const { return off_; }
  // Runs the step on b as a replay of the captured `body` (capturing it first, once `eager_taken`
  // eager steps have called the optimizer); false when b must run eagerly (a shorter batch, the
  // warm-up, graphs off, or a capture that failed). After a failed capture `undo` clears what the
  // abandoned body left behind (gradients that were never computed, a half-done scaler step).
  bool run(const Batch& b, int64_t full_batch, int64_t eager_taken, const std::function<void(const Batch&)>& body,
           const std::function<void()>& undo);

 private:
  Device device_;
  std::function<std::ostream&()> out_;
  MetricStore& store_;
  std::unique_ptr<CudaGraph> graph_;
  Batch input_;  // the captured step's batch: each batch is copied in before its replay
  bool off_ = false;
};

}  // namespace volt
