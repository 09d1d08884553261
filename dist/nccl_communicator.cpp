// The NCCL communicator on device buffers (compiled only with the CUDA backend and MPI), one GPU per
// process (process_gpu: the local rank's, or the one GPU a task is bound to). Bootstrapped by MPI:
// the ranks' GPU UUIDs are all-gathered (two ranks on one GPU are refused), rank 0's
// ncclGetUniqueId goes to every rank with MPI_Bcast, then ncclCommInitRankConfig (world size 1 needs no MPI). The NCCL communicator is
// non-blocking (config.blocking = 0), so no NCCL call can hang the host. Every collective on
// device memory runs on the communicator's own stream after an event on Volt's stream of the
// device. A blocking one is watched by polling ncclCommGetAsyncError and cudaStreamQuery; a queued
// one (all_reduce_queued, broadcast_queued) by a watchdog thread polling an event recorded after it.
// An NCCL or CUDA error, or a collective still running after the timeout, aborts the NCCL
// communicator (ncclCommAbort), is reported with the operation and its size, and ends the job
// (MPI_Abort) or throws (abort_on_failure = false; a queued collective's failure at the next call).
// Host memory (metric sums, the pre-emption flag, the log folder's name) goes over the MPI
// communicator that bootstrapped NCCL: host values need no GPU round trip, and reducing them never
// waits for the gradient all-reduces queued on the GPU.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dist/communicator.h"
#include "dist/mpi_check.h"
#include "dist/nccl_watchdog.h"
#include "engine/error.h"
#include "kernels/comm.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/nccl_check.h"
#include "kernels/cuda/runtime.h"

