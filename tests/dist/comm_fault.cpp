// A job in which one rank fails, for the "failures never hang" tests (tests/dist/expect_failure.sh
// checks that the job ends non-zero, in bounded time, with a message naming the rank):
//   comm_fault kill   rank 1 raises SIGKILL in the middle of a run of all-reduces
//   comm_fault stall  rank 1 stops calling collectives (sleeps), the others time out naming it
//   comm_fault throw  rank 1 throws, reports and aborts the job through Communicator::abort
//   comm_fault other  rank 1 calls a broadcast where the others all-reduce (ranks that took different
//                     paths): the report must name what rank 1 is in, not count it as waiting
//   comm_fault setup  rank 1's Trainer refuses its layout (--devices 1 where 2 processes share the
//                     node) before any communicator exists: every rank must stop, naming it
// Rank 0 prints "comm_fault: finished" if the run was never interrupted (a failure of the test).
#include <csignal>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "dist/communicator.h"
#include "dist/process_env.h"
#include "dist/trainer.h"
#include "engine/error.h"

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode != "kill" && mode != "stall" && mode != "throw" && mode != "other" && mode != "setup") {
    std::fprintf(stderr, "usage: comm_fault kill|stall|throw|other|setup\n");
    return 2;
  }
  if (mode == "setup") {
    const volt::ProcessEnv env = volt::detect_process_env();
    if (env.world_size != 2 || env.local_size != 2) {
      std::printf("SKIPPED: comm_fault setup needs 2 ranks on one node\n");
      return 77;
    }
    try {
      volt::TrainerOptions o;
      o.accelerator = "cpu";
      o.devices = env.rank == 1 ? 1 : 2;
      volt::Trainer t(o);
      t.communicator().barrier();
      if (env.rank == 0) std::printf("comm_fault: finished\n");
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank %d: error: %s\n", env.rank, e.what());
      return 1;
    }
  }
  std::unique_ptr<volt::Communicator> comm;
  try {
    comm = volt::make_communicator();
    if (comm->size() < 2) {
      std::printf("SKIPPED: comm_fault needs at least 2 ranks (run it under mpirun or srun)\n");
      return 77;
    }
    std::vector<float> grad(10007, 1.f);
    for (int step = 0; step < 200; ++step) {
      if (comm->rank() == 1 && step == 20) {
        std::fprintf(stderr, "comm_fault: rank 1 fails now (%s)\n", mode.c_str());
        std::fflush(stderr);
        if (mode == "kill") std::raise(SIGKILL);
        if (mode == "stall") std::this_thread::sleep_for(std::chrono::hours(1));
        if (mode == "throw") throw volt::Error("rank 1: a deliberate failure in step 20");
        if (mode == "other") {
          char b[256] = {};
          comm->broadcast(b, sizeof b, 0);
        }
      }
      comm->all_reduce(grad.data(), grad.size(), volt::ReduceOp::Avg);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    comm->barrier();
    if (comm->rank() == 0) std::printf("comm_fault: finished\n");
    return 0;
  } catch (const std::exception& e) {
    // What a tool's main does: a rank that cannot go on stops the whole job instead of leaving the
    // others waiting in a collective.
    if (comm && comm->size() > 1) comm->abort(1, std::string("error: ") + e.what());
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
