// Tests for the ops in engine/ops.h: one table of op cases (inputs, the op, tolerances) checked against
// plain double-precision references and by central differences, then golden values worked out by hand.
#include <doctest/doctest.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "kernels/philox.h"
#include "tests/test_util.h"

extern char** environ;

using namespace volt;
namespace vt = volt::test;

namespace {

// =====================================================================================================
// The op table. An entry says which inputs to make (shapes and how to fill them), how to build the op
// from them, and, separately, how to compute the expected output in double precision. Nothing in an
// entry depends on the device: a CUDA test can make the same inputs on the CPU, copy them to the GPU,
// run `run` on both and compare (see make_inputs).
// =====================================================================================================

// Uniform: values in [low, high). Distinct: a shuffled grid with spacing `step` centred on zero and
// never at zero, so no two values (and no value and 0) lie within the gradcheck perturbation of each
// other: used for the ops with kinks (ReLU, max-pool). Labels: int64 class indices in [0, classes).
enum class Fill { Uniform, Distinct, Labels };

struct InputSpec {
  Shape shape;
  bool differentiable = true;  // gradcheck'ed (requires_grad); false for running stats and labels
  Fill fill = Fill::Uniform;
  float low = -1.f, high = 1.f;
  int64_t classes = 0;
  float step = 0.05f;
};

InputSpec uniform(Shape s, float low = -1.f, float high = 1.f) {
  InputSpec i;
  i.shape = std::move(s);
  i.low = low;
  i.high = high;
  return i;
}
InputSpec state(Shape s, float low, float high) {  // not differentiated (running statistics)
  InputSpec i = uniform(std::move(s), low, high);
  i.differentiable = false;
  return i;
}
InputSpec distinct(Shape s, float step = 0.05f) {
  InputSpec i;
  i.shape = std::move(s);
  i.fill = Fill::Distinct;
  i.step = step;
  return i;
}
InputSpec labels(int64_t n, int64_t classes) {
  InputSpec i;
  i.shape = {n};
  i.differentiable = false;
  i.fill = Fill::Labels;
  i.classes = classes;
  return i;
}

struct Reference {
  Shape shape;
  std::vector<double> values;
};

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;
using RefFn = std::function<Reference(const std::vector<Tensor>&)>;  // CPU inputs

struct OpCase {
  std::string op;    // the function in engine/ops.h ("conv2d")
  std::string name;  // what is special about this entry
  std::vector<InputSpec> inputs;
  OpFn run;
  RefFn reference;            // may be empty (then only gradients are checked)
  double atol = 1e-5, rtol = 1e-4;  // forward, fp32: |a-b| <= atol + rtol*|ref|
  vt::GradcheckOptions grad;  // finite differences
};

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// The inputs of an entry: deterministic (seeded by the entry's name), made on the CPU and moved to
// `device`; differentiable ones require grad when `with_grad`.
std::vector<Tensor> make_inputs(const OpCase& c, bool with_grad, Device device = Device::cpu()) {
  std::vector<Tensor> out;
  const uint64_t base = fnv1a(c.op + "/" + c.name);
  for (size_t k = 0; k < c.inputs.size(); ++k) {
    const InputSpec& s = c.inputs[k];
    const uint64_t seed = base + 7919 * (k + 1);
    Tensor t;
    if (s.fill == Fill::Labels) {
      Generator g(seed, kStreamData);
      std::vector<int64_t> v(size_t(s.shape[0]));
      for (auto& x : v) x = int64_t(g.next_below(uint64_t(s.classes)));
      t = Tensor::from_labels(v);
    } else if (s.fill == Fill::Distinct) {
      const int64_t n = shape_numel(s.shape);
      Generator g(seed, kStreamShuffle);
      const std::vector<int64_t> perm = randperm(n, g);
      std::vector<float> v(static_cast<size_t>(n));
      // half-integer multiples of step: centred on zero, none closer to it than step / 2
      for (int64_t i = 0; i < n; ++i) v[size_t(i)] = (float(perm[size_t(i)] - n / 2) + 0.5f) * s.step;
      t = Tensor::from_vector(s.shape, v);
    } else {
      t = vt::rand_tensor(s.shape, seed, s.low, s.high);
    }
    t = t.to(device);
    if (with_grad && s.differentiable) t.requires_grad_(true);
    out.push_back(t);
  }
  return out;
}

std::vector<double> dvec(const Tensor& t) {
  const std::vector<float> v = t.to_vector();
  return std::vector<double>(v.begin(), v.end());
}
int64_t numel_of(const Shape& s) { return shape_numel(s); }

// ---------------------------------------------------------------- double-precision references
// Plain loops, written from the definitions and sharing no code with the kernels.

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
  const Shape xs = xt.shape();
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
  const int64_t P = (H + 2 * pd[0] - k[0]) / st[0] + 1, Q = (W + 2 * pd[1] - k[1]) / st[1] + 1;
  const auto x = dvec(xt);
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

const Tensor* opt(const std::vector<Tensor>& in, size_t i) { return i < in.size() ? &in[i] : nullptr; }

// ---------------------------------------------------------------- the entries

void add_conv2d(std::vector<OpCase>& t, const std::string& name, Shape xs, Shape ws, bool bias, Pair st, Pair pd) {
  OpCase c;
  c.op = "conv2d";
  c.name = name;
  const int64_t K = ws[0];
  c.inputs = {uniform(xs), uniform(ws)};
  if (bias) c.inputs.push_back(uniform({K}));
  c.run = [st, pd](const std::vector<Tensor>& in) {
    return conv2d(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), st, pd);
  };
  c.reference = [st, pd](const std::vector<Tensor>& in) { return ref_conv2d(in[0], in[1], opt(in, 2), st, pd); };
  t.push_back(c);
}

