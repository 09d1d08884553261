// Classification metrics: top-k accuracy of a batch, and ClassificationMetrics, an accumulator of
// top-k hits and a confusion matrix whose raw counts can be merged or all-reduced across ranks.
#pragma once
#include <cstdint>
#include <map>
#include <vector>

#include "../engine/tensor.h"

namespace volt {

// Fraction of the rows of logits [N, C] (float32/float16/bfloat16) whose target (int64 [N], each in
// [0, C)) is among the row's k largest logits, 1 <= k <= C, N >= 1.
//
// Ties, the rule used here and by ClassificationMetrics: classes are ranked by logit, descending;
// NaN ranks above every number (as in torch.topk and torch.argmax); equal logits (or two NaNs) rank
// by class index, the lower index first (the order of torch.sort(descending=True, stable=True),
// and of volt::argmax for k = 1). So a target is a top-k hit when
//   #{j : x[j] ranks above x[t]} + #{j < t : x[j] ties x[t]} < k.
// torch.topk itself leaves the order of tied values unspecified; with this rule a tie on the k-th
// place is counted for the lower class index, never for both.
// Tensors on a device are copied to the host first.
double topk_accuracy(const Tensor& logits, const Tensor& target, int64_t k);

// What ClassificationMetrics::compute() reports. Every number is finite: with no samples the
// accuracies are 0 (see count), and a class with no samples has per_class_accuracy 0 and
// class_count 0 (it is "absent" and left out of macro_accuracy).
struct ClassificationResult {
  int64_t count = 0;                      // samples seen
  double accuracy = 0;                    // top-1: trace(confusion) / count
  std::map<int64_t, double> topk;         // k -> top-k accuracy, for each k asked for (1 included if asked)
  std::vector<double> per_class_accuracy; // [C] recall: confusion[c][c] / class_count[c]; 0 when absent
  std::vector<int64_t> class_count;       // [C] samples whose true class is c (row sums)
  int64_t classes_present = 0;            // classes with class_count > 0
  double macro_accuracy = 0;              // mean of per_class_accuracy over present classes
  Tensor confusion;                       // int64 [C, C]: rows = true class, cols = predicted (top-1)
};

// Accumulates top-k hits and the confusion matrix over batches. A batch on a GPU is counted there
// (kernels/metrics.h: no copy, no synchronisation); its counts join the host's when they are read
// (compute, counts, merge), which is also when a target outside [0, C) found on the GPU is reported.
// State is the flat count vector
//   [count, hits(topk[0]), ..., hits(topk[K-1]), confusion (C*C, row-major)]
// which counts() returns and load_counts() restores; summing it elementwise across ranks (an
// all-reduce) and loading the sum gives the metrics of the union of the ranks' samples.
class ClassificationMetrics {
 public:
  // topk = {1, 5}, with 5 dropped when num_classes < 5.
  explicit ClassificationMetrics(int64_t num_classes);
  // Each k must be in [1, num_classes], no repeats; kept in the given order. An empty list is fine
  // (top-1 accuracy comes from the confusion matrix anyway).
  ClassificationMetrics(int64_t num_classes, std::vector<int64_t> topk);

  // logits [N, C] float, target int64 [N] in [0, C). N == 0 is a no-op. Checks everything before
  // counting anything: a bad batch leaves the state unchanged.
  void update(const Tensor& logits, const Tensor& target);
  ClassificationResult compute() const;
  void reset();
  // Adds other's counts; other must have the same num_classes and topk list.
  void merge(const ClassificationMetrics& other);

  std::vector<int64_t> counts() const;                  // the flat layout above
  void load_counts(const std::vector<int64_t>& counts);  // same size; non-negative and consistent
  size_t counts_size() const { return size_t(1 + int64_t(topk_.size()) + num_classes_ * num_classes_); }

  int64_t num_classes() const { return num_classes_; }
  const std::vector<int64_t>& topk() const { return topk_; }
  int64_t count() const { return count_; }

  // confusion_image(confusion(), cell_px).
  Tensor confusion_image(int64_t cell_px = 16) const;

 private:
  void fold() const;  // adds the device counts to the host's and zeroes them (a synchronisation)
  int64_t num_classes_;
  std::vector<int64_t> topk_;
  mutable int64_t count_ = 0;
  mutable std::vector<int64_t> hits_;       // [K], hits_[i] for topk_[i]
  mutable std::vector<int64_t> confusion_;  // [C*C] row-major
  mutable Tensor device_;  // int64 [K + C*C + 1] on the GPU of the batches: hits, confusion, bad targets
};

// RGB picture of a confusion matrix (int64 [C, C], rows = true class) for TensorBoard: each row
// divided by its sum (an empty row stays 0), mapped through a viridis-like colour map (0 dark
// purple, 1 bright yellow; brightness increases with the value), each cell a cell_px x cell_px
// square. Returns uint8 [C*cell_px, C*cell_px, 3], interleaved as SummaryWriter::add_image_png
// takes it. cell_px >= 1 and C*cell_px <= 8192.
Tensor confusion_image(const Tensor& confusion, int64_t cell_px = 16);

// The colour of a row-normalised value v in [0, 1] (clamped) in that colour map.
void confusion_colour(double v, uint8_t rgb[3]);

}  // namespace volt
