// CPU thread count for Volt's kernels (OpenMP) — BLAS runs single-threaded inside them.
#pragma once

namespace volt {
void set_num_threads(int n);  // n >= 1
int get_num_threads();
}  // namespace volt
