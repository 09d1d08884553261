// The thread's autocast type (see autocast.h).
#include "engine/autocast.h"

#include "engine/error.h"

namespace volt {

namespace {
thread_local DType g_autocast = DType::F32;
}

DType autocast_dtype() { return g_autocast; }

Autocast::Autocast(DType dtype) : prev_(g_autocast) {
  VOLT_CHECK(is_floating(dtype), "Autocast: the type must be float16, bfloat16 or float32 (off), got ",
             dtype_name(dtype));
  g_autocast = dtype;
}

Autocast::~Autocast() { g_autocast = prev_; }

}  // namespace volt
