// Communicator: the collectives data-parallel training needs (all-reduce, broadcast, all-gather,
// barrier) behind one interface. LocalCommunicator is world size 1 and always built;
// the MPI communicator (host buffers, built when CMake finds MPI: volt/config.h VOLT_HAVE_MPI)
// runs the CPU backend across processes; the NCCL communicator (device buffers, built with the
// CUDA backend and MPI) runs the GPU backend, one GPU per process. make_communicator() picks a
// host one from the process environment, make_nccl_communicator() the device one. No MPI, NCCL or
// CUDA header here: code that embeds Volt compiles with a plain C++ compiler.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "process_env.h"
#include "../engine/tensor.h"

namespace volt {

// Avg is the sum times 1/size, computed the same way on every rank (so every rank ends with the
// same bits); on int64 it is the sum divided by size, rounded toward zero.
enum class ReduceOp { Sum, Avg, Max };
const char* reduce_op_name(ReduceOp op);  // "sum", "avg", "max"

struct CommOptions {
  // A collective that has not completed after this long is a failure: some rank died, hangs or
  // called a different collective. It is reported (operation, bytes, the ranks that did not
  // arrive) and then the job is aborted, since no MPI implementation can cancel a collective.
  // make_communicator() takes it from $VOLT_COMM_TIMEOUT (seconds) when set.
  double timeout_s = 60.0;
  // The limit for io_barrier(): waits on one rank's input or output (a dataset download by each
  // node's first process, a checkpoint written by rank 0), which can take minutes while every
  // other rank waits. $VOLT_COMM_IO_TIMEOUT (seconds) when set.
  double io_timeout_s = 1800.0;

  // A wait's limit, and the environment variable that sets it (which a timeout report names).
  struct Limit {
    double seconds;
    const char* variable;
  };
  Limit collective_limit() const { return {timeout_s, "VOLT_COMM_TIMEOUT"}; }
  Limit io_limit() const { return {io_timeout_s, "VOLT_COMM_IO_TIMEOUT"}; }
  // true: print the report on stderr and abort the whole job (MPI_Abort, exit status 1), so no rank
  // hangs. false: throw volt::Error instead (the process can then only exit; MPI is unusable).
  bool abort_on_failure = true;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;  // "local", "mpi", "nccl"
  // Where the buffers of the pointer collectives below live: false, host memory (local, MPI);
  // true, memory of this process's GPU (NCCL: process_gpu's, the current device after creation).
  // A device communicator's blocking collectives accept host memory too (the few host values
  // reduced between steps: metrics, flags), which NCCL's hands to MPI: no GPU round trip.
  virtual bool device_buffers() const { return false; }

  // In place, the same count on every rank; host or device buffers as device_buffers() says.
  // A device collective on device memory is ordered after the work already queued on Volt's stream
  // of the device; every collective here has completed when the call returns.
  virtual void all_reduce(float* data, size_t count, ReduceOp op) = 0;
  virtual void all_reduce(double* data, size_t count, ReduceOp op) = 0;
  virtual void all_reduce(int64_t* data, size_t count, ReduceOp op) = 0;
  // root's bytes to every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // recv (size() * bytes_per_rank bytes) receives every rank's send buffer in rank order.
  virtual void all_gather(const void* send, void* recv, size_t bytes_per_rank) = 0;
  virtual void barrier() = 0;
  // A barrier around one rank's input or output, failing only after CommOptions::io_timeout_s.
  virtual void io_barrier() { barrier(); }
  // Stops every process of the job now (after printing `why` on stderr): for a rank that hit an
  // error the others cannot know about. Never returns.
  [[noreturn]] virtual void abort(int exit_code, const std::string& why) = 0;

