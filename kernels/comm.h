// Element-wise helpers of the device collectives (dist/nccl_communicator.cpp): the average's
// "sum, then x (1/size)" step, done in place on the communicator's stream. The float and double
// versions round like the host path (one correctly rounded multiply, no FMA), so every rank, and
// the MPI communicator on the same sums, ends with the same bits.
#pragma once
#include <cstdint>

namespace volt::cuda {

void scale_inplace(int64_t n, float* x, float factor, void* stream);     // x[i] *= factor
void scale_inplace(int64_t n, double* x, double factor, void* stream);   // x[i] *= factor
void divide_inplace(int64_t n, int64_t* x, int64_t divisor, void* stream);  // x[i] /= divisor (toward zero)

}  // namespace volt::cuda