// x [N, C, ...]; affine adds weight [C] (in 0.5..1.5) and bias [C]; eval adds running stats.
// In training with `running` the op is given clones of the running statistics so that the entry
// stays deterministic (the update itself is checked by the golden tests below).
void add_batch_norm(std::vector<OpCase>& t, const std::string& name, Shape xs, bool affine, bool training,
                    bool running, float x_low = -1.f, float x_high = 1.f, double eps = 1e-5) {
  OpCase c;
  c.op = "batch_norm";
  c.name = name;
  const int64_t C = xs[1];
  c.inputs = {uniform(xs, x_low, x_high)};
  if (affine) {
    c.inputs.push_back(uniform({C}, 0.5f, 1.5f));
    c.inputs.push_back(uniform({C}));
  }
  const bool have_running = running || !training;
  if (have_running) {
    c.inputs.push_back(state({C}, -0.5f, 0.5f));
    c.inputs.push_back(state({C}, 0.5f, 1.5f));
  }
  const size_t rm_at = affine ? 3 : 1;
  c.run = [affine, training, have_running, rm_at, eps](const std::vector<Tensor>& in) {
    Tensor rm, rv;
    if (have_running) {
      rm = training ? in[rm_at].clone() : in[rm_at];
      rv = training ? in[rm_at + 1].clone() : in[rm_at + 1];
    }
    return batch_norm(in[0], affine ? in[1] : Tensor(), affine ? in[2] : Tensor(), rm, rv, training, 0.1, eps);
  };
  c.reference = [affine, training, have_running, rm_at, eps](const std::vector<Tensor>& in) {
    return ref_batch_norm(in[0], affine ? &in[1] : nullptr, affine ? &in[2] : nullptr,
                          have_running ? &in[rm_at] : nullptr, have_running ? &in[rm_at + 1] : nullptr, training,
                          eps);
  };
  t.push_back(c);
}

void add_max_pool2d(std::vector<OpCase>& t, const std::string& name, Shape xs, Pair k, Pair st, Pair pd) {
  OpCase c;
  c.op = "max_pool2d";
  c.name = name;
  c.inputs = {distinct(xs)};
  c.run = [k, st, pd](const std::vector<Tensor>& in) { return max_pool2d(in[0], k, st, pd); };
  c.reference = [k, st, pd](const std::vector<Tensor>& in) { return ref_max_pool2d(in[0], k, st, pd); };
  t.push_back(c);
}

void add_linear(std::vector<OpCase>& t, const std::string& name, int64_t M, int64_t in_f, int64_t out_f, bool bias) {
  OpCase c;
  c.op = "linear";
  c.name = name;
  c.inputs = {uniform({M, in_f}), uniform({out_f, in_f})};
  if (bias) c.inputs.push_back(uniform({out_f}));
  c.run = [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in.size() > 2 ? in[2] : Tensor()); };
  c.reference = [](const std::vector<Tensor>& in) { return ref_linear(in[0], in[1], opt(in, 2)); };
  t.push_back(c);
}

// A fresh generator inside the op keeps each call's mask the same (gradcheck needs that).
void add_dropout(std::vector<OpCase>& t, const std::string& name, Shape xs, double p, bool training, uint64_t seed,
                 uint64_t offset) {
  OpCase c;
  c.op = "dropout";
  c.name = name;
  c.inputs = {uniform(xs)};
  c.run = [p, training, seed, offset](const std::vector<Tensor>& in) {
    Generator g(seed, kStreamDropout);
    g.set_offset(offset);
    return dropout(in[0], p, training, g);
  };
  c.reference = [p, training, seed, offset](const std::vector<Tensor>& in) {
    return training ? ref_dropout(in[0], p, seed, kStreamDropout, offset) : Reference{in[0].shape(), dvec(in[0])};
  };
  t.push_back(c);
}

void add_binary(std::vector<OpCase>& t, const std::string& op, Shape a, Shape b) {
  OpCase c;
  c.op = op;
  c.name = shape_str(a) + " with " + shape_str(b);
  c.inputs = {uniform(a), uniform(b)};
  std::function<double(double, double)> f;
  if (op == "add") {
    c.run = [](const std::vector<Tensor>& in) { return add(in[0], in[1]); };
    f = [](double x, double y) { return x + y; };
  } else if (op == "sub") {
    c.run = [](const std::vector<Tensor>& in) { return in[0] - in[1]; };
    f = [](double x, double y) { return x - y; };
  } else {
    c.run = [](const std::vector<Tensor>& in) { return in[0] * in[1]; };
    f = [](double x, double y) { return x * y; };
  }
  c.reference = [f](const std::vector<Tensor>& in) { return ref_binary(in[0], in[1], f); };
  t.push_back(c);
}

void add_reduce(std::vector<OpCase>& t, bool average, Shape xs, bool all, int64_t dim = 0, bool keepdim = false) {
  OpCase c;
  c.op = average ? "mean" : "sum";
  c.name = shape_str(xs) + (all ? " all" : " dim " + std::to_string(dim) + (keepdim ? " keepdim" : ""));
  c.inputs = {uniform(xs)};
  c.run = [average, all, dim, keepdim](const std::vector<Tensor>& in) {
    if (all) return average ? mean(in[0]) : sum(in[0]);
    return average ? mean(in[0], dim, keepdim) : sum(in[0], dim, keepdim);
  };
  c.reference = [average, all, dim, keepdim](const std::vector<Tensor>& in) {
    return ref_reduce(in[0], all, dim, keepdim, average);
  };
  t.push_back(c);
}

void add_log_softmax(std::vector<OpCase>& t, const std::string& name, Shape xs, int64_t dim, float range = 1.f) {
  OpCase c;
  c.op = "log_softmax";
  c.name = name;
  c.inputs = {uniform(xs, -range, range)};
  c.run = [dim](const std::vector<Tensor>& in) { return log_softmax(in[0], dim); };
  c.reference = [dim](const std::vector<Tensor>& in) { return ref_log_softmax(in[0], dim); };
  t.push_back(c);
}

void add_cross_entropy(std::vector<OpCase>& t, const std::string& name, int64_t N, int64_t C, Reduction red,
                       double ls, float range = 2.f) {
  OpCase c;
  c.op = "cross_entropy";
  c.name = name;
  c.inputs = {uniform({N, C}, -range, range), labels(N, C)};
  c.run = [red, ls](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], red, ls); };
  c.reference = [red, ls](const std::vector<Tensor>& in) { return ref_cross_entropy(in[0], in[1], red, ls); };
  t.push_back(c);
}

