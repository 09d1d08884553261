// CPU reductions, log-softmax and cross-entropy (see reduce.h). Row maxima are subtracted before
// exponentials so large logits do not overflow.
#include "kernels/reduce.h"

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/omp_trap.h"
#include "kernels/metrics.h"

namespace volt::cpu {

void sum_dim(int64_t outer, int64_t R, int64_t inner, const float* x, float* out) {
  OmpTrap trap;  // the accumulator's allocation may throw
#pragma omp parallel for schedule(static) if (outer * R * inner > 65536)
  for (int64_t o = 0; o < outer; ++o) trap.run([&] {
    std::vector<double> acc(size_t(inner), 0.0);
    for (int64_t r = 0; r < R; ++r) {
      const float* row = x + (o * R + r) * inner;
      for (int64_t i = 0; i < inner; ++i) acc[size_t(i)] += row[i];
    }
    for (int64_t i = 0; i < inner; ++i) out[o * inner + i] = float(acc[size_t(i)]);
  });
  trap.rethrow();
}

double sum_all(int64_t n, const float* x) {
  double acc = 0;
#pragma omp parallel for reduction(+ : acc) schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) acc += x[i];
  return acc;
}

void broadcast_dim(int64_t outer, int64_t R, int64_t inner, const float* dy, float alpha, float* dx) {
#pragma omp parallel for schedule(static) if (outer * R * inner > 65536)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t r = 0; r < R; ++r) {
      float* row = dx + (o * R + r) * inner;
      const float* src = dy + o * inner;
      for (int64_t i = 0; i < inner; ++i) row[i] = src[i] * alpha;
    }
}

void log_softmax_forward(int64_t outer, int64_t R, int64_t inner, const float* x, float* y) {
#pragma omp parallel for collapse(2) schedule(static) if (outer * R * inner > 65536)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const float* xo = x + o * R * inner + i;
      float* yo = y + o * R * inner + i;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t r = 0; r < R; ++r) m = std::max(m, xo[r * inner]);
      double s = 0;
      for (int64_t r = 0; r < R; ++r) s += std::exp(double(xo[r * inner]) - m);
      // (x - max) - log(sum), as PyTorch: x - float(max + log(sum)) lost about half a float step of
      // |x| (2% of the answer for logits near 1e6).
      const double log_s = std::log(s);
      for (int64_t r = 0; r < R; ++r) yo[r * inner] = float((double(xo[r * inner]) - m) - log_s);
    }
}

void log_softmax_backward(int64_t outer, int64_t R, int64_t inner, const float* dy, const float* y, float* dx) {
#pragma omp parallel for collapse(2) schedule(static) if (outer * R * inner > 65536)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const int64_t base = o * R * inner + i;
      double s = 0;
      for (int64_t r = 0; r < R; ++r) s += dy[base + r * inner];
      for (int64_t r = 0; r < R; ++r)
        dx[base + r * inner] = float(dy[base + r * inner] - std::exp(double(y[base + r * inner])) * s);
    }
}

void cross_entropy_forward(int64_t N, int64_t C, const float* logits, const int64_t* target, float eps, float* loss,
                           float* grad_base) {
#pragma omp parallel for schedule(static) if (N * C > 65536)
  for (int64_t n = 0; n < N; ++n) {
    const float* z = logits + n * C;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < C; ++c) m = std::max(m, z[c]);
    double s = 0, sum_z = 0;
    for (int64_t c = 0; c < C; ++c) {
      s += std::exp(double(z[c]) - m);
      sum_z += z[c];
    }
    const double lse = m + std::log(s);
    const double nll = lse - z[target[n]];
    const double smooth = lse - sum_z / double(C);  // mean over c of -logp
    // Without smoothing a -inf logit's +inf -logp stays out (0 * inf would make the loss NaN).
    loss[n] = float((1.0 - eps) * nll + (eps > 0 ? eps * smooth : 0.0));
    if (grad_base) {
      const double off = eps / double(C);
      for (int64_t c = 0; c < C; ++c) {
        const double p = std::exp(double(z[c]) - m) / s;
        const double q = off + (c == target[n] ? 1.0 - eps : 0.0);
        grad_base[n * C + c] = float(p - q);
      }
    }
  }
}

void cross_entropy_backward(int64_t N, int64_t C, const float* grad_base, const float* dloss, int64_t dloss_stride,
                            float dloss_div, float* dlogits) {
#pragma omp parallel for schedule(static) if (N * C > 65536)
  for (int64_t n = 0; n < N; ++n) {
    const float g = dloss[n * dloss_stride] / dloss_div;
    for (int64_t c = 0; c < C; ++c) dlogits[n * C + c] = grad_base[n * C + c] * g;
  }
}

void argmax_dim(int64_t outer, int64_t R, int64_t inner, const float* x, int64_t* out) {
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const float* xo = x + o * R * inner + i;
      out[o * inner + i] = metric_top1([&](int64_t r) { return xo[r * inner]; }, R);  // the metrics' order
    }
}

}  // namespace volt::cpu
