// Thread control: Volt parallelises over the batch with OpenMP and calls BLAS from inside those
// loops, so BLAS itself is pinned to one thread (no oversubscription, whichever OpenBLAS variant).
#include "engine/threads.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <thread>

#include "engine/error.h"
#include "kernels/cpu/blas.h"

namespace volt {

void set_num_threads(int n) {
  VOLT_CHECK(n >= 1, "set_num_threads: need at least 1 thread, got ", n);
  omp_set_num_threads(n);
  cpu::blas_init();
}

int get_num_threads() { return omp_get_max_threads(); }

void run_kernels_single_threaded() { omp_set_num_threads(1); }

int available_cpus() {
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace volt
