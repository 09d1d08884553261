// CPU max pooling; NaN propagates like PyTorch (a NaN input becomes the maximum).
#include "kernels/pool.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace volt::cpu {

namespace {
// kernel 2, stride 2, no padding (the seed CNN's pooling): branch-free selection, since which
// element wins is data-dependent and a branch per element mispredicts half the time. The first NaN
// of a window wins, as in the general loop below and on the GPU.
void max_pool_2x2(const Pool2dShape& s, const float* x, float* y, int32_t* indices) {
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < s.planes; ++pl) {
    const float* xp = x + pl * s.H * s.W;
    float* yp = y + pl * s.P * s.Q;
    int32_t* ip = indices + pl * s.P * s.Q;
    for (int64_t p = 0; p < s.P; ++p) {
      const float* r0 = xp + (2 * p) * s.W;
      const float* r1 = r0 + s.W;
      const int32_t base = int32_t(2 * p * s.W);
      float* yrow = yp + p * s.Q;
      int32_t* irow = ip + p * s.Q;
      for (int64_t q = 0; q < s.Q; ++q) {
        // As bits and all-ones masks, so that the loop vectorises: take = v > best, or v is the
        // window's first NaN.
        const float v[4] = {r0[2 * q], r0[2 * q + 1], r1[2 * q], r1[2 * q + 1]};
        const int32_t off[4] = {0, 1, int32_t(s.W), int32_t(s.W) + 1};
        float best = v[0];
        int32_t bi = 0;
        for (int k = 1; k < 4; ++k) {
          const int32_t take = -int32_t((v[k] > best) | ((v[k] != v[k]) & (best == best)));
          int32_t vb, bb;
          std::memcpy(&vb, &v[k], 4);
          std::memcpy(&bb, &best, 4);
          bb = (vb & take) | (bb & ~take);
          std::memcpy(&best, &bb, 4);
          bi = (off[k] & take) | (bi & ~take);
        }
        yrow[q] = best;
        irow[q] = base + int32_t(2 * q) + bi;
      }
    }
  }
}
}  // namespace

void max_pool2d_forward(const Pool2dShape& s, const float* x, float* y, int32_t* indices) {
  if (s.kh == 2 && s.kw == 2 && s.stride_h == 2 && s.stride_w == 2 && s.pad_h == 0 && s.pad_w == 0) {
    max_pool_2x2(s, x, y, indices);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < s.planes; ++pl) {
    const float* xp = x + pl * s.H * s.W;
    float* yp = y + pl * s.P * s.Q;
    int32_t* ip = indices + pl * s.P * s.Q;
    for (int64_t p = 0; p < s.P; ++p) {
      const int64_t h0 = p * s.stride_h - s.pad_h;
      for (int64_t q = 0; q < s.Q; ++q) {
        const int64_t w0 = q * s.stride_w - s.pad_w;
        float best = -std::numeric_limits<float>::infinity();
        int64_t best_i = -1;
        for (int64_t i = std::max<int64_t>(h0, 0); i < std::min(h0 + s.kh, s.H); ++i)
          for (int64_t j = std::max<int64_t>(w0, 0); j < std::min(w0 + s.kw, s.W); ++j) {
            const float v = xp[i * s.W + j];
            if (v > best || std::isnan(v) || best_i < 0) {
              best = v;
              best_i = i * s.W + j;
              if (std::isnan(v)) goto done;
            }
          }
      done:
        yp[p * s.Q + q] = best;
        ip[p * s.Q + q] = int32_t(best_i);
      }
    }
  }
}

void max_pool2d_backward(const Pool2dShape& s, const float* dy, const int32_t* indices, float* dx) {
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < s.planes; ++pl) {
    float* dxp = dx + pl * s.H * s.W;
    std::memset(dxp, 0, size_t(s.H * s.W) * sizeof(float));
    const float* dyp = dy + pl * s.P * s.Q;
    const int32_t* ip = indices + pl * s.P * s.Q;
    for (int64_t i = 0; i < s.P * s.Q; ++i) dxp[ip[i]] += dyp[i];
  }
}

}  // namespace volt::cpu
