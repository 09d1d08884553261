// The resumable state of an optimizer, LR scheduler or loss scaler, as checkpoints store it: a type
// tag ("Adam", "CosineAnnealingLR"), named tensors and named scalars (real and integer).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "../../engine/serialize.h"

namespace volt {

struct ComponentState {
  std::string type;                      // the class it came from; loading checks it
  NamedTensors tensors;                  // e.g. "exp_avg.3" (per-parameter state: "<kind>.<param index>")
  std::map<std::string, double> reals;   // e.g. "lr", "beta1"
  std::map<std::string, int64_t> ints;   // e.g. "num_params", "step.3", "last_epoch"

  const Tensor* find_tensor(const std::string& name) const;  // nullptr when absent
  // The named scalar; throws "<who>: state has no '<name>'" when absent.
  double real(const std::string& name, const std::string& who) const;
  int64_t integer(const std::string& name, const std::string& who) const;
};

using OptimizerState = ComponentState;
using SchedulerState = ComponentState;
using LossScalerState = ComponentState;

// Splits "exp_avg.12" into ("exp_avg", 12); false when the name has no ".<index>" suffix (or one
// with a leading zero, "exp_avg.012").
bool split_indexed_name(const std::string& name, std::string& kind, int64_t& index);

}  // namespace volt
