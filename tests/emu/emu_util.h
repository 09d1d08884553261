// Helpers for the emulated-kernel tests (tests/emu/): buffers with guard zones on both sides, so a
// kernel writing or reading out of bounds is caught even without AddressSanitizer; seeded random
// data; and comparisons that print the worst element.
// These programs are compiled with -Dcuda=cuda_emu (tests/CMakeLists.txt): `cuda::relu_forward`
// below names the emulated twin of the CUDA kernel, built from the same .cu source.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace volt::emu_test {

// n elements with kGuard elements of a fixed byte pattern before and after them.
template <class T>
class Guarded {
 public:
  static constexpr size_t kGuard = 64;
  explicit Guarded(size_t n, T fill = T()) : n_(n), store_(n + 2 * kGuard, fill) {
    std::memset(static_cast<void*>(store_.data()), kPattern, kGuard * sizeof(T));
    std::memset(static_cast<void*>(store_.data() + kGuard + n), kPattern, kGuard * sizeof(T));
  }
  explicit Guarded(const std::vector<T>& v) : Guarded(v.size()) { std::copy(v.begin(), v.end(), data()); }
  T* data() { return store_.data() + kGuard; }
  const T* data() const { return store_.data() + kGuard; }
  T& operator[](size_t i) { return data()[i]; }
  const T& operator[](size_t i) const { return data()[i]; }
  size_t size() const { return n_; }
  std::vector<T> vec() const { return std::vector<T>(data(), data() + n_); }
  // True when nothing wrote into the guard zones.
  bool guards_intact() const {
    const auto* head = reinterpret_cast<const unsigned char*>(store_.data());
    const auto* tail = reinterpret_cast<const unsigned char*>(store_.data() + kGuard + n_);
    for (size_t i = 0; i < kGuard * sizeof(T); ++i)
      if (head[i] != kPattern || tail[i] != kPattern) return false;
    return true;
  }

 private:
  static constexpr unsigned char kPattern = 0xA5;
  size_t n_;
  std::vector<T> store_;
};

inline std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

inline std::vector<int64_t> random_labels(size_t n, int64_t classes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> v(n);
  for (int64_t& x : v) x = int64_t(rng() % uint64_t(classes));
  return v;
}

// Bitwise equality of two float arrays (NaN equal to NaN with the same bits).
inline void check_bitwise(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    uint32_t a, b;
    std::memcpy(&a, &got[i], 4);
    std::memcpy(&b, &want[i], 4);
    if (a != b) {
      INFO("first difference at " << i << ": got " << got[i] << ", want " << want[i]);
      CHECK(a == b);
      return;
    }
  }
}

// |got - want| <= atol + rtol*|want| everywhere; NaN must match NaN.
inline void check_near(const std::vector<float>& got, const std::vector<float>& want, double atol, double rtol,
                       const std::string& what) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i]) || std::isnan(got[i])) {
      if (std::isnan(want[i]) != std::isnan(got[i])) {
        worst = INFINITY;
        at = i;
        break;
      }
      continue;
    }
    const double v = std::fabs(double(got[i]) - double(want[i])) / (atol + rtol * std::fabs(double(want[i])));
    if (v > worst) {
      worst = v;
      at = i;
    }
  }
  INFO("worst element " << at << ": got " << got[at] << ", want " << want[at] << " (violation " << worst << ")");
  CHECK(worst <= 1.0);
}

}  // namespace volt::emu_test
