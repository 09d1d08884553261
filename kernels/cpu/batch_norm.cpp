// CPU batch norm: one pass per channel for the statistics (double accumulation), one to normalise.
#include "kernels/batch_norm.h"

#include <cmath>

namespace volt::cpu {

void batch_norm_forward_train(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma, const float* beta,
                              double eps, float* y, float* save_mean, float* save_invstd, float* batch_var_unbiased) {
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
    const double mean = shift + mean_shifted;
    const double invstd = 1.0 / std::sqrt(var + eps);
    save_mean[c] = float(mean);
    save_invstd[c] = float(invstd);
    if (batch_var_unbiased) batch_var_unbiased[c] = M > 1 ? float(var * double(M) / double(M - 1)) : float(var);
    const float scale = float(invstd * (gamma ? gamma[c] : 1.f));
    const float bias = float((beta ? beta[c] : 0.f) - mean * invstd * (gamma ? gamma[c] : 1.f));
    for (int64_t n = 0; n < N; ++n) {
      const float* xc = x + (n * C + c) * HW;
      float* yc = y + (n * C + c) * HW;
      for (int64_t i = 0; i < HW; ++i) yc[i] = xc[i] * scale + bias;
    }
  }
}

void batch_norm_forward_eval(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma, const float* beta,
                             const float* running_mean, const float* running_var, double eps, float* y) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const double invstd = 1.0 / std::sqrt(double(running_var[c]) + eps);
      const float scale = float(invstd * (gamma ? gamma[c] : 1.f));
      const float bias = float((beta ? beta[c] : 0.f) - double(running_mean[c]) * invstd * (gamma ? gamma[c] : 1.f));
      const float* xc = x + (n * C + c) * HW;
      float* yc = y + (n * C + c) * HW;
      for (int64_t i = 0; i < HW; ++i) yc[i] = xc[i] * scale + bias;
    }
}

void batch_norm_update_running(int64_t C, float* running_mean, float* running_var, const float* batch_mean,
                               const float* batch_var_unbiased, double momentum) {
  for (int64_t c = 0; c < C; ++c) {
    running_mean[c] = float((1.0 - momentum) * running_mean[c] + momentum * batch_mean[c]);
    running_var[c] = float((1.0 - momentum) * running_var[c] + momentum * batch_var_unbiased[c]);
  }
}

void batch_norm_backward(int64_t N, int64_t C, int64_t HW, const float* dy, const float* x, const float* gamma,
                         const float* mean, const float* invstd, bool training, float* dx, float* dgamma, float* dbeta) {
  const int64_t M = N * HW;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    const float mu = mean[c], is = invstd[c];
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t n = 0; n < N; ++n) {
      const float* dyc = dy + (n * C + c) * HW;
      const float* xc = x + (n * C + c) * HW;
      float s = 0.f, s2 = 0.f;
      for (int64_t i = 0; i < HW; ++i) {
        s += dyc[i];
        s2 += dyc[i] * (xc[i] - mu);
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
        for (int64_t i = 0; i < HW; ++i) dxc[i] = k * (dyc[i] - a - (xc[i] - mu) * b);
      }
    } else {
      const float k = g * is;
      for (int64_t n = 0; n < N; ++n) {
        const float* dyc = dy + (n * C + c) * HW;
        float* dxc = dx + (n * C + c) * HW;
        for (int64_t i = 0; i < HW; ++i) dxc[i] = k * dyc[i];
      }
    }
  }
}

}  // namespace volt::cpu
