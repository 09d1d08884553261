// Random numbers: Philox 4x32-10 against the Random123 known answers, the Generator (streams,
// offsets, reserve, the default generators), uniform_ statistics, randperm, and the thread count.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <vector>

#include "engine/error.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "engine/threads.h"
#include "kernels/philox.h"

using namespace volt;

// ---------------------------------------------------------------------------------------------
TEST_CASE("Philox 4x32-10 matches the Random123 known-answer vectors") {
  const Philox4 a = philox4x32_10(0, 0, 0, 0, 0, 0);
  CHECK(a.v[0] == 0x6627e8d5u);
  CHECK(a.v[1] == 0xe169c58du);
  CHECK(a.v[2] == 0xbc57ac4cu);
  CHECK(a.v[3] == 0x9b00dbd8u);
  const Philox4 b = philox4x32_10(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu);
  CHECK(b.v[0] == 0x408f276du);
  CHECK(b.v[1] == 0x41c83b0eu);
  CHECK(b.v[2] == 0xa20bc7c6u);
  CHECK(b.v[3] == 0x6d5451fdu);
  const Philox4 c = philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  CHECK(c.v[0] == 0xd16cfe09u);
  CHECK(c.v[1] == 0x94fdccebu);
  CHECK(c.v[2] == 0x5001e420u);
  CHECK(c.v[3] == 0x24126ea1u);

  // Volt's stream layout: counter = (block lo, block hi, stream lo, stream hi), key = seed.
  const uint64_t seed = 0x299f31d0a4093822ull, stream = 0x0370734413198a2eull, block = 0x85a308d3243f6a88ull;
  for (uint64_t i = 0; i < 8; ++i)
    CHECK(philox_u32(seed, stream, block - (i >> 2), i) == c.v[i & 3]);
  CHECK(philox_u32(0, 0, 0, 2) == 0xbc57ac4cu);
  CHECK(philox_u32(0, 0, 0, 5) == philox4x32_10(1, 0, 0, 0, 0, 0).v[1]);
  CHECK(philox_uniform(0xffffffffu) < 1.0f);
  CHECK(philox_uniform(0) == 0.0f);
  CHECK(philox_uniform(0x80000000u) == 0.5f);
}

TEST_CASE("Generator streams, offsets and reserve") {
  Generator a(42, 1), b(42, 1), c(42, 2), d(43, 1);
  std::vector<uint32_t> va, vb, vc, vd;
  for (int i = 0; i < 16; ++i) {
    va.push_back(a.next_u32());
    vb.push_back(b.next_u32());
    vc.push_back(c.next_u32());
    vd.push_back(d.next_u32());
  }
  CHECK(va == vb);
  CHECK(va != vc);
  CHECK(va != vd);
  CHECK(std::set<uint32_t>(va.begin(), va.end()).size() == va.size());
  CHECK(a.offset() == 16);  // each next_u32 takes a whole block
  CHECK(va[0] == philox4x32_10(0, 0, 1, 0, 42, 0).v[0]);
  CHECK(va[3] == philox4x32_10(3, 0, 1, 0, 42, 0).v[0]);

  Generator g(7);
  CHECK(g.seed() == 7);
  CHECK(g.stream() == 0);
  CHECK(g.offset() == 0);
  CHECK(g.reserve(1) == 0);
  CHECK(g.offset() == 1);
  CHECK(g.reserve(4) == 1);
  CHECK(g.offset() == 2);
  CHECK(g.reserve(5) == 2);
  CHECK(g.offset() == 4);
  CHECK(g.reserve(0) == 4);
  CHECK(g.offset() == 4);
  CHECK(g.reserve(8) == 4);
  CHECK(g.offset() == 6);
  g.set_offset(100);
  CHECK(g.offset() == 100);
  g.manual_seed(9);
  CHECK(g.seed() == 9);
  CHECK(g.offset() == 0);

  Generator u(5);
  for (int i = 0; i < 1000; ++i) {
    const float f = u.next_uniform();
    REQUIRE(f >= 0.f);
    REQUIRE(f < 1.f);
    const uint64_t k = u.next_below(7);
    REQUIRE(k < 7);
  }
  CHECK(u.next_below(1) == 0);
  CHECK_THROWS_AS(u.next_below(0), volt::Error);

  // The default generator's streams are independent and manual_seed resets them all.
  manual_seed(123);
  const uint32_t i0 = default_generator(kStreamInit).next_u32();
  const uint32_t s0 = default_generator(kStreamShuffle).next_u32();
  CHECK(i0 != s0);
  CHECK(default_generator(kStreamInit).seed() == 123);
  CHECK(default_generator(kStreamDropout).stream() == kStreamDropout);
  manual_seed(123);
  CHECK(default_generator(kStreamInit).offset() == 0);
  CHECK(default_generator(kStreamInit).next_u32() == i0);
  CHECK(default_generator(kStreamShuffle).next_u32() == s0);
  CHECK_THROWS_AS(default_generator(4), volt::Error);
}

