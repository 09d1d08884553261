// The DataLoader's two ways of delivering batches on a device (see loader.h): ResidentStore holds the
// dataset as uint8 on the device and makes each batch with one augment_batch launch; DeviceStager
// copies host batches from pinned memory on the device's copy stream, one batch ahead.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "dataset.h"
#include "loader.h"
#include "transform.h"
#include "../engine/augment.h"
#include "../engine/gpu.h"

namespace volt {

// The dataset decoded once into images uint8 [N, C, H, W] and labels int64 [N] on `device`, with the
// transform's table beside it; set_order() uploads an epoch's sample order once.
class ResidentStore {
 public:
  ResidentStore(const Dataset& data, const PreparedTransform& t, Device device);
  void set_order(const std::vector<int64_t>& order);
  // Positions [begin, begin + count) of the order, augmented with keys key_base + position * key_stride.
  void make(int64_t begin, int64_t count, uint64_t key_base, uint64_t key_stride, DType dtype, Batch& out) const;
  // What a store of `data` with an order of `order_size` takes on the device.
  static int64_t bytes_needed(const Dataset& data, int64_t order_size);

 private:
  AugmentSource src_;
  AugmentSpec spec_;
};

// Host batches (in pinned memory) staged on a CUDA device. stage() queues the copies on the copy
// stream after the work queued on the compute stream so far (the device blocks it allocates may have
// been in use there) and returns at once; take() hands the staged batch out, the compute stream
// waiting for its copy (the host does not). A slot's pinned buffers are released only after its
// copy completed: slots are reused round-robin, and reusing one waits for its old copy's event.
class DeviceStager {
 public:
  explicit DeviceStager(Device device);
  ~DeviceStager();  // waits for copies still in flight
  DeviceStager(const DeviceStager&) = delete;
  DeviceStager& operator=(const DeviceStager&) = delete;
  void stage(Batch&& host);
  int64_t staged_index() const;  // the staged batch's index, -1 when none
  Batch take();
  void clear();  // drops the staged batch (a new epoch, a resume)

 private:
  struct Slot {
    Batch host, device;
    std::unique_ptr<CudaEvent> writable, copied;
    bool in_flight = false;  // copied recorded, host buffers still held
  };
  void retire(Slot& s);  // waits for the slot's copy, then releases its host buffers
  Device device_;
  void* compute_ = nullptr;
  void* copy_ = nullptr;
  std::array<Slot, 3> slots_;
  int64_t next_slot_ = 0;
  Slot* staged_ = nullptr;
};

}  // namespace volt
