// The op table in float16/bfloat16 (see op_table.h's check_low_precision): each entry run with its
// activations in 16 bits on a device, against the float32 run on the CPU, by normalised mean squared
// error of the output and of every input's gradient.
#include <cmath>

#include "engine/ops.h"
#include "tests/ops/op_table.h"

namespace volt::test {

double low_precision_nmse(DType dt) {
  // float16 keeps 11 significant bits (a relative rounding of 2^-12 = 2.4e-4 per value, squared 6e-8);
  // bfloat16 keeps 8 (2^-9 = 2e-3, squared 4e-6). Each op adds a few roundings of its inputs and
  // output, so the bounds leave a factor of ~50 over one rounding's error.
  return dt == DType::F16 ? 3e-6 : 2e-4;
}

namespace {

double nmse(const Tensor& got, const Tensor& want) {
  const std::vector<float> a = got.to(DType::F32).to_vector(), b = want.to(DType::F32).to_vector();
  REQUIRE(a.size() == b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
    den += double(b[i]) * double(b[i]);
  }
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return num / den;
}

}  // namespace

void check_low_precision(const OpCase& c, DType dt, Device device) {
  INFO("case: " << c.op << " " << c.name << " in " << std::string(dtype_name(dt)) << " on " << device.str());
  // The float32 reference sees the same (rounded) values: what is measured is the op's own error, not
  // the inputs' representation (an input of mean 10 and std 0.6 loses 1% in float16 before any op).
  std::vector<Tensor> ref_in = make_inputs(c, /*with_grad=*/false);
  std::vector<Tensor> in = make_inputs(c, /*with_grad=*/false, device);
  for (size_t k = 0; k < in.size(); ++k) {
    const InputSpec& s = c.inputs[k];
    if (s.fill != Fill::Labels && !s.stays_f32) {
      in[k] = in[k].to(dt);
      ref_in[k] = ref_in[k].to(dt).to(DType::F32);
    }
    if (s.differentiable) {
      in[k].requires_grad_(true);
      ref_in[k].requires_grad_(true);
    }
  }
  const Tensor want = c.run(ref_in);
  const Tensor got = c.run(in);
  REQUIRE(got.defined());
  CHECK(got.device() == device);
  CHECK(got.shape() == want.shape());
  const double tol = low_precision_nmse(dt);
  const double e = nmse(got.to(Device::cpu()), want);
  INFO("forward NMSE " << e << " (tolerance " << tol << ")");
  CHECK(e <= tol);
  // A 16-bit path that forgets its backward must fail here, not skip the gradients.
  REQUIRE(got.requires_grad() == want.requires_grad());
  if (!want.requires_grad()) return;
  const Tensor proj = rand_tensor(want.shape(), 4242).to(got.dtype()).to(DType::F32);
  sum(mul(want, proj)).backward();
  sum(mul(got, proj.to(got.dtype()).to(device))).backward();
  for (size_t k = 0; k < in.size(); ++k) {
    if (!c.inputs[k].differentiable) continue;
    INFO("gradient of input " << k);
    REQUIRE(ref_in[k].grad().defined());
    REQUIRE(in[k].grad().defined());
    CHECK(in[k].grad().dtype() == in[k].dtype());  // a gradient has its input's type
    const double ge = nmse(in[k].grad().to(Device::cpu()), ref_in[k].grad());
    INFO("gradient NMSE " << ge << " (tolerance " << tol << ")");
    CHECK(ge <= tol);
  }
}

}  // namespace volt::test
