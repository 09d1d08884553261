// DataLoader: batches of (images float [B, C, H, W], labels int64 [B]) from a Dataset, in an order
// fixed by (seed, epoch) and the rank's shard. num_workers threads decode and transform batches
// ahead into bounded queues (batch k is made by worker k % num_workers), so the batches and their
// order are the same for any number of workers. The position within the epoch is part of the
// state, so a resumed run continues at the exact next batch.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/sampler.h"
#include "data/transform.h"

namespace volt {

struct LoaderOptions {
  int64_t batch_size = 32;
  bool shuffle = false;
  bool drop_last = false;
  int num_workers = 0;  // 0: batches are made on the calling thread
  int prefetch = 2;     // batches queued ahead per worker
  uint64_t seed = 0;
  int64_t rank = 0, world_size = 1;
  TransformOptions transform;
};

struct Batch {
  Tensor images;  // float32 [B, C, H, W]
  Tensor labels;  // int64 [B]
  int64_t index = 0;  // batch number within the epoch
};

struct LoaderState {
  int64_t epoch = 0;
  int64_t next_batch = 0;
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, const LoaderOptions& opts);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Starts epoch `epoch` from its first batch (reshuffles when shuffle is on).
  void set_epoch(int64_t epoch);
  // Fills `out` with the next batch; false at the end of the epoch.
  bool next(Batch& out);
  int64_t num_batches() const;  // per epoch on this rank
  int64_t batch_size() const { return o_.batch_size; }
  const Dataset& dataset() const { return *dataset_; }
  LoaderState state() const { return {epoch_, next_batch_}; }
  void load_state(const LoaderState& s);  // continue at s.next_batch of epoch s.epoch

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };
  struct Worker {
    std::thread thread;
    std::deque<Slot> queue;
    std::mutex mu;
    std::condition_variable cv;
  };
  void make_batch(int64_t b, Batch& out) const;
  void start(int64_t first_batch);  // workers begin at first_batch (called by the first next())
  void stop();
  void worker_loop(int w, int64_t first_batch);

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions o_;
  DistributedSampler sampler_;
  std::vector<int64_t> order_;  // this rank's indices for the epoch
  int64_t epoch_ = 0, next_batch_ = 0;
  std::atomic<bool> stopping_{false};
  bool started_ = false;  // workers run for the current state (set_epoch/load_state only record it)
  std::vector<std::unique_ptr<Worker>> workers_;
};

}  // namespace volt
