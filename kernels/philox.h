// Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based generator. Header-only and free of host-only code so the CUDA kernels can
// include it and produce exactly the CPU's streams.
#pragma once
#include <cstdint>

#include "hd.h"

namespace volt {

struct Philox4 {
  uint32_t v[4];
};

VOLT_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = uint64_t(a) * uint64_t(b);
  hi = uint32_t(p >> 32);
  lo = uint32_t(p);
}

// One block of four 32-bit outputs for counter (c0..c3) and key (k0, k1).
VOLT_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c0, hi0, lo0);
    philox_mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The four words of block `block` of stream `stream` (philox_u32's elements 4*(block-offset) .. +3
// at once).
VOLT_HD Philox4 philox_block(uint64_t seed, uint64_t stream, uint64_t block) {
  return philox4x32_10(uint32_t(block), uint32_t(block >> 32), uint32_t(stream), uint32_t(stream >> 32),
                       uint32_t(seed), uint32_t(seed >> 32));
}

// Volt's stream layout: key = seed; counter = (block index low, high, stream low, high), where
// block index = offset + i / 4 and element i takes word i % 4. Every backend must use this.
VOLT_HD uint32_t philox_u32(uint64_t seed, uint64_t stream, uint64_t offset, uint64_t i) {
  return philox_block(seed, stream, offset + (i >> 2)).v[i & 3];
}

// Uniform float in [0, 1) with 24 random bits.
VOLT_HD float philox_uniform(uint32_t bits) { return float(bits >> 8) * (1.0f / 16777216.0f); }

}  // namespace volt
