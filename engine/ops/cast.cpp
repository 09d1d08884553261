// cast: a differentiable change of floating type (the gradient is cast back), the building block of
// mixed precision: float32 master weights enter float16/bfloat16 layers through it, and their
// gradients return through it in float32.
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/check.h"

namespace volt {

Tensor cast(const Tensor& x, DType dtype) {
  detail::check_input("cast", "input", x);
  VOLT_CHECK(is_floating(dtype), "cast: target type must be float32, float16 or bfloat16, got ", dtype_name(dtype));
  if (x.dtype() == dtype) return x;
  Tensor y = x.detach().to(dtype);
  const DType from = x.dtype();
  autograd::record("cast", y, {x}, [from](const Tensor& g, const std::vector<bool>&) {
    return std::vector<Tensor>{g.detach().to(from)};
  });
  return y;
}

}  // namespace volt
