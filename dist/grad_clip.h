// Gradient clipping over a parameter list with PyTorch's semantics (torch.nn.utils.clip_grad_norm_
// and clip_grad_value_). Parameters without a gradient are skipped.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace volt {

// The total norm of all gradients taken together (norm_type 2 or inf); when it exceeds max_norm,
// every gradient is scaled by max_norm / (total + 1e-6). Returns the total norm before clipping.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0);

// Clamps every gradient element to [-clip_value, clip_value].
void clip_grad_value_(const std::vector<Tensor>& params, double clip_value);

}  // namespace volt
