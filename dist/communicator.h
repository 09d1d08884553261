// Communicator: the collectives data-parallel training needs (all-reduce, broadcast, all-gather,
// barrier) behind one interface. LocalCommunicator is world size 1 and always built;
// the MPI communicator (host buffers, built when CMake finds MPI: volt/config.h VOLT_HAVE_MPI)
// runs the CPU backend across processes. make_communicator() picks one from the process
// environment. No MPI header here: code that embeds Volt compiles with a plain C++ compiler.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "dist/process_env.h"
#include "engine/tensor.h"

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
  // true: print the report on stderr and abort the whole job (MPI_Abort, exit status 1), so no rank
  // hangs. false: throw volt::Error instead (the process can then only exit; MPI is unusable).
  bool abort_on_failure = true;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;  // "local", "mpi"

  // In place on host buffers, the same count on every rank.
  virtual void all_reduce(float* data, size_t count, ReduceOp op) = 0;
  virtual void all_reduce(double* data, size_t count, ReduceOp op) = 0;
  virtual void all_reduce(int64_t* data, size_t count, ReduceOp op) = 0;
  // root's bytes to every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // recv (size() * bytes_per_rank bytes) receives every rank's send buffer in rank order.
  virtual void all_gather(const void* send, void* recv, size_t bytes_per_rank) = 0;
  virtual void barrier() = 0;
  // Stops every process of the job now (after printing `why` on stderr): for a rank that hit an
  // error the others cannot know about. Never returns.
  [[noreturn]] virtual void abort(int exit_code, const std::string& why) = 0;

  // Conveniences on contiguous CPU tensors (f32 and i64 for all_reduce; any dtype otherwise).
  void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::Sum);
  void broadcast(const Tensor& t, int root = 0);
  Tensor all_gather(const Tensor& t);  // [size(), ...t.shape()]
  // One value: the sum / average / maximum over ranks.
  double all_reduce_value(double v, ReduceOp op = ReduceOp::Sum);
};

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

// LocalCommunicator for world size 1; the MPI communicator when srun or mpirun started several
// processes and this build has MPI; a volt::Error saying how to rebuild otherwise. The timeout
// comes from $VOLT_COMM_TIMEOUT when set.
std::unique_ptr<Communicator> make_communicator(const ProcessEnv& env, CommOptions opts = {});
inline std::unique_ptr<Communicator> make_communicator() { return make_communicator(detect_process_env()); }

}  // namespace volt
