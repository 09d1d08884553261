// CPU thread count for Volt's kernels (OpenMP) — BLAS runs single-threaded inside them.
#pragma once

namespace volt {
// The thread count of the calling thread's parallel regions (OpenMP's is per thread: a thread
// started later begins with OMP_NUM_THREADS, or every core). n >= 1.
void set_num_threads(int n);
int get_num_threads();
// For a thread of Volt's own that runs beside others (the data loader's workers): its kernels run
// on it alone, so that N workers do not each start a team of every core.
void run_kernels_single_threaded();
// The CPUs this process may run on (its affinity mask: what srun --cpus-per-task, mpirun's binding
// or taskset left it), at least 1; not the machine's core count, which ranks sharing a node divide.
int available_cpus();
}  // namespace volt
