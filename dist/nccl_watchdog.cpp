// The queued collectives' watchdog thread (see nccl_watchdog.h): an event per collective, polled
// every 2 ms while any is in flight; asleep otherwise.
#include "dist/nccl_watchdog.h"

#include <cuda_runtime_api.h>

#include "engine/error.h"
#include "kernels/cuda/check.h"

namespace volt::detail {

using Clock = std::chrono::steady_clock;

StreamWatchdog::StreamWatchdog(int device, double timeout_s, std::function<std::string()> poll_error,
                               std::function<void(const WatchFailure&)> on_failure)
    : device_(device), timeout_s_(timeout_s), poll_error_(std::move(poll_error)), on_failure_(std::move(on_failure)) {}

StreamWatchdog::~StreamWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (const Item& i : pending_) cudaEventDestroy(static_cast<cudaEvent_t>(i.done));
  for (void* e : free_events_) cudaEventDestroy(static_cast<cudaEvent_t>(e));
}

void StreamWatchdog::track(void* stream, const OpInfo& op) {
  std::lock_guard<std::mutex> lock(mu_);
  cudaEvent_t done = nullptr;
  if (free_events_.empty()) {
    CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  } else {
    done = static_cast<cudaEvent_t>(free_events_.back());
    free_events_.pop_back();
  }
  const cudaError_t rc = cudaEventRecord(done, static_cast<cudaStream_t>(stream));
  if (rc != cudaSuccess) free_events_.push_back(done);
  CUDA_CHECK(rc);
  pending_.push_back(Item{done, op, Clock::now()});
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  cv_.notify_one();
}

void StreamWatchdog::run() {
  cudaSetDevice(device_);  // the events' device, for this thread's queries
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (pending_.empty()) {
      cv_.wait(lock);
      continue;
    }
    // Completed items leave oldest first (one stream: they complete in order).
    while (!pending_.empty()) {
      const cudaError_t q = cudaEventQuery(static_cast<cudaEvent_t>(pending_.front().done));
      (void)cudaGetLastError();  // cudaErrorNotReady stays this thread's last error otherwise
      if (q == cudaErrorNotReady) break;
      if (q != cudaSuccess) {
        const WatchFailure f{WatchFailure::Gpu, pending_.front().op,
                             std::string(cudaGetErrorName(q)) + " (" + cudaGetErrorString(q) + ")", 0};
        lock.unlock();
        on_failure_(f);
        return;
      }
      free_events_.push_back(pending_.front().done);
      pending_.pop_front();
    }
    if (pending_.empty()) continue;
    const Item oldest = pending_.front();
    lock.unlock();
    const std::string err = poll_error_();
    const double waited = std::chrono::duration<double>(Clock::now() - oldest.start).count();
    if (!err.empty() || waited > timeout_s_) {
      on_failure_(WatchFailure{err.empty() ? WatchFailure::Timeout : WatchFailure::Comm, oldest.op, err, waited});
      return;
    }
    lock.lock();
    cv_.wait_for(lock, std::chrono::milliseconds(2));
  }
}

}  // namespace volt::detail
