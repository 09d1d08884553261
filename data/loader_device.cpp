// ResidentStore and DeviceStager (see loader_device.h).
#include "data/loader_device.h"

#include <algorithm>
#include <exception>

#include "engine/error.h"
#include "engine/threads.h"

namespace volt {

// ---- ResidentStore ----

ResidentStore::ResidentStore(const Dataset& data, const PreparedTransform& t, Device device) : spec_(t.spec) {
  const int64_t n = data.size(), d = data.image_bytes();
  const Shape chw = data.image_shape();
  // Staged in a plain vector, not a host tensor: the host allocator would keep the block cached.
  std::vector<uint8_t> px(static_cast<size_t>(n * d));
  std::vector<int64_t> labels(static_cast<size_t>(n));
  // Decoded on every CPU this process may use (Dataset::get is safe to call from several threads, as
  // the host loader's workers do): the synthetic set at CIFAR-10's size took seconds on one core, an
  // image folder's decoding takes longer. The first error, by index, is the one raised.
  const int threads = int(std::min<int64_t>({available_cpus(), 16, std::max<int64_t>(1, n / 256)}));
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int t = 0; t < threads; ++t) {
    try {
      for (int64_t i = n * t / threads; i < n * (t + 1) / threads; ++i)
        labels[size_t(i)] = data.get(i, px.data() + i * d);
    } catch (...) {
      errors[size_t(t)] = std::current_exception();
    }
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  src_.images = Tensor::empty({n, chw[0], chw[1], chw[2]}, DType::U8, device);
  backend_for(device).copy_from_host(src_.images.raw_data(), px.data(), px.size(), device.index);
  src_.labels = Tensor::from_labels(labels, device);
  src_.lut = Tensor::from_vector({chw[0], 256}, t.lut, device);
}

void ResidentStore::set_order(const std::vector<int64_t>& order) { src_.order = Tensor::from_labels(order, src_.images.device()); }

void ResidentStore::make(int64_t begin, int64_t count, uint64_t key_base, uint64_t key_stride, DType dtype,
                         Batch& out) const {
  augment_batch(src_, spec_, begin, count, key_base, key_stride, dtype, out.images, out.labels);
}

int64_t ResidentStore::bytes_needed(const Dataset& data, int64_t order_size) {
  return data.size() * (data.image_bytes() + 8) + order_size * 8 + data.image_shape()[0] * 256 * 4;
}

// ---- DeviceStager ----

DeviceStager::DeviceStager(Device device)
    : device_(device), compute_(cuda_stream(device)), copy_(cuda_copy_stream(device)) {
  for (Slot& s : slots_) {
    s.writable = std::make_unique<CudaEvent>(device.index);
    s.copied = std::make_unique<CudaEvent>(device.index);
  }
}

DeviceStager::~DeviceStager() {
  for (Slot& s : slots_) {
    try {
      retire(s);
    } catch (const Error&) {  // a failing device: nothing left to protect
    }
  }
}

void DeviceStager::retire(Slot& s) {
  if (s.in_flight) s.copied->synchronize();
  s.in_flight = false;
  s.host = Batch();
  s.device = Batch();
}

void DeviceStager::stage(Batch&& host) {
  VOLT_CHECK(host.images.device().is_cpu() && host.labels.device().is_cpu(), "DeviceStager: the batch to stage "
             "must be in host memory");
  cuda_stream(device_);  // the device current for the event calls
  Slot& s = slots_[size_t(next_slot_++ % int64_t(slots_.size()))];
  retire(s);  // normally complete long ago: the slot was staged two batches before
  s.host = std::move(host);
  s.device.images = Tensor::empty(s.host.images.shape(), s.host.images.dtype(), device_);
  s.device.labels = Tensor::empty(s.host.labels.shape(), DType::I64, device_);
  s.device.index = s.host.index;
  s.writable->record(compute_);
  s.writable->block(copy_);
  cuda_copy_to_device_async(s.device.images.raw_data(), s.host.images.raw_data(), s.host.images.nbytes(), copy_);
  cuda_copy_to_device_async(s.device.labels.raw_data(), s.host.labels.raw_data(), s.host.labels.nbytes(), copy_);
  s.copied->record(copy_);
  s.in_flight = true;
  staged_ = &s;
}

int64_t DeviceStager::staged_index() const { return staged_ ? staged_->device.index : -1; }

Batch DeviceStager::take() {
  VOLT_CHECK(staged_ != nullptr, "DeviceStager: no batch staged");
  cuda_stream(device_);  // the device current for the event calls
  staged_->copied->block(compute_);
  Batch out = std::move(staged_->device);
  staged_->device = Batch();
  staged_ = nullptr;
  return out;
}

void DeviceStager::clear() {
  if (!staged_) return;
  // Its device blocks go back to the allocator: the copy into them must be over first.
  retire(*staged_);
  staged_ = nullptr;
}

}  // namespace volt
