// Layer constructors, initialisation and forward passes (see layers.h).
#include "layers/layers.h"

#include <cmath>

#include "engine/autocast.h"

#include "engine/error.h"

namespace volt {

void kaiming_uniform_(Tensor& t, double a, int64_t fan_in, Generator& gen) {
  VOLT_CHECK(fan_in > 0, "kaiming_uniform_: fan_in must be positive, got ", fan_in);
  const double gain = std::sqrt(2.0 / (1.0 + a * a));
  const double bound = std::sqrt(3.0) * gain / std::sqrt(double(fan_in));
  uniform_(t, float(-bound), float(bound), gen);
}

void uniform_bias_(Tensor& t, int64_t fan_in, Generator& gen) {
  const double bound = fan_in > 0 ? 1.0 / std::sqrt(double(fan_in)) : 0.0;
  uniform_(t, float(-bound), float(bound), gen);
}

// ---- Conv2d ----
Conv2d::Conv2d(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding, bool has_bias, Generator* gen)
    : in_(in), out_(out), k_(k), stride_(stride), padding_(padding) {
  VOLT_CHECK(in > 0 && out > 0 && k > 0, "Conv2d: channels and kernel size must be positive, got in=", in,
             " out=", out, " kernel=", k);
  VOLT_CHECK(stride > 0 && padding >= 0, "Conv2d: stride must be positive and padding non-negative, got stride=",
             stride, " padding=", padding);
  weight = register_parameter("weight", Tensor::empty({out, in, k, k}));
  if (has_bias) bias = register_parameter("bias", Tensor::empty({out}));
  reset_parameters(gen ? *gen : default_generator(kStreamInit));
}

void Conv2d::reset_parameters(Generator& gen) {
  const int64_t fan_in = in_ * k_ * k_;
  kaiming_uniform_(weight, std::sqrt(5.0), fan_in, gen);
  if (bias.defined()) uniform_bias_(bias, fan_in, gen);
}

namespace {
// Under Autocast, a tensor in the autocast type (a no-op for one that already is, or outside a guard);
// a parameter's cast may have been made already by the outermost module call (Module::operator()).
Tensor autocast(const Tensor& t) { return autocast_param(t); }
}  // namespace

Tensor Conv2d::forward(const Tensor& x) {
  return conv2d(autocast(x), autocast(weight), autocast(bias), {stride_, stride_}, {padding_, padding_});
}

Tensor Conv2d::forward_bn_relu_max_pool(const Tensor& x, BatchNorm2d& bn, int64_t k) {
  return bn.forward_conv_relu_max_pool(autocast(x), autocast(weight), autocast(bias), {stride_, stride_},
                                       {padding_, padding_}, k);
}

Tensor Linear::forward(const Tensor& x) { return linear(autocast(x), autocast(weight), autocast(bias)); }

std::string Conv2d::extra_repr() const {
  return detail::format(in_, ", ", out_, ", kernel_size=", k_, ", stride=", stride_,
                        padding_ ? detail::format(", padding=", padding_) : std::string(),
                        bias.defined() ? "" : ", bias=False");
}

// ---- BatchNorm2d ----
BatchNorm2d::BatchNorm2d(int64_t c, double eps, double momentum, bool affine, bool track)
    : c_(c), eps_(eps), momentum_(momentum) {
  VOLT_CHECK(c > 0, "BatchNorm2d: num_features must be positive, got ", c);
  if (affine) {
    weight = register_parameter("weight", Tensor::ones({c}));
    bias = register_parameter("bias", Tensor::zeros({c}));
  }
  if (track) {
    running_mean = register_buffer("running_mean", Tensor::zeros({c}));
    running_var = register_buffer("running_var", Tensor::ones({c}));
    num_batches_tracked = register_buffer("num_batches_tracked", Tensor::zeros({}, DType::I64));
  }
}

Tensor BatchNorm2d::forward(const Tensor& x) { return run(x, false); }
Tensor BatchNorm2d::forward_relu(const Tensor& x) { return run(x, true); }
Tensor BatchNorm2d::forward_relu_max_pool(const Tensor& x, int64_t k) { return run(x, true, k); }

Tensor BatchNorm2d::forward_conv_relu_max_pool(const Tensor& x, const Tensor& conv_weight, const Tensor& conv_bias,
                                               Pair stride, Pair padding, int64_t k) {
  if (sync_ && is_training()) return run(conv2d(x, conv_weight, conv_bias, stride, padding), true, k);
  const bool use_batch_stats = is_training() || !running_mean.defined();
  const Tensor tracked = is_training() ? num_batches_tracked : Tensor();
  return conv2d_batch_norm_relu_max_pool2d(x, conv_weight, conv_bias, weight, bias, running_mean, running_var,
                                           use_batch_stats, {k, k}, stride, padding, momentum_, eps_, tracked);
}

Tensor BatchNorm2d::run(const Tensor& x, bool relu, int64_t pool) {
  VOLT_CHECK(x.defined() && x.dim() == 4, "BatchNorm2d: expected input [N, C, H, W], got shape ",
             x.defined() ? shape_str(x.shape()) : "undefined");
  const bool use_batch_stats = is_training() || !running_mean.defined();
  // The op counts the batch in num_batches_tracked (on a GPU inside its statistics kernel).
  const Tensor tracked = is_training() ? num_batches_tracked : Tensor();
  if (sync_ && is_training()) {  // the whole data-parallel batch's statistics; ReLU and pool as their own ops
    Tensor y = sync_batch_norm(x, weight, bias, running_mean, running_var, momentum_, eps_, tracked, sync_);
    if (relu) y = volt::relu(y);
    return pool > 0 ? max_pool2d(y, {pool, pool}, {pool, pool}) : y;
  }
  if (pool > 0)
    return batch_norm_relu_max_pool2d(x, weight, bias, running_mean, running_var, use_batch_stats, {pool, pool},
                                      momentum_, eps_, tracked);
  return (relu ? batch_norm_relu : batch_norm)(x, weight, bias, running_mean, running_var, use_batch_stats, momentum_,
                                               eps_, tracked);
}

namespace {
void collect_batch_norms(Module& m, std::vector<BatchNorm2d*>& out) {
  if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) out.push_back(bn);
  for (const auto& [name, child] : m.children()) collect_batch_norms(*child, out);
}
}  // namespace

