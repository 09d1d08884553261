// CUDA graphs: a training step captured once and replayed, so a step costs one launch instead of a
// hundred. What makes a captured step replay correctly:
//   - memory: what the step allocates while captured comes from the graph's private pool of the
//     caching allocator, reserved while the graph lives, so replays write where the capture wrote;
//   - in-place changes: every storage the captured step bumps the version of (Tensor::bump_version:
//     parameters, optimizer state, gradients) is bumped again by each replay, so autograd still sees
//     that a tensor saved before a replay was changed by it;
//   - host values that change every step (Philox offsets of dropout masks, the optimizer's step
//     sizes): kernels read them from device memory through step_scalars(), whose host side is
//     re-run before every replay, so a replayed step sees the values an eager step would.
// Anything that needs the host inside the step (reading a value back, a synchronisation) makes
// capture fail with a volt::Error; callers then run the step eagerly.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

#include "device.h"

namespace volt {

struct Storage;

class CudaGraph {
 public:
  explicit CudaGraph(Device d);
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Records fn's work on the device's stream without running it (run it eagerly a few times first,
  // so that every lazy allocation and library plan exists). Throws volt::Error, leaving nothing
  // recorded, when fn does something a graph cannot hold.
  void capture(const std::function<void()>& fn);
  // Re-runs the step_scalars() fills registered during the capture, copies their values to the
  // device, and launches the recorded work; returns without waiting for it. The replay_check()s
  // registered during the capture run first: one that throws ends the replay before any fill.
  void replay();
  bool captured() const { return exec_ != nullptr; }
  Device device() const { return device_; }
  // The captured graph's nodes (kernels, copies, library calls' kernels): what one replay launches.
  size_t nodes() const { return nodes_; }

 private:
  friend const void* step_scalars(Device d, size_t n, std::function<void(uint64_t*)> fill);
  friend void replay_check(Device d, std::function<void()> check);
  void clear_recorded() {
    fills_.clear();
    checks_.clear();
    writes_.clear();
  }
  friend void cuda_graph_note_write(const std::shared_ptr<Storage>& s);
  struct Fill {
    size_t offset, n;
    std::function<void(uint64_t*)> fill;
  };
  Device device_;
  void* exec_ = nullptr;
  size_t nodes_ = 0;
  std::vector<Fill> fills_;
  std::vector<std::function<void()>> checks_;
  size_t used_ = 0;             // 8-byte values the fills write
  void* scalars_ = nullptr;     // device: kMaxScalars values the recorded kernels read
  uint64_t* staging_[2] = {nullptr, nullptr};  // pinned, alternating between replays
  std::unique_ptr<class CudaEvent> staged_[2];  // each staging buffer's copy has completed
  int next_ = 0;
  // The storages whose versions the captured step bumped; weak, so a replay bumps those still alive.
  std::unordered_map<const Storage*, std::weak_ptr<Storage>> writes_;
};

// The device address of n 8-byte values that the next kernels read. fill(values) writes them: at
// once, with the values then copied to the device ahead of the kernels queued next (eager); or, while
// a CudaGraph captures on d, before every replay of it. A fill that advances host state (a generator's
// offset, a step count) must do so inside fill, so that it happens once per executed step.
const void* step_scalars(Device d, size_t n, std::function<void(uint64_t* values)> fill);

// While a CudaGraph captures on d: check() runs at the start of every replay of it and throws
// volt::Error when the captured work cannot take the host state as it is then (SGD captured without
// momentum buffers, its momentum since raised); that replay then changes nothing. Otherwise nothing:
// an eager step is formed from the state as it is.
void replay_check(Device d, std::function<void()> check);

// True while a CudaGraph captures on this thread.
bool cuda_graph_capturing();

// Called by Tensor::bump_version: while a CudaGraph captures on this thread, s is one of the storages
// each replay of it changes in place.
void cuda_graph_note_write(const std::shared_ptr<Storage>& s);

}  // namespace volt
