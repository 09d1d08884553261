// Plain double-precision references for the ops in engine/ops.h (see reference.h): plain loops, written
// from the definitions and sharing no code with the kernels.
#include "tests/ops/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/philox.h"

namespace volt::test::ref {

namespace {

int64_t numel_of(const Shape& s) { return shape_numel(s); }

}  // namespace

std::vector<double> dvec(const Tensor& t) {
  const std::vector<float> v = t.to_vector();
  return std::vector<double>(v.begin(), v.end());
}

Reference ref_conv2d(const Tensor& xt, const Tensor& wt, const Tensor* bt, Pair st, Pair pd) {
  const Shape xs = xt.shape(), ws = wt.shape();
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], K = ws[0], R = ws[2], S = ws[3];
  const int64_t P = (H + 2 * pd[0] - R) / st[0] + 1, Q = (W + 2 * pd[1] - S) / st[1] + 1;
  const auto x = dvec(xt), w = dvec(wt);
  const std::vector<double> b = bt ? dvec(*bt) : std::vector<double>(size_t(K), 0.0);
  Reference r{{N, K, P, Q}, std::vector<double>(size_t(N * K * P * Q))};
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          double acc = b[size_t(k)];
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < R; ++i)
              for (int64_t j = 0; j < S; ++j) {
                const int64_t ih = p * st[0] - pd[0] + i, iw = q * st[1] - pd[1] + j;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += x[size_t(((n * C + c) * H + ih) * W + iw)] * w[size_t(((k * C + c) * R + i) * S + j)];
              }
          r.values[size_t(((n * K + k) * P + p) * Q + q)] = acc;
        }
  return r;
}

// Two-pass statistics (mean, then the mean squared deviation) per channel of x [N, C, ...].
void ref_bn_stats(const Tensor& xt, std::vector<double>& mean, std::vector<double>& var_biased) {
  const auto x = dvec(xt);
  const int64_t N = xt.size(0), C = xt.size(1), HW = xt.numel() / (N * C), M = N * HW;
  mean.assign(size_t(C), 0.0);
  var_biased.assign(size_t(C), 0.0);
  for (int64_t c = 0; c < C; ++c) {
    double s = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) s += x[size_t((n * C + c) * HW + i)];
    const double m = s / double(M);
    double ss = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) {
        const double d = x[size_t((n * C + c) * HW + i)] - m;
        ss += d * d;
      }
    mean[size_t(c)] = m;
    var_biased[size_t(c)] = ss / double(M);
  }
}

Reference ref_batch_norm(const Tensor& xt, const Tensor* wt, const Tensor* bt, const Tensor* rm, const Tensor* rv,
                         bool training, double eps) {
  const auto x = dvec(xt);
  const int64_t N = xt.size(0), C = xt.size(1), HW = xt.numel() / (N * C);
  std::vector<double> mean, var;
  if (training) {
    ref_bn_stats(xt, mean, var);
  } else {
    mean = dvec(*rm);
    var = dvec(*rv);
  }
  const std::vector<double> g = wt ? dvec(*wt) : std::vector<double>(size_t(C), 1.0);
  const std::vector<double> b = bt ? dvec(*bt) : std::vector<double>(size_t(C), 0.0);
  Reference r{xt.shape(), std::vector<double>(x.size())};
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) {
        const size_t at = size_t((n * C + c) * HW + i);
        r.values[at] = (x[at] - mean[size_t(c)]) / std::sqrt(var[size_t(c)] + eps) * g[size_t(c)] + b[size_t(c)];
      }
  return r;
}

Reference ref_max_pool2d(const Tensor& xt, Pair k, Pair st, Pair pd) {
  return ref_max_pool2d(Reference{xt.shape(), dvec(xt)}, k, st, pd);
}

Reference ref_max_pool2d(const Reference& xr, Pair k, Pair st, Pair pd) {
  const Shape xs = xr.shape;
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
  const int64_t P = (H + 2 * pd[0] - k[0]) / st[0] + 1, Q = (W + 2 * pd[1] - k[1]) / st[1] + 1;
  const std::vector<double>& x = xr.values;
  Reference r{{N, C, P, Q}, std::vector<double>(size_t(N * C * P * Q))};
  for (int64_t nc = 0; nc < N * C; ++nc)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q) {
        double best = -std::numeric_limits<double>::infinity();
        for (int64_t i = 0; i < k[0]; ++i)
          for (int64_t j = 0; j < k[1]; ++j) {
            const int64_t ih = p * st[0] - pd[0] + i, iw = q * st[1] - pd[1] + j;
            if (ih >= 0 && ih < H && iw >= 0 && iw < W) best = std::max(best, x[size_t((nc * H + ih) * W + iw)]);
          }
        r.values[size_t((nc * P + p) * Q + q)] = best;
      }
  return r;
}

Reference ref_linear(const Tensor& xt, const Tensor& wt, const Tensor* bt) {
  const int64_t M = xt.size(0), in = xt.size(1), out = wt.size(0);
  const auto x = dvec(xt), w = dvec(wt);
  const std::vector<double> b = bt ? dvec(*bt) : std::vector<double>(size_t(out), 0.0);
  Reference r{{M, out}, std::vector<double>(size_t(M * out))};
  for (int64_t m = 0; m < M; ++m)
    for (int64_t o = 0; o < out; ++o) {
      double acc = b[size_t(o)];
      for (int64_t i = 0; i < in; ++i) acc += x[size_t(m * in + i)] * w[size_t(o * in + i)];
      r.values[size_t(m * out + o)] = acc;
    }
  return r;
}

