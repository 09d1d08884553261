// The entries of the op table (see op_table.h): shapes, including awkward ones, for every differentiable
// op in engine/ops.h, each paired with its double-precision reference; and how their inputs are made.
#include "tests/ops/op_table.h"

#include <utility>

#include "engine/ops.h"
#include "engine/random.h"
#include "tests/ops/reference.h"

namespace volt::test {

using namespace ref;

InputSpec uniform(Shape s, float low, float high) {
  InputSpec i;
  i.shape = std::move(s);
  i.low = low;
  i.high = high;
  return i;
}
InputSpec state(Shape s, float low, float high) {
  InputSpec i = uniform(std::move(s), low, high);
  i.differentiable = false;
  return i;
}
InputSpec distinct(Shape s, float step) {
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

namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

}  // namespace

std::vector<Tensor> make_inputs(const OpCase& c, bool with_grad, Device device) {
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
      t = rand_tensor(s.shape, seed, s.low, s.high);
    }
    t = t.to(device);
    if (with_grad && s.differentiable) t.requires_grad_(true);
    out.push_back(t);
  }
  return out;
}

namespace {

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
// stays deterministic (the update itself is checked by the golden tests in test_ops.cpp).
// relu = true: the fused batch_norm_relu, against relu of the reference.
void add_batch_norm(std::vector<OpCase>& t, const std::string& name, Shape xs, bool affine, bool training,
                    bool running, float x_low = -1.f, float x_high = 1.f, double eps = 1e-5, bool relu = false) {
  OpCase c;
  c.op = relu ? "batch_norm_relu" : "batch_norm";
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
  for (size_t i = 1; i < c.inputs.size(); ++i) c.inputs[i].stays_f32 = true;
  const size_t rm_at = affine ? 3 : 1;
  c.run = [affine, training, have_running, rm_at, eps, relu](const std::vector<Tensor>& in) {
    Tensor rm, rv;
    if (have_running) {
      rm = training ? in[rm_at].clone() : in[rm_at];
      rv = training ? in[rm_at + 1].clone() : in[rm_at + 1];
    }
    return (relu ? batch_norm_relu : batch_norm)(in[0], affine ? in[1] : Tensor(), affine ? in[2] : Tensor(), rm, rv,
                                                 training, 0.1, eps, Tensor());
  };
  c.reference = [affine, training, have_running, rm_at, eps, relu](const std::vector<Tensor>& in) {
    Reference r = ref_batch_norm(in[0], affine ? &in[1] : nullptr, affine ? &in[2] : nullptr,
                                 have_running ? &in[rm_at] : nullptr, have_running ? &in[rm_at + 1] : nullptr, training,
                                 eps);
    if (relu)
      for (double& v : r.values) v = v > 0 ? v : 0.0;
    return r;
  };
  // The ReLU's kink: every input moves every normalised value of its channel (through the batch
  // statistics), so a perturbation of any input may carry some value across zero. A small perturbation
  // keeps that rare; gradcheck skips a point whose one-sided slopes differ by more than 10%, so a kink
  // it does not skip can still move the central difference by up to 5%: hence rtol 6%.
  if (relu) {
    c.grad.eps = 1e-3;
    c.grad.rtol = 6e-2;
  }
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

// batch_norm_relu_max_pool2d over non-overlapping windows, against the pool of relu of the reference.
// Distinct inputs and gammas near 1 keep every window's values apart (no argmax tie even in bfloat16).
void add_bn_relu_pool(std::vector<OpCase>& t, const std::string& name, Shape xs, Pair pool, bool affine,
                      bool training) {
  OpCase c;
  c.op = "batch_norm_relu_max_pool2d";
  c.name = name;
  const int64_t C = xs[1];
  c.inputs = {distinct(xs)};
  if (affine) {
    c.inputs.push_back(uniform({C}, 0.8f, 1.2f));
    c.inputs.push_back(uniform({C}));
  }
  c.inputs.push_back(state({C}, -0.5f, 0.5f));  // running statistics (used in eval, updated in training)
  c.inputs.push_back(state({C}, 0.5f, 1.5f));
  for (size_t i = 1; i < c.inputs.size(); ++i) c.inputs[i].stays_f32 = true;
  const size_t rm_at = affine ? 3 : 1;
  c.run = [affine, training, rm_at, pool](const std::vector<Tensor>& in) {
    Tensor rm = training ? in[rm_at].clone() : in[rm_at], rv = training ? in[rm_at + 1].clone() : in[rm_at + 1];
    return batch_norm_relu_max_pool2d(in[0], affine ? in[1] : Tensor(), affine ? in[2] : Tensor(), rm, rv, training,
                                      pool);
  };
  c.reference = [affine, training, rm_at, pool](const std::vector<Tensor>& in) {
    Reference r = ref_batch_norm(in[0], affine ? &in[1] : nullptr, affine ? &in[2] : nullptr, &in[rm_at],
                                 &in[rm_at + 1], training, 1e-5);
    for (double& v : r.values) v = v > 0 ? v : 0.0;
    return ref_max_pool2d(r, pool, pool, {0, 0});
  };
  c.grad.eps = 1e-3;  // the ReLU's kink, as batch_norm_relu's entries
  c.grad.rtol = 6e-2;
  t.push_back(c);
}

// conv2d_batch_norm_relu_max_pool2d: x is not differentiated (a first layer's input: the CUDA path that
// never stores the convolution's output gradient); against the pool of relu of the batch norm of the
// convolution's reference (rounded to float32 between the two references).
void add_conv_bn_relu_pool(std::vector<OpCase>& t, const std::string& name, Shape xs, Shape ws, Pair st, Pair pd,
                           Pair pool, bool conv_bias, bool training) {
  OpCase c;
  c.op = "conv2d_batch_norm_relu_max_pool2d";
  c.name = name;
  const int64_t K = ws[0];
  InputSpec x = uniform(xs);
  x.differentiable = false;
  c.inputs = {x, uniform(ws, -0.5f, 0.5f), uniform({K}), uniform({K}, 0.8f, 1.2f), uniform({K}),
              state({K}, -0.5f, 0.5f), state({K}, 0.5f, 1.5f)};
  c.inputs[2].differentiable = conv_bias;
  for (size_t i = 3; i < c.inputs.size(); ++i) c.inputs[i].stays_f32 = true;
  c.run = [st, pd, pool, conv_bias, training](const std::vector<Tensor>& in) {
    Tensor rm = training ? in[5].clone() : in[5], rv = training ? in[6].clone() : in[6];
    return conv2d_batch_norm_relu_max_pool2d(in[0], in[1], conv_bias ? in[2] : Tensor(), in[3], in[4], rm, rv,
                                             training, pool, st, pd);
  };
  c.reference = [st, pd, pool, conv_bias, training](const std::vector<Tensor>& in) {
    const Reference conv = ref_conv2d(in[0], in[1], conv_bias ? &in[2] : nullptr, st, pd);
    const Tensor h = Tensor::from_vector(conv.shape, std::vector<float>(conv.values.begin(), conv.values.end()));
    Reference r = ref_batch_norm(h, &in[3], &in[4], &in[5], &in[6], training, 1e-5);
    for (double& v : r.values) v = v > 0 ? v : 0.0;
    return ref_max_pool2d(r, pool, pool, {0, 0});
  };
  c.grad.eps = 1e-3;  // the ReLU's kink and the pool's argmax, as batch_norm_relu_max_pool2d's entries
  c.grad.rtol = 6e-2;
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
  add_batch_norm(t, "train 4-D affine", {3, 4, 5, 3}, true, true, false, -1.f, 1.f, 1e-5, true);
  add_batch_norm(t, "train 4-D affine with running stats", {3, 4, 3, 5}, true, true, true, -1.f, 1.f, 1e-5, true);
  add_batch_norm(t, "train 2-D no affine", {7, 5}, false, true, false, -1.f, 1.f, 1e-5, true);
  add_batch_norm(t, "eval 4-D affine", {3, 4, 5, 3}, true, false, true, -1.f, 1.f, 1e-5, true);
  add_batch_norm(t, "eval 2-D no affine", {7, 5}, false, false, true, -1.f, 1.f, 1e-5, true);

  {  // cast: float32 -> 16 bits -> float32 rounds each value once; the gradient passes unchanged
    OpCase c;
    c.op = "cast";
    c.inputs = {uniform({3, 7, 5})};
    c.atol = 1e-30;  // exact
    for (DType dt : {DType::F16, DType::BF16}) {
      c.name = std::string("float32 through ") + dtype_name(dt);
      c.grad.eps = dt == DType::F16 ? 0.1 : 0.3;  // perturbations well above the outputs' 16-bit rounding
      c.run = [dt](const std::vector<Tensor>& in) { return cast(cast(in[0], dt), DType::F32); };
      c.reference = [dt](const std::vector<Tensor>& in) {
        return ref_map(in[0], [dt](double x) {
          return double(dt == DType::F16 ? half_to_float(float_to_half(float(x))) : bf16_to_float(float_to_bf16(float(x))));
        });
      };
      c.rtol = 0;
      t.push_back(c);
    }
  }

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

  // batch_norm_relu_max_pool2d: square and non-square windows, odd sizes (rows and columns outside
  // every window), training and eval.
  add_bn_relu_pool(t, "train k2 affine", {2, 3, 4, 4}, {2, 2}, true, true);
  add_bn_relu_pool(t, "train k2 odd input no affine", {2, 2, 5, 7}, {2, 2}, false, true);
  add_bn_relu_pool(t, "train k3 affine", {2, 2, 6, 7}, {3, 3}, true, true);
  add_bn_relu_pool(t, "train 2x3 window affine", {2, 2, 5, 6}, {2, 3}, true, true);
  add_bn_relu_pool(t, "eval k2 affine", {2, 3, 4, 5}, {2, 2}, true, false);
  add_bn_relu_pool(t, "eval k3 no affine", {1, 2, 7, 6}, {3, 3}, false, false);

  // conv2d_batch_norm_relu_max_pool2d: the seed CNN's first block at a small size, padding and stride,
  // eval with a 3x3 pool. A convolution bias before batch norm in training has an exact gradient of 0
  // (the batch mean takes it away), so its computed one is rounding noise that a relative measure
  // (NMSE) cannot judge: the training entries have none; the eval entry has one.
  add_conv_bn_relu_pool(t, "seed block 3->8 k5", {2, 3, 12, 12}, {8, 3, 5, 5}, {1, 1}, {0, 0}, {2, 2}, false, true);
  add_conv_bn_relu_pool(t, "k3 s2 p1 no bias", {2, 2, 11, 9}, {5, 2, 3, 3}, {2, 2}, {1, 1}, {2, 2}, false, true);
  add_conv_bn_relu_pool(t, "eval k3 pool 3", {2, 1, 9, 10}, {4, 1, 3, 3}, {1, 1}, {1, 1}, {3, 3}, true, false);

  add_linear(t, "bias", 5, 7, 3, true);
  add_linear(t, "no bias", 4, 6, 5, false);
  add_linear(t, "one row bias", 1, 9, 4, true);

  {  // relu_dropout: dropout's masks over relu(x); values half a step from the kink at 0
    for (bool training : {true, false}) {
      OpCase c;
      c.op = "relu_dropout";
      c.name = training ? "p 0.4 training" : "p 0.4 eval";
      c.inputs = {distinct({4, 3, 5})};
      c.run = [training](const std::vector<Tensor>& in) {
        Generator g(11, kStreamDropout);
        g.set_offset(5);
        return relu_dropout(in[0], 0.4, training, g);
      };
      c.reference = [training](const std::vector<Tensor>& in) {
        const Tensor r = Tensor::from_vector(in[0].shape(), [&] {
          std::vector<float> v = in[0].to_vector();
          for (float& e : v) e = e > 0.f ? e : 0.f;
          return v;
        }());
        return training ? ref_dropout(r, 0.4, 11, kStreamDropout, 5) : Reference{r.shape(), dvec(r)};
      };
      t.push_back(c);
    }
  }

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

}  // namespace

const std::vector<OpCase>& op_table() {
  static const std::vector<OpCase> table = build_table();
  return table;
}

}  // namespace volt::test
