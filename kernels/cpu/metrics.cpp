// CPU classification counts (see kernels/metrics.h).
#include "kernels/metrics.h"

namespace volt::cpu {

namespace {
struct FloatRow {
  const float* x;
  float operator()(int64_t j) const { return x[j]; }
};
}  // namespace

void classification_update(int64_t N, int64_t C, const float* logits, const int64_t* target, const TopK& ks,
                           int64_t* confusion, int64_t* hits, int64_t* bad) {
  for (int64_t n = 0; n < N; ++n) {
    const int64_t t = target[n];
    if (t < 0 || t >= C) {
      ++*bad;
      continue;
    }
    const FloatRow row{logits + n * C};
    confusion[t * C + metric_top1(row, C)] += 1;
    const int64_t rank = metric_rank(row, C, t);
    for (int64_t i = 0; i < ks.n; ++i) hits[i] += rank < ks.k[i];
  }
}

void accuracy_fraction(int64_t N, int64_t C, const float* logits, const int64_t* target, float* out) {
  int64_t correct = 0;
  for (int64_t n = 0; n < N; ++n) correct += metric_top1(FloatRow{logits + n * C}, C) == target[n];
  out[0] = float(double(correct) / double(N));
}

}  // namespace volt::cpu