std::vector<BatchNorm2d*> batch_norms(Module& m) {
  std::vector<BatchNorm2d*> out;
  collect_batch_norms(m, out);
  return out;
}

int set_sync_batch_norm(Module& m, const SumOverRanks& sum) {
  const std::vector<BatchNorm2d*> bns = batch_norms(m);
  for (BatchNorm2d* bn : bns) bn->set_sync(sum);
  return int(bns.size());
}

std::string BatchNorm2d::extra_repr() const {
  return detail::format(c_, ", eps=", eps_, ", momentum=", momentum_, ", affine=", weight.defined() ? "True" : "False",
                        ", track_running_stats=", running_mean.defined() ? "True" : "False");
}

// ---- MaxPool2d ----
MaxPool2d::MaxPool2d(int64_t k, int64_t stride, int64_t padding) : k_(k), stride_(stride < 0 ? k : stride), padding_(padding) {
  VOLT_CHECK(k > 0 && stride_ > 0 && padding >= 0, "MaxPool2d: kernel and stride must be positive, got kernel=", k,
             " stride=", stride_);
}

Tensor MaxPool2d::forward(const Tensor& x) { return max_pool2d(x, {k_, k_}, {stride_, stride_}, {padding_, padding_}); }

std::string MaxPool2d::extra_repr() const {
  return detail::format("kernel_size=", k_, ", stride=", stride_, ", padding=", padding_);
}

// ---- Linear ----
Linear::Linear(int64_t in, int64_t out, bool has_bias, Generator* gen) : in_(in), out_(out) {
  VOLT_CHECK(in > 0 && out > 0, "Linear: in_features and out_features must be positive, got ", in, " and ", out);
  weight = register_parameter("weight", Tensor::empty({out, in}));
  if (has_bias) bias = register_parameter("bias", Tensor::empty({out}));
  reset_parameters(gen ? *gen : default_generator(kStreamInit));
}

void Linear::reset_parameters(Generator& gen) {
  kaiming_uniform_(weight, std::sqrt(5.0), in_, gen);
  if (bias.defined()) uniform_bias_(bias, in_, gen);
}

std::string Linear::extra_repr() const {
  return detail::format("in_features=", in_, ", out_features=", out_, ", bias=", bias.defined() ? "True" : "False");
}

// ---- Dropout ----
Dropout::Dropout(double p) : p_(p) {
  VOLT_CHECK(p >= 0.0 && p <= 1.0, "Dropout: probability must be in [0, 1], got ", p);
}

Tensor Dropout::forward(const Tensor& x) {
  return dropout(x, p_, is_training(), gen_ ? *gen_ : default_generator(kStreamDropout));
}

Tensor Dropout::forward_after_relu(const Tensor& x) {
  return relu_dropout(x, p_, is_training(), gen_ ? *gen_ : default_generator(kStreamDropout));
}

std::string Dropout::extra_repr() const { return detail::format("p=", p_); }

}  // namespace volt