std::vector<OpCase> build_table() {
  std::vector<OpCase> t;
  // conv2d: stride 1 and 2, padding 0/1/2, bias or not, odd and non-square inputs and kernels, batch 3.
  add_conv2d(t, "3x3 s1 p0 bias", {3, 3, 7, 5}, {4, 3, 3, 3}, true, {1, 1}, {0, 0});
  add_conv2d(t, "3x3 s2 p1 no bias", {3, 2, 9, 7}, {5, 2, 3, 3}, false, {2, 2}, {1, 1});
  add_conv2d(t, "3x2 kernel s1 p2 bias", {2, 3, 6, 5}, {5, 3, 3, 2}, true, {1, 1}, {2, 2});
  add_conv2d(t, "2x3 kernel s2 p0 bias even input", {3, 4, 8, 6}, {3, 4, 2, 3}, true, {2, 2}, {0, 0});
  add_conv2d(t, "3x3 stride 2x1 padding 0x1 no bias", {2, 3, 7, 6}, {4, 3, 3, 3}, false, {2, 1}, {0, 1});
  add_conv2d(t, "1x1 pointwise bias", {3, 5, 4, 3}, {2, 5, 1, 1}, true, {1, 1}, {0, 0});
  add_conv2d(t, "1x1 s2 no bias", {3, 3, 5, 7}, {4, 3, 1, 1}, false, {2, 2}, {0, 0});
  add_conv2d(t, "kernel covers the input", {3, 2, 3, 3}, {4, 2, 3, 3}, true, {1, 1}, {0, 0});
  add_conv2d(t, "5x5 s2 p2 bias", {3, 2, 9, 8}, {3, 2, 5, 5}, true, {2, 2}, {2, 2});
  add_conv2d(t, "single channel 2x2 s1 p1", {3, 1, 4, 5}, {2, 1, 2, 2}, true, {1, 1}, {1, 1});
  // Larger outputs: the CPU kernel batches images per GEMM by output size, so these cover groups of
  // one image, and a batch that does not divide into equal groups (5 = 2 + 2 + 1, 5 = 4 + 1).
  add_conv2d(t, "12x12 output batch 5 p1", {5, 2, 12, 12}, {3, 2, 3, 3}, true, {1, 1}, {1, 1});
  add_conv2d(t, "17x17 output one image per GEMM", {2, 1, 17, 17}, {2, 1, 3, 3}, false, {1, 1}, {1, 1});
  add_conv2d(t, "1x1 pointwise 9x9 batch 5", {5, 4, 9, 9}, {3, 4, 1, 1}, true, {1, 1}, {0, 0});
  add_conv2d(t, "small output batch 6 in one GEMM", {6, 2, 5, 4}, {3, 2, 3, 3}, true, {1, 1}, {0, 0});

  // batch_norm: batch statistics and running statistics, with and without affine, 4-D, 3-D and 2-D.
  add_batch_norm(t, "train 4-D affine", {3, 4, 5, 3}, true, true, false);
  add_batch_norm(t, "train 4-D no affine", {3, 4, 5, 3}, false, true, false);
  add_batch_norm(t, "train 4-D affine with running stats", {3, 4, 3, 5}, true, true, true);
  add_batch_norm(t, "train 2-D affine", {7, 5}, true, true, false);
  add_batch_norm(t, "train 2-D no affine", {7, 5}, false, true, false);
  add_batch_norm(t, "train 3-D affine", {4, 3, 5}, true, true, false);
  add_batch_norm(t, "train 4-D affine offset mean", {3, 2, 5, 3}, true, true, false, 9.f, 11.f);
  add_batch_norm(t, "eval 4-D affine", {3, 4, 5, 3}, true, false, true);
  add_batch_norm(t, "eval 4-D no affine", {3, 4, 3, 5}, false, false, true);
  add_batch_norm(t, "eval 2-D affine", {7, 5}, true, false, true);
  add_batch_norm(t, "eval 2-D no affine", {7, 5}, false, false, true);
  // A large eps, so that leaving it out (or adding it twice) is visible.
  add_batch_norm(t, "train 4-D affine eps 0.1", {3, 2, 3, 5}, true, true, false, -1.f, 1.f, 0.1);
  add_batch_norm(t, "eval 4-D affine eps 0.1", {3, 2, 3, 5}, true, false, true, -1.f, 1.f, 0.1);

  {  // relu: values kept half a step away from the kink at 0
    OpCase c;
    c.op = "relu";
    c.name = "[3, 4, 5]";
    c.inputs = {distinct({3, 4, 5})};
    c.run = [](const std::vector<Tensor>& in) { return relu(in[0]); };
    c.reference = [](const std::vector<Tensor>& in) { return ref_map(in[0], [](double x) { return x > 0 ? x : 0.0; }); };
    t.push_back(c);
    c.name = "[7]";
    c.inputs = {distinct({7}, 0.3f)};
    t.push_back(c);
  }

  // max_pool2d: 2/2, 3/2 with padding 1, non-square kernels and strides, odd inputs.
  add_max_pool2d(t, "k2 s2", {2, 3, 6, 8}, {2, 2}, {2, 2}, {0, 0});
  add_max_pool2d(t, "k3 s2 p1", {2, 2, 7, 9}, {3, 3}, {2, 2}, {1, 1});
  add_max_pool2d(t, "k2x3 s2x1", {2, 3, 6, 7}, {2, 3}, {2, 1}, {0, 0});
  add_max_pool2d(t, "k2 s2 odd input", {3, 2, 5, 7}, {2, 2}, {2, 2}, {0, 0});
  add_max_pool2d(t, "k3 s1 p1", {1, 2, 5, 5}, {3, 3}, {1, 1}, {1, 1});
  add_max_pool2d(t, "k3x2 s1x2 p1x0", {2, 2, 5, 6}, {3, 2}, {1, 2}, {1, 0});

  add_linear(t, "bias", 5, 7, 3, true);
  add_linear(t, "no bias", 4, 6, 5, false);
  add_linear(t, "one row bias", 1, 9, 4, true);

  add_dropout(t, "p 0.3 training", {3, 5, 7}, 0.3, true, 42, 0);
  add_dropout(t, "p 0.5 training offset 3", {4, 33}, 0.5, true, 7, 3);
  add_dropout(t, "p 0.5 eval", {4, 9}, 0.5, false, 7, 0);
  add_dropout(t, "p 0 training", {5, 3}, 0.0, true, 7, 0);
  add_dropout(t, "p 1 training", {5, 3}, 1.0, true, 7, 0);

  for (const char* op : {"add", "sub", "mul"}) {
    add_binary(t, op, {3, 4, 5}, {3, 4, 5});
    add_binary(t, op, {3, 1, 5}, {4, 1});
    add_binary(t, op, {4, 1}, {3, 1, 5});
    add_binary(t, op, {2, 3, 4}, {4});
    add_binary(t, op, {}, {2, 3});
    add_binary(t, op, {3, 1}, {1, 5});
  }
  {  // scalar variants and an operand used twice
    OpCase c;
    c.op = "mul";
    c.name = "by scalar 2.5";
    c.inputs = {uniform({3, 5})};
    c.run = [](const std::vector<Tensor>& in) { return 2.5f * in[0]; };
    c.reference = [](const std::vector<Tensor>& in) { return ref_map(in[0], [](double x) { return 2.5 * x; }); };
    t.push_back(c);
    c.name = "by scalar -0.75";
    c.run = [](const std::vector<Tensor>& in) { return mul(in[0], -0.75f); };
    c.reference = [](const std::vector<Tensor>& in) { return ref_map(in[0], [](double x) { return -0.75 * x; }); };
    t.push_back(c);
    c.name = "x times itself";
    c.run = [](const std::vector<Tensor>& in) { return in[0] * in[0]; };
    c.reference = [](const std::vector<Tensor>& in) { return ref_map(in[0], [](double x) { return x * x; }); };
    t.push_back(c);
    c.op = "add";
    c.name = "plus scalar -1.5";
    c.run = [](const std::vector<Tensor>& in) { return add(in[0], -1.5f); };
    c.reference = [](const std::vector<Tensor>& in) { return ref_map(in[0], [](double x) { return x - 1.5; }); };
    t.push_back(c);
    c.name = "x plus itself";
    c.run = [](const std::vector<Tensor>& in) { return in[0] + in[0]; };
    c.reference = [](const std::vector<Tensor>& in) { return ref_map(in[0], [](double x) { return 2 * x; }); };
    t.push_back(c);
  }

  for (bool average : {false, true}) {
    add_reduce(t, average, {3, 4, 5}, true);
    add_reduce(t, average, {}, true);
    add_reduce(t, average, {3, 4, 5}, false, 0, false);
    add_reduce(t, average, {3, 4, 5}, false, 1, true);
    add_reduce(t, average, {3, 4, 5}, false, -1, false);
    add_reduce(t, average, {3, 4, 5}, false, 2, true);
    add_reduce(t, average, {7}, false, 0, false);
    add_reduce(t, average, {7}, false, 0, true);
  }

  add_log_softmax(t, "dim 1 of [4, 5, 3]", {4, 5, 3}, 1);
  add_log_softmax(t, "last dim of [3, 7]", {3, 7}, -1);
  add_log_softmax(t, "dim 0 of [5, 4]", {5, 4}, 0);
  add_log_softmax(t, "last dim of [2, 3, 6] wide range", {2, 3, 6}, 2, 15.f);
  add_log_softmax(t, "1-D [9]", {9}, 0);

  for (double ls : {0.0, 0.1}) {
    const std::string s = ls == 0.0 ? " ls 0" : " ls 0.1";
    add_cross_entropy(t, "mean" + s, 6, 5, Reduction::Mean, ls);
    add_cross_entropy(t, "sum" + s, 6, 5, Reduction::Sum, ls);
    add_cross_entropy(t, "none" + s, 6, 5, Reduction::None, ls);
    add_cross_entropy(t, "mean one row two classes" + s, 1, 2, Reduction::Mean, ls);
    add_cross_entropy(t, "sum wide logits" + s, 5, 11, Reduction::Sum, ls, 12.f);
  }
  return t;
}

