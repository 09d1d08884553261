// Division by a divisor that is fixed for a whole kernel launch, as one multiply-high, an add and a
// shift (Granlund and Montgomery, "Division by invariant integers using multiplication", PLDI 1994,
// the round-up method with a 65-bit multiplier). A GPU has no integer divider: a 64-bit `/` or `%`
// is a software routine of dozens of instructions, and an element-wise kernel over activations that
// splits each flat index into (plane, row, column) with it spends more time on that than on memory.
// The kernels take FastDiv values made on the host (one per divisor) and split indices with them.
#pragma once
#include <cstdint>

#include "../engine/error.h"
#include "hd.h"

namespace volt {

class FastDiv {
 public:
  FastDiv() = default;  // division by 1
  // 1 <= d < 2^63 (on the host: the constructor needs 128-bit arithmetic).
  explicit FastDiv(int64_t d) : d_(d) {
    VOLT_CHECK(d >= 1, "FastDiv: the divisor must be positive, got ", d);
    while ((uint64_t(1) << s_) < uint64_t(d)) ++s_;  // s = ceil(log2 d) <= 63
    // m = floor(2^64 (2^s - d) / d) + 1: the multiplier 2^64 + m is ceil(2^(64+s) / d).
    const unsigned __int128 num = (static_cast<unsigned __int128>(1) << 64) * ((uint64_t(1) << s_) - uint64_t(d));
    m_ = uint64_t(num / uint64_t(d)) + 1;
  }
  // floor(n / d) for 0 <= n < 2^63.
  VOLT_HD int64_t div(int64_t n) const {
    const uint64_t t = mulhi(uint64_t(n), m_);  // < n, so t + n does not overflow for n < 2^63
    return int64_t((t + uint64_t(n)) >> s_);
  }
  VOLT_HD int64_t mod(int64_t n) const { return n - div(n) * d_; }
  VOLT_HD int64_t divisor() const { return d_; }

 private:
  VOLT_HD static uint64_t mulhi(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
    return __umul64hi(a, b);
#else
    return uint64_t((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
  }
  int64_t d_ = 1;
  uint64_t m_ = 1;  // d = 1: s = 0 and m = 1 give t = 0, n >> 0 = n
  int s_ = 0;
};

}  // namespace volt
