// MPI_CHECK and the process-wide MPI start-up shared by the communicators that use MPI (the MPI
// communicator, and the NCCL communicator's bootstrap). Includes mpi.h: only dist/mpi_*.cpp and
// dist/nccl_communicator.cpp include it, never a public header.
#pragma once
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <string>

#include "communicator.h"
#include "../engine/error.h"

namespace volt::detail {

// MPI's message for an error code.
std::string mpi_error_string(int rc);

// Initialises MPI once per process (MPI_Init_thread asking for MPI_THREAD_MULTIPLE, so that the
// NCCL watchdog thread may call MPI_Abort; Volt's other MPI calls all come from one thread) unless
// the program already did, sets MPI_ERRORS_RETURN on MPI_COMM_WORLD, and finalises MPI at process
// exit when it initialised it (MPI cannot be initialised twice, so not when a communicator goes away).
void ensure_mpi_runtime();

// Whether MPI is initialised and not yet finalised in this process.
bool mpi_is_running();

// The pause between two polls of a collective that has been waiting `waited_s` seconds: none at
// first (short collectives finish within microseconds), then waited/50, at most 1 ms.
void poll_backoff(double waited_s);

// Whether this thread may call MPI_Abort now: MPI is running and either this is the thread that
// initialised it or MPI provides MPI_THREAD_MULTIPLE.
bool mpi_abort_allowed_here();

// The io_barrier() of a communicator whose blocking waits honour `limit`: the barrier under the io
// limit, then the collective limit again (even when the barrier throws).
template <class Comm>
void barrier_with_io_limit(Comm& c, CommOptions::Limit& limit, const CommOptions& opts) {
  limit = opts.io_limit();
  struct Restore {
    CommOptions::Limit& l;
    const CommOptions& o;
    ~Restore() { l = o.collective_limit(); }
  } restore{limit, opts};
  c.barrier();
}

}  // namespace volt::detail

// MPI_CHECK(MPI_Comm_dup(...)) throws volt::Error with file:line, the call and MPI's message.
#define MPI_CHECK(call)                                                                                   \
  do {                                                                                                    \
    const int volt_mpi_rc_ = (call);                                                                      \
    if (volt_mpi_rc_ != MPI_SUCCESS)                                                                      \
      ::volt::detail::throw_error(::volt::detail::format("MPI call failed: ", #call, ": ",                \
                                                         ::volt::detail::mpi_error_string(volt_mpi_rc_)), \
                                  __FILE__, __LINE__);                                                    \
  } while (0)
