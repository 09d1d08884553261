// Classification metrics: top-k accuracy, the ClassificationMetrics accumulator (top-k hits and a
// confusion matrix as flat int64 counts) and the confusion-matrix image for TensorBoard.
#include "layers/metrics.h"

#include <algorithm>
#include <cmath>
#include <new>
#include <string>

#include "engine/error.h"
#include "engine/gpu.h"
#include "engine/ops/check.h"
#include "kernels/metrics.h"
#include "volt/config.h"

namespace volt {

namespace {

// A batch on the host: logits as float32 [N, C], targets as int64 [N], all checked.
struct HostBatch {
  Tensor logits, target;
  int64_t N = 0, C = 0;
};

std::string ks_str(const std::vector<int64_t>& ks) {
  std::string s = "{";
  for (size_t i = 0; i < ks.size(); ++i) s += (i ? ", " : "") + std::to_string(ks[i]);
  return s + "}";
}

// The batch's types and shapes; expect_C < 0: any number of classes (>= 1).
void check_shapes(const char* op, const Tensor& logits, const Tensor& target, int64_t expect_C) {
  VOLT_CHECK(logits.defined(), op, ": logits is undefined");
  VOLT_CHECK(target.defined(), op, ": target is undefined");
  const DType ld = logits.dtype();
  VOLT_CHECK(ld == DType::F32 || ld == DType::F16 || ld == DType::BF16, op,
             ": logits must be float32, float16 or bfloat16, got ", dtype_name(ld), " (shape ",
             shape_str(logits.shape()), ")");
  VOLT_CHECK(logits.dim() == 2, op, ": logits must be [N, C], got ", shape_str(logits.shape()));
  VOLT_CHECK(logits.size(1) >= 1, op, ": logits ", shape_str(logits.shape()), " has no classes");
  if (expect_C >= 0)
    VOLT_CHECK(logits.size(1) == expect_C, op, ": logits ", shape_str(logits.shape()), " has ", logits.size(1),
               " classes but the metrics were made for ", expect_C);
  VOLT_CHECK(target.dtype() == DType::I64, op, ": target must hold int64 class indices, got ",
             dtype_name(target.dtype()), " (shape ", shape_str(target.shape()), ")");
  VOLT_CHECK(target.dim() == 1 && target.size(0) == logits.size(0), op, ": target shape ",
             shape_str(target.shape()), " does not match logits ", shape_str(logits.shape()), " (expected [",
             logits.size(0), "])");
}

// check_shapes, then the batch as float32 logits and targets in host memory, every target checked.
HostBatch check_batch(const char* op, const Tensor& logits, const Tensor& target, int64_t expect_C) {
  check_shapes(op, logits, target, expect_C);
  HostBatch b;
  b.N = logits.size(0);
  b.C = logits.size(1);
  b.logits = logits.device().is_cpu() ? logits : logits.to(Device::cpu());
  if (b.logits.dtype() != DType::F32) b.logits = b.logits.to(DType::F32);
  b.target = target.device().is_cpu() ? target : target.to(Device::cpu());
  const int64_t* t = b.target.data<int64_t>();
  for (int64_t n = 0; n < b.N; ++n)
    VOLT_CHECK(t[n] >= 0 && t[n] < b.C, op, ": target[", n, "] = ", t[n], " is not a class index in [0, ", b.C,
               ") (logits ", shape_str(logits.shape()), ")");
  return b;
}

// 0-based rank of class t in row x[0..C) under the documented rule (0 = the top-1 prediction).
int64_t rank_of(const float* x, int64_t C, int64_t t) {
  return metric_rank([x](int64_t j) { return x[j]; }, C, t);
}

void check_topk(const char* op, const std::vector<int64_t>& ks, int64_t C) {
  for (size_t i = 0; i < ks.size(); ++i) {
    VOLT_CHECK(ks[i] >= 1 && ks[i] <= C, op, ": k = ", ks[i], " is out of range [1, ", C, "] (topk ", ks_str(ks),
               ", ", C, " classes)");
    for (size_t j = 0; j < i; ++j)
      VOLT_CHECK(ks[j] != ks[i], op, ": k = ", ks[i], " is repeated in topk ", ks_str(ks));
  }
}

}  // namespace

double topk_accuracy(const Tensor& logits, const Tensor& target, int64_t k) {
  const char* op = "topk_accuracy";
  const HostBatch b = check_batch(op, logits, target, -1);
  VOLT_CHECK(b.N >= 1, op, ": empty batch (logits ", shape_str(logits.shape()), ")");
  VOLT_CHECK(k >= 1 && k <= b.C, op, ": k = ", k, " is out of range [1, ", b.C, "] for logits ",
             shape_str(logits.shape()));
  const float* x = b.logits.data<float>();
  const int64_t* t = b.target.data<int64_t>();
  int64_t hits = 0;
  for (int64_t n = 0; n < b.N; ++n) hits += rank_of(x + n * b.C, b.C, t[n]) < k;
  return double(hits) / double(b.N);
}

// ---- ClassificationMetrics ----

static std::vector<int64_t> default_topk(int64_t num_classes) {
  std::vector<int64_t> ks{1};
  if (num_classes >= 5) ks.push_back(5);
  return ks;
}

ClassificationMetrics::ClassificationMetrics(int64_t num_classes)
    : ClassificationMetrics(num_classes, default_topk(num_classes)) {}

ClassificationMetrics::ClassificationMetrics(int64_t num_classes, std::vector<int64_t> topk)
    : num_classes_(num_classes), topk_(std::move(topk)) {
  const char* op = "ClassificationMetrics";
  VOLT_CHECK(num_classes >= 1, op, ": num_classes must be >= 1, got ", num_classes);
  VOLT_CHECK(num_classes <= (int64_t(1) << 20), op, ": num_classes = ", num_classes,
             " is too large for a dense confusion matrix");
  check_topk(op, topk_, num_classes_);
  hits_.assign(topk_.size(), 0);
  try {
    confusion_.assign(size_t(num_classes_ * num_classes_), 0);
  } catch (const std::bad_alloc&) {
    VOLT_FAIL(op, ": num_classes = ", num_classes, " needs a ", num_classes, " x ", num_classes,
              " confusion matrix (", double(num_classes) * double(num_classes) * 8.0 / double(1 << 30),
              " GiB), more host memory than there is");
  }
}

void ClassificationMetrics::update(const Tensor& logits, const Tensor& target) {
  const char* op = "ClassificationMetrics::update";
  const int64_t C = num_classes_, K = int64_t(topk_.size());
  TopK ks{};
  VOLT_CHECK(K <= kMaxTopK, op, ": at most ", kMaxTopK, " k values, got ", K);
  for (int64_t i = 0; i < K; ++i) ks.k[i] = topk_[size_t(i)];
  ks.n = K;
  check_shapes(op, logits, target, C);
  if (logits.device().is_cuda() && target.device() == logits.device()) {
    // Counted on the GPU; the targets are checked there too (reported when the counts are read).
    if (logits.size(0) == 0) return;
    if (!device_.defined() || device_.device() != logits.device())
      device_ = Tensor::zeros({K + C * C + 1}, DType::I64, logits.device());
    [[maybe_unused]] int64_t* d = device_.data<int64_t>();  // CUDA builds only
    VOLT_CUDA_ONLY(cuda::classification_update(ftype_of(logits.dtype()), logits.size(0), C, logits.raw_data(),
                                               target.data<int64_t>(), ks, d + K, d, d + K + C * C,
                                               cuda_stream(logits.device())));
    count_ += logits.size(0);
    return;
  }
  const HostBatch b = check_batch(op, logits, target, num_classes_);
  int64_t bad = 0;
  cpu::classification_update(b.N, C, b.logits.data<float>(), b.target.data<int64_t>(), ks, confusion_.data(),
                             hits_.data(), &bad);
  count_ += b.N;
}

void ClassificationMetrics::fold() const {
  if (!device_.defined()) return;
  const std::vector<int64_t> d = device_.to_int_vector();
  const int64_t C = num_classes_, K = int64_t(topk_.size());
  device_.zero_();
  for (int64_t i = 0; i < K; ++i) hits_[size_t(i)] += d[size_t(i)];
  for (int64_t i = 0; i < C * C; ++i) confusion_[size_t(i)] += d[size_t(K + i)];
  const int64_t bad = d[size_t(K + C * C)];
  if (bad > 0) {  // those rows were counted in count_ only: take them out again (the valid ones stay)
    count_ -= bad;
    VOLT_FAIL("ClassificationMetrics::update: ", bad, " target(s) on ", device_.device().str(),
              " were not class indices in [0, ", C, ")");
  }
}

ClassificationResult ClassificationMetrics::compute() const {
  fold();
  const int64_t C = num_classes_;
  ClassificationResult r;
  r.count = count_;
  const double denom = count_ > 0 ? double(count_) : 1.0;
  int64_t trace = 0;
  for (int64_t c = 0; c < C; ++c) trace += confusion_[size_t(c * C + c)];
  r.accuracy = double(trace) / denom;
  for (size_t i = 0; i < topk_.size(); ++i) r.topk[topk_[i]] = double(hits_[i]) / denom;
  r.per_class_accuracy.assign(size_t(C), 0.0);
  r.class_count.assign(size_t(C), 0);
  double recall_sum = 0;
  for (int64_t c = 0; c < C; ++c) {
    int64_t row = 0;
    for (int64_t p = 0; p < C; ++p) row += confusion_[size_t(c * C + p)];
    r.class_count[size_t(c)] = row;
    if (row == 0) continue;
    r.per_class_accuracy[size_t(c)] = double(confusion_[size_t(c * C + c)]) / double(row);
    recall_sum += r.per_class_accuracy[size_t(c)];
    ++r.classes_present;
  }
  r.macro_accuracy = r.classes_present > 0 ? recall_sum / double(r.classes_present) : 0.0;
  r.confusion = Tensor::empty({C, C}, DType::I64);
  std::copy(confusion_.begin(), confusion_.end(), r.confusion.data<int64_t>());
  return r;
}

void ClassificationMetrics::reset() {
  if (device_.defined()) device_.zero_();
  count_ = 0;
  std::fill(hits_.begin(), hits_.end(), 0);
  std::fill(confusion_.begin(), confusion_.end(), 0);
}

void ClassificationMetrics::merge(const ClassificationMetrics& other) {
  VOLT_CHECK(other.num_classes_ == num_classes_ && other.topk_ == topk_,
             "ClassificationMetrics::merge: other has ", other.num_classes_, " classes and topk ", ks_str(other.topk_),
             ", this has ", num_classes_, " classes and topk ", ks_str(topk_));
  if (&other == this) {  // merging with itself doubles every count
    load_counts([this] {
      std::vector<int64_t> c = counts();
      for (int64_t& v : c) v *= 2;
      return c;
    }());
    return;
  }
  fold();
  other.fold();
  count_ += other.count_;
  for (size_t i = 0; i < hits_.size(); ++i) hits_[i] += other.hits_[i];
  for (size_t i = 0; i < confusion_.size(); ++i) confusion_[i] += other.confusion_[i];
}

std::vector<int64_t> ClassificationMetrics::counts() const {
  fold();
  std::vector<int64_t> c;
  c.reserve(counts_size());
  c.push_back(count_);
  c.insert(c.end(), hits_.begin(), hits_.end());
  c.insert(c.end(), confusion_.begin(), confusion_.end());
  return c;
}

void ClassificationMetrics::load_counts(const std::vector<int64_t>& counts) {
  const char* op = "ClassificationMetrics::load_counts";
  const size_t K = topk_.size();
  VOLT_CHECK(counts.size() == counts_size(), op, ": got ", counts.size(), " counts, expected ", counts_size(),
             " (1 + ", K, " top-k + ", num_classes_, "x", num_classes_, " confusion)");
  for (size_t i = 0; i < counts.size(); ++i)
    VOLT_CHECK(counts[i] >= 0, op, ": counts[", i, "] = ", counts[i], " is negative");
  int64_t confusion_sum = 0;
  for (size_t i = 1 + K; i < counts.size(); ++i) confusion_sum += counts[i];
  VOLT_CHECK(confusion_sum == counts[0], op, ": count = ", counts[0], " but the confusion matrix sums to ",
             confusion_sum);
  for (size_t i = 0; i < K; ++i)
    VOLT_CHECK(counts[1 + i] <= counts[0], op, ": top-", topk_[i], " hits = ", counts[1 + i], " exceed count = ",
               counts[0]);
  if (device_.defined()) device_.zero_();
  count_ = counts[0];
  std::copy(counts.begin() + 1, counts.begin() + 1 + std::ptrdiff_t(K), hits_.begin());
  std::copy(counts.begin() + 1 + std::ptrdiff_t(K), counts.end(), confusion_.begin());
}

Tensor ClassificationMetrics::confusion_image(int64_t cell_px) const {
  return volt::confusion_image(compute().confusion, cell_px);
}

// ---- the image ----

void confusion_colour(double v, uint8_t rgb[3]) {
  // Five anchors of matplotlib's viridis; luma rises monotonically from the first to the last.
  static const double anchors[5][3] = {
      {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  if (!(v > 0)) v = 0;  // NaN too
  if (v > 1) v = 1;
  const double pos = v * 4.0;
  const int lo = std::min(3, int(pos));
  const double f = pos - lo;
  for (int ch = 0; ch < 3; ++ch)
    rgb[ch] = uint8_t(std::lround(anchors[lo][ch] + f * (anchors[lo + 1][ch] - anchors[lo][ch])));
}

Tensor confusion_image(const Tensor& confusion, int64_t cell_px) {
  const char* op = "confusion_image";
  VOLT_CHECK(confusion.defined(), op, ": confusion is undefined");
  VOLT_CHECK(confusion.dtype() == DType::I64, op, ": confusion must be int64, got ",
             dtype_name(confusion.dtype()), " (shape ", shape_str(confusion.shape()), ")");
  VOLT_CHECK(confusion.dim() == 2 && confusion.size(0) == confusion.size(1) && confusion.size(0) >= 1, op,
             ": confusion must be a non-empty square [C, C], got ", shape_str(confusion.shape()));
  const int64_t C = confusion.size(0);
  VOLT_CHECK(cell_px >= 1 && C * cell_px <= 8192, op, ": cell_px = ", cell_px, " with ", C,
             " classes gives a side of ", C * cell_px, " px; need cell_px >= 1 and a side <= 8192");
  const Tensor host = confusion.device().is_cpu() ? confusion : confusion.to(Device::cpu());
  const int64_t* m = host.data<int64_t>();
  const int64_t side = C * cell_px;
  Tensor img = Tensor::empty({side, side, 3}, DType::U8);
  uint8_t* px = img.data<uint8_t>();
  for (int64_t r = 0; r < C; ++r) {
    int64_t row_sum = 0;
    for (int64_t c = 0; c < C; ++c) {
      VOLT_CHECK(m[r * C + c] >= 0, op, ": confusion[", r, ", ", c, "] = ", m[r * C + c], " is negative");
      row_sum += m[r * C + c];
    }
    for (int64_t c = 0; c < C; ++c) {
      uint8_t rgb[3];
      confusion_colour(row_sum > 0 ? double(m[r * C + c]) / double(row_sum) : 0.0, rgb);
      for (int64_t y = r * cell_px; y < (r + 1) * cell_px; ++y)
        for (int64_t x = c * cell_px; x < (c + 1) * cell_px; ++x)
          std::copy(rgb, rgb + 3, px + (y * side + x) * 3);
    }
  }
  return img;
}

}  // namespace volt
