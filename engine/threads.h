// CPU thread count for Volt's kernels (OpenMP) — BLAS runs single-threaded inside them.
#pragma once

namespace volt {
void set_num_threads(int n);  // n >= 1
int get_num_threads();
// The CPUs this process may run on (its affinity mask: what srun --cpus-per-task, mpirun's binding
// or taskset left it), at least 1; not the machine's core count, which ranks sharing a node divide.
int available_cpus();
}  // namespace volt
