// DataLoader (see loader.h).
#include "data/loader.h"

#include "engine/error.h"

namespace volt {

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

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, const LoaderOptions& opts)
    : dataset_(std::move(dataset)), o_(opts), sampler_(checked_size(dataset_), sampler_options(opts)) {
  VOLT_CHECK(o_.batch_size >= 1, "DataLoader: batch_size must be at least 1, got ", o_.batch_size);
  VOLT_CHECK(o_.num_workers >= 0 && o_.num_workers <= 256, "DataLoader: num_workers must be in [0, 256], got ",
             o_.num_workers);
  VOLT_CHECK(o_.prefetch >= 1, "DataLoader: prefetch must be at least 1, got ", o_.prefetch);
  check_transform(o_.transform, dataset_->image_shape());
  VOLT_CHECK(num_batches() > 0, "DataLoader: ", dataset_->name(), " has ", sampler_.num_samples(),
             " samples on this rank, fewer than one batch of ", o_.batch_size, " with drop_last");
  set_epoch(0);
}

DataLoader::~DataLoader() { stop(); }

int64_t DataLoader::num_batches() const {
  const int64_t n = sampler_.num_samples();
  return o_.drop_last ? n / o_.batch_size : (n + o_.batch_size - 1) / o_.batch_size;
}

void DataLoader::set_epoch(int64_t epoch) { load_state({epoch, 0}); }

void DataLoader::load_state(const LoaderState& s) {
  VOLT_CHECK(s.epoch >= 0 && s.next_batch >= 0 && s.next_batch <= num_batches(), "DataLoader: cannot resume at batch ",
             s.next_batch, " of epoch ", s.epoch, " (", num_batches(), " batches per epoch)");
  stop();
  epoch_ = s.epoch;
  sampler_.set_epoch(s.epoch);
  order_ = sampler_.indices();
  next_batch_ = s.next_batch;
  // Workers start on the first next(): a set_epoch() right after construction (or a resume) then
  // costs nothing instead of throwing away batches already made.
  started_ = false;
}

void DataLoader::make_batch(int64_t b, Batch& out) const {
  const int64_t begin = b * o_.batch_size;
  const int64_t size = std::min<int64_t>(o_.batch_size, int64_t(order_.size()) - begin);
  const Shape chw = dataset_->image_shape();
  const int64_t d = shape_numel(chw);
  out.images = Tensor::empty({size, chw[0], chw[1], chw[2]});
  out.labels = Tensor::empty({size}, DType::I64);
  out.index = b;
  std::vector<uint8_t> pixels(static_cast<size_t>(d));
  float* img = out.images.data<float>();
  int64_t* lab = out.labels.data<int64_t>();
  const uint64_t per_epoch = uint64_t(dataset_->size()) * uint64_t(o_.world_size) + 1;
  for (int64_t k = 0; k < size; ++k) {
    const int64_t idx = order_[size_t(begin + k)];
    lab[k] = dataset_->get(idx, pixels.data());
    // Augmentation key: (epoch, position in the global order), independent of workers.
    const uint64_t key = uint64_t(epoch_) * per_epoch + uint64_t((begin + k) * o_.world_size + o_.rank);
    apply_transform(o_.transform, chw, pixels.data(), img + k * d, o_.seed, key);
  }
}

void DataLoader::start(int64_t first_batch) {
  started_ = true;
  stopping_ = false;
  workers_.clear();
  for (int w = 0; w < o_.num_workers; ++w) workers_.push_back(std::make_unique<Worker>());
  for (int w = 0; w < o_.num_workers; ++w)
    workers_[size_t(w)]->thread = std::thread([this, w, first_batch] { worker_loop(w, first_batch); });
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
}

void DataLoader::worker_loop(int w, int64_t first_batch) {
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

bool DataLoader::next(Batch& out) {
  if (next_batch_ >= num_batches()) return false;
  const int64_t b = next_batch_;
  if (o_.num_workers > 0 && !started_) start(b);
  if (o_.num_workers == 0) {
    make_batch(b, out);
  } else {
    Worker& w = *workers_[size_t(b % o_.num_workers)];
    Slot slot;
    {
      std::unique_lock<std::mutex> lock(w.mu);
      w.cv.wait(lock, [&] { return !w.queue.empty(); });
      slot = std::move(w.queue.front());
      w.queue.pop_front();
      w.cv.notify_all();
    }
    if (slot.error) std::rethrow_exception(slot.error);
    out = std::move(slot.batch);
  }
  ++next_batch_;
  return true;
}

}  // namespace volt
