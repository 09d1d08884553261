// CPU convolution: im2col per image into a per-thread buffer, then one GEMM per image; the batch
// is shared out over OpenMP threads (BLAS stays single-threaded inside). Weight gradients are
// accumulated per thread and summed in thread order, so results are deterministic for a fixed
// thread count.
#include "kernels/conv2d.h"

#include <omp.h>

#include <cstring>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/omp_trap.h"

namespace volt::cpu {

namespace {

// cols [C*R*S, P*Q] (row stride ld >= P*Q) for one image x [C, H, W].
void im2col(const Conv2dShape& s, const float* x, float* cols, int64_t ld) {
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t) {
        float* row = cols + ((c * s.R + r) * s.S + t) * ld;
        const float* plane = x + c * s.H * s.W;
        for (int64_t p = 0; p < s.P; ++p) {
          const int64_t ih = p * s.stride_h - s.pad_h + r;
          float* out = row + p * s.Q;
          if (ih < 0 || ih >= s.H) {
            std::memset(out, 0, size_t(s.Q) * sizeof(float));
            continue;
          }
          const float* in = plane + ih * s.W;
          if (s.stride_w == 1) {
            // iw = q - pad_w + t: copy the in-bounds span, zero the rest
            const int64_t q0 = std::max<int64_t>(0, s.pad_w - t);
            const int64_t q1 = std::min<int64_t>(s.Q, s.W + s.pad_w - t);
            // (a plain loop, not memcpy: rows are a few dozen floats and a call per row costs more)
            for (int64_t q = 0; q < q0 && q < s.Q; ++q) out[q] = 0.f;
            for (int64_t q = q0; q < q1; ++q) out[q] = in[q - s.pad_w + t];
            for (int64_t q = std::max(q1, q0); q < s.Q; ++q) out[q] = 0.f;
          } else {
            for (int64_t q = 0; q < s.Q; ++q) {
              const int64_t iw = q * s.stride_w - s.pad_w + t;
              out[q] = (iw >= 0 && iw < s.W) ? in[iw] : 0.f;
            }
          }
        }
      }
}

// dx [C, H, W] += scatter of dcols [C*R*S, P*Q] (row stride ld); dx must be zeroed first.
void col2im(const Conv2dShape& s, const float* cols, float* dx, int64_t ld) {
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t) {
        const float* row = cols + ((c * s.R + r) * s.S + t) * ld;
        float* plane = dx + c * s.H * s.W;
        for (int64_t p = 0; p < s.P; ++p) {
          const int64_t ih = p * s.stride_h - s.pad_h + r;
          if (ih < 0 || ih >= s.H) continue;
          const float* in = row + p * s.Q;
          float* out = plane + ih * s.W;
          if (s.stride_w == 1) {  // iw = q - pad_w + t over the in-bounds span: a plain vector add
            const int64_t q0 = std::max<int64_t>(0, s.pad_w - t);
            const int64_t q1 = std::min<int64_t>(s.Q, s.W + s.pad_w - t);
            for (int64_t q = q0; q < q1; ++q) out[q - s.pad_w + t] += in[q];
            continue;
          }
          for (int64_t q = 0; q < s.Q; ++q) {
            const int64_t iw = q * s.stride_w - s.pad_w + t;
            if (iw >= 0 && iw < s.W) out[iw] += in[q];
          }
        }
      }
}

std::vector<float>& thread_buffer(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
}

bool is_pointwise(const Conv2dShape& s) {
  return s.R == 1 && s.S == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}


// Images per GEMM: small outputs (P*Q of a few hundred) are grouped so each GEMM is wide enough
// to run near BLAS peak; cols for a group is [C*R*S, G*P*Q].
int64_t group_size(const Conv2dShape& s) {
  const int64_t PQ = s.P * s.Q;
  const int64_t target = 256;
  return std::max<int64_t>(1, std::min<int64_t>(s.N, (target + PQ - 1) / PQ));
}

// Fills cols [CRS, G*PQ] for images n0..n0+g-1 (a pointwise conv copies x planes).
void im2col_group(const Conv2dShape& s, const float* x, int64_t n0, int64_t g, float* cols) {
  const int64_t PQ = s.P * s.Q, ld = g * PQ;
  for (int64_t b = 0; b < g; ++b) {
    const float* xn = x + (n0 + b) * s.C * s.H * s.W;
    if (is_pointwise(s)) {
      for (int64_t c = 0; c < s.C; ++c) std::memcpy(cols + c * ld + b * PQ, xn + c * PQ, size_t(PQ) * sizeof(float));
    } else {
      im2col(s, xn, cols + b * PQ, ld);
    }
  }
}

// Gathers dy of images n0..n0+g-1 from [N, K, PQ] into [K, G*PQ].
void gather_dy(const Conv2dShape& s, const float* dy, int64_t n0, int64_t g, float* out) {
  const int64_t PQ = s.P * s.Q;
  for (int64_t b = 0; b < g; ++b)
    for (int64_t k = 0; k < s.K; ++k)
      std::memcpy(out + k * g * PQ + b * PQ, dy + ((n0 + b) * s.K + k) * PQ, size_t(PQ) * sizeof(float));
}

