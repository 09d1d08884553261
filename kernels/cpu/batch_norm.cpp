// CPU batch norm (+ optional fused ReLU): one pass per channel for the statistics (double
// accumulation), one to normalise; backward recomputes the pre-activation for the ReLU mask.
#include "kernels/batch_norm.h"

#include <cmath>
#include <cstdint>
#include <cstring>

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

namespace {
// One channel of batch_norm_backward. kRelu: dy passes only where the forward's pre-activation
// x * scale + bias was positive (a select, not a branch: the mask follows the data, and a branch on
// it mispredicts about half the time). The sums use kLanes independent partial sums added in a fixed
// order, so the loops vectorise and the result does not depend on the machine's vector width.
template <bool kRelu>
void bn_backward_channel(int64_t N, int64_t C, int64_t HW, int64_t c, const float* dy, const float* x, float mu,
                         float is, BnAffine aff, float g, bool training, float* dx, float* dgamma, float* dbeta) {
  constexpr int kLanes = 8;
  const auto grad = [=](float dyv, float xv) {  // [=]: aff is unused when !kRelu
    if constexpr (kRelu) {  // dyv where positive, else +0: as bits, which compilers vectorise
      uint32_t bits;
      std::memcpy(&bits, &dyv, sizeof bits);
      bits &= 0u - uint32_t(xv * aff.scale + aff.bias > 0.f);
      float out;
      std::memcpy(&out, &bits, sizeof out);
      return out;
    } else {
      return dyv;
    }
  };
  double sum_dy = 0, sum_dy_xhat = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* dyc = dy + (n * C + c) * HW;
    const float* xc = x + (n * C + c) * HW;
    float ls[kLanes] = {}, ls2[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= HW; i += kLanes)
      for (int k = 0; k < kLanes; ++k) {
        const float d = grad(dyc[i + k], xc[i + k]);
        ls[k] += d;
        ls2[k] += d * (xc[i + k] - mu);
      }
    float s = 0.f, s2 = 0.f;
    for (; i < HW; ++i) {
      const float d = grad(dyc[i], xc[i]);
      s += d;
      s2 += d * (xc[i] - mu);
    }
    for (int k = 0; k < kLanes; ++k) {
      s += ls[k];
      s2 += ls2[k];
    }
    sum_dy += s;
    sum_dy_xhat += double(s2) * is;
  }
  if (dgamma) dgamma[c] = float(sum_dy_xhat);
  if (dbeta) dbeta[c] = float(sum_dy);
  if (!dx) return;
  const int64_t M = N * HW;
  // training: dx = g*invstd/M * (M*dy - sum_dy - xhat*sum_dy_xhat); eval: dx = g*invstd*dy
  const float k = training ? float(double(g) * is) : g * is;
  const float a = training ? float(sum_dy / double(M)) : 0.f;
  const float b = training ? float(sum_dy_xhat / double(M)) * is : 0.f;
  for (int64_t n = 0; n < N; ++n) {
    const float* dyc = dy + (n * C + c) * HW;
    const float* xc = x + (n * C + c) * HW;
    float* dxc = dx + (n * C + c) * HW;
    if (training)
      for (int64_t i = 0; i < HW; ++i) dxc[i] = k * (grad(dyc[i], xc[i]) - a - (xc[i] - mu) * b);
    else
      for (int64_t i = 0; i < HW; ++i) dxc[i] = k * grad(dyc[i], xc[i]);
  }
}
}  // namespace

void batch_norm_backward(int64_t N, int64_t C, int64_t HW, const float* dy, const float* x, const float* gamma,
                         const float* beta, const float* mean, const float* invstd, bool training, bool relu,
                         float* dx, float* dgamma, float* dbeta) {
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    const float mu = mean[c], is = invstd[c];
    const BnAffine aff = bn_affine(mu, is, gamma, beta, c);
    const float g = gamma ? gamma[c] : 1.f;
    if (relu) bn_backward_channel<true>(N, C, HW, c, dy, x, mu, is, aff, g, training, dx, dgamma, dbeta);
    else bn_backward_channel<false>(N, C, HW, c, dy, x, mu, is, aff, g, training, dx, dgamma, dbeta);
  }
}

}  // namespace volt::cpu
