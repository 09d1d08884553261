// The watchdog of the NCCL communicator's queued collectives (dist/nccl_communicator.cpp): work that
// the host does not wait for, followed from a thread of its own so that a collective that fails or
// never completes is reported instead of leaving a stream (and whoever later waits on it) hanging.
// Internal to dist/nccl_*.cpp; no CUDA or NCCL header (a stream is a cudaStream_t passed as void*).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace volt::detail {

// What a collective is, for reports: the operation, its detail (the reduction), its sequence number
// (the same on every rank) and its size.
struct OpInfo {
  const char* op = nullptr;
  const char* detail = nullptr;
  int64_t seq = 0;
  size_t bytes = 0;
};

// Why a watched collective failed: an error on the GPU (the event's query failed), an error of
// the communicator (poll_error's text), or still running after the timeout.
struct WatchFailure {
  enum Kind { Gpu, Comm, Timeout } kind;
  OpInfo op;
  std::string detail;  // Gpu, Comm: the error; Timeout: empty
  double waited_s = 0;
};

class StreamWatchdog {
 public:
  // poll_error: "" while the communicator is healthy, else its error (called on the watchdog thread
  // while something is in flight, without the watchdog's lock). on_failure: called once, on the
  // watchdog thread, for the first failure; the thread stops after it (it may end the process).
  StreamWatchdog(int device, double timeout_s, std::function<std::string()> poll_error,
                 std::function<void(const WatchFailure&)> on_failure);
  ~StreamWatchdog();  // stops the thread; tracked work is not waited for
  StreamWatchdog(const StreamWatchdog&) = delete;
  StreamWatchdog& operator=(const StreamWatchdog&) = delete;

  // Records an event after the work queued so far on `stream` and follows it until it completes.
  // Every tracked item must be on the same stream (they complete in order). Starts the thread.
  void track(void* stream, const OpInfo& op);

 private:
  struct Item {
    void* done;  // cudaEvent_t
    OpInfo op;
    std::chrono::steady_clock::time_point start;
  };
  void run();
  int device_;
  double timeout_s_;
  std::function<std::string()> poll_error_;
  std::function<void(const WatchFailure&)> on_failure_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> pending_;
  std::vector<void*> free_events_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace volt::detail