  // Queued collectives, which overlap communication with computation (DDP's gradient buckets, the
  // per-step buffer broadcast). On a device communicator the collective runs on the communicator's
  // stream after the work queued so far on Volt's stream of the device (an event orders it), and
  // the call returns without the host waiting; wait_queued() makes Volt's stream wait for every
  // collective queued so far, again without the host waiting, so that work queued on it afterwards
  // sees the results. The buffer must be device memory that nothing else writes (or, for the
  // all-reduce, reads) until then. A watchdog thread reports one that fails or outlives the
  // timeout, as for the blocking ones. A host communicator runs the collective at once (it
  // blocks) and wait_queued() does nothing, so the same calling code runs on every backend. Every
  // rank queues the same collectives in the same order.
  virtual void all_reduce_queued(float* data, size_t count, ReduceOp op) { all_reduce(data, count, op); }
  virtual void broadcast_queued(void* data, size_t bytes, int root) { broadcast(data, bytes, root); }
  // Several buffers broadcast from one root as one queued operation where the backend can fuse them
  // (NCCL: one group, one launch); otherwise one broadcast_queued per buffer, in order.
  virtual void broadcast_queued(const std::vector<std::pair<void*, size_t>>& buffers, int root) {
    for (const auto& [data, bytes] : buffers) broadcast_queued(data, bytes, root);
  }
  virtual void wait_queued() {}

  // Conveniences on contiguous tensors (f32 and i64 for all_reduce; any dtype otherwise): CPU
  // tensors for a host communicator; tensors on its GPU (or CPU tensors) for a device one.
  void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::Sum);
  void broadcast(const Tensor& t, int root = 0);
  Tensor all_gather(const Tensor& t);  // [size(), ...t.shape()], on t's device
  // One host value: the sum / average / maximum over ranks.
  virtual double all_reduce_value(double v, ReduceOp op = ReduceOp::Sum);
};

// True when `value` is the same on every rank (two all-reduces: the maximum and the minimum).
// A collective: every rank must call it.
bool all_ranks_agree(Communicator& comm, int64_t value);
// Root's string to every rank (its length, then its bytes: host memory on every backend). A collective.
void broadcast_string(Communicator& comm, std::string& s, int root = 0);

// World size 1: every collective is a copy or nothing.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* backend() const override { return "local"; }
  void all_reduce(float*, size_t, ReduceOp) override {}
  void all_reduce(double*, size_t, ReduceOp) override {}
  void all_reduce(int64_t*, size_t, ReduceOp) override {}
  void broadcast(void*, size_t, int root) override;
  void all_gather(const void* send, void* recv, size_t bytes_per_rank) override;
  void barrier() override {}
  [[noreturn]] void abort(int exit_code, const std::string& why) override;
  using Communicator::all_reduce;
  using Communicator::broadcast;
  using Communicator::all_gather;
};

// True when this build has the MPI communicator.
bool mpi_available();

// The MPI communicator over all processes (MPI_COMM_WORLD, duplicated). Initialises MPI
// (MPI_Init_thread, MPI_THREAD_FUNNELED) unless the program already did, sets MPI_ERRORS_RETURN,
// and finalises MPI at process exit when it initialised it. Throws volt::Error when this build has
// no MPI.
std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions& opts = {});

// True when this build has the NCCL communicator (the CUDA backend, NCCL and MPI were all found).
bool nccl_available();

// The NCCL communicator over all processes, on device buffers of GPU process_gpu(env, visible GPUs)
// (made the current device). Bootstrapped by MPI when env.world_size > 1 (MPI initialised as for
// make_mpi_communicator; the ranks' GPU UUIDs are all-gathered and two ranks on one GPU refused
// with a volt::Error on every rank (check_distinct_gpus); rank 0's ncclGetUniqueId is broadcast
// with MPI); world size 1 needs no MPI. Every collective runs on the communicator's own stream and is watched: an NCCL error, or
// one still running after opts.timeout_s ($VOLT_COMM_TIMEOUT when set), aborts the NCCL
// communicator (ncclCommAbort), is reported with its operation and size, and then aborts the job
// (MPI_Abort) or throws (opts.abort_on_failure false). Throws volt::Error when this build lacks
// CUDA, NCCL or MPI, or when this node has fewer GPUs than processes.
std::unique_ptr<Communicator> make_nccl_communicator(const ProcessEnv& env, CommOptions opts = {});

// LocalCommunicator for world size 1; the MPI communicator when srun or mpirun started several
// processes and this build has MPI; a volt::Error saying how to rebuild otherwise. The timeout
// comes from $VOLT_COMM_TIMEOUT when set.
std::unique_ptr<Communicator> make_communicator(const ProcessEnv& env, CommOptions opts = {});
inline std::unique_ptr<Communicator> make_communicator() { return make_communicator(detect_process_env()); }

}  // namespace volt
