// Autocast: mixed precision's forward pass. While an Autocast guard is alive on a thread, the
// layers that do the matrix products (Conv2d, Linear) run in its 16-bit type: their input and their
// float32 parameters are cast (the parameters stay float32 master copies; their gradients come back
// in float32 through the cast; on a GPU a model call casts all its layers' parameters in one launch,
// see Module::autocast_parameters). The other ops keep the type they are given (batch norm normalises
// 16-bit activations with float32 statistics; cross-entropy gives a float32 loss), as PyTorch's
// torch.autocast does for these layers.
#pragma once
#include "dtype.h"

namespace volt {

// The thread's autocast type: float16 or bfloat16 inside a guard, float32 outside.
DType autocast_dtype();

class Autocast {
 public:
  // dtype float16 or bfloat16; float32 turns autocast off inside this scope.
  explicit Autocast(DType dtype);
  ~Autocast();
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  DType prev_;
};

}  // namespace volt