// The documented mask: element i is kept when philox_uniform(philox_u32(seed, stream, offset, i)) >= p.
bool dropout_keeps(uint64_t seed, uint64_t stream, uint64_t offset, uint64_t i, double p) {
  return double(philox_uniform(philox_u32(seed, stream, offset, i))) >= p;
}

Reference ref_dropout(const Tensor& xt, double p, uint64_t seed, uint64_t stream, uint64_t offset) {
  const auto x = dvec(xt);
  Reference r{xt.shape(), std::vector<double>(x.size())};
  for (size_t i = 0; i < x.size(); ++i) r.values[i] = dropout_keeps(seed, stream, offset, i, p) ? x[i] / (1.0 - p) : 0.0;
  return r;
}

// NumPy broadcasting, from the rules.
Reference ref_binary(const Tensor& at, const Tensor& bt, const std::function<double(double, double)>& f) {
  const Shape as = at.shape(), bs = bt.shape();
  const size_t nd = std::max(as.size(), bs.size());
  Shape pa(nd, 1), pb(nd, 1), out(nd);
  for (size_t i = 0; i < as.size(); ++i) pa[nd - as.size() + i] = as[i];
  for (size_t i = 0; i < bs.size(); ++i) pb[nd - bs.size() + i] = bs[i];
  for (size_t i = 0; i < nd; ++i) out[i] = std::max(pa[i], pb[i]);
  const auto a = dvec(at), b = dvec(bt);
  Reference r{out, std::vector<double>(size_t(numel_of(out)))};
  std::vector<int64_t> idx(nd, 0);
  for (size_t flat = 0; flat < r.values.size(); ++flat) {
    int64_t rem = int64_t(flat);
    for (size_t d = nd; d-- > 0;) {
      idx[d] = rem % out[d];
      rem /= out[d];
    }
    int64_t ia = 0, ib = 0;
    for (size_t d = 0; d < nd; ++d) {
      ia = ia * pa[d] + (pa[d] == 1 ? 0 : idx[d]);
      ib = ib * pb[d] + (pb[d] == 1 ? 0 : idx[d]);
    }
    r.values[flat] = f(a[size_t(ia)], b[size_t(ib)]);
  }
  return r;
}

Reference ref_map(const Tensor& xt, const std::function<double(double)>& f) {
  auto v = dvec(xt);
  for (double& x : v) x = f(x);
  return {xt.shape(), v};
}

// Sum (or mean) over dim d, or over everything when d is absent (all = true).
Reference ref_reduce(const Tensor& xt, bool all, int64_t dim, bool keepdim, bool average) {
  const auto x = dvec(xt);
  if (all) {
    double s = 0;
    for (double v : x) s += v;
    return {{}, {average ? s / double(x.size()) : s}};
  }
  const Shape& s = xt.shape();
  const int64_t d = dim < 0 ? dim + int64_t(s.size()) : dim;
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= s[size_t(i)];
  for (size_t i = size_t(d) + 1; i < s.size(); ++i) inner *= s[i];
  const int64_t R = s[size_t(d)];
  Shape os;
  for (size_t i = 0; i < s.size(); ++i) {
    if (int64_t(i) != d) os.push_back(s[i]);
    else if (keepdim) os.push_back(1);
  }
  Reference r{os, std::vector<double>(size_t(outer * inner), 0.0)};
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      double acc = 0;
      for (int64_t k = 0; k < R; ++k) acc += x[size_t((o * R + k) * inner + i)];
      r.values[size_t(o * inner + i)] = average ? acc / double(R) : acc;
    }
  return r;
}

Reference ref_log_softmax(const Tensor& xt, int64_t dim) {
  const auto x = dvec(xt);
  const Shape& s = xt.shape();
  const int64_t d = dim < 0 ? dim + int64_t(s.size()) : dim;
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= s[size_t(i)];
  for (size_t i = size_t(d) + 1; i < s.size(); ++i) inner *= s[i];
  const int64_t R = s[size_t(d)];
  Reference r{s, std::vector<double>(x.size())};
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t k) { return size_t((o * R + k) * inner + i); };
      double m = -INFINITY;
      for (int64_t k = 0; k < R; ++k) m = std::max(m, x[at(k)]);
      double z = 0;
      for (int64_t k = 0; k < R; ++k) z += std::exp(x[at(k)] - m);
      for (int64_t k = 0; k < R; ++k) r.values[at(k)] = x[at(k)] - m - std::log(z);
    }
  return r;
}

// Cross entropy against the smoothed target distribution q = (1-ls)*onehot + ls/C: -sum_c q_c log p_c.
Reference ref_cross_entropy(const Tensor& logits, const Tensor& target, Reduction red, double ls) {
  const int64_t N = logits.size(0), C = logits.size(1);
  const Reference lp = ref_log_softmax(logits, 1);
  const std::vector<int64_t> t = target.to_int_vector();
  std::vector<double> rows(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    double l = 0;
    for (int64_t c = 0; c < C; ++c) {
      const double q = ls / double(C) + (c == t[size_t(n)] ? 1.0 - ls : 0.0);
      l -= q * lp.values[size_t(n * C + c)];
    }
    rows[size_t(n)] = l;
  }
  if (red == Reduction::None) return {{N}, rows};
  double s = 0;
  for (double v : rows) s += v;
  return {{}, {red == Reduction::Mean ? s / double(N) : s}};
}

}  // namespace volt::test::ref
