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
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "kernels/ftype.h"

namespace volt::emu_test {

// n elements with kGuard elements of a fixed byte pattern before and after them.
// n elements with kGuard elements of a fixed byte pattern before and after them; the elements start
// 64-byte aligned, as a device allocation does (so the kernels' vector paths run; pass data() + 1 for
// the unaligned path).
template <class T>
class Guarded {
 public:
  static constexpr size_t kGuard = 64;
  explicit Guarded(size_t n, T fill = T())
      : n_(n), store_(static_cast<T*>(std::aligned_alloc(64, round_up((n + 2 * kGuard) * sizeof(T))))) {
    REQUIRE(store_ != nullptr);
    std::memset(static_cast<void*>(store_.get()), kPattern, kGuard * sizeof(T));
    std::memset(static_cast<void*>(store_.get() + kGuard + n), kPattern, kGuard * sizeof(T));
    std::fill(data(), data() + n, fill);
  }
  explicit Guarded(const std::vector<T>& v) : Guarded(v.size()) { std::copy(v.begin(), v.end(), data()); }
  T* data() { return store_.get() + kGuard; }
  const T* data() const { return store_.get() + kGuard; }
  T& operator[](size_t i) { return data()[i]; }
  const T& operator[](size_t i) const { return data()[i]; }
  size_t size() const { return n_; }
  std::vector<T> vec() const { return std::vector<T>(data(), data() + n_); }
  // True when nothing wrote into the guard zones.
  bool guards_intact() const {
    const auto* head = reinterpret_cast<const unsigned char*>(store_.get());
    const auto* tail = reinterpret_cast<const unsigned char*>(store_.get() + kGuard + n_);
    for (size_t i = 0; i < kGuard * sizeof(T); ++i)
      if (head[i] != kPattern || tail[i] != kPattern) return false;
    return true;
  }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  static size_t round_up(size_t bytes) { return (bytes + 63) / 64 * 64; }
  static constexpr unsigned char kPattern = 0xA5;
  size_t n_;
  std::unique_ptr<T, Free> store_;
};

// Every storage type the kernels take, for loops over them.
inline const std::vector<FType>& all_ftypes() {
  static const std::vector<FType> t{FType::F32, FType::F16, FType::BF16};
  return t;
}

// v rounded to storage type t (and widened back): what a kernel of that type reads or writes.
inline float round_to(FType t, float v) {
  return t == FType::F32 ? v : (t == FType::F16 ? half_to_float(float_to_half(v)) : bf16_to_float(float_to_bf16(v)));
}
inline std::vector<float> round_to(FType t, std::vector<float> v) {
  for (float& x : v) x = round_to(t, x);
  return v;
}

// A guarded buffer of n values of storage type t: float32, or 16-bit bit patterns.
class TypedBuf {
 public:
  TypedBuf(FType t, size_t n) : t_(t), f_(t == FType::F32 ? n : 0), h_(t == FType::F32 ? 0 : n), n_(n) {}
  TypedBuf(FType t, const std::vector<float>& v) : TypedBuf(t, v.size()) {
    for (size_t i = 0; i < v.size(); ++i) {
      if (t == FType::F32) f_[i] = v[i];
      else h_[i] = t == FType::F16 ? float_to_half(v[i]) : float_to_bf16(v[i]);
    }
  }
  void* data() { return t_ == FType::F32 ? static_cast<void*>(f_.data()) : static_cast<void*>(h_.data()); }
  const void* data() const { return t_ == FType::F32 ? static_cast<const void*>(f_.data()) : h_.data(); }
  // Element i's address (data() + i elements): an unaligned start for i = 1.
  void* ptr(size_t i) { return static_cast<char*>(data()) + i * ftype_size(t_); }
  // The values, widened to float.
  std::vector<float> values() const {
    std::vector<float> out(n_);
    for (size_t i = 0; i < n_; ++i)
      out[i] = t_ == FType::F32 ? f_[i] : (t_ == FType::F16 ? half_to_float(h_[i]) : bf16_to_float(h_[i]));
    return out;
  }
  bool guards_intact() const { return f_.guards_intact() && h_.guards_intact(); }

 private:
  FType t_;
  Guarded<float> f_;
  Guarded<uint16_t> h_;
  size_t n_;
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

// Bitwise equality of two float arrays (-0 differs from +0); any NaN equals any NaN (payloads of
// converted NaNs differ between converters and GPUs).
inline void check_bitwise(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    uint32_t a, b;
    std::memcpy(&a, &got[i], 4);
    std::memcpy(&b, &want[i], 4);
    if (a != b && !(std::isnan(got[i]) && std::isnan(want[i]))) {
      INFO("first difference at " << i << ": got " << got[i] << ", want " << want[i]);
      CHECK(a == b);
      return;
    }
  }
}

// |got - want| <= atol + rtol*|want| everywhere; NaN must match NaN and an infinity the same infinity.
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
    if (std::isinf(want[i]) || std::isinf(got[i])) {  // inf - inf over an infinite tolerance would be NaN
      if (got[i] != want[i]) {
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
