// FastDiv (kernels/fast_div.h), the kernels' index division, against the hardware's `/` and `%`:
// every small divisor with numerators around its multiples, divisors near powers of two, and random
// 63-bit values.
#include <random>

#include "kernels/fast_div.h"
#include "tests/emu/emu_util.h"

using namespace volt;

namespace {
bool agrees(const FastDiv& f, int64_t n) {
  const int64_t d = f.divisor();
  return f.div(n) == n / d && f.mod(n) == n % d;
}
}  // namespace

TEST_CASE("FastDiv equals / and % for divisors 1..5000 around every multiple, and at the range's ends") {
  for (int64_t d = 1; d <= 5000; ++d) {
    const FastDiv f(d);
    bool ok = true;
    for (int64_t k = 0; k < 300 && ok; ++k)
      for (int64_t e = -1; e <= 1 && ok; ++e) {
        const int64_t n = k * d + e;
        if (n >= 0) ok = agrees(f, n);
      }
    for (int64_t n : {int64_t(0), (int64_t(1) << 31) - 1, int64_t(1) << 31, (int64_t(1) << 32) + 7,
                      INT64_MAX, INT64_MAX - 1, INT64_MAX - d})
      ok = ok && agrees(f, n);
    INFO("divisor " << d);
    REQUIRE(ok);
  }
}

TEST_CASE("FastDiv equals / and % for divisors near powers of two and random 63-bit values") {
  std::mt19937_64 rng(12345);
  std::vector<int64_t> divisors;
  for (int b = 1; b < 63; ++b)
    for (int64_t e : {-1, 0, 1}) divisors.push_back((int64_t(1) << b) + e);
  for (int i = 0; i < 200; ++i) divisors.push_back(int64_t(rng() >> (1 + rng() % 62)) + 1);
  for (int64_t d : divisors) {
    if (d < 1) continue;
    const FastDiv f(d);
    bool ok = true;
    for (int i = 0; i < 2000 && ok; ++i) {
      const int64_t n = int64_t(rng() >> (1 + rng() % 63)), multiple = n / d * d;
      // n, the multiple of d at or below it, and the last value before the next multiple
      ok = agrees(f, n) && agrees(f, multiple) && (multiple > INT64_MAX - (d - 1) || agrees(f, multiple + (d - 1)));
    }
    INFO("divisor " << d);
    REQUIRE(ok);
  }
  CHECK_THROWS_AS(FastDiv(0), Error);
  CHECK(FastDiv().div(12345) == 12345);
}