const std::vector<OpCase>& op_table() {
  static const std::vector<OpCase> table = build_table();
  return table;
}

// ---------------------------------------------------------------- checks run over the table

void check_forward(const OpCase& c) {
  INFO("case: " << c.op << " " << c.name);
  REQUIRE(c.reference);
  const std::vector<Tensor> in = make_inputs(c, /*with_grad=*/true);
  const Tensor y = c.run(in);
  const Reference ref = c.reference(in);
  REQUIRE(y.defined());
  CHECK(shape_str(y.shape()) == shape_str(ref.shape));
  CHECK(y.dtype() == DType::F32);
  if (y.shape() != ref.shape) return;
  std::string where;
  const double v = vt::max_rel_violation(y.to_vector(), ref.values, c.atol, c.rtol, &where);
  INFO("worst element: " << where << " (violation " << v << ", atol " << c.atol << ", rtol " << c.rtol << ")");
  CHECK(v <= 1.0);
  // The same inputs give the same output (a backend's output must not depend on leftover state).
  CHECK(c.run(in).to_vector() == y.to_vector());
}

void check_gradients(const OpCase& c) {
  INFO("case: " << c.op << " " << c.name);
  bool any = false;
  for (const InputSpec& s : c.inputs) any = any || s.differentiable;
  REQUIRE(any);
  const std::vector<Tensor> in = make_inputs(c, /*with_grad=*/true);
  const vt::GradcheckReport rep = vt::gradcheck(c.run, in, c.grad);
  VOLT_CHECK_GRADCHECK(rep);
  // Every differentiable input received a gradient of its own shape.
  for (size_t k = 0; k < in.size(); ++k) {
    if (!c.inputs[k].differentiable) continue;
    INFO("input " << k);
    REQUIRE(in[k].grad().defined());
    CHECK(in[k].grad().shape() == in[k].shape());
  }
}

int run_table(const std::string& op, void (*check)(const OpCase&)) {
  int n = 0;
  for (const OpCase& c : op_table())
    if (c.op == op) {
      check(c);
      ++n;
    }
  CHECK(n > 0);
  return n;
}

}  // namespace

TEST_CASE("op table covers every differentiable op in engine/ops.h") {
  std::set<std::string> ops;
  for (const OpCase& c : op_table()) ops.insert(c.op);
  for (const char* op : {"conv2d", "batch_norm", "relu", "max_pool2d", "linear", "dropout", "add", "sub", "mul", "sum",
                         "mean", "log_softmax", "cross_entropy"}) {
    INFO(op);
    CHECK(ops.count(op) == 1);
  }
  // Names identify entries (a CUDA run reports failures by them).
  std::set<std::string> names;
  for (const OpCase& c : op_table()) names.insert(c.op + "/" + c.name);
  CHECK(names.size() == op_table().size());
}

#define VOLT_OP_TABLE_TESTS(OP)                                                                             \
  TEST_CASE(OP " table: forward matches the double-precision reference") { run_table(OP, check_forward); } \
  TEST_CASE(OP " table: gradients match central differences") { run_table(OP, check_gradients); }

VOLT_OP_TABLE_TESTS("conv2d")
VOLT_OP_TABLE_TESTS("batch_norm")
VOLT_OP_TABLE_TESTS("relu")
VOLT_OP_TABLE_TESTS("max_pool2d")
VOLT_OP_TABLE_TESTS("linear")
VOLT_OP_TABLE_TESTS("dropout")
VOLT_OP_TABLE_TESTS("add")
VOLT_OP_TABLE_TESTS("sub")
VOLT_OP_TABLE_TESTS("mul")
VOLT_OP_TABLE_TESTS("sum")
VOLT_OP_TABLE_TESTS("mean")
VOLT_OP_TABLE_TESTS("log_softmax")
VOLT_OP_TABLE_TESTS("cross_entropy")