namespace volt {
namespace {

using detail::OpInfo;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Makes `device` current for a scope (a caller may have switched devices between collectives).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) CUDA_CHECK(cudaSetDevice(device));
    else prev_ = -1;
  }
  ~DeviceGuard() {
    if (prev_ >= 0) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const ProcessEnv& env, const CommOptions& opts) : opts_(opts), rank_(env.rank), size_(env.world_size) {
    VOLT_CHECK(size_ >= 1 && rank_ >= 0 && rank_ < size_, "NCCL communicator: rank ", rank_, " of ", size_, " is not a rank");
    // MPI first on every rank: a rank failing a check below leaves the others in a bootstrap
    // collective, which times out ($VOLT_COMM_TIMEOUT), not in MPI's start-up, which waits for ever.
    if (size_ > 1) detail::ensure_mpi_runtime();
    int gpus = 0;
    const cudaError_t e = cudaGetDeviceCount(&gpus);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      gpus = 0;
    }
    VOLT_CHECK(gpus > 0, "NCCL communicator: no CUDA device is visible (no GPU, no driver, or CUDA_VISIBLE_DEVICES "
               "is empty); run the CPU backend with the MPI communicator instead");
    device_ = process_gpu(env, gpus);
    CUDA_CHECK(cudaSetDevice(device_));

    // The unique id: made locally for world size 1, else by rank 0 and broadcast over MPI.
    ncclUniqueId id;
    if (size_ == 1) {
      NCCL_CHECK(ncclGetUniqueId(&id));
    } else {
      int mpi_rank = 0, mpi_size = 0;
      MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &mpi_rank));
      MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &mpi_size));
      VOLT_CHECK(mpi_rank == rank_ && mpi_size == size_, "MPI sees rank ", mpi_rank, " of ", mpi_size, " but the launcher says ",
                 env.str(), ": was the program launched with an MPI that differs from the one Volt was built with (or "
                 "srun without --mpi=pmix)?");
      check_gpus_distinct(env);
      if (rank_ == 0) NCCL_CHECK(ncclGetUniqueId(&id));
      begin("bootstrap (MPI_Bcast of the NCCL id)", sizeof(id));
      MPI_Request req;
      MPI_CHECK(MPI_Ibcast(&id, int(sizeof(id)), MPI_BYTE, 0, MPI_COMM_WORLD, &req));
      wait_mpi(req, "did not receive rank 0's id");
    }

    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&joined_, cudaEventDisableTiming));
    CUDA_CHECK(cudaMalloc(&scratch_, 16));

    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // calls return ncclInProgress instead of blocking: the host keeps control
    begin("ncclCommInitRank", 0);
    const ncclResult_t rc = ncclCommInitRankConfig(&comm_, size_, id, rank_, &config);
    if (rc != ncclSuccess && rc != ncclInProgress)
      fail(describe(op_) + " failed: " + ncclGetErrorString(rc) + last_error());
    wait_enqueued(Clock::now());
    op_.op = nullptr;
    // Host memory's collectives: MPI between ranks (already running: it bootstrapped NCCL).
    if (size_ > 1) host_ = make_mpi_communicator(opts_);
    else host_ = std::make_unique<LocalCommunicator>();
  }

  ~NcclCommunicator() override {
    watchdog_.reset();  // first: its thread uses the members below
    if (comm_) {
      // Finalize flushes outstanding work; a communicator that does not finish within a bound (or
      // failed) is aborted instead, so going out of scope never hangs.
      const ncclResult_t fin = ncclCommFinalize(comm_);
      bool clean = fin == ncclSuccess || fin == ncclInProgress;
      const auto start = Clock::now();
      while (clean) {
        ncclResult_t st = ncclSuccess;
        if (ncclCommGetAsyncError(comm_, &st) != ncclSuccess) st = ncclInternalError;
        if (st == ncclSuccess) break;
        if (st != ncclInProgress || seconds_since(start) > std::min(10.0, opts_.timeout_s)) {
          clean = false;
          break;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      if (clean) ncclCommDestroy(comm_);
      else ncclCommAbort(comm_);
    }
    if (scratch_) cudaFree(scratch_);
    if (ready_) cudaEventDestroy(ready_);
    if (joined_) cudaEventDestroy(joined_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "nccl"; }
  bool device_buffers() const override { return true; }
  using Communicator::all_gather;
  using Communicator::all_reduce;
  using Communicator::broadcast;

  void all_reduce(float* data, size_t count, ReduceOp op) override { reduce(data, count, op, ncclFloat32); }
  void all_reduce(double* data, size_t count, ReduceOp op) override { reduce(data, count, op, ncclFloat64); }
  void all_reduce(int64_t* data, size_t count, ReduceOp op) override { reduce(data, count, op, ncclInt64); }

  void broadcast(void* data, size_t bytes, int root) override {
    check_root(root);
    if (bytes == 0) return;  // the same on every rank
    DeviceGuard guard(device_);
    check_usable();
    if (is_host_memory(data, "broadcast")) return host_->broadcast(data, bytes, root);
    begin("broadcast", bytes);
    order_after_volt_stream();
    const auto start = Clock::now();
    enqueue([&](ncclComm_t c) { return ncclBroadcast(data, data, bytes, ncclUint8, root, c, stream_); }, start);
    wait(start);
  }

  void all_gather(const void* send, void* recv, size_t bytes_per_rank) override {
    if (bytes_per_rank == 0) return;
    DeviceGuard guard(device_);
    check_usable();
    const bool host_send = is_host_memory(send, "all_gather (send)"), host_recv = is_host_memory(recv, "all_gather (recv)");
    VOLT_CHECK(host_send == host_recv, "Communicator::all_gather: the send buffer is ", host_send ? "host" : "device",
               " memory but the receive buffer ", host_recv ? "host" : "device", " memory; give both on one side");
    if (host_send) return host_->all_gather(send, recv, bytes_per_rank);
    const size_t total = bytes_per_rank * size_t(size_);
    begin("all_gather", total);
    order_after_volt_stream();
    const char* in = static_cast<const char*>(send);
    char* out = static_cast<char*>(recv);
    // NCCL allows in place only at this rank's slot; any other overlap goes through a copy.
    void* copy = nullptr;
    if (in != out + bytes_per_rank * size_t(rank_) && in < out + total && out < in + bytes_per_rank) {
      CUDA_CHECK(cudaMallocAsync(&copy, bytes_per_rank, stream_));
      CUDA_CHECK(cudaMemcpyAsync(copy, in, bytes_per_rank, cudaMemcpyDeviceToDevice, stream_));
      in = static_cast<const char*>(copy);
    }
    const auto start = Clock::now();
    enqueue([&](ncclComm_t c) { return ncclAllGather(in, out, bytes_per_rank, ncclUint8, c, stream_); }, start);
    if (copy) CUDA_CHECK(cudaFreeAsync(copy, stream_));
    wait(start);
  }

  // A one-element all-reduce, waited on: every rank has reached the barrier when it completes.
  void barrier() override {
    DeviceGuard guard(device_);
    check_usable();
    begin("barrier", 0);
    const auto start = Clock::now();
    enqueue([&](ncclComm_t c) { return ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, c, stream_); }, start);
    wait(start);
  }

  void io_barrier() override { detail::barrier_with_io_limit(*this, limit_, opts_); }

  // Queued collectives: ordered after Volt's stream by an event, not waited for by the host; the
  // watchdog thread follows them (see track()).
  void all_reduce_queued(float* data, size_t count, ReduceOp op) override {
    if (count == 0) return;
    DeviceGuard guard(device_);
    check_usable();
    require_device_memory(data, "all_reduce_queued");
    begin("all_reduce (queued)", count * sizeof(float));
    op_.detail = reduce_op_name(op);
    order_after_volt_stream();
    enqueue([&](ncclComm_t c) { return ncclAllReduce(data, data, count, ncclFloat32, nccl_op(op), c, stream_); },
            Clock::now());
    if (op == ReduceOp::Avg && size_ > 1) cuda::scale_inplace(int64_t(count), data, float(1.0 / size_), stream_);
    track();
  }

  void broadcast_queued(void* data, size_t bytes, int root) override {
    check_root(root);
    if (bytes == 0) return;
    DeviceGuard guard(device_);
    check_usable();
    require_device_memory(data, "broadcast_queued");
    begin("broadcast (queued)", bytes);
    order_after_volt_stream();
    enqueue([&](ncclComm_t c) { return ncclBroadcast(data, data, bytes, ncclUint8, root, c, stream_); }, Clock::now());
    track();
  }

  // The buffers' broadcasts in NCCL groups of up to 1024 (NCCL takes 2048 operations per group): one
  // launch instead of one per buffer (the per-step BatchNorm buffers). A non-blocking communicator
  // may answer ncclInProgress at ncclGroupEnd, which enqueue() waits out.
  void broadcast_queued(const std::vector<std::pair<void*, size_t>>& buffers, int root) override {
    check_root(root);
    std::vector<std::pair<void*, size_t>> parts;
    for (const auto& [data, bytes] : buffers) {
      if (bytes == 0) continue;
      require_device_memory(data, "broadcast_queued");
      parts.emplace_back(data, bytes);
    }
    if (parts.empty()) return;
    DeviceGuard guard(device_);
    check_usable();
    constexpr size_t kGroup = 1024;
    for (size_t first = 0; first < parts.size(); first += kGroup) {
      const size_t last = std::min(parts.size(), first + kGroup);
      size_t total = 0;
      for (size_t i = first; i < last; ++i) total += parts[i].second;
      begin("broadcast (queued, grouped)", total);
      order_after_volt_stream();
      enqueue([&](ncclComm_t c) {
        ncclResult_t rc = ncclGroupStart();
        if (rc != ncclSuccess) return rc;
        for (size_t i = first; i < last && (rc == ncclSuccess || rc == ncclInProgress); ++i)
          rc = ncclBroadcast(parts[i].first, parts[i].first, parts[i].second, ncclUint8, root, c, stream_);
        const ncclResult_t end = ncclGroupEnd();  // always closes the group, even after a failed call
        return rc != ncclSuccess && rc != ncclInProgress ? rc : end;
      }, Clock::now());
      track();
    }
  }

  // Volt's stream waits for everything queued so far on the communicator's stream (an event
  // recorded now: this also holds inside a CUDA graph capture, where it joins the two streams).
  void wait_queued() override {
    DeviceGuard guard(device_);
    check_usable();
    CUDA_CHECK(cudaEventRecord(joined_, stream_));
    CUDA_CHECK(cudaStreamWaitEvent(volt_stream(), joined_, 0));
  }

  [[noreturn]] void abort(int exit_code, const std::string& why) override {
    std::fprintf(stderr, "volt: rank %d of %d: %s\n", rank_, size_, why.c_str());
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (comm_) {
        ncclCommAbort(comm_);  // frees the GPU's NCCL kernels and connections so nothing waits on them
        comm_ = nullptr;
      }
    }
    const int status = exit_code == 0 ? 1 : exit_code;
    if (detail::mpi_abort_allowed_here()) {
      std::fprintf(stderr, "volt: rank %d: aborting the job (MPI_Abort)\n", rank_);
      std::fflush(nullptr);  // stdout too: _Exit and MPI_Abort flush nothing
      MPI_Abort(MPI_COMM_WORLD, status);
    } else if (detail::mpi_is_running()) {
      // The watchdog's thread under an MPI without MPI_THREAD_MULTIPLE may not call MPI: this rank
      // exits, and the launcher (srun --kill-on-bad-exit, mpirun) or the others' timeouts end the job.
      std::fprintf(stderr, "volt: rank %d: exiting with status %d (this MPI forbids MPI_Abort from the watchdog "
                   "thread); the launcher or the other ranks' timeouts stop the job\n", rank_, status);
    }
    std::fflush(nullptr);
    std::_Exit(status);
  }

 private:
  static ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::Max ? ncclMax : ncclSum; }
  cudaStream_t volt_stream() const { return static_cast<cudaStream_t>(cuda::default_stream(device_)); }

  void check_root(int root) const {
    VOLT_CHECK(root >= 0 && root < size_, "Communicator::broadcast: root ", root, " is not a rank (world size ", size_, ")");
  }

  void begin(const char* op, size_t bytes) {
    op_ = OpInfo{op, nullptr, ++seq_, bytes};
  }

  std::string describe(const OpInfo& o) const {
    std::ostringstream os;
    os << (o.op ? o.op : "nothing");
    if (o.detail) os << "(" << o.detail << ")";
    os << " #" << o.seq << " of " << o.bytes << " bytes on cuda:" << device_;
    return os.str();
  }

  // NCCL's last message on this communicator; the caller holds mu_ (or no other thread runs).
  std::string last_error_locked() const {
    const char* s = comm_ ? ncclGetLastError(comm_) : nullptr;
    return s && *s ? std::string(" (") + s + ")" : std::string();
  }
  std::string last_error() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_error_locked();
  }

  // `limit`: the blocking call's limit_, or the queued collectives' (the watchdog thread's) default.
  std::string timeout_report(const OpInfo& o, double waited, const char* state,
                             const CommOptions::Limit& limit) const {
    std::ostringstream os;
    os.precision(3);
    os << describe(o) << " did not complete within " << limit.seconds << " s (waited " << waited << " s, " << state
       << ", world size " << size_ << "): another rank died, hangs, or called a different collective. Set $"
       << limit.variable << " (seconds) to change the timeout";
    return os.str();
  }

  // After a failure the NCCL communicator is aborted: every later call says why, instead of
  // handing NCCL a dead communicator.
  void check_usable() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.empty())
      VOLT_FAIL("rank ", rank_, " of ", size_, ": the nccl communicator was aborted after an earlier failure: ", failure_);
  }

  // true for host memory (pageable or pinned), which the blocking collectives hand to the host
  // communicator; false for memory of this process's GPU (or managed memory); another GPU's is an
  // error.
  bool is_host_memory(const void* p, const char* what) const {
    cudaPointerAttributes attr{};
    const cudaError_t e = cudaPointerGetAttributes(&attr, p);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      return true;  // memory CUDA does not know
    }
    if (attr.type == cudaMemoryTypeManaged) return false;
    if (attr.type != cudaMemoryTypeDevice) return true;
    VOLT_CHECK(attr.device == device_, "Communicator::", what, ": ", p, " is memory of cuda:", attr.device,
               " but this rank's communicator uses cuda:", device_);
    return false;
  }

  // A queued collective runs while the host goes on, so there is no point at which a host buffer
  // could be copied back: it needs device memory.
  void require_device_memory(const void* p, const char* what) const {
    VOLT_CHECK(!is_host_memory(p, what), "Communicator::", what, ": ", p, " is host memory; the nccl communicator's "
               "queued collectives need memory of cuda:", device_, " (the blocking ones take host buffers)");
  }

  template <class T>
  void reduce(T* data, size_t count, ReduceOp op, ncclDataType_t type) {
    if (count == 0) return;  // the same on every rank: nothing to do anywhere
    DeviceGuard guard(device_);
    check_usable();
    if (is_host_memory(data, "all_reduce")) return host_->all_reduce(data, count, op);
    begin("all_reduce", count * sizeof(T));
    op_.detail = reduce_op_name(op);
    order_after_volt_stream();
    const auto start = Clock::now();
    enqueue([&](ncclComm_t c) { return ncclAllReduce(data, data, count, type, nccl_op(op), c, stream_); }, start);
    if (op == ReduceOp::Avg && size_ > 1) scale_to_average(data, count);
    wait(start);
  }
  void scale_to_average(float* x, size_t n) { cuda::scale_inplace(int64_t(n), x, float(1.0 / size_), stream_); }
  void scale_to_average(double* x, size_t n) { cuda::scale_inplace(int64_t(n), x, 1.0 / size_, stream_); }
  void scale_to_average(int64_t* x, size_t n) { cuda::divide_inplace(int64_t(n), x, int64_t(size_), stream_); }

  // The collective reads what Volt's kernels on this device queued before the call.
  void order_after_volt_stream() {
    CUDA_CHECK(cudaEventRecord(ready_, volt_stream()));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
  }

  // Makes the NCCL call under the lock (the watchdog thread may abort the communicator); a
  // non-blocking communicator may still be queueing the operation (ncclInProgress).
  template <class F>
  void enqueue(F&& call, Clock::time_point start) {
    ncclResult_t rc;
    {
      std::lock_guard<std::mutex> lock(mu_);
      rc = comm_ ? call(comm_) : ncclInvalidUsage;
    }
    if (rc != ncclSuccess && rc != ncclInProgress) fail(describe(op_) + " failed: " + ncclGetErrorString(rc) + last_error());
    if (rc == ncclInProgress) wait_enqueued(start);
  }

  // ncclCommGetAsyncError: ncclInProgress while NCCL is still queueing, else the first error.
  ncclResult_t async_state() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!comm_) return ncclInvalidUsage;
    ncclResult_t st = ncclSuccess;
    const ncclResult_t rc = ncclCommGetAsyncError(comm_, &st);
    return rc != ncclSuccess ? rc : st;
  }

  // Polls until NCCL has finished the pending call (init or queueing), with the timeout.
  void wait_enqueued(Clock::time_point start) {
    for (;;) {
      const ncclResult_t st = async_state();
      if (st == ncclSuccess) return;
      if (st != ncclInProgress) fail(describe(op_) + " failed: " + ncclGetErrorString(st) + last_error());
      const double waited = seconds_since(start);
      if (waited > limit_.seconds) fail(timeout_report(op_, waited, "NCCL still in progress on the host", limit_));
      detail::poll_backoff(waited);
    }
  }

  // The blocking collectives' watchdog: polls the stream until the collective (and what follows it
  // on the stream) is done, checking NCCL's asynchronous error (a peer that failed or went away).
  void wait(Clock::time_point start) {
    for (;;) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) {
        op_.op = nullptr;
        return;
      }
      // A query that finds work pending still leaves cudaErrorNotReady as the thread's last error,
      // which the next kernel launch's check would report: clear it in every case.
      (void)cudaGetLastError();
      if (q != cudaErrorNotReady)
        fail(describe(op_) + " failed on the GPU: " + cudaGetErrorName(q) + " (" + cudaGetErrorString(q) + ")");
      const ncclResult_t st = async_state();
      if (st != ncclSuccess && st != ncclInProgress)
        fail(describe(op_) + " failed: " + ncclGetErrorString(st) + last_error() + " (has a rank died?)");
      const double waited = seconds_since(start);
      if (waited > limit_.seconds) fail(timeout_report(op_, waited, "still running on the GPU", limit_));
      detail::poll_backoff(waited);
    }
  }

  // A queued collective: followed by the watchdog thread (made with the first one) until it
  // completes. Not while a CUDA graph captures Volt's stream: the collective then runs at each
  // replay, which no host call here sees (and a captured event cannot be queried).
  void track() {
    if (cuda::stream_capturing(volt_stream())) {
      op_.op = nullptr;
      return;
    }
    if (!watchdog_) {
      watchdog_ = std::make_unique<detail::StreamWatchdog>(
          device_, opts_.timeout_s,
          [this] {
            const ncclResult_t st = async_state();
            return st == ncclSuccess || st == ncclInProgress ? std::string() : ncclGetErrorString(st) + last_error();
          },
          [this](const detail::WatchFailure& f) { watchdog_failed(f); });
    }
    watchdog_->track(stream_, op_);
    op_.op = nullptr;
  }

  // On the watchdog thread: a queued collective failed or outlived the timeout. The NCCL
  // communicator is aborted (so that no stream waits on it forever), then the job ends
  // (abort_on_failure) or the next call on the communicator throws the report.
  void watchdog_failed(const detail::WatchFailure& f) {
    std::string msg;
    switch (f.kind) {
      case detail::WatchFailure::Gpu: msg = describe(f.op) + " failed on the GPU: " + f.detail; break;
      case detail::WatchFailure::Comm: msg = describe(f.op) + " failed: " + f.detail + " (has a rank died?)"; break;
      case detail::WatchFailure::Timeout: msg = timeout_report(f.op, f.waited_s, "queued, still running on the GPU", opts_.collective_limit()); break;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (failure_.empty()) failure_ = msg;
      if (comm_) ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    if (opts_.abort_on_failure) abort(1, msg);
  }

  // Waits for an MPI request of the bootstrap (op_ names it), never past the timeout.
  void wait_mpi(MPI_Request& req, const char* state) {
    const auto start = Clock::now();
    for (;;) {
      int done = 0;
      const int rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) fail(describe(op_) + " failed: " + detail::mpi_error_string(rc) + " (has a rank died?)");
      if (done) break;
      const double waited = seconds_since(start);
      if (waited > opts_.timeout_s) fail(timeout_report(op_, waited, state, opts_.collective_limit()));
      detail::poll_backoff(waited);
    }
    op_.op = nullptr;
  }

  // Every rank's GPU, gathered over MPI: two ranks on one GPU are refused on every rank alike
  // (a throw, not an abort: all ranks see the same list), before NCCL would find them.
  void check_gpus_distinct(const ProcessEnv& env) {
    struct Slot {
      unsigned char uuid[16];
      int node, device;
    };
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
    Slot mine{};
    std::memcpy(mine.uuid, prop.uuid.bytes, sizeof(mine.uuid));
    mine.node = env.node_rank;
    mine.device = device_;
    std::vector<Slot> all(static_cast<size_t>(size_));
    begin("bootstrap (MPI_Allgather of the GPUs' UUIDs)", sizeof(Slot) * all.size());
    MPI_Request req;
    MPI_CHECK(MPI_Iallgather(&mine, int(sizeof(Slot)), MPI_BYTE, all.data(), int(sizeof(Slot)), MPI_BYTE,
                             MPI_COMM_WORLD, &req));
    wait_mpi(req, "not every rank sent its GPU");
    std::vector<RankGpu> gpus;
    for (int r = 0; r < size_; ++r) {
      const Slot& s = all[size_t(r)];
      char text[64];
      int n = std::snprintf(text, sizeof(text), "GPU-");
      for (int i = 0; i < 16; ++i)
        n += std::snprintf(text + n, sizeof(text) - size_t(n), "%s%02x", (i == 4 || i == 6 || i == 8 || i == 10) ? "-" : "",
                           unsigned(s.uuid[i]));
      gpus.push_back(RankGpu{r, s.node, s.device, text});
    }
    check_distinct_gpus(gpus);
  }

  [[noreturn]] void fail(std::string msg) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (failure_.empty()) failure_ = msg;
      else msg = failure_;  // the watchdog found it first: its report names the cause
      if (comm_) {
        ncclCommAbort(comm_);  // no further collective can run on it; NCCL's kernels are stopped
        comm_ = nullptr;
      }
    }
    if (opts_.abort_on_failure) abort(1, msg);
    VOLT_FAIL("rank ", rank_, " of ", size_, ": ", msg);
  }

  CommOptions opts_;
  CommOptions::Limit limit_ = opts_.collective_limit();  // the blocking collective's (main thread only)
  int rank_ = 0, size_ = 1, device_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;   // Volt's stream -> the communicator's
  cudaEvent_t joined_ = nullptr;  // the communicator's stream -> Volt's (wait_queued)
  void* scratch_ = nullptr;  // 16 bytes: the barrier's element
  std::unique_ptr<Communicator> host_;  // host memory's collectives: MPI (local at world size 1)
  int64_t seq_ = 0;  // collectives started (the same sequence on every rank)
  OpInfo op_;        // the collective being started or waited for by this thread
  // Shared with the watchdog thread, under mu_: the NCCL communicator (nullptr once aborted) and
  // the first failure's report.
  std::mutex mu_;
  ncclComm_t comm_ = nullptr;
  std::string failure_;
  std::unique_ptr<detail::StreamWatchdog> watchdog_;  // follows the queued collectives
};

}  // namespace

bool nccl_available() { return true; }

namespace detail {
std::unique_ptr<Communicator> make_nccl_communicator_impl(const ProcessEnv& env, const CommOptions& opts) {
  return std::make_unique<NcclCommunicator>(env, opts);
}
}  // namespace detail

}  // namespace volt
