// The tensor conveniences every communicator shares, the world-size-1 communicator, and the
// factory that picks one from the process environment (see communicator.h).
#include "dist/communicator.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/error.h"
#include "volt/config.h"

namespace volt {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Max: return "max";
  }
  return "?";
}

namespace {
void check_tensor(const Communicator& c, const Tensor& t, const char* what) {
  VOLT_CHECK(t.defined(), "Communicator::", what, ": undefined tensor");
  // A device communicator takes host memory too; a host one cannot read a GPU's.
  if (!c.device_buffers())
    VOLT_CHECK(t.device().is_cpu(), "Communicator::", what, ": the tensor is on ", t.device().str(), "; the ",
               c.backend(), " communicator works on host (CPU) tensors");
}
}  // namespace

void Communicator::all_reduce(const Tensor& t, ReduceOp op) {
  check_tensor(*this, t, "all_reduce");
  t.bump_version();
  switch (t.dtype()) {
    case DType::F32: all_reduce(t.data<float>(), size_t(t.numel()), op); break;
    case DType::I64: all_reduce(t.data<int64_t>(), size_t(t.numel()), op); break;
    default:
      VOLT_FAIL("Communicator::all_reduce: dtype ", dtype_name(t.dtype()), " is not supported (float32 or int64)");
  }
}

void Communicator::broadcast(const Tensor& t, int root) {
  check_tensor(*this, t, "broadcast");
  t.bump_version();
  broadcast(t.raw_data(), t.nbytes(), root);
}

Tensor Communicator::all_gather(const Tensor& t) {
  check_tensor(*this, t, "all_gather");
  Shape shape = t.shape();
  shape.insert(shape.begin(), int64_t(size()));
  Tensor out = Tensor::empty(shape, t.dtype(), t.device());
  all_gather(t.raw_data(), out.raw_data(), t.nbytes());
  return out;
}

bool all_ranks_agree(Communicator& comm, int64_t value) {
  if (comm.size() == 1) return true;
  int64_t hi = value, neg_lo = -value;  // value >= INT64_MIN + 1 for the negation
  comm.all_reduce(&hi, 1, ReduceOp::Max);
  comm.all_reduce(&neg_lo, 1, ReduceOp::Max);
  return hi == value && -neg_lo == value;
}

void broadcast_string(Communicator& comm, std::string& s, int root) {
  if (comm.size() == 1) return;
  int64_t n = int64_t(s.size());
  comm.broadcast(&n, sizeof n, root);
  s.resize(size_t(n));
  if (n > 0) comm.broadcast(s.data(), size_t(n), root);
}

double Communicator::all_reduce_value(double v, ReduceOp op) {
  all_reduce(&v, 1, op);
  return v;
}

void LocalCommunicator::broadcast(void*, size_t, int root) {
  VOLT_CHECK(root == 0, "LocalCommunicator::broadcast: root ", root, " does not exist (world size 1)");
}

void LocalCommunicator::all_gather(const void* send, void* recv, size_t bytes_per_rank) {
  if (bytes_per_rank > 0 && send != recv) std::memmove(recv, send, bytes_per_rank);
}

void LocalCommunicator::abort(int exit_code, const std::string& why) {
  std::fprintf(stderr, "volt: aborting: %s\n", why.c_str());
  std::fflush(nullptr);  // stdout too: _Exit and MPI_Abort flush nothing
  std::_Exit(exit_code == 0 ? 1 : exit_code);
}

#if !VOLT_HAVE_MPI
bool mpi_available() { return false; }

std::unique_ptr<Communicator> make_mpi_communicator(const CommOptions&) {
  VOLT_FAIL("this build of Volt has no MPI support (volt/config.h VOLT_HAVE_MPI is 0): install an MPI "
            "(apt-get install libopenmpi-dev openmpi-bin) and configure again with -DVOLT_MPI=ON");
}
#endif

#if !VOLT_HAVE_NCCL
bool nccl_available() { return false; }
#endif

namespace {
// `seconds` from the environment variable `name` when set, checked.
void seconds_from_env(const char* name, double& seconds) {
  if (const char* t = std::getenv(name)) {
    char* end = nullptr;
    const double v = std::strtod(t, &end);
    VOLT_CHECK(end && end != t && *end == '\0' && v > 0, name, "='", t, "' is not a positive number of seconds");
    seconds = v;
  }
}

// opts with the timeouts from $VOLT_COMM_TIMEOUT and $VOLT_COMM_IO_TIMEOUT when set, checked.
CommOptions options_from_env(CommOptions opts) {
  seconds_from_env("VOLT_COMM_TIMEOUT", opts.timeout_s);
  seconds_from_env("VOLT_COMM_IO_TIMEOUT", opts.io_timeout_s);
  VOLT_CHECK(opts.timeout_s > 0, "CommOptions::timeout_s must be positive, got ", opts.timeout_s);
  VOLT_CHECK(opts.io_timeout_s > 0, "CommOptions::io_timeout_s must be positive, got ", opts.io_timeout_s);
  return opts;
}
}  // namespace

namespace detail {
// dist/nccl_communicator.cpp (only in builds with CUDA and MPI).
std::unique_ptr<Communicator> make_nccl_communicator_impl(const ProcessEnv& env, const CommOptions& opts);
}  // namespace detail

std::unique_ptr<Communicator> make_nccl_communicator(const ProcessEnv& env, CommOptions opts) {
#if VOLT_HAVE_NCCL
  return detail::make_nccl_communicator_impl(env, options_from_env(opts));
#else
  (void)env;
  (void)opts;
  VOLT_FAIL("this build of Volt has no NCCL communicator: it needs the CUDA backend, real or "
            "emulated (volt/config.h VOLT_HAVE_CUDA is ", VOLT_HAVE_CUDA, ", VOLT_CUDA_EMULATED ", VOLT_CUDA_EMULATED,
            ": the real one needs the CUDA toolkit, cuDNN and NCCL) and MPI (VOLT_HAVE_MPI is ", VOLT_HAVE_MPI,
            ": apt-get install libopenmpi-dev openmpi-bin); configure again with -DVOLT_CUDA=ON (or EMULATED) "
            "-DVOLT_MPI=ON");
#endif
}

std::unique_ptr<Communicator> make_communicator(const ProcessEnv& env, CommOptions opts) {
  opts = options_from_env(opts);
  if (env.world_size <= 1) return std::make_unique<LocalCommunicator>();
  VOLT_CHECK(mpi_available(), env.launcher == "slurm" ? "srun" : env.launcher, " started ", env.world_size,
             " processes but this build of Volt has no MPI support, so they cannot talk to each other: install "
             "an MPI (apt-get install libopenmpi-dev openmpi-bin) and configure again with -DVOLT_MPI=ON, or run "
             "one process");
  auto comm = make_mpi_communicator(opts);
  VOLT_CHECK(comm->size() == env.world_size && comm->rank() == env.rank, "MPI sees rank ", comm->rank(), " of ",
             comm->size(), " but ", env.launcher == "slurm" ? "srun" : env.launcher, " says rank ", env.rank, " of ", env.world_size,
             ": was the program launched with an MPI that differs from the one Volt was built with (or srun "
             "without --mpi=pmix)?");
  return comm;
}

}  // namespace volt
