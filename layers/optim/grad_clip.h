// Gradient clipping over a parameter list with PyTorch's semantics (torch.nn.utils.clip_grad_norm_
// and clip_grad_value_). Parameters without a gradient are skipped; the gradients must be float32 on
// one device. On a GPU nothing is read on the host (multi-tensor kernels, the coefficient in device
// memory), so clipping belongs in a captured CUDA-graph step.
#pragma once
#include <vector>

#include "../../engine/tensor.h"

namespace volt {

// The total norm of all gradients taken together (norm_type 2, 1, any p > 0, or inf), accumulated in
// double; every gradient is multiplied by min(1, max_norm / (total + 1e-6)) (a NaN total makes them
// NaN, as in torch). Returns the total norm before clipping as a float32 [] tensor on the gradients'
// device (a CPU zero when no parameter has a gradient): `.item()` reads it, waiting for the GPU.
Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0);

// Clamps every gradient element to [-clip_value, clip_value] (NaN stays NaN).
void clip_grad_value_(const std::vector<Tensor>& params, double clip_value);

}  // namespace volt
