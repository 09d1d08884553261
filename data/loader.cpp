// DataLoader (see loader.h): the host workers, and the choice between the host and device modes.
#include "data/loader.h"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>

#include "data/loader_device.h"
#include "engine/error.h"
#include "engine/threads.h"
#include "engine/gpu.h"

namespace volt {

DataOnDevice parse_data_on_device(const std::string& text) {
  if (text == "auto") return DataOnDevice::Auto;
  if (text == "on") return DataOnDevice::On;
  if (text == "off") return DataOnDevice::Off;
  VOLT_FAIL("data on device: '", text, "' is not one of auto, on, off");
}

const char* data_on_device_name(DataOnDevice d) {
  return d == DataOnDevice::Auto ? "auto" : (d == DataOnDevice::On ? "on" : "off");
}

namespace {
std::string size_str(double bytes) {
  char b[32];
  if (bytes >= 1e12) std::snprintf(b, sizeof b, "%.1f TB", bytes / 1e12);
  else if (bytes >= 1e9) std::snprintf(b, sizeof b, "%.1f GB", bytes / 1e9);
  else std::snprintf(b, sizeof b, "%.1f MB", bytes / 1e6);
  return b;
}
}  // namespace

LoaderPlacement choose_placement(DataOnDevice want, Device device, const std::string& name, int64_t bytes,
                                 size_t free_bytes) {
  const std::string need = name + "'s " + size_str(double(bytes));
  if (want == DataOnDevice::Off)
    return {device.is_cuda() ? LoaderMode::HostToDevice : LoaderMode::Host, "data on device: off"};
  if (device.is_cpu()) {
    if (want == DataOnDevice::On) return {LoaderMode::Resident, "data on device: on, " + need + " in host memory"};
    return {LoaderMode::Host, "training on the CPU"};
  }
  const std::string avail = size_str(double(free_bytes)) + " free on " + device.str();
  if (want == DataOnDevice::On) {
    VOLT_CHECK(double(bytes) <= double(free_bytes), "data on device: on, but ", need,
               " of uint8 images, labels and order do not fit in the ", avail,
               "; use data on device auto or off (--data-on-device) to load from the host");
    return {LoaderMode::Resident, "data on device: on, " + need + " of " + avail};
  }
  if (double(bytes) <= kResidentFraction * double(free_bytes))
    return {LoaderMode::Resident, need + " fit in a quarter of the " + avail};
  return {LoaderMode::HostToDevice, need + " exceed a quarter of the " + avail};
}

static SamplerOptions sampler_options(const LoaderOptions& o) {
  SamplerOptions s;
  s.shuffle = o.shuffle;
  s.seed = o.seed;
  s.rank = o.rank;
  s.world_size = o.world_size;
  return s;
}

static int64_t checked_size(const std::shared_ptr<const Dataset>& d) {
  VOLT_CHECK(d != nullptr, "DataLoader: dataset is null");
  return d->size();
}

std::string DataLoader::order_signature() const {
  std::ostringstream os;
  os << dataset_->size() << " samples in batches of " << o_.batch_size << " over " << o_.world_size << " rank"
     << (o_.world_size == 1 ? "" : "s") << (o_.drop_last ? ", last partial batch dropped" : "")
     << (o_.shuffle ? ", shuffled with seed " + std::to_string(o_.seed) : ", in order");
  return os.str();
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, const LoaderOptions& opts)
    : dataset_(std::move(dataset)), o_(opts), sampler_(checked_size(dataset_), sampler_options(opts)) {
  VOLT_CHECK(o_.batch_size >= 1, "DataLoader: batch_size must be at least 1, got ", o_.batch_size);
  VOLT_CHECK(o_.num_workers >= 0 && o_.num_workers <= 256, "DataLoader: num_workers must be in [0, 256], got ",
             o_.num_workers);
  VOLT_CHECK(o_.prefetch >= 1, "DataLoader: prefetch must be at least 1, got ", o_.prefetch);
  transform_ = prepare_transform(o_.transform, dataset_->image_shape(), o_.seed);
  VOLT_CHECK(num_batches() > 0, "DataLoader: ", dataset_->name(), " has ", sampler_.num_samples(),
             " samples on this rank, fewer than one batch of ", o_.batch_size, " with drop_last");
  VOLT_CHECK(o_.image_dtype == DType::F32 || o_.image_dtype == DType::F16 || o_.image_dtype == DType::BF16,
             "DataLoader: image_dtype must be float32, float16 or bfloat16, got ", dtype_name(o_.image_dtype));
  size_t free_bytes = 0, total_bytes = 0;
  if (o_.device.is_cuda() && o_.data_on_device != DataOnDevice::Off)
    cuda_mem_info(o_.device.index, &free_bytes, &total_bytes);
  placement_ = choose_placement(o_.data_on_device, o_.device, dataset_->name(),
                                ResidentStore::bytes_needed(*dataset_, sampler_.num_samples()), free_bytes);
  if (placement_.mode == LoaderMode::HostToDevice) stager_ = std::make_unique<DeviceStager>(o_.device);
  set_epoch(0);
}

DataLoader::~DataLoader() { stop(); }

std::string DataLoader::mode_note() const {
  const std::string workers = std::to_string(o_.num_workers) + " worker" + (o_.num_workers == 1 ? "" : "s");
  switch (placement_.mode) {
    case LoaderMode::Resident:
      return (o_.device.is_cuda() ? "GPU-resident on " + o_.device.str() : std::string("resident in host memory")) +
             ", one fused crop/flip/normalise kernel per batch (" + placement_.why + ")";
    case LoaderMode::HostToDevice:
      return "host loader (" + workers + ") into pinned memory, copied to " + o_.device.str() +
             " on a copy stream one batch ahead (" + placement_.why + ")";
    case LoaderMode::Host: break;
  }
  return "host loader (" + workers + ", " + placement_.why + ")";
}

int64_t DataLoader::num_batches() const {
  const int64_t n = sampler_.num_samples();
  // (not (n + batch_size - 1) / batch_size: that overflows for a batch size near INT64_MAX)
  return o_.drop_last ? n / o_.batch_size : n / o_.batch_size + (n % o_.batch_size != 0);
}

void DataLoader::set_epoch(int64_t epoch) { load_state({epoch, 0}); }

void DataLoader::load_state(const LoaderState& s) {
  VOLT_CHECK(s.epoch >= 0 && s.next_batch >= 0 && s.next_batch <= num_batches(), "DataLoader: cannot resume at batch ",
             s.next_batch, " of epoch ", s.epoch, " (", num_batches(), " batches per epoch)");
  // Workers start on the first next(): a set_epoch() right after construction (or a resume) then
  // costs nothing instead of throwing away batches already made.
  stop();
  epoch_ = s.epoch;
  sampler_.set_epoch(s.epoch);
  order_ = sampler_.indices();
  next_batch_ = s.next_batch;
  order_on_device_ = false;
  if (stager_) stager_->clear();
  ahead_error_ = nullptr;
}

uint64_t DataLoader::key_base() const {
  // Augmentation key: (epoch, position in the global order), independent of workers and modes.
  const uint64_t per_epoch = uint64_t(dataset_->size()) * uint64_t(o_.world_size) + 1;
  return uint64_t(epoch_) * per_epoch + uint64_t(o_.rank);
}

void DataLoader::make_batch(int64_t b, Batch& out) const {
  const int64_t begin = b * o_.batch_size;
  const int64_t size = std::min<int64_t>(o_.batch_size, int64_t(order_.size()) - begin);
  const Shape chw = dataset_->image_shape();
  const int64_t d = shape_numel(chw);
  const Shape shape{size, chw[0], chw[1], chw[2]};
  // Batches bound for a GPU are made in pinned memory, so that their copy is asynchronous. Pinning
  // uses the calling thread's current device: make it the loader's (a worker thread starts on GPU 0,
  // where each rank would otherwise open a CUDA context of its own).
  const bool pinned = placement_.mode == LoaderMode::HostToDevice;
  if (pinned) cuda_stream(o_.device);
  auto alloc = [&](const Shape& s, DType t) { return pinned ? Tensor::empty_pinned(s, t) : Tensor::empty(s, t); };
  const bool f32 = o_.image_dtype == DType::F32;
  Tensor images = f32 ? alloc(shape, DType::F32) : Tensor::empty(shape);
  out.labels = alloc({size}, DType::I64);
  out.index = b;
  std::vector<uint8_t> pixels(static_cast<size_t>(d));
  float* img = images.data<float>();
  int64_t* lab = out.labels.data<int64_t>();
  const uint64_t base = key_base(), stride = uint64_t(o_.world_size);
  for (int64_t k = 0; k < size; ++k) {
    lab[k] = dataset_->get(order_[size_t(begin + k)], pixels.data());
    transform_.apply(pixels.data(), img + k * d, base + uint64_t(begin + k) * stride);
  }
  if (f32) {
    out.images = images;
  } else {
    out.images = alloc(shape, o_.image_dtype);
    out.images.copy_(images);
  }
}

void DataLoader::start(int64_t first_batch) {
  stop();
  stopping_ = false;
  for (int w = 0; w < o_.num_workers; ++w) workers_.push_back(std::make_unique<Worker>());
  for (int w = 0; w < o_.num_workers; ++w) {
    try {
      workers_[size_t(w)]->thread = std::thread([this, w, first_batch] { worker_loop(w, first_batch); });
    } catch (const std::system_error& e) {
      // Without every worker the consumer would wait forever on the missing one's queue: join those
      // already running and stay "not started", so that the next call tries again.
      stop();
      VOLT_FAIL("DataLoader: cannot start worker thread ", w + 1, " of ", o_.num_workers, ": ", e.what(),
                "; use fewer workers (num_workers)");
    }
  }
  started_ = true;  // only now: every batch from first_batch on has a worker that will make it
}

void DataLoader::stop() {
  for (auto& w : workers_) {
    std::lock_guard<std::mutex> lock(w->mu);
    stopping_ = true;
    w->cv.notify_all();
  }
  stopping_ = true;
  for (auto& w : workers_)
    if (w->thread.joinable()) w->thread.join();
  workers_.clear();
  started_ = false;
}

void DataLoader::worker_loop(int w, int64_t first_batch) {
  run_kernels_single_threaded();  // the workers are the parallelism (a 16-bit batch's conversion)
  Worker& me = *workers_[size_t(w)];
  const int W = o_.num_workers;
  // The first batch this worker owns at or after first_batch.
  int64_t b = first_batch + ((w - first_batch % W) % W + W) % W;
  for (; b < num_batches(); b += W) {
    Slot slot;
    try {
      make_batch(b, slot.batch);
    } catch (...) {
      slot.error = std::current_exception();
    }
    std::unique_lock<std::mutex> lock(me.mu);
    me.cv.wait(lock, [&] { return stopping_ || int(me.queue.size()) < o_.prefetch; });
    if (stopping_) return;
    const bool failed = slot.error != nullptr;
    me.queue.push_back(std::move(slot));
    me.cv.notify_all();
    if (failed) return;  // the consumer rethrows when it reaches this batch
  }
}

Batch DataLoader::host_batch(int64_t b) {
  if (o_.num_workers > 0 && !started_) start(b);
  Batch out;
  if (o_.num_workers == 0) {
    make_batch(b, out);
    return out;
  }
  Worker& w = *workers_[size_t(b % o_.num_workers)];
  Slot slot;
  {
    std::unique_lock<std::mutex> lock(w.mu);
    w.cv.wait(lock, [&] { return !w.queue.empty(); });
    slot = std::move(w.queue.front());
    w.queue.pop_front();
    w.cv.notify_all();
  }
  if (slot.error) {
    // The worker that failed has exited, so its queue would stay empty: a retry would wait forever.
    // Stop them all instead; the next call starts them again at this batch (next_batch_ has not
    // moved) and gets the same error again, or the batch when the failure was transient, as
    // without workers.
    stop();
    std::rethrow_exception(slot.error);
  }
  return std::move(slot.batch);
}

void DataLoader::resident_batch(int64_t b, Batch& out) {
  if (!resident_) resident_ = std::make_unique<ResidentStore>(*dataset_, transform_, o_.device);  // once
  if (!order_on_device_) {
    resident_->set_order(order_);  // once per epoch
    order_on_device_ = true;
  }
  const int64_t begin = b * o_.batch_size;
  const int64_t size = std::min<int64_t>(o_.batch_size, int64_t(order_.size()) - begin);
  resident_->make(begin, size, key_base(), uint64_t(o_.world_size), o_.image_dtype, out);
  out.index = b;
}

void DataLoader::staged_batch(int64_t b, Batch& out) {
  if (ahead_error_) std::rethrow_exception(std::exchange(ahead_error_, nullptr));
  if (stager_->staged_index() != b) {  // the first batch of an epoch, after a resume, or after an error
    // After an error the workers may be past b: a batch taken from them whose staging failed is
    // gone from their queues. Restart them at b (at an epoch's start they are not running anyway).
    stop();
    stager_->clear();
    stager_->stage(host_batch(b));
  }
  out = stager_->take();
  // The next batch's copy runs while the caller computes on this one; its error waits for its turn.
  if (b + 1 < num_batches()) {
    try {
      stager_->stage(host_batch(b + 1));
    } catch (...) {
      ahead_error_ = std::current_exception();
    }
  }
}

bool DataLoader::next(Batch& out) {
  if (next_batch_ >= num_batches()) return false;
  const int64_t b = next_batch_;
  switch (placement_.mode) {
    case LoaderMode::Resident: resident_batch(b, out); break;
    case LoaderMode::HostToDevice: staged_batch(b, out); break;
    case LoaderMode::Host: out = host_batch(b); break;
  }
  ++next_batch_;
  return true;
}

}  // namespace volt
