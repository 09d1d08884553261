// Plain double-precision references for the ops in engine/ops.h: loops written from the definitions,
// sharing no code with the kernels. Inputs are CPU tensors; the op table and the golden tests use them.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/ops.h"
#include "tests/ops/op_table.h"

namespace volt::test::ref {

// The elements of a CPU float tensor, widened to double.
std::vector<double> dvec(const Tensor& t);

// x [N, C, H, W], weight [K, C, R, S], bias [K] or null -> [N, K, P, Q].
Reference ref_conv2d(const Tensor& xt, const Tensor& wt, const Tensor* bt, Pair st, Pair pd);

// Two-pass statistics (mean, then the mean squared deviation) per channel of x [N, C, ...].
void ref_bn_stats(const Tensor& xt, std::vector<double>& mean, std::vector<double>& var_biased);

// Batch statistics in training, the running ones (rm, rv) otherwise; weight/bias [C] or null.
Reference ref_batch_norm(const Tensor& xt, const Tensor* wt, const Tensor* bt, const Tensor* rm, const Tensor* rv,
                         bool training, double eps);

// x [N, C, H, W] -> [N, C, P, Q]; padding never wins.
Reference ref_max_pool2d(const Tensor& xt, Pair k, Pair st, Pair pd);
Reference ref_max_pool2d(const Reference& x, Pair k, Pair st, Pair pd);

// x [M, in], weight [out, in], bias [out] or null -> [M, out].
Reference ref_linear(const Tensor& xt, const Tensor& wt, const Tensor* bt);

// The documented mask: element i is kept when philox_uniform(philox_u32(seed, stream, offset, i)) >= p.
bool dropout_keeps(uint64_t seed, uint64_t stream, uint64_t offset, uint64_t i, double p);

// Kept elements scaled by 1 / (1 - p), the others 0.
Reference ref_dropout(const Tensor& xt, double p, uint64_t seed, uint64_t stream, uint64_t offset);

// f(a, b) elementwise with NumPy broadcasting, from the rules.
Reference ref_binary(const Tensor& at, const Tensor& bt, const std::function<double(double, double)>& f);

// f(x) elementwise.
Reference ref_map(const Tensor& xt, const std::function<double(double)>& f);

// Sum (or mean) over dim d, or over everything when d is absent (all = true).
Reference ref_reduce(const Tensor& xt, bool all, int64_t dim, bool keepdim, bool average);

// log_softmax along dim, with the maximum subtracted first.
Reference ref_log_softmax(const Tensor& xt, int64_t dim);

// Cross entropy against the smoothed target distribution q = (1-ls)*onehot + ls/C: -sum_c q_c log p_c.
// logits [N, C], target int64 [N].
Reference ref_cross_entropy(const Tensor& logits, const Tensor& target, Reduction red, double ls);

}  // namespace volt::test::ref
