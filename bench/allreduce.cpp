// All-reduce bandwidth, like nccl-tests' all_reduce_perf: float32 sum, in place, for 1 KB .. 256 MB
// (doubling), printing size, time per all-reduce (the slowest rank's mean), algorithm bandwidth
// (bytes / time) and bus bandwidth (algbw * 2 (n-1) / n, the per-link traffic of a ring; with one
// rank it is 0: the "all-reduce" is local and only algbw means anything). Two tables:
//  - nccl: the NCCL communicator on device buffers (one GPU per rank; world size 1 on one GPU);
//  - host: the MPI communicator on host buffers, the CPU backend's path (under mpirun/srun only).
// Run alone on one GPU, or under `mpirun -n N` / `srun -n N`. Prints SKIPPED and exits 77 when
// neither table can run (no GPU and no several MPI ranks). Each timed all-reduce waits for its
// completion (Volt's collectives return complete), so small sizes show the latency, as nccl-tests
// does with its default single-iteration timing loop.
//   bench_allreduce [--min-bytes N] [--max-bytes N] [--max-iters N] [--no-nccl] [--no-host]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/process_env.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/gpu.h"
#include "engine/tensor.h"
#include "bench_common.h"

using namespace volt;

namespace {

struct Options {
  size_t min_bytes = size_t(1) << 10;
  size_t max_bytes = size_t(256) << 20;
  int max_iters = 200;
  bool nccl = true, host = true;
};

size_t parse_size(const char* s) {
  char* end = nullptr;
  const double v = std::strtod(s, &end);
  VOLT_CHECK(end && end != s && v >= 1, "not a size: '", s, "'");
  double mult = 1;
  if (*end == 'K' || *end == 'k') mult = 1 << 10, ++end;
  else if (*end == 'M' || *end == 'm') mult = 1 << 20, ++end;
  else if (*end == 'G' || *end == 'g') mult = double(1 << 30), ++end;
  VOLT_CHECK(*end == '\0', "not a size: '", s, "' (a number with an optional K, M or G)");
  return size_t(v * mult);
}

std::string human(size_t bytes) {
  char buf[32];
  if (bytes >= (size_t(1) << 20)) std::snprintf(buf, sizeof buf, "%zu MB", bytes >> 20);
  else if (bytes >= (size_t(1) << 10)) std::snprintf(buf, sizeof buf, "%zu KB", bytes >> 10);
  else std::snprintf(buf, sizeof buf, "%zu B", bytes);
  return buf;
}

// One table: every rank runs the same sizes and iteration counts (a function of the size only).
void sweep(Communicator& comm, float* data, const Options& o, const char* what) {
  const int n = comm.size();
  const double bus_factor = 2.0 * (n - 1) / n;
  if (comm.rank() == 0) {
    std::printf("# %s all-reduce: float32 sum in place, world size %d%s\n", what, n,
                n == 1 ? " (one rank: a local no-op/copy, busbw is 0 by definition; algbw shows the call's cost)" : "");
    std::printf("# %10s %12s %6s %12s %12s %12s\n", "size", "bytes", "iters", "time(us)", "algbw(GB/s)", "busbw(GB/s)");
    std::fflush(stdout);
  }
  for (size_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 2) {
    const size_t count = bytes / sizeof(float);
    const int iters = int(std::max<size_t>(5, std::min<size_t>(size_t(o.max_iters), (size_t(1) << 30) / bytes)));
    for (int w = 0; w < 2; ++w) comm.all_reduce(data, count, ReduceOp::Sum);  // warm-up (connections, caches)
    comm.barrier();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) comm.all_reduce(data, count, ReduceOp::Sum);
    const double mine = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
    const double t = comm.all_reduce_value(mine, ReduceOp::Max);  // the slowest rank's mean
    const double algbw = double(count * sizeof(float)) / t / 1e9;
    if (comm.rank() == 0) {
      std::printf("  %10s %12zu %6d %12.2f %12.3f %12.3f\n", human(bytes).c_str(), count * sizeof(float), iters,
                  t * 1e6, algbw, algbw * bus_factor);
      std::fflush(stdout);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> const char* {
        VOLT_CHECK(i + 1 < argc, a, " needs a value");
        return argv[++i];
      };
      if (a == "--min-bytes") o.min_bytes = parse_size(next());
      else if (a == "--max-bytes") o.max_bytes = parse_size(next());
      else if (a == "--max-iters") o.max_iters = int(bench::parse_int(next(), a));
      else if (a == "--no-nccl") o.nccl = false;
      else if (a == "--no-host") o.host = false;
      else {
        std::fprintf(stderr,
                     "usage: %s [--min-bytes N[K|M|G]] [--max-bytes N[K|M|G]] [--max-iters N] [--no-nccl] [--no-host]\n",
                     argv[0]);
        return 2;
      }
    }
    VOLT_CHECK(o.min_bytes >= sizeof(float) && o.min_bytes <= o.max_bytes, "need 4 <= --min-bytes <= --max-bytes");
    const ProcessEnv env = detect_process_env();
    const bool rank0 = env.is_rank0();
    int tables = 0;

    // NCCL on device buffers.
    std::string nccl_skip;
    const int gpus = cuda_device_count();
    if (!o.nccl) nccl_skip = "--no-nccl";
    else if (!nccl_available()) nccl_skip = "this build has no NCCL communicator (needs the CUDA backend, NCCL and MPI)";
    else if (gpus == 0) nccl_skip = "no GPU visible";
    if (nccl_skip.empty()) {
      auto comm = make_nccl_communicator(env);
      const Device d = Device::cuda(process_gpu(env, gpus));  // two ranks on one GPU: the communicator refused them
      const Tensor buf = Tensor::zeros({int64_t(o.max_bytes / sizeof(float))}, DType::F32, d);
      sweep(*comm, buf.data<float>(), o, "nccl (device buffers)");
      ++tables;
    } else if (rank0) {
      std::printf("# nccl all-reduce: skipped: %s\n", nccl_skip.c_str());
    }

    // MPI on host buffers (the CPU backend's path).
    std::string host_skip;
    if (!o.host) host_skip = "--no-host";
    else if (!mpi_available()) host_skip = "this build has no MPI";
    else if (env.world_size == 1) host_skip = "world size 1 (run under mpirun -n N or srun -n N)";
    if (host_skip.empty()) {
      auto comm = make_mpi_communicator();
      std::vector<float> buf(o.max_bytes / sizeof(float), 0.f);
      sweep(*comm, buf.data(), o, "mpi (host buffers)");
      ++tables;
    } else if (rank0) {
      std::printf("# mpi host all-reduce: skipped: %s\n", host_skip.c_str());
    }

    if (tables == 0) {
      if (rank0) std::printf("SKIPPED: nothing to measure (nccl: %s; host: %s)\n", nccl_skip.c_str(), host_skip.c_str());
      return 77;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_allreduce: %s\n", e.what());
    return 1;
  }
}
