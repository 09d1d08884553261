// The NCCL communicator on device buffers (compiled only with the CUDA backend and MPI), one GPU per
// process (cuda:local_rank). Bootstrapped by MPI: rank 0's ncclGetUniqueId goes to every rank with
// MPI_Bcast, then ncclCommInitRankConfig (world size 1 needs no MPI). The NCCL communicator is
// non-blocking (config.blocking = 0), so no NCCL call can hang the host: every collective is queued
// on the communicator's own stream (after an event on Volt's stream of the device) and then watched
// by polling ncclCommGetAsyncError and cudaStreamQuery. An NCCL or CUDA error, or a collective
// still running after the timeout, aborts the NCCL communicator (ncclCommAbort), is reported with
// the operation and its size, and ends the job (MPI_Abort) or throws (abort_on_failure = false).
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "dist/communicator.h"
#include "dist/mpi_check.h"
#include "engine/error.h"
#include "kernels/comm.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/nccl_check.h"
#include "kernels/cuda/runtime.h"

namespace volt {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Spin at first (short collectives finish within microseconds), then back off to at most 1 ms.
void backoff(double waited) {
  const double sleep_s = std::min(1e-3, waited / 50);
  if (sleep_s > 2e-5) std::this_thread::sleep_for(std::chrono::duration<double>(sleep_s));
}

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

bool mpi_is_running() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const ProcessEnv& env, const CommOptions& opts) : opts_(opts), rank_(env.rank), size_(env.world_size) {
    VOLT_CHECK(size_ >= 1 && rank_ >= 0 && rank_ < size_, "NCCL communicator: rank ", rank_, " of ", size_, " is not a rank");
    int gpus = 0;
    const cudaError_t e = cudaGetDeviceCount(&gpus);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      gpus = 0;
    }
    VOLT_CHECK(gpus > 0, "NCCL communicator: no CUDA device is visible (no GPU, no driver, or CUDA_VISIBLE_DEVICES "
               "is empty); run the CPU backend with the MPI communicator instead");
    VOLT_CHECK(env.local_rank < gpus && env.local_size <= gpus, "NCCL communicator: ", env.local_size,
               " processes on this node but only ", gpus, " GPUs visible (", env.str(),
               "): NCCL needs one GPU per process; start at most ", gpus, " tasks per node");
    device_ = env.local_rank;
    CUDA_CHECK(cudaSetDevice(device_));

    // The unique id: made locally for world size 1, else by rank 0 and broadcast over MPI.
    ncclUniqueId id;
    if (size_ == 1) {
      NCCL_CHECK(ncclGetUniqueId(&id));
    } else {
      detail::ensure_mpi_runtime();
      int mpi_rank = 0, mpi_size = 0;
      MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &mpi_rank));
      MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &mpi_size));
      VOLT_CHECK(mpi_rank == rank_ && mpi_size == size_, "MPI sees rank ", mpi_rank, " of ", mpi_size, " but the launcher says ",
                 env.str(), ": was the program launched with an MPI that differs from the one Volt was built with (or "
                 "srun without --mpi=pmix)?");
      if (rank_ == 0) NCCL_CHECK(ncclGetUniqueId(&id));
      begin("bootstrap (MPI_Bcast of the NCCL id)", sizeof(id));
      MPI_Request req;
      MPI_CHECK(MPI_Ibcast(&id, int(sizeof(id)), MPI_BYTE, 0, MPI_COMM_WORLD, &req));
      const auto start = Clock::now();
      for (;;) {
        int done = 0;
        const int rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) fail(describe() + " failed: " + detail::mpi_error_string(rc) + " (has a rank died?)");
        if (done) break;
        const double waited = seconds_since(start);
        if (waited > opts_.timeout_s) fail(timeout_report(waited, "did not receive rank 0's id"));
        backoff(waited);
      }
      op_ = nullptr;
    }

    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    CUDA_CHECK(cudaMalloc(&scratch_, 16));

    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // calls return ncclInProgress instead of blocking: the host keeps control
    begin("ncclCommInitRank", 0);
    const ncclResult_t rc = ncclCommInitRankConfig(&comm_, size_, id, rank_, &config);
    if (rc != ncclSuccess && rc != ncclInProgress)
      fail(describe() + " failed: " + ncclGetErrorString(rc) + last_error());
    wait_enqueued(Clock::now());
    op_ = nullptr;
  }

  ~NcclCommunicator() override {
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
    if (stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "nccl"; }
  bool device_buffers() const override { return true; }
  using Communicator::all_gather;
  using Communicator::all_reduce;
  using Communicator::broadcast;

  void all_reduce(float* data, size_t count, ReduceOp op) override {
    DeviceGuard guard(device_);
    if (!reduce(data, count, op, ncclFloat32, sizeof(float))) return;
    if (op == ReduceOp::Avg && size_ > 1) cuda::scale_inplace(int64_t(count), data, float(1.0 / size_), stream_);
    wait(Clock::now());
  }
  void all_reduce(double* data, size_t count, ReduceOp op) override {
    DeviceGuard guard(device_);
    if (!reduce(data, count, op, ncclFloat64, sizeof(double))) return;
    if (op == ReduceOp::Avg && size_ > 1) cuda::scale_inplace(int64_t(count), data, 1.0 / size_, stream_);
    wait(Clock::now());
  }
  void all_reduce(int64_t* data, size_t count, ReduceOp op) override {
    DeviceGuard guard(device_);
    if (!reduce(data, count, op, ncclInt64, sizeof(int64_t))) return;
    if (op == ReduceOp::Avg && size_ > 1) cuda::divide_inplace(int64_t(count), data, int64_t(size_), stream_);
    wait(Clock::now());
  }

  void broadcast(void* data, size_t bytes, int root) override {
    VOLT_CHECK(root >= 0 && root < size_, "Communicator::broadcast: root ", root, " is not a rank (world size ", size_, ")");
    if (bytes == 0) return;  // the same on every rank
    DeviceGuard guard(device_);
    check_device_pointer(data, "broadcast");
    begin("broadcast", bytes);
    order_after_volt_stream();
    const auto start = Clock::now();
    enqueue(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_), start);
    wait(start);
  }

  void all_gather(const void* send, void* recv, size_t bytes_per_rank) override {
    if (bytes_per_rank == 0) return;
    DeviceGuard guard(device_);
    check_device_pointer(send, "all_gather (send)");
    check_device_pointer(recv, "all_gather (recv)");
    begin("all_gather", bytes_per_rank * size_t(size_));
    order_after_volt_stream();
    const char* in = static_cast<const char*>(send);
    char* out = static_cast<char*>(recv);
    // NCCL allows in place only at this rank's slot; any other overlap goes through a copy.
    void* copy = nullptr;
    const bool in_place = in == out + bytes_per_rank * size_t(rank_);
    if (!in_place && in < out + bytes_per_rank * size_t(size_) && out < in + bytes_per_rank) {
      CUDA_CHECK(cudaMallocAsync(&copy, bytes_per_rank, stream_));
      CUDA_CHECK(cudaMemcpyAsync(copy, in, bytes_per_rank, cudaMemcpyDeviceToDevice, stream_));
      in = static_cast<const char*>(copy);
    }
    const auto start = Clock::now();
    enqueue(ncclAllGather(in, out, bytes_per_rank, ncclUint8, comm_, stream_), start);
    if (copy) CUDA_CHECK(cudaFreeAsync(copy, stream_));
    wait(start);
  }

  // A one-element all-reduce, waited on: every rank has reached the barrier when it completes.
  void barrier() override {
    DeviceGuard guard(device_);
    begin("barrier", 0);
    const auto start = Clock::now();
    enqueue(ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, comm_, stream_), start);
    wait(start);
  }

  double all_reduce_value(double v, ReduceOp op) override {
    DeviceGuard guard(device_);
    CUDA_CHECK(cudaMemcpyAsync(scratch_, &v, sizeof(v), cudaMemcpyHostToDevice, stream_));
    all_reduce(static_cast<double*>(scratch_), 1, op);
    CUDA_CHECK(cudaMemcpyAsync(&v, scratch_, sizeof(v), cudaMemcpyDeviceToHost, stream_));
    begin("all_reduce_value (copy back)", sizeof(v));
    wait(Clock::now());
    return v;
  }

  [[noreturn]] void abort(int exit_code, const std::string& why) override {
    std::fprintf(stderr, "volt: rank %d of %d: %s\n", rank_, size_, why.c_str());
    if (comm_) {
      ncclCommAbort(comm_);  // frees the GPU's NCCL kernels and connections so nothing waits on them
      comm_ = nullptr;
    }
    const int status = exit_code == 0 ? 1 : exit_code;
    if (mpi_is_running()) {
      std::fprintf(stderr, "volt: rank %d: aborting the job (MPI_Abort)\n", rank_);
      std::fflush(nullptr);  // stdout too: _Exit and MPI_Abort flush nothing
      MPI_Abort(MPI_COMM_WORLD, status);
    }
    std::fflush(nullptr);
    std::_Exit(status);
  }

 private:
  void begin(const char* op, size_t bytes) {
    ++seq_;
    op_ = op;
    op_detail_ = nullptr;
    bytes_ = bytes;
  }

  std::string describe() const {
    std::ostringstream os;
    os << (op_ ? op_ : "nothing");
    if (op_detail_) os << "(" << op_detail_ << ")";
    os << " #" << seq_ << " of " << bytes_ << " bytes on cuda:" << device_;
    return os.str();
  }

  std::string last_error() const {
    const char* s = comm_ ? ncclGetLastError(comm_) : nullptr;
    return s && *s ? std::string(" (") + s + ")" : std::string();
  }

  std::string timeout_report(double waited, const char* state) const {
    std::ostringstream os;
    os.precision(3);
    os << describe() << " did not complete within " << opts_.timeout_s << " s (waited " << waited << " s, " << state
       << ", world size " << size_ << "): another rank died, hangs, or called a different collective. Set "
       << "$VOLT_COMM_TIMEOUT (seconds) to change the timeout";
    return os.str();
  }

  // Device memory of this process (or managed memory): a host pointer here would fault in NCCL.
  void check_device_pointer(const void* p, const char* what) const {
    cudaPointerAttributes attr{};
    const cudaError_t e = cudaPointerGetAttributes(&attr, p);
    if (e != cudaSuccess) (void)cudaGetLastError();
    VOLT_CHECK(e == cudaSuccess && (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged),
               "Communicator::", what, ": ", p, " is not device memory; the nccl communicator works on buffers of "
               "cuda:", device_, " (device_buffers() is true)");
    VOLT_CHECK(attr.type == cudaMemoryTypeManaged || attr.device == device_, "Communicator::", what, ": ", p,
               " is memory of cuda:", attr.device, " but this rank's communicator uses cuda:", device_);
  }

  // The collective reads what Volt's kernels on this device queued before the call.
  void order_after_volt_stream() {
    CUDA_CHECK(cudaEventRecord(ready_, static_cast<cudaStream_t>(cuda::default_stream(device_))));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
  }

  // Queues the NCCL reduction (returns false for count 0: nothing to do on any rank); the caller
  // adds the average's scaling and waits.
  bool reduce(void* data, size_t count, ReduceOp op, ncclDataType_t type, size_t elem) {
    if (count == 0) return false;
    check_device_pointer(data, "all_reduce");
    begin("all_reduce", count * elem);
    op_detail_ = reduce_op_name(op);
    order_after_volt_stream();
    enqueue(ncclAllReduce(data, data, count, type, op == ReduceOp::Max ? ncclMax : ncclSum, comm_, stream_),
            Clock::now());
    return true;
  }

  // A non-blocking communicator may still be queueing the operation (ncclInProgress).
  void enqueue(ncclResult_t rc, Clock::time_point start) {
    if (rc != ncclSuccess && rc != ncclInProgress) fail(describe() + " failed: " + ncclGetErrorString(rc) + last_error());
    if (rc == ncclInProgress) wait_enqueued(start);
  }

  // Polls until NCCL has finished the pending call (init or queueing), with the timeout.
  void wait_enqueued(Clock::time_point start) {
    for (;;) {
      ncclResult_t st = ncclSuccess;
      const ncclResult_t rc = ncclCommGetAsyncError(comm_, &st);
      if (rc != ncclSuccess) st = rc;
      if (st == ncclSuccess) return;
      if (st != ncclInProgress) fail(describe() + " failed: " + ncclGetErrorString(st) + last_error());
      const double waited = seconds_since(start);
      if (waited > opts_.timeout_s) fail(timeout_report(waited, "NCCL still in progress on the host"));
      backoff(waited);
    }
  }

  // The watchdog: polls the stream until the collective (and what follows it on the stream) is
  // done, checking NCCL's asynchronous error (a peer that failed or went away) meanwhile.
  void wait(Clock::time_point start) {
    for (;;) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) {
        op_ = nullptr;
        op_detail_ = nullptr;
        return;
      }
      // A query that finds work pending still leaves cudaErrorNotReady as the thread's last error,
      // which the next kernel launch's check would report: clear it in every case.
      (void)cudaGetLastError();
      if (q != cudaErrorNotReady)
        fail(describe() + " failed on the GPU: " + cudaGetErrorName(q) + " (" + cudaGetErrorString(q) + ")");
      ncclResult_t st = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &st) == ncclSuccess && st != ncclSuccess && st != ncclInProgress)
        fail(describe() + " failed: " + ncclGetErrorString(st) + last_error() + " (has a rank died?)");
      const double waited = seconds_since(start);
      if (waited > opts_.timeout_s) fail(timeout_report(waited, "still running on the GPU"));
      backoff(waited);
    }
  }

  [[noreturn]] void fail(const std::string& msg) {
    if (comm_) {
      ncclCommAbort(comm_);  // no further collective can run on it; NCCL's kernels are stopped
      comm_ = nullptr;
    }
    if (opts_.abort_on_failure) abort(1, msg);
    VOLT_FAIL("rank ", rank_, " of ", size_, ": ", msg);
  }

  CommOptions opts_;
  int rank_ = 0, size_ = 1, device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;
  void* scratch_ = nullptr;  // 16 bytes: the barrier's element and all_reduce_value's double
  int64_t seq_ = 0;          // collectives started (the same sequence on every rank)
  const char* op_ = nullptr;
  const char* op_detail_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace

bool nccl_available() { return true; }

namespace detail {
std::unique_ptr<Communicator> make_nccl_communicator_impl(const ProcessEnv& env, const CommOptions& opts) {
  return std::make_unique<NcclCommunicator>(env, opts);
}
}  // namespace detail

}  // namespace volt
