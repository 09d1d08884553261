// The standard layers: Conv2d, BatchNorm2d, ReLU, MaxPool2d, Linear, Dropout, Flatten.
// Default initialisation follows PyTorch (Kaiming-uniform with a = sqrt(5) for weights,
// uniform(+-1/sqrt(fan_in)) for biases; BN weight 1, bias 0, momentum 0.1, eps 1e-5), drawn from
// the init stream of the default generator (volt::manual_seed) unless a generator is given.
#pragma once
#include <typeinfo>
#include <utility>

#include "../engine/ops.h"
#include "../engine/random.h"
#include "module.h"

namespace volt {

class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride = 1, int64_t padding = 0,
         bool bias = true, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;  // in autocast_dtype() under an Autocast guard
  // bn(relu(max_pool)) of this layer's output as one op (conv2d_batch_norm_relu_max_pool2d): what a
  // Sequential of Conv2d, BatchNorm2d, ReLU and a non-overlapping k x k MaxPool2d runs.
  Tensor forward_bn_relu_max_pool(const Tensor& x, class BatchNorm2d& bn, int64_t k);
  std::string type_name() const override { return "Conv2d"; }
  std::vector<Tensor> autocast_parameters() const override { return {weight, bias}; }
  std::string extra_repr() const override;
  void reset_parameters(Generator& gen);
  Tensor weight, bias;  // [out, in, k, k], [out]

 private:
  int64_t in_, out_, k_, stride_, padding_;
};

class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true,
                       bool track_running_stats = true);
  Tensor forward(const Tensor& x) override;
  // Not for a subclass, which may override forward (it can override this too where its
  // forward_relu and forward_relu_max_pool match its forward).
  bool fuses_relu() const override { return typeid(*this) == typeid(BatchNorm2d); }
  Tensor forward_relu(const Tensor& x) override;  // batch_norm_relu: one pass each way
  Tensor forward_relu_max_pool(const Tensor& x, int64_t k) override;  // batch_norm_relu_max_pool2d
  // The same after a convolution given by its (autocast) input, weight and bias, as one op.
  Tensor forward_conv_relu_max_pool(const Tensor& x, const Tensor& conv_weight, const Tensor& conv_bias, Pair stride,
                                    Pair padding, int64_t k);
  std::string type_name() const override { return "BatchNorm2d"; }
  std::string extra_repr() const override;
  // SyncBatchNorm (the Trainer's sync_batchnorm): in training, normalise with the statistics of every
  // rank's batch, added up by `sum` (sync_batch_norm); an empty function turns it off.
  void set_sync(SumOverRanks sum) { sync_ = std::move(sum); }
  bool synced() const { return sync_ != nullptr; }
  const SumOverRanks& sync() const { return sync_; }
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  Tensor run(const Tensor& x, bool relu, int64_t pool = 0);
  int64_t c_;
  double eps_, momentum_;
  SumOverRanks sync_;
};

// Every BatchNorm2d in m's tree (m included), in depth-first order.
std::vector<BatchNorm2d*> batch_norms(Module& m);
// Lightning's convert_sync_batchnorm: sets (or, with an empty function, clears) `sum` on every
// BatchNorm2d in m's tree; returns how many there are.
int set_sync_batch_norm(Module& m, const SumOverRanks& sum);

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return relu(x); }
  std::string type_name() const override { return "ReLU"; }
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(int64_t kernel_size, int64_t stride = -1, int64_t padding = 0);  // stride -1: = kernel
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "MaxPool2d"; }
  std::string extra_repr() const override;
  int64_t kernel_size() const { return k_; }
  bool non_overlapping() const { return stride_ == k_ && padding_ == 0; }  // windows tile the input

 private:
  int64_t k_, stride_, padding_;
};

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;  // in autocast_dtype() under an Autocast guard
  std::string type_name() const override { return "Linear"; }
  std::vector<Tensor> autocast_parameters() const override { return {weight, bias}; }
  std::string extra_repr() const override;
  void reset_parameters(Generator& gen);
  Tensor weight, bias;  // [out, in], [out]

 private:
  int64_t in_, out_;
};

// Masks come from the dropout stream of the default generator unless one is set.
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5);
  Tensor forward(const Tensor& x) override;
  // forward(relu(x)) in one pass each way (relu_dropout): what Sequential runs for a ReLU followed by it.
  Tensor forward_after_relu(const Tensor& x);
  std::string type_name() const override { return "Dropout"; }
  std::string extra_repr() const override;
  void set_generator(Generator* gen) { gen_ = gen; }
  double p() const { return p_; }

 private:
  double p_;
  Generator* gen_ = nullptr;
};

class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1) : start_(start_dim), end_(end_dim) {}
  Tensor forward(const Tensor& x) override { return x.flatten(start_, end_); }
  std::string type_name() const override { return "Flatten"; }

 private:
  int64_t start_, end_;
};

// Cross-entropy as a module-like callable (loss(logits, target)).
class CrossEntropyLoss {
 public:
  explicit CrossEntropyLoss(Reduction reduction = Reduction::Mean, double label_smoothing = 0.0)
      : reduction_(reduction), smoothing_(label_smoothing) {}
  Tensor operator()(const Tensor& logits, const Tensor& target) const {
    return cross_entropy(logits, target, reduction_, smoothing_);
  }

 private:
  Reduction reduction_;
  double smoothing_;
};

// PyTorch's init helpers over a Philox generator.
void kaiming_uniform_(Tensor& t, double a, int64_t fan_in, Generator& gen);
void uniform_bias_(Tensor& t, int64_t fan_in, Generator& gen);

}  // namespace volt
