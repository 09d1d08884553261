// DataLoader: batches of (images float [B, C, H, W], labels int64 [B]) from a Dataset, in an order
// fixed by (seed, epoch) and the rank's shard. num_workers threads decode and transform batches
// ahead into bounded queues (batch k is made by worker k % num_workers), so the batches and their
// order are the same for any number of workers. The position within the epoch is part of the
// state, so a resumed run continues at the exact next batch.
// On a CUDA device the batches arrive already there, made one of two ways (LoaderMode): the dataset
// resident on the device as uint8, each batch one fused gather+augment kernel on the device's stream
// (no per-step host work); or the host workers' batches in pinned memory, copied on the device's copy
// stream one batch ahead, the compute stream waiting on the copy's event. Every mode makes the same
// batches (float32 bit for bit).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dataset.h"
#include "sampler.h"
#include "transform.h"

namespace volt {

// Whether a loader keeps its dataset on the device it delivers to (cnn_train's --data-on-device):
// Auto: on a CUDA device when the dataset fits in kResidentFraction of the free device memory;
// On: always (an error when it does not fit in the free memory; on the CPU: decoded once into host
// memory, batches made on the calling thread); Off: never (host workers).
enum class DataOnDevice { Auto, On, Off };
DataOnDevice parse_data_on_device(const std::string& text);  // "auto", "on", "off"; volt::Error otherwise
const char* data_on_device_name(DataOnDevice d);
constexpr double kResidentFraction = 0.25;

// How a loader makes its batches: Host (worker threads, batches in host memory), HostToDevice (the
// same into pinned memory, copied to the device one batch ahead), Resident (one fused kernel per
// batch from the uint8 dataset held on the device).
enum class LoaderMode { Host, HostToDevice, Resident };
struct LoaderPlacement {
  LoaderMode mode = LoaderMode::Host;
  std::string why;  // the reason, for the log
};
// The rule behind the mode, given the bytes the resident store needs and the device's free bytes
// (unused on the CPU). Throws volt::Error when On cannot be honoured.
LoaderPlacement choose_placement(DataOnDevice want, Device device, const std::string& dataset_name,
                                 int64_t resident_bytes, size_t free_device_bytes);

struct LoaderOptions {
  int64_t batch_size = 32;
  bool shuffle = false;
  bool drop_last = false;
  int num_workers = 0;  // 0: batches are made on the calling thread
  int prefetch = 2;     // batches queued ahead per worker
  uint64_t seed = 0;
  int64_t rank = 0, world_size = 1;
  TransformOptions transform;
  Device device = Device::cpu();  // where batches are delivered
  DataOnDevice data_on_device = DataOnDevice::Auto;
  DType image_dtype = DType::F32;  // float32, or float16 / bfloat16 for mixed precision
};

struct Batch {
  Tensor images;  // image_dtype [B, C, H, W] on the loader's device
  Tensor labels;  // int64 [B]
  int64_t index = 0;  // batch number within the epoch
};

struct LoaderState {
  int64_t epoch = 0;
  int64_t next_batch = 0;
};

class ResidentStore;
class DeviceStager;

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
  // What fixes the order and content of the epoch's batches across the ranks (data set size, batch
  // size, world size, drop_last, shuffle and seed), in words: a mid-epoch position means the same
  // batches only under the same signature.
  std::string order_signature() const;
  void load_state(const LoaderState& s);  // continue at s.next_batch of epoch s.epoch
  LoaderMode mode() const { return placement_.mode; }
  // One line for the log: the mode, where the batches go, and why this mode.
  std::string mode_note() const;

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
  Batch host_batch(int64_t b);  // batch b from the workers (or made here without workers), in order
  void resident_batch(int64_t b, Batch& out);
  void staged_batch(int64_t b, Batch& out);
  void start(int64_t first_batch);  // workers begin at first_batch (called by the first next())
  void stop();  // joins the workers, drops their queues; the next host_batch() starts them again
  void worker_loop(int w, int64_t first_batch);
  uint64_t key_base() const;  // augmentation key of position p: key_base() + p * world_size

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions o_;
  PreparedTransform transform_;
  LoaderPlacement placement_;
  DistributedSampler sampler_;
  std::vector<int64_t> order_;  // this rank's indices for the epoch
  int64_t epoch_ = 0, next_batch_ = 0;
  std::atomic<bool> stopping_{false};
  bool started_ = false;  // workers run for the current state (set_epoch/load_state only record it)
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<ResidentStore> resident_;  // Resident: made at the first batch
  bool order_on_device_ = false;             // Resident: this epoch's order uploaded
  std::unique_ptr<DeviceStager> stager_;     // HostToDevice
  std::exception_ptr ahead_error_;           // HostToDevice: making the batch ahead failed
};

}  // namespace volt
