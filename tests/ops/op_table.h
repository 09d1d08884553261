// The op test table: for each differentiable op in engine/ops.h, the inputs to make, how to run the op
// on them, a double-precision reference and the tolerances. Device-independent, so every backend reuses it.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "tests/test_util.h"

namespace volt::test {

// An entry says which inputs to make (shapes and how to fill them), how to build the op from them,
// and, separately, how to compute the expected output in double precision. Nothing in an entry
// depends on the device: a CUDA test can make the same inputs on the CPU, copy them to the GPU, run
// `run` on both and compare (see make_inputs).

// Uniform: values in [low, high). Distinct: a shuffled grid with spacing `step` centred on zero and
// never at zero, so no two values (and no value and 0) lie within the gradcheck perturbation of each
// other: used for the ops with kinks (ReLU, max-pool). Labels: int64 class indices in [0, classes).
enum class Fill { Uniform, Distinct, Labels };

struct InputSpec {
  Shape shape;
  bool differentiable = true;  // gradcheck'ed (requires_grad); false for running stats and labels
  Fill fill = Fill::Uniform;
  float low = -1.f, high = 1.f;
  int64_t classes = 0;
  float step = 0.05f;
  bool stays_f32 = false;  // a parameter or statistic that stays float32 when the op runs in 16 bits
};

InputSpec uniform(Shape s, float low = -1.f, float high = 1.f);
InputSpec state(Shape s, float low, float high);  // not differentiated (running statistics)
InputSpec distinct(Shape s, float step = 0.05f);
InputSpec labels(int64_t n, int64_t classes);

struct Reference {
  Shape shape;
  std::vector<double> values;
};

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;
using RefFn = std::function<Reference(const std::vector<Tensor>&)>;  // CPU inputs

struct OpCase {
  std::string op;    // the function in engine/ops.h ("conv2d")
  std::string name;  // what is special about this entry
  std::vector<InputSpec> inputs;
  OpFn run;
  RefFn reference;            // may be empty (then only gradients are checked)
  double atol = 1e-5, rtol = 1e-4;  // forward, fp32: |a-b| <= atol + rtol*|ref|
  GradcheckOptions grad;      // finite differences
};

// The inputs of an entry: deterministic (seeded by the entry's name), made on the CPU and moved to
// `device`; differentiable ones require grad when `with_grad`.
std::vector<Tensor> make_inputs(const OpCase& c, bool with_grad, Device device = Device::cpu());

// Every entry, built once. Names ("op/name") identify entries.
const std::vector<OpCase>& op_table();

// The entry run in `dt` (float16 or bfloat16: every floating input that does not stay float32 is
// given in that type) on `device`, against the float32 run on the CPU: forward output and every
// input's gradient (of sum(y * R) for a fixed random R) within a normalised mean squared error
// sum((a - b)^2) / sum(b^2) of the type's tolerance (low_precision_nmse).
void check_low_precision(const OpCase& c, DType dt, Device device);
double low_precision_nmse(DType dt);

}  // namespace volt::test
