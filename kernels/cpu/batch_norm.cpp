// CPU batch norm (+ optional fused ReLU): one pass per channel for the statistics (double
// accumulation), one to normalise; backward recomputes the pre-activation for the ReLU mask.
#include "kernels/batch_norm.h"

#include <cmath>

namespace volt::cpu {

namespace {
inline float apply(float x, BnAffine a, bool relu) {
  const float v = x * a.scale + a.bias;
  return relu ? (v > 0.f ? v : (v != v ? v : 0.f)) : v;  // NaN propagates through the ReLU
}
}  // namespace

void batch_norm_forward_train(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma, const float* beta,
                              double eps, bool relu, float* y, float* save_mean, float* save_invstd,
                              float* batch_var_unbiased) {
  const int64_t M = N * HW;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    // Shifted sums (shift = first element) keep the variance accurate when |mean| >> std.
    const double shift = M > 0 ? x[c * HW] : 0.0;
    double sum = 0, sumsq = 0;
    for (int64_t n = 0; n < N; ++n) {
      const float* xc = x + (n * C + c) * HW;
      double s = 0, s2 = 0;
      for (int64_t i = 0; i < HW; ++i) {
        const double d = double(xc[i]) - shift;
        s += d;
        s2 += d * d;
      }
      sum += s;
      sumsq += s2;
    }
    const double mean_shifted = sum / double(M);
    const double var = std::max(0.0, sumsq / double(M) - mean_shifted * mean_shifted);
    save_mean[c] = float(shift + mean_shifted);
    save_invstd[c] = float(1.0 / std::sqrt(var + eps));
    if (batch_var_unbiased) batch_var_unbiased[c] = M > 1 ? float(var * double(M) / double(M - 1)) : float(var);
    const BnAffine a = bn_affine(save_mean[c], save_invstd[c], gamma, beta, c);
    for (int64_t n = 0; n < N; ++n) {
      const float* xc = x + (n * C + c) * HW;
      float* yc = y + (n * C + c) * HW;
      for (int64_t i = 0; i < HW; ++i) yc[i] = apply(xc[i], a, relu);
    }
  }
}

void batch_norm_invstd(int64_t C, const float* var, double eps, float* invstd) {
  for (int64_t c = 0; c < C; ++c) invstd[c] = float(1.0 / std::sqrt(double(var[c]) + eps));
}

void batch_norm_forward_eval(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma, const float* beta,
                             const float* running_mean, const float* invstd, bool relu, float* y) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const BnAffine a = bn_affine(running_mean[c], invstd[c], gamma, beta, c);
      const float* xc = x + (n * C + c) * HW;
      float* yc = y + (n * C + c) * HW;
      for (int64_t i = 0; i < HW; ++i) yc[i] = apply(xc[i], a, relu);
    }
}

void batch_norm_update_running(int64_t C, float* running_mean, float* running_var, const float* batch_mean,
                               const float* batch_var_unbiased, double momentum) {
  for (int64_t c = 0; c < C; ++c) {
    running_mean[c] = bn_running_update(running_mean[c], batch_mean[c], momentum);
    running_var[c] = bn_running_update(running_var[c], batch_var_unbiased[c], momentum);
  }
}

void batch_norm_backward(int64_t N, int64_t C, int64_t HW, const float* dy, const float* x, const float* gamma,
                         const float* beta, const float* mean, const float* invstd, bool training, bool relu,
                         float* dx, float* dgamma, float* dbeta) {
  const int64_t M = N * HW;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    const float mu = mean[c], is = invstd[c];
    const BnAffine aff = bn_affine(mu, is, gamma, beta, c);
    // dy through the ReLU: zero where the forward's pre-activation was not positive.
    auto grad = [&](const float* dyc, const float* xc, int64_t i) {
      return !relu || xc[i] * aff.scale + aff.bias > 0.f ? dyc[i] : 0.f;
    };
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t n = 0; n < N; ++n) {
      const float* dyc = dy + (n * C + c) * HW;
      const float* xc = x + (n * C + c) * HW;
      float s = 0.f, s2 = 0.f;
      for (int64_t i = 0; i < HW; ++i) {
        const float d = grad(dyc, xc, i);
        s += d;
        s2 += d * (xc[i] - mu);
      }
      sum_dy += s;
      sum_dy_xhat += double(s2) * is;
    }
    if (dgamma) dgamma[c] = float(sum_dy_xhat);
    if (dbeta) dbeta[c] = float(sum_dy);
    if (!dx) continue;
    const float g = gamma ? gamma[c] : 1.f;
    if (training) {
      // dx = g*invstd/M * (M*dy - sum_dy - xhat*sum_dy_xhat)
      const float k = float(double(g) * is);
      const float a = float(sum_dy / double(M));
      const float b = float(sum_dy_xhat / double(M)) * is;
      for (int64_t n = 0; n < N; ++n) {
        const float* dyc = dy + (n * C + c) * HW;
        const float* xc = x + (n * C + c) * HW;
        float* dxc = dx + (n * C + c) * HW;
        for (int64_t i = 0; i < HW; ++i) dxc[i] = k * (grad(dyc, xc, i) - a - (xc[i] - mu) * b);
      }
    } else {
      const float k = g * is;
      for (int64_t n = 0; n < N; ++n) {
        const float* dyc = dy + (n * C + c) * HW;
        const float* xc = x + (n * C + c) * HW;
        float* dxc = dx + (n * C + c) * HW;
        for (int64_t i = 0; i < HW; ++i) dxc[i] = k * grad(dyc, xc, i);
      }
    }
  }
}

}  // namespace volt::cpu
