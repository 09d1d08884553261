// Classification metrics over logits [N, C] and class indices target [N]: the rank of the target class
// in its row (NaN above every number, then larger first, ties to the lower index: 0 = the top-1
// prediction, which is volt::argmax's first maximum), a confusion matrix and top-k hit counts, and a
// batch's top-1 accuracy. Integer counts, so any order of additions gives the same result.
#pragma once
#include <cmath>
#include <cstdint>

#include "ftype.h"
#include "hd.h"

namespace volt {

constexpr int kMaxTopK = 8;  // the k values one update counts

// a ranks above b: NaN above every number, then larger first.
VOLT_HD bool metric_above(float a, float b) { return (a != a && b == b) || a > b; }

// x(j) reads the row's value of class j as float.
template <class Row>
VOLT_HD int64_t metric_rank(const Row& x, int64_t C, int64_t t) {
  const float xt = x(t);
  int64_t rank = 0;
  for (int64_t j = 0; j < C; ++j) {
    const float xj = x(j);
    const bool ties = (xj != xj && xt != xt) || xj == xt;
    if (metric_above(xj, xt) || (j < t && ties)) ++rank;
  }
  return rank;
}
template <class Row>
VOLT_HD int64_t metric_top1(const Row& x, int64_t C) {
  int64_t best = 0;
  for (int64_t j = 1; j < C; ++j)
    if (metric_above(x(j), x(best))) best = j;
  return best;
}

struct TopK {
  int64_t k[kMaxTopK];
  int64_t n;
};

}  // namespace volt

namespace volt::cpu {

// confusion[target * C + top1] += 1 and hits[i] += (rank of target < ks.k[i]) for every row; a target
// outside [0, C) counts only in *bad.
void classification_update(int64_t N, int64_t C, const float* logits, const int64_t* target, const TopK& ks,
                           int64_t* confusion, int64_t* hits, int64_t* bad);
// out[0] = (rows whose top-1 prediction is the target) / N.
void accuracy_fraction(int64_t N, int64_t C, const float* logits, const int64_t* target, float* out);

}  // namespace volt::cpu

// CUDA twins (kernels/cuda/metrics.cu): logits of storage type t, counts and the fraction in device
// memory (no host synchronisation), the same integer results.
namespace volt::cuda {

void classification_update(FType t, int64_t N, int64_t C, const void* logits, const int64_t* target, const TopK& ks,
                           int64_t* confusion, int64_t* hits, int64_t* bad, void* stream);
// A target outside [0, C) counts as wrong and is recorded in bad[3] as cross_entropy_forward does
// (kernels/reduce.h), for check_deferred_errors(); null `bad`: not recorded.
void accuracy_fraction(FType t, int64_t N, int64_t C, const void* logits, const int64_t* target, float* out,
                       int64_t* bad, void* stream);

}  // namespace volt::cuda