TEST_CASE("uniform_ stays in range with the right mean and variance") {
  Tensor t = Tensor::empty({200, 500});
  Generator g(2024, 3);
  uniform_(t, -2.f, 3.f, g);
  CHECK(g.offset() == 100000 / 4);
  const std::vector<float> v = t.to_vector();
  double sum = 0, sq = 0;
  float lo = 1e9f, hi = -1e9f;
  for (float x : v) {
    sum += x;
    sq += double(x) * x;
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  const double n = double(v.size());
  const double mean = sum / n, var = sq / n - mean * mean;
  CHECK(lo >= -2.f);
  CHECK(hi < 3.f);
  CHECK(lo < -1.99f);
  CHECK(hi > 2.99f);
  CHECK(std::fabs(mean - 0.5) < 0.02);            // sem = 1.44 / sqrt(1e5) = 0.0046
  CHECK(std::fabs(var - 25.0 / 12.0) < 0.05);     // 25/12 = 2.083
  // Each of 10 equal bins holds about a tenth.
  std::vector<int> bins(10, 0);
  for (float x : v) bins[size_t(std::min(9, int((x + 2.f) / 0.5f)))]++;
  for (int c : bins) CHECK(std::abs(c - 10000) < 600);

  // Same generator state -> same values; the next draw continues the stream.
  Tensor a = Tensor::empty({37}), b = Tensor::empty({37}), c = Tensor::empty({37});
  Generator ga(11), gb(11);
  uniform_(a, 0.f, 1.f, ga);
  uniform_(b, 0.f, 1.f, gb);
  uniform_(c, 0.f, 1.f, ga);
  CHECK(a.to_vector() == b.to_vector());
  CHECK(a.to_vector() != c.to_vector());
  CHECK(ga.offset() == 2 * 10);  // ceil(37 / 4) blocks per call
  // Element i of the draw is word i % 4 of block offset + i / 4.
  CHECK(a.at({5}) == philox_uniform(philox_u32(11, 0, 0, 5)));
  CHECK(c.at({0}) == philox_uniform(philox_u32(11, 0, 10, 0)));

  Tensor wrong = Tensor::empty({3}, DType::F16);
  CHECK_THROWS_AS(uniform_(wrong, 0.f, 1.f, g), volt::Error);
  CHECK_THROWS_AS(uniform_(t, 1.f, 0.f, g), volt::Error);
}

TEST_CASE("randperm is a deterministic permutation") {
  Generator g1(99, kStreamShuffle), g2(99, kStreamShuffle), g3(100, kStreamShuffle);
  const std::vector<int64_t> p1 = randperm(1000, g1), p2 = randperm(1000, g2), p3 = randperm(1000, g3);
  CHECK(p1 == p2);
  CHECK(p1 != p3);
  std::vector<int64_t> sorted = p1;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) REQUIRE(sorted[size_t(i)] == i);
  int fixed = 0;
  for (int64_t i = 0; i < 1000; ++i) fixed += p1[size_t(i)] == i;
  CHECK(fixed < 10);  // a random permutation has ~1 fixed point
  CHECK(randperm(1000, g1) != p1);  // the generator moved on
  CHECK(randperm(0, g1).empty());
  CHECK(randperm(1, g1) == std::vector<int64_t>{0});
  CHECK_THROWS_AS(randperm(-1, g1), volt::Error);

  // Every position is equally likely: where element 0 lands over many shuffles of 4.
  Generator g(5);
  std::vector<int> where(4, 0);
  for (int k = 0; k < 4000; ++k) {
    const auto p = randperm(4, g);
    for (int i = 0; i < 4; ++i)
      if (p[size_t(i)] == 0) where[size_t(i)]++;
  }
  for (int c : where) CHECK(std::abs(c - 1000) < 150);
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("set_num_threads validates and round trips") {
  const int before = get_num_threads();
  CHECK(before >= 1);
  set_num_threads(1);
  CHECK(get_num_threads() == 1);
  CHECK_THROWS_AS(set_num_threads(0), volt::Error);
  set_num_threads(before);
  CHECK(get_num_threads() == before);
}
