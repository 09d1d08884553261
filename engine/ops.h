// The differentiable ops. Each checks its arguments (volt::Error naming the op and the shapes),
// allocates its output, dispatches to the kernel for the tensors' device and records its backward.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <vector>

#include "random.h"
#include "tensor.h"

namespace volt {

using Pair = std::array<int64_t, 2>;

// The ops take float32, float16 or bfloat16 tensors (all floating inputs of one op of one type, except
// batch norm's float32 parameters and statistics and cross-entropy's float32 loss) and return the
// inputs' type; arithmetic is float32 in every case, a 16-bit result rounded once.

// y = x converted to `dtype` (float32/float16/bfloat16); the gradient is converted back. x itself
// when it already has that type.
Tensor cast(const Tensor& x, DType dtype);
// cast() of each tensor (undefined ones stay undefined), the same values and gradients; float32
// tensors on one GPU are cast in one launch into one buffer (mixed precision's weights, every step).
std::vector<Tensor> cast_many(const std::vector<Tensor>& xs, DType dtype);
// dst[i] = src[i] converted to dst[i]'s type (same shapes), not recorded by autograd: the pairs on one GPU
// with the first such pair's two types in one launch (backward()'s gradients into float32 leaves), the
// rest one by one.
void cast_into(const std::vector<Tensor>& src, const std::vector<Tensor>& dst);

// x [N, C, H, W], weight [K, C, R, S], bias [K] or undefined -> [N, K, P, Q].
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Pair stride = {1, 1}, Pair padding = {0, 0});

// x [N, C, ...]. weight/bias [C] may be undefined (no affine). In training the batch statistics
// normalise x and, when running_mean/running_var are defined, they are updated in place with
// `momentum` and the unbiased batch variance; num_batches_tracked (a one-element int64 tensor, or
// undefined) counts the training batches. In eval the running statistics normalise x.
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean, Tensor running_var,
                  bool training, double momentum = 0.1, double eps = 1e-5, Tensor num_batches_tracked = Tensor());

// Adds a vector over the data-parallel ranks, in place (every rank gets the sum); every rank calls it
// at the same points.
using SumOverRanks = std::function<void(std::vector<double>&)>;
// batch_norm in training with the statistics of the whole data-parallel batch (PyTorch's
// SyncBatchNorm): the per-channel sums are added over the ranks by `sum_over_ranks` twice in forward
// (the mean, then the variance about it) and once in backward (a collective: every rank runs them).
// The weight and bias gradients are this rank's (the gradient average makes them the whole batch's);
// the input gradient uses the sums of every rank. CPU and GPU backends (on a GPU the [C] sums go
// through the host: sum_over_ranks always takes host values).
Tensor sync_batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                       Tensor running_var, double momentum, double eps, Tensor num_batches_tracked,
                       const SumOverRanks& sum_over_ranks);

// relu(batch_norm(...)) in one pass each way: backward recomputes the normalised value from x for the
// ReLU's mask instead of keeping the output (what BatchNorm2d followed by ReLU runs as in a Sequential).
Tensor batch_norm_relu(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                       Tensor running_var, bool training, double momentum = 0.1, double eps = 1e-5,
                       Tensor num_batches_tracked = Tensor());

// max_pool2d(batch_norm_relu(...), pool, pool): the max pool over non-overlapping pool[0] x pool[1]
// windows (stride = window, no padding) that follows BatchNorm2d and ReLU in a Sequential. On CUDA one
// pass each way (windows of at most 256 positions): the full-size activation is never stored, and
// backward keeps, per window, one byte (its maximum's position) and the input there (so that its
// gradient sums read a quarter of the input's bytes). Elsewhere it runs as the two ops.
Tensor batch_norm_relu_max_pool2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                                  Tensor running_var, bool training, Pair pool, double momentum = 0.1,
                                  double eps = 1e-5, Tensor num_batches_tracked = Tensor());

// batch_norm_relu_max_pool2d(conv2d(x, conv_weight, conv_bias, stride, padding), ...): a network's first
// block (Conv2d, BatchNorm2d, ReLU, MaxPool2d in a Sequential run as this). On CUDA in 16 bits, when x
// needs no gradient and the convolution is one Volt's own kernels take (C*R*S <= 95): in training the
// convolution sums batch norm's statistics as it writes its output (not read again for them), and
// backward forms the convolution's output gradient inside its weight-gradient kernel instead of
// storing it; three fewer passes over the largest activation. Elsewhere it runs as the two ops.
Tensor conv2d_batch_norm_relu_max_pool2d(const Tensor& x, const Tensor& conv_weight, const Tensor& conv_bias,
                                         const Tensor& weight, const Tensor& bias, Tensor running_mean,
                                         Tensor running_var, bool training, Pair pool, Pair stride = {1, 1},
                                         Pair padding = {0, 0}, double momentum = 0.1, double eps = 1e-5,
                                         Tensor num_batches_tracked = Tensor());

Tensor relu(const Tensor& x);

// x [N, C, H, W] -> [N, C, P, Q]; padding at most half the kernel (as in PyTorch).
Tensor max_pool2d(const Tensor& x, Pair kernel, Pair stride, Pair padding = {0, 0});

// x [N, in], weight [out, in], bias [out] or undefined -> [N, out].
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

// Zeroes elements with probability p and scales the rest by 1/(1-p) in training; identity in eval.
// The mask comes from the generator's Philox stream, so it is reproducible on every backend.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);
// dropout(relu(x), ...) in one pass each way, with dropout's masks (what ReLU followed by Dropout runs as
// in a Sequential); relu(x) in eval.
Tensor relu_dropout(const Tensor& x, double p, bool training, Generator& gen);

// Broadcasting arithmetic (NumPy rules).
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, float s);
Tensor add(const Tensor& a, float s);
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator*(const Tensor& a, float s) { return mul(a, s); }
inline Tensor operator*(float s, const Tensor& a) { return mul(a, s); }
// a += alpha * b in place (same shape; not recorded by autograd — for gradient accumulation and updates).
// In-place changes (add_, Tensor::copy_/fill_/set, the optimizers' updates) count in the tensor's
// version (Tensor::version), as PyTorch's do: a backward whose op saved a tensor changed since then
// throws volt::Error naming the op, instead of computing gradients from the new values.
void add_(Tensor& a, const Tensor& b, float alpha = 1.f);
// counter += delta for a one-element int64 tensor on any device (BatchNorm's num_batches_tracked):
// no host round trip on a GPU.
void add_int_(Tensor& counter, int64_t delta = 1);

Tensor sum(const Tensor& x);                                    // all elements -> []
Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, int64_t dim, bool keepdim = false);

Tensor log_softmax(const Tensor& x, int64_t dim = -1);

enum class Reduction { None, Mean, Sum };
// logits [N, C], target int64 [N] with values in [0, C).
Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction = Reduction::Mean,
                     double label_smoothing = 0.0);

// Bad input that a GPU kernel found without stopping the stream: a cross_entropy or batch_accuracy
// target outside [0, C) gives a NaN loss (a wrong prediction) at once and is reported here, as a
// volt::Error naming the first one (this reads one small device value: it synchronises). The Trainer
// calls it where it synchronises anyway.
void check_deferred_errors(Device d);

Tensor argmax(const Tensor& x, int64_t dim);              // int64, dim removed
double accuracy(const Tensor& logits, const Tensor& target);  // fraction of rows whose argmax is the target
// The same fraction as a one-element float32 tensor on the logits' device: no host synchronisation
// (what a training or validation step logs).
Tensor batch_accuracy(const Tensor& logits, const Tensor& target);

}  // namespace volt
