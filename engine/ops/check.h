// Argument checks shared by the ops: every message starts with the op name and shows the shapes.
#pragma once
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/tensor.h"

namespace volt::detail {

// Defined, float32, non-empty, on the CPU (the only backend built so far), and (when rank >= 0)
// of that rank.
void check_input(const char* op, const char* what, const Tensor& t, int64_t rank = -1);
// All defined tensors share one device.
Device common_device(const char* op, const std::vector<Tensor>& ts);
// dim in [-rank, rank) -> [0, rank)
int64_t wrap_dim(const char* op, int64_t dim, int64_t rank);

}  // namespace volt::detail