std::vector<float>& second_buffer(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
}

}  // namespace

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* b, float* y) {
  const int64_t CRS = s.C * s.R * s.S, PQ = s.P * s.Q, G = group_size(s);
  const int64_t groups = (s.N + G - 1) / G;
  OmpTrap trap;  // the work buffers' allocations may throw
#pragma omp parallel for schedule(static)
  for (int64_t gi = 0; gi < groups; ++gi) trap.run([&] {
    const int64_t n0 = gi * G, g = std::min(G, s.N - n0);
    float* cols = thread_buffer(size_t(CRS * g * PQ)).data();
    im2col_group(s, x, n0, g, cols);
    if (g == 1) {
      gemm(false, false, s.K, PQ, CRS, 1.f, w, CRS, cols, PQ, 0.f, y + n0 * s.K * PQ, PQ);
    } else {
      float* out = second_buffer(size_t(s.K * g * PQ)).data();
      gemm(false, false, s.K, g * PQ, CRS, 1.f, w, CRS, cols, g * PQ, 0.f, out, g * PQ);
      for (int64_t bi = 0; bi < g; ++bi)
        for (int64_t k = 0; k < s.K; ++k)
          std::memcpy(y + ((n0 + bi) * s.K + k) * PQ, out + k * g * PQ + bi * PQ, size_t(PQ) * sizeof(float));
    }
    if (b)
      for (int64_t bi = 0; bi < g; ++bi)
        for (int64_t k = 0; k < s.K; ++k) {
          float* row = y + ((n0 + bi) * s.K + k) * PQ;
          const float bk = b[k];
          for (int64_t i = 0; i < PQ; ++i) row[i] += bk;
        }
  });
  trap.rethrow();
}

void conv2d_backward_input(const Conv2dShape& s, const float* dy, const float* w, float* dx) {
  const int64_t CRS = s.C * s.R * s.S, PQ = s.P * s.Q, CHW = s.C * s.H * s.W, G = group_size(s);
  const int64_t groups = (s.N + G - 1) / G;
  OmpTrap trap;
#pragma omp parallel for schedule(static)
  for (int64_t gi = 0; gi < groups; ++gi) trap.run([&] {
    const int64_t n0 = gi * G, g = std::min(G, s.N - n0);
    const float* dyg = dy + n0 * s.K * PQ;
    if (g > 1) {
      float* buf = second_buffer(size_t(s.K * g * PQ)).data();
      gather_dy(s, dy, n0, g, buf);
      dyg = buf;
    }
    float* dcols = thread_buffer(size_t(CRS * g * PQ)).data();
    gemm(true, false, CRS, g * PQ, s.K, 1.f, w, CRS, dyg, g * PQ, 0.f, dcols, g * PQ);
    for (int64_t bi = 0; bi < g; ++bi) {
      float* dxn = dx + (n0 + bi) * CHW;
      if (is_pointwise(s)) {
        for (int64_t c = 0; c < s.C; ++c)
          std::memcpy(dxn + c * PQ, dcols + c * g * PQ + bi * PQ, size_t(PQ) * sizeof(float));
      } else {
        std::memset(dxn, 0, size_t(CHW) * sizeof(float));
        col2im(s, dcols + bi * PQ, dxn, g * PQ);
      }
    }
  });
  trap.rethrow();
}

void conv2d_backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw) {
  const int64_t CRS = s.C * s.R * s.S, PQ = s.P * s.Q, KCRS = s.K * CRS, G = group_size(s);
  const int64_t groups = (s.N + G - 1) / G;
  const int threads = omp_get_max_threads();
  std::vector<std::vector<float>> partial(static_cast<size_t>(threads));
  OmpTrap trap;  // once a body threw (an allocation), the others are skipped: none uses a missing buffer
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    std::vector<float>& acc = partial[size_t(t)];
    trap.run([&] { acc.assign(size_t(KCRS), 0.f); });
#pragma omp for schedule(static)
    for (int64_t gi = 0; gi < groups; ++gi) trap.run([&] {
      const int64_t n0 = gi * G, g = std::min(G, s.N - n0);
      float* cols = thread_buffer(size_t(CRS * g * PQ)).data();
      im2col_group(s, x, n0, g, cols);
      const float* dyg = dy + n0 * s.K * PQ;
      if (g > 1) {
        float* buf = second_buffer(size_t(s.K * g * PQ)).data();
        gather_dy(s, dy, n0, g, buf);
        dyg = buf;
      }
      // acc[K, CRS] += dy_g[K, G*PQ] * cols^T[G*PQ, CRS]
      gemm(false, true, s.K, CRS, g * PQ, 1.f, dyg, g * PQ, cols, g * PQ, 1.f, acc.data(), CRS);
    });
  }
  trap.rethrow();
  std::memcpy(dw, partial[0].data(), size_t(KCRS) * sizeof(float));
  for (int t = 1; t < threads; ++t) {
    // The team can be smaller than omp_get_max_threads() (OMP_THREAD_LIMIT, OMP_DYNAMIC, a call from
    // inside a parallel region): threads that never ran left their partial empty.
    if (partial[size_t(t)].empty()) continue;
    const float* p = partial[size_t(t)].data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < KCRS; ++i) dw[i] += p[i];
  }
}

void conv2d_backward_bias(const Conv2dShape& s, const float* dy, float* db) {
  const int64_t PQ = s.P * s.Q;
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < s.K; ++k) {
    double acc = 0;
    for (int64_t n = 0; n < s.N; ++n) {
      // 8 independent partial sums added in a fixed order: the loop vectorises, and the result does
      // not depend on the machine's vector width
      const float* row = dy + (n * s.K + k) * PQ;
      float lanes[8] = {};
      int64_t i = 0;
      for (; i + 8 <= PQ; i += 8)
        for (int l = 0; l < 8; ++l) lanes[l] += row[i + l];
      float part = 0.f;
      for (; i < PQ; ++i) part += row[i];
      for (float v : lanes) part += v;
      acc += part;
    }
    db[k] = float(acc);
  }
}

}  // namespace volt::cpu