// =====================================================================================================
// Golden values worked out by hand on tiny inputs.
// =====================================================================================================

namespace {

void check_values(const Tensor& t, const Shape& shape, const std::vector<double>& want, double tol = 1e-5) {
  REQUIRE(t.defined());
  REQUIRE(shape_str(t.shape()) == shape_str(shape));
  const std::vector<float> got = t.to_vector();
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", expected " << want[i]);
    CHECK(std::fabs(double(got[i]) - want[i]) <= tol * (1.0 + std::fabs(want[i])));
  }
}

Tensor leaf(const Shape& s, const std::vector<float>& v) {
  Tensor t = Tensor::from_vector(s, v);
  t.requires_grad_(true);
  return t;
}

}  // namespace

TEST_CASE("conv2d golden: 1x1x3x3 input with a 2x2 kernel") {
  Tensor x = leaf({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  Tensor w = leaf({1, 1, 2, 2}, {1, 2, 3, 4});
  Tensor b = leaf({1}, {0.5f});
  Tensor y = conv2d(x, w, b);
  // y[p][q] = sum_{r,s} x[p+r][q+s] w[r][s] + 0.5
  check_values(y, {1, 1, 2, 2}, {37.5, 47.5, 67.5, 77.5});
  sum(y).backward();
  // dw[r][s] = sum of x over the four windows' (r, s) positions; db = number of outputs.
  check_values(w.grad(), {1, 1, 2, 2}, {12, 16, 24, 28});
  check_values(b.grad(), {1}, {4});
  // dx[i][j] = sum of the kernel taps that touch (i, j).
  check_values(x.grad(), {1, 1, 3, 3}, {1, 3, 2, 4, 10, 6, 3, 7, 4});

  SUBCASE("stride 2 and padding 1") {
    Tensor y2 = conv2d(x.detach(), w.detach(), Tensor(), {2, 2}, {1, 1});
    // windows over the zero-padded 5x5 input at rows/cols {-1, 0} and {1, 2}
    check_values(y2, {1, 1, 2, 2}, {1 * 4, 2 * 3 + 3 * 4, 4 * 2 + 7 * 4, 5 * 1 + 6 * 2 + 8 * 3 + 9 * 4});
  }
  SUBCASE("two input channels add up") {
    Tensor x2 = Tensor::from_vector({1, 2, 2, 2}, {1, 2, 3, 4, 10, 20, 30, 40});
    Tensor w2 = Tensor::from_vector({2, 2, 1, 2}, {1, -1, 0.5f, 0, 0, 0, 0, 1});
    // out 0: x0[p][q] - x0[p][q+1] + 0.5 x1[p][q]; out 1: x1[p][q+1]
    check_values(conv2d(x2, w2, Tensor()), {1, 2, 2, 1}, {1 - 2 + 5, 3 - 4 + 15, 20, 40});
  }
}

TEST_CASE("max_pool2d golden: 2x2 and 3x3 windows, gradient to the maxima") {
  const std::vector<float> v = {1, 5, 2, 0, 3, 4, 8, 1, 0, -1, 6, 7, 2, 9, -3, 5};
  Tensor x = leaf({1, 1, 4, 4}, v);
  Tensor y = max_pool2d(x, {2, 2}, {2, 2});
  check_values(y, {1, 1, 2, 2}, {5, 8, 9, 7});
  sum(y).backward();
  check_values(x.grad(), {1, 1, 4, 4}, {0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0});

  Tensor x3 = leaf({1, 1, 4, 4}, v);
  Tensor y3 = max_pool2d(x3, {3, 3}, {2, 2}, {1, 1});
  // windows rows/cols {-1..1} and {1..3}; the 9 at (3, 1) wins two windows and gets both gradients
  check_values(y3, {1, 1, 2, 2}, {5, 8, 9, 9});
  sum(y3).backward();
  check_values(x3.grad(), {1, 1, 4, 4}, {0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0});

  // All-negative input with padding: padding never wins.
  Tensor neg = Tensor::from_vector({1, 1, 2, 2}, {-4, -3, -2, -1});
  check_values(max_pool2d(neg, {2, 2}, {1, 1}, {1, 1}), {1, 1, 3, 3}, {-4, -3, -3, -2, -1, -1, -2, -1, -1});
}

TEST_CASE("NaN propagates through max_pool2d and relu") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = Tensor::from_vector({1, 1, 2, 4}, {1, nan, 3, 4, 5, 6, 7, 8});
  const Tensor y = max_pool2d(x, {2, 2}, {2, 2});  // the 2x2 fast path
  CHECK(std::isnan(y.at({0, 0, 0, 0})));
  CHECK(y.at({0, 0, 0, 1}) == 8.f);
  const Tensor y3 = max_pool2d(x, {2, 3}, {1, 1});  // the general path
  CHECK(std::isnan(y3.at({0, 0, 0, 0})));
  CHECK(std::isnan(y3.at({0, 0, 0, 1})));
  const Tensor r = relu(Tensor::from_vector({2}, {nan, -1}));
  CHECK(std::isnan(r.at({0})));
  CHECK(r.at({1}) == 0.f);
}

TEST_CASE("relu golden: values and the gradient at zero") {
  Tensor x = leaf({5}, {-2, -0.f, 0, 0.5f, 3});
  Tensor y = relu(x);
  check_values(y, {5}, {0, 0, 0, 0.5, 3});
  sum(y).backward();
  check_values(x.grad(), {5}, {0, 0, 0, 1, 1});  // the subgradient at 0 is 0, as in PyTorch
}

TEST_CASE("log_softmax golden: [0, ln 2, ln 3] gives [-ln 6, -ln 3, -ln 2]") {
  const float l2 = float(std::log(2.0)), l3 = float(std::log(3.0));
  Tensor x = leaf({1, 3}, {0, l2, l3});
  Tensor y = log_softmax(x, 1);
  check_values(y, {1, 3}, {-std::log(6.0), -std::log(3.0), -std::log(2.0)});
  // d/dx of y[0][0]: onehot - softmax = [1 - 1/6, -2/6, -3/6]
  y.backward(Tensor::from_vector({1, 3}, {1, 0, 0}));
  check_values(x.grad(), {1, 3}, {5.0 / 6, -2.0 / 6, -3.0 / 6});

  // Along dim 0 and shifted by 1000 (no overflow: the row maximum is subtracted first).
  Tensor xc = Tensor::from_vector({3, 1}, {1000.f, 1000.f + l2, 1000.f + l3});
  check_values(log_softmax(xc, 0), {3, 1}, {-std::log(6.0), -std::log(3.0), -std::log(2.0)}, 2e-4);
  // Equal logits: log(1/C) everywhere, and -1000 offsets do not underflow to -inf.
  check_values(log_softmax(Tensor::full({2, 4}, -1000.f)), {2, 4}, std::vector<double>(8, -std::log(4.0)));
}

TEST_CASE("cross_entropy golden: reductions and label smoothing by hand") {
  const float l2 = float(std::log(2.0)), l3 = float(std::log(3.0));
  // row 0: softmax [1/6, 2/6, 3/6], target 2 -> -log(1/2) = ln 2; row 1: uniform, target 0 -> ln 3
  const std::vector<float> z = {0, l2, l3, 1, 1, 1};
  const Tensor target = Tensor::from_labels({2, 0});
  const double ln2 = std::log(2.0), ln3 = std::log(3.0), ln6 = std::log(6.0);

  check_values(cross_entropy(Tensor::from_vector({2, 3}, z), target, Reduction::None), {2}, {ln2, ln3});
  check_values(cross_entropy(Tensor::from_vector({2, 3}, z), target, Reduction::Sum), {}, {ln2 + ln3});
  check_values(cross_entropy(Tensor::from_vector({2, 3}, z), target, Reduction::Mean), {}, {(ln2 + ln3) / 2});

  // Smoothing 0.1: (1 - 0.1) * nll + 0.1 * mean over classes of -log p.
  // row 0: 0.9 ln2 + 0.1 (ln6 + ln3 + ln2) / 3; row 1: every -log p is ln 3.
  const double r0 = 0.9 * ln2 + 0.1 * (ln6 + ln3 + ln2) / 3, r1 = ln3;
  check_values(cross_entropy(Tensor::from_vector({2, 3}, z), target, Reduction::None, 0.1), {2}, {r0, r1});
  Tensor logits = leaf({2, 3}, z);
  Tensor loss = cross_entropy(logits, target, Reduction::Mean, 0.1);
  check_values(loss, {}, {(r0 + r1) / 2});
  loss.backward();
  // d/dz = (softmax - q) / N with q = 0.9 onehot + 0.1/3
  const double o = 0.1 / 3;
  check_values(logits.grad(), {2, 3},
               {(1.0 / 6 - o) / 2, (2.0 / 6 - o) / 2, (3.0 / 6 - 0.9 - o) / 2, (1.0 / 3 - 0.9 - o) / 2,
                (1.0 / 3 - o) / 2, (1.0 / 3 - o) / 2});

  // Huge logits stay finite: the row max is subtracted.
  const Tensor big = Tensor::from_vector({1, 2}, {1000.f, 0.f});
  check_values(cross_entropy(big, Tensor::from_labels({0})), {}, {0.0});
  check_values(cross_entropy(big, Tensor::from_labels({1})), {}, {1000.0}, 1e-6);
}

TEST_CASE("batch_norm golden: batch statistics, running update with the unbiased variance, eval") {
  // x [2, 2, 2]: channel 0 holds 1, 2, 3, 4 and channel 1 holds 10, 20, 30, 40.
  Tensor x = Tensor::from_vector({2, 2, 2}, {1, 2, 10, 20, 3, 4, 30, 40});
  Tensor w = Tensor::from_vector({2}, {2, -1});
  Tensor b = Tensor::from_vector({2}, {0.5f, 3});
  Tensor rm = Tensor::from_vector({2}, {0, 0});
  Tensor rv = Tensor::from_vector({2}, {1, 1});
  const double eps = 1e-5;
  // channel 0: mean 2.5, biased variance (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25, unbiased 5/3
  // channel 1: mean 25, biased variance 125, unbiased 500/3
  const double s0 = 1 / std::sqrt(1.25 + eps), s1 = 1 / std::sqrt(125 + eps);
  Tensor y = batch_norm(x, w, b, rm, rv, /*training=*/true, 0.1, eps);
  check_values(y, {2, 2, 2},
               {2 * -1.5 * s0 + 0.5, 2 * -0.5 * s0 + 0.5, -1 * -15 * s1 + 3, -1 * -5 * s1 + 3, 2 * 0.5 * s0 + 0.5,
                2 * 1.5 * s0 + 0.5, -1 * 5 * s1 + 3, -1 * 15 * s1 + 3});
  // running = 0.9 running + 0.1 batch, with the unbiased variance
  check_values(rm, {2}, {0.25, 2.5});
  check_values(rv, {2}, {0.9 + 0.1 * 5.0 / 3, 0.9 + 0.1 * 500.0 / 3});

  SUBCASE("a second step compounds the momentum") {
    batch_norm(x, w, b, rm, rv, true, 0.1, eps);
    check_values(rm, {2}, {0.9 * 0.25 + 0.25, 0.9 * 2.5 + 2.5});
    check_values(rv, {2}, {0.9 * (0.9 + 0.5 / 3) + 0.5 / 3, 0.9 * (0.9 + 50.0 / 3) + 50.0 / 3});
  }
  SUBCASE("eval normalises with the running statistics and leaves them alone") {
    const double m0 = 0.25, v0 = 0.9 + 0.5 / 3, m1 = 2.5, v1 = 0.9 + 50.0 / 3;
    Tensor ye = batch_norm(x, w, b, rm, rv, /*training=*/false, 0.1, eps);
    auto e0 = [&](double v) { return 2 * (v - m0) / std::sqrt(v0 + eps) + 0.5; };
    auto e1 = [&](double v) { return -1 * (v - m1) / std::sqrt(v1 + eps) + 3; };
    check_values(ye, {2, 2, 2}, {e0(1), e0(2), e1(10), e1(20), e0(3), e0(4), e1(30), e1(40)});
    check_values(rm, {2}, {m0, m1});
    check_values(rv, {2}, {v0, v1});
    // The eval gradient is the affine map's: weight / sqrt(running_var + eps).
    Tensor xl = x.clone();
    xl.requires_grad_(true);
    sum(batch_norm(xl, w, b, rm, rv, false, 0.1, eps)).backward();
    const double g0 = 2 / std::sqrt(v0 + eps), g1 = -1 / std::sqrt(v1 + eps);
    check_values(xl.grad(), {2, 2, 2}, {g0, g0, g1, g1, g0, g0, g1, g1});
  }
  SUBCASE("momentum 1 copies the batch statistics, momentum 0 keeps the old ones") {
    Tensor rm1 = Tensor::from_vector({2}, {7, 7}), rv1 = Tensor::from_vector({2}, {7, 7});
    batch_norm(x, Tensor(), Tensor(), rm1, rv1, true, 1.0, eps);
    check_values(rm1, {2}, {2.5, 25});
    check_values(rv1, {2}, {5.0 / 3, 500.0 / 3});
    batch_norm(x, Tensor(), Tensor(), rm1, rv1, true, 0.0, eps);
    check_values(rm1, {2}, {2.5, 25});
    check_values(rv1, {2}, {5.0 / 3, 500.0 / 3});
  }
  SUBCASE("no affine, 2-D [4, 1]: plain standardisation of [1, 2, 3, 4]") {
    Tensor x2 = Tensor::from_vector({4, 1}, {1, 2, 3, 4});
    check_values(batch_norm(x2, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, eps), {4, 1},
                 {-1.5 * s0, -0.5 * s0, 0.5 * s0, 1.5 * s0});
  }
  SUBCASE("the output does not depend on the running statistics in training") {
    Tensor y2 = batch_norm(x, w, b, Tensor(), Tensor(), true, 0.1, eps);
    CHECK(y2.to_vector() == y.to_vector());
  }
}

TEST_CASE("batch_norm running statistics follow the double reference on a random batch") {
  // Mean far from zero so that a one-pass variance formula without a shift would lose digits.
  const Tensor x = vt::rand_tensor({4, 3, 5, 7}, 11, 99.f, 101.f);
  Tensor rm = vt::rand_tensor({3}, 12, -1.f, 1.f), rv = vt::rand_tensor({3}, 13, 0.5f, 2.f);
  const std::vector<double> rm0 = dvec(rm), rv0 = dvec(rv);
  const double momentum = 0.3;
  const Tensor y = batch_norm(x, Tensor(), Tensor(), rm, rv, true, momentum, 1e-5);
  std::vector<double> mean, var;
  ref_bn_stats(x, mean, var);
  const double M = 4 * 5 * 7;
  std::vector<double> want_m(3), want_v(3);
  for (size_t c = 0; c < 3; ++c) {
    want_m[c] = (1 - momentum) * rm0[c] + momentum * mean[c];
    want_v[c] = (1 - momentum) * rv0[c] + momentum * var[c] * M / (M - 1);
  }
  std::string where;
  CHECK_MESSAGE(vt::max_rel_violation(rm.to_vector(), want_m, 1e-5, 1e-5, &where) <= 1, where);
  CHECK_MESSAGE(vt::max_rel_violation(rv.to_vector(), want_v, 1e-5, 1e-4, &where) <= 1, where);
  const Reference ref = ref_batch_norm(x, nullptr, nullptr, nullptr, nullptr, true, 1e-5);
  CHECK_MESSAGE(vt::max_rel_violation(y.to_vector(), ref.values, 1e-4, 1e-3, &where) <= 1, where);
}

TEST_CASE("linear golden") {
  Tensor x = leaf({2, 3}, {1, 2, 3, -1, 0, 1});
  Tensor w = leaf({2, 3}, {1, 0, -1, 0.5f, 0.5f, 0.5f});
  Tensor b = leaf({2}, {10, 20});
  Tensor y = linear(x, w, b);
  check_values(y, {2, 2}, {1 - 3 + 10, 3 + 20, -1 - 1 + 10, 0 + 20});
  sum(y).backward();
  check_values(x.grad(), {2, 3}, {1.5, 0.5, -0.5, 1.5, 0.5, -0.5});  // column sums of w
  check_values(w.grad(), {2, 3}, {0, 2, 4, 0, 2, 4});                // column sums of x
  check_values(b.grad(), {2}, {2, 2});
  check_values(linear(x.detach(), w.detach(), Tensor()), {2, 2}, {-2, 3, -2, 0});
}

TEST_CASE("broadcasting golden: shapes, values and gradients summed back") {
  Tensor a = leaf({2, 1}, {1, 2});
  Tensor b = leaf({3}, {10, 20, 30});
  Tensor y = a + b;
  check_values(y, {2, 3}, {11, 21, 31, 12, 22, 32});
  sum(y).backward();
  check_values(a.grad(), {2, 1}, {3, 3});
  check_values(b.grad(), {3}, {2, 2, 2});

  Tensor p = leaf({2, 1}, {1, 2});
  Tensor q = leaf({3}, {10, 20, 30});
  Tensor z = p * q - q;  // (p - 1) q
  check_values(z, {2, 3}, {0, 0, 0, 10, 20, 30});
  sum(z).backward();
  check_values(p.grad(), {2, 1}, {60, 60});  // sum of q per row
  check_values(q.grad(), {3}, {1, 1, 1});    // sum over rows of (p - 1)

  // [3, 1, 5] with [4, 1] -> [3, 4, 5]
  Tensor u = Tensor::ones({3, 1, 5}), v = Tensor::from_vector({4, 1}, {0, 1, 2, 3});
  Tensor uv = u * v;
  REQUIRE(uv.shape() == Shape{3, 4, 5});
  CHECK(uv.at({2, 3, 4}) == 3.f);
  CHECK(uv.at({1, 2, 0}) == 2.f);
  check_values(add(Tensor::from_vector({2}, {1, 2}), 0.5f), {2}, {1.5, 2.5});
  check_values(mul(Tensor::from_vector({2}, {1, 2}), -3.f), {2}, {-3, -6});
  check_values(Tensor::scalar(2.f) * Tensor::scalar(4.f), {}, {8});
}

TEST_CASE("sum and mean golden") {
  Tensor x = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
  check_values(sum(x), {}, {21});
  check_values(mean(x), {}, {3.5});
  check_values(sum(x, 0), {3}, {5, 7, 9});
  check_values(sum(x, -1, true), {2, 1}, {6, 15});
  check_values(mean(x, 1, true), {2, 1}, {2, 5});
  check_values(mean(x, 0), {3}, {2.5, 3.5, 4.5});
  Tensor m = mean(x, 1);
  m.backward(Tensor::from_vector({2}, {3, 6}));
  check_values(x.grad(), {2, 3}, {1, 1, 1, 2, 2, 2});
  Tensor x2 = leaf({2, 3}, {1, 2, 3, 4, 5, 6});
  mean(x2).backward();
  check_values(x2.grad(), {2, 3}, std::vector<double>(6, 1.0 / 6));
}

TEST_CASE("argmax and accuracy golden") {
  const Tensor x = Tensor::from_vector({4, 3}, {1, 3, 2, 5, 0, 5, -1, -2, -3, 0.5f, 0.25f, 0.75f});
  const Tensor am = argmax(x, 1);
  CHECK(am.dtype() == DType::I64);
  CHECK(am.shape() == Shape{4});
  CHECK(am.to_int_vector() == std::vector<int64_t>{1, 0, 0, 2});  // a tie goes to the first index
  CHECK(argmax(x, 0).to_int_vector() == std::vector<int64_t>{1, 0, 1});
  CHECK(argmax(x, -1).to_int_vector() == std::vector<int64_t>{1, 0, 0, 2});
  // 3-D along the middle dim: [2, 3, 2]
  const Tensor x3 = Tensor::from_vector({2, 3, 2}, {0, 9, 5, 1, 2, 3, 7, 0, 8, 0, 9, 1});
  const Tensor a3 = argmax(x3, 1);
  CHECK(a3.shape() == Shape{2, 2});
  CHECK(a3.to_int_vector() == std::vector<int64_t>{1, 0, 2, 2});

  CHECK(accuracy(x, Tensor::from_labels({1, 2, 0, 2})) == doctest::Approx(0.75));
  CHECK(accuracy(x, Tensor::from_labels({1, 0, 0, 2})) == doctest::Approx(1.0));
  CHECK(accuracy(x, Tensor::from_labels({0, 1, 1, 0})) == doctest::Approx(0.0));
  CHECK(accuracy(Tensor::from_vector({1, 2}, {0, 1}), Tensor::from_labels({1})) == doctest::Approx(1.0));
}

TEST_CASE("dropout: fraction kept, scaling, eval identity") {
  const int64_t n = 100000;
  const double p = 0.2;
  const Tensor x = Tensor::ones({n});
  Generator gen(123, kStreamDropout);
  const Tensor y = dropout(x, p, true, gen);
  const std::vector<float> v = y.to_vector();
  int64_t kept = 0;
  bool scaled = true;
  for (float e : v) {
    if (e != 0.f) {
      ++kept;
      scaled = scaled && std::fabs(e - 1.25f) <= 1e-6f;
    }
  }
  const double frac = double(kept) / double(n);
  INFO("fraction kept " << frac);
  CHECK(std::fabs(frac - (1 - p)) <= 0.01);
  CHECK(scaled);  // kept values are x / (1 - p)
  CHECK(gen.offset() == uint64_t((n + 3) / 4));  // the call reserved n values

  SUBCASE("eval mode is the identity and draws nothing") {
    Generator g(5, kStreamDropout);
    const Tensor xr = vt::rand_tensor({3, 7}, 3);
    const Tensor ye = dropout(xr, 0.5, false, g);
    CHECK(ye.to_vector() == xr.to_vector());
    CHECK(g.offset() == 0);
  }
  SUBCASE("p 0 keeps everything, p 1 drops everything") {
    Generator g(5, kStreamDropout);
    const Tensor xr = vt::rand_tensor({3, 7}, 3);
    CHECK(dropout(xr, 0.0, true, g).to_vector() == xr.to_vector());
    const std::vector<float> z = dropout(xr, 1.0, true, g).to_vector();
    CHECK(std::all_of(z.begin(), z.end(), [](float e) { return e == 0.f; }));
  }
}

TEST_CASE("dropout: the mask is the documented Philox formula and is reproducible") {
  const int64_t n = 1001;  // not a multiple of four: the last block is partial
  const double p = 0.35;
  const uint64_t seed = 20240607;
  const Tensor x = Tensor::full({7, 11, 13}, 2.f);
  REQUIRE(x.numel() == n);
  auto mask_of = [](const Tensor& y) {
    std::vector<bool> m;
    for (float e : y.to_vector()) m.push_back(e != 0.f);
    return m;
  };
  Generator g1(seed, kStreamDropout);
  const std::vector<bool> m1 = mask_of(dropout(x, p, true, g1));
  const std::vector<bool> m1b = mask_of(dropout(x, p, true, g1));  // next draw from the same generator
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; ++i) {
    mismatches += m1[size_t(i)] != dropout_keeps(seed, kStreamDropout, 0, uint64_t(i), p);
    mismatches += m1b[size_t(i)] != dropout_keeps(seed, kStreamDropout, uint64_t((n + 3) / 4), uint64_t(i), p);
  }
  CHECK(mismatches == 0);
  CHECK(m1 != m1b);
  CHECK(g1.offset() == uint64_t(2 * ((n + 3) / 4)));

  Generator same(seed, kStreamDropout);
  CHECK(mask_of(dropout(x, p, true, same)) == m1);
  Generator other(seed + 1, kStreamDropout);
  const std::vector<bool> m2 = mask_of(dropout(x, p, true, other));
  int64_t differ = 0;
  for (int64_t i = 0; i < n; ++i) differ += m1[size_t(i)] != m2[size_t(i)];
  // Independent masks differ in 2 p (1 - p) = 45.5% of the elements.
  CHECK(differ > n / 4);
  Generator other_stream(seed, kStreamDropout + 1);
  CHECK(mask_of(dropout(x, p, true, other_stream)) != m1);

  // Backward applies the same mask and scale.
  Generator g3(seed, kStreamDropout);
  Tensor xl = x.clone();
  xl.requires_grad_(true);
  sum(dropout(xl, p, true, g3)).backward();
  const std::vector<float> gx = xl.grad().to_vector();
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i)
    bad += std::fabs(double(gx[size_t(i)]) - (m1[size_t(i)] ? 1 / (1 - p) : 0.0)) > 1e-6;
  CHECK(bad == 0);
}

// The conv2d weight gradient keeps one partial sum per thread; an OpenMP team can have fewer
// threads than omp_get_max_threads() says (OMP_THREAD_LIMIT, OMP_DYNAMIC, nested regions). The
// thread limit is read once at start-up, so the conv2d gradient table runs again in a child process.
TEST_CASE("conv2d gradients with an OpenMP thread limit below the thread count") {
  std::vector<std::string> env = {"OMP_NUM_THREADS=4", "OMP_THREAD_LIMIT=1"};
  for (char** e = environ; *e; ++e)
    if (std::string(*e).rfind("OMP_", 0) != 0) env.emplace_back(*e);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe", filter = "--test-case=conv2d table: gradients*", quiet = "--minimal";
  char* argv[] = {exe.data(), filter.data(), quiet.data(), nullptr};
  pid_t pid = 0;  // --minimal: the child prints only its failures
  const int rc = posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, envp.data());
  REQUIRE(rc == 0);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO("child status " << status << (WIFSIGNALED(status) ? " (killed by a signal)" : ""));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
