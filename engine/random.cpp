// Generator bookkeeping over Philox (see random.h).
#include "engine/random.h"

#include "engine/error.h"
#include "kernels/philox.h"

namespace volt {

uint64_t Generator::reserve(uint64_t n) {
  const uint64_t start = offset_;
  offset_ += (n + 3) / 4;
  return start;
}

uint32_t Generator::next_u32() { return philox_u32(seed_, stream_, reserve(1), 0); }

float Generator::next_uniform() { return philox_uniform(next_u32()); }

uint64_t Generator::next_below(uint64_t bound) {
  VOLT_CHECK(bound > 0, "next_below: bound must be positive");
  // 64 random bits reduced by rejection (no modulo bias).
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  while (true) {
    const uint64_t off = reserve(2);
    const uint64_t r = (uint64_t(philox_u32(seed_, stream_, off, 0)) << 32) | philox_u32(seed_, stream_, off, 1);
    if (r < limit) return r % bound;
  }
}

namespace {
struct DefaultGenerators {
  uint64_t seed = 0;
  Generator streams[4] = {Generator(0, 0), Generator(0, 1), Generator(0, 2), Generator(0, 3)};
};
DefaultGenerators& defaults() {
  static DefaultGenerators d;
  return d;
}
}  // namespace

Generator& default_generator(uint64_t stream) {
  VOLT_CHECK(stream < 4, "default_generator: unknown stream ", stream);
  return defaults().streams[stream];
}

void manual_seed(uint64_t seed) {
  auto& d = defaults();
  d.seed = seed;
  for (uint64_t s = 0; s < 4; ++s) d.streams[s] = Generator(seed, s);
}

void uniform_(Tensor& t, float low, float high, Generator& gen) {
  VOLT_CHECK(t.dtype() == DType::F32 && t.device().is_cpu(), "uniform_: needs a float32 cpu tensor, got ",
             dtype_name(t.dtype()), " on ", t.device().str());
  VOLT_CHECK(low <= high, "uniform_: low ", low, " is greater than high ", high);
  t.bump_version();
  const uint64_t n = uint64_t(t.numel());
  const uint64_t off = gen.reserve(n);
  float* p = t.data<float>();
  for (uint64_t i = 0; i < n; ++i)
    p[i] = low + (high - low) * philox_uniform(philox_u32(gen.seed(), gen.stream(), off, i));
}

std::vector<int64_t> randperm(int64_t n, Generator& gen) {
  VOLT_CHECK(n >= 0, "randperm: n must be non-negative, got ", n);
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[size_t(i)], p[size_t(gen.next_below(uint64_t(i + 1)))]);
  return p;
}

}  // namespace volt
