// Classification metrics: top-k accuracy and its tie rule, the ClassificationMetrics accumulator
// (confusion matrix, per-class and macro accuracy, merge and flat counts), the confusion image, errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/error.h"
#include "engine/ops.h"
#include "layers/metrics.h"
#include "tests/test_util.h"

using namespace volt;

namespace {

using test::contains;
using test::error_of;

void check_message(const std::string& msg, std::initializer_list<const char*> parts) {
  for (const char* p : parts) {
    INFO("message: " << msg);
    CHECK_MESSAGE(contains(msg, p), "missing \"" << p << "\"");
  }
}
#define CHECK_ERROR(expr, ...) check_message(error_of([&] { (void)(expr); }), {__VA_ARGS__})

// Five rows, four classes, worked by hand. Rank of the target (0 = top-1), prediction:
//   row 0 target 1: rank 0, pred 1
//   row 1 target 2: 3.0 above it -> rank 1, pred 0
//   row 2 target 0: all three above -> rank 3, pred 3
//   row 3 target 1: 2.0 above, class 0 ties and has the lower index -> rank 2, pred 3
//   row 4 target 0: rank 0, pred 0
Tensor tiny_logits() {
  return Tensor::from_vector({5, 4}, {0.1f, 2.0f, 0.5f, -1.0f,  //
                                      3.0f, 1.0f, 2.0f, 0.0f,   //
                                      0.0f, 0.2f, 0.1f, 0.3f,   //
                                      1.0f, 1.0f, 0.5f, 2.0f,   //
                                      5.0f, -5.0f, 0.0f, 0.0f});
}
Tensor tiny_target() { return Tensor::from_labels({1, 2, 0, 1, 0}); }

// Random logits [N, C] and labels in [0, C) from fixed seeds.
Tensor random_labels(int64_t N, int64_t C, uint64_t seed) {
  const std::vector<float> u = test::rand_tensor({N}, seed, 0.f, float(C)).to_vector();
  std::vector<int64_t> labels;
  for (float v : u) labels.push_back(std::min<int64_t>(C - 1, int64_t(v)));
  return Tensor::from_labels(labels);
}

int luma(const uint8_t* p) { return 299 * p[0] + 587 * p[1] + 114 * p[2]; }

}  // namespace

TEST_CASE("topk_accuracy: hand-computed top-1 to top-4") {
  const Tensor x = tiny_logits(), t = tiny_target();
  CHECK(topk_accuracy(x, t, 1) == doctest::Approx(2.0 / 5));
  CHECK(topk_accuracy(x, t, 2) == doctest::Approx(3.0 / 5));
  CHECK(topk_accuracy(x, t, 3) == doctest::Approx(4.0 / 5));
  CHECK(topk_accuracy(x, t, 4) == doctest::Approx(1.0));
  // top-1 agrees with the engine's argmax-based accuracy.
  CHECK(topk_accuracy(x, t, 1) == doctest::Approx(accuracy(x, t)));
  // float16 logits give the same answer (these values are exact in half).
  CHECK(topk_accuracy(x.to(DType::F16), t, 3) == doctest::Approx(4.0 / 5));
}

TEST_CASE("topk_accuracy: ties go to the lower class index, NaN ranks first") {
  const Tensor flat = Tensor::from_vector({3, 3}, {1, 1, 1, 1, 1, 1, 1, 1, 1});
  const Tensor t = Tensor::from_labels({0, 1, 2});
  CHECK(topk_accuracy(flat, t, 1) == doctest::Approx(1.0 / 3));  // only class 0 wins a full tie
  CHECK(topk_accuracy(flat, t, 2) == doctest::Approx(2.0 / 3));
  CHECK(topk_accuracy(flat, t, 3) == doctest::Approx(1.0));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor x = Tensor::from_vector({2, 3}, {nan, 5, 1, 2, nan, nan});
  CHECK(topk_accuracy(x, Tensor::from_labels({0, 1}), 1) == doctest::Approx(1.0));  // NaN first; first NaN of two
  CHECK(topk_accuracy(x, Tensor::from_labels({1, 2}), 1) == doctest::Approx(0.0));
  CHECK(topk_accuracy(x, Tensor::from_labels({1, 2}), 2) == doctest::Approx(1.0));  // both rank 1
  CHECK(topk_accuracy(x, Tensor::from_labels({2, 0}), 2) == doctest::Approx(0.0));  // numbers rank below NaN
  CHECK(topk_accuracy(x, Tensor::from_labels({2, 0}), 3) == doctest::Approx(1.0));
}

TEST_CASE("ClassificationMetrics: confusion matrix, per-class and macro accuracy") {
  ClassificationMetrics m(4, {1, 3});
  m.update(tiny_logits(), tiny_target());
  const ClassificationResult r = m.compute();
  CHECK(r.count == 5);
  CHECK(r.accuracy == doctest::Approx(0.4));
  REQUIRE(r.topk.size() == 2);
  CHECK(r.topk.at(1) == doctest::Approx(0.4));
  CHECK(r.topk.at(3) == doctest::Approx(0.8));
  REQUIRE(r.confusion.shape() == Shape{4, 4});
  CHECK(r.confusion.dtype() == DType::I64);
  // (true, pred): (1,1) (2,0) (0,3) (1,3) (0,0)
  const std::vector<int64_t> want{1, 0, 0, 1,  //
                                  0, 1, 0, 1,  //
                                  1, 0, 0, 0,  //
                                  0, 0, 0, 0};
  CHECK(r.confusion.to_int_vector() == want);
  CHECK(r.class_count == std::vector<int64_t>{2, 2, 1, 0});
  REQUIRE(r.per_class_accuracy.size() == 4);
  CHECK(r.per_class_accuracy[0] == doctest::Approx(0.5));
  CHECK(r.per_class_accuracy[1] == doctest::Approx(0.5));
  CHECK(r.per_class_accuracy[2] == doctest::Approx(0.0));
  CHECK(r.per_class_accuracy[3] == 0.0);  // absent: 0 with class_count 0, not NaN
  CHECK(r.classes_present == 3);
  CHECK(r.macro_accuracy == doctest::Approx(1.0 / 3));  // the absent class is left out

  // A second update accumulates; reset clears.
  m.update(tiny_logits().narrow(4, 1), tiny_target().narrow(4, 1));
  CHECK(m.compute().count == 6);
  CHECK(m.compute().accuracy == doctest::Approx(3.0 / 6));
  m.reset();
  const ClassificationResult z = m.compute();
  CHECK(z.count == 0);
  CHECK(z.accuracy == 0.0);
  CHECK(z.topk.at(3) == 0.0);
  CHECK(z.macro_accuracy == 0.0);
  CHECK(z.classes_present == 0);
  CHECK(z.confusion.to_int_vector() == std::vector<int64_t>(16, 0));
  // An empty batch is a no-op.
  m.update(Tensor::empty({0, 4}), Tensor::from_labels({}));
  CHECK(m.count() == 0);
}

TEST_CASE("ClassificationMetrics: default topk and agreement with topk_accuracy") {
  CHECK(ClassificationMetrics(10).topk() == std::vector<int64_t>{1, 5});
  CHECK(ClassificationMetrics(4).topk() == std::vector<int64_t>{1});
  const int64_t N = 37, C = 7;
  const Tensor x = test::rand_tensor({N, C}, 11), t = random_labels(N, C, 12);
  ClassificationMetrics m(C, {5, 1, 2});
  m.update(x, t);
  const ClassificationResult r = m.compute();
  for (int64_t k : {1, 2, 5}) CHECK(r.topk.at(k) == doctest::Approx(topk_accuracy(x, t, k)));
  CHECK(r.accuracy == doctest::Approx(accuracy(x, t)));
  int64_t sum = 0;
  for (int64_t v : r.class_count) sum += v;
  CHECK(sum == N);
}

TEST_CASE("ClassificationMetrics: merge and summed counts equal one update on the concatenation") {
  const int64_t N = 29, C = 6;
  const Tensor x = test::rand_tensor({N, C}, 21), t = random_labels(N, C, 22);
  ClassificationMetrics whole(C, {1, 3}), a(C, {1, 3}), b(C, {1, 3});
  whole.update(x, t);
  a.update(x.narrow(0, 11), t.narrow(0, 11));
  b.update(x.narrow(11, 9), t.narrow(11, 9));
  b.update(x.narrow(20, 9), t.narrow(20, 9));

  // The all-reduce path: elementwise sum of the flat counts, loaded into a fresh accumulator.
  const std::vector<int64_t> ca = a.counts(), cb = b.counts();
  REQUIRE(ca.size() == a.counts_size());
  CHECK(ca.size() == size_t(1 + 2 + C * C));
  CHECK(ca[0] == 11);
  std::vector<int64_t> summed(ca.size());
  for (size_t i = 0; i < ca.size(); ++i) summed[i] = ca[i] + cb[i];
  ClassificationMetrics reduced(C, {1, 3});
  reduced.load_counts(summed);
  CHECK(reduced.counts() == whole.counts());

  a.merge(b);
  CHECK(a.counts() == whole.counts());
  const ClassificationResult ra = a.compute(), rw = whole.compute();
  CHECK(ra.accuracy == rw.accuracy);
  CHECK(ra.topk == rw.topk);
  CHECK(ra.per_class_accuracy == rw.per_class_accuracy);
  CHECK(ra.macro_accuracy == rw.macro_accuracy);

  // Merging with itself doubles the counts.
  ClassificationMetrics twice(C, {1, 3});
  twice.load_counts(whole.counts());
  twice.merge(twice);
  CHECK(twice.count() == 2 * N);
  CHECK(twice.compute().accuracy == doctest::Approx(rw.accuracy));
}

TEST_CASE("confusion_image: size, colour map and a perfect classifier's bright diagonal") {
  const int64_t C = 3, cell = 16;
  // Perfect: class c's logits peak at c.
  const Tensor x = Tensor::from_vector({5, 3}, {3, 0, 1, 0, 2, 1, 1, 0, 4, 5, 1, 2, 0, 7, 1});
  const Tensor t = Tensor::from_labels({0, 1, 2, 0, 1});
  ClassificationMetrics m(C, {1});
  m.update(x, t);
  CHECK(m.compute().accuracy == 1.0);
  const Tensor img = m.confusion_image(cell);
  REQUIRE(img.shape() == Shape{C * cell, C * cell, 3});
  REQUIRE(img.dtype() == DType::U8);
  const uint8_t* px = img.data<uint8_t>();
  uint8_t bright[3], dark[3];
  confusion_colour(1.0, bright);
  confusion_colour(0.0, dark);
  CHECK(luma(bright) > luma(dark));
  const int64_t side = C * cell;
  int max_luma = 0;
  for (int64_t i = 0; i < side * side; ++i) max_luma = std::max(max_luma, luma(px + 3 * i));
  for (int64_t y = 0; y < side; ++y)
    for (int64_t xx = 0; xx < side; ++xx) {
      const uint8_t* p = px + (y * side + xx) * 3;
      const uint8_t* want = (y / cell == xx / cell) ? bright : dark;
      if (p[0] != want[0] || p[1] != want[1] || p[2] != want[2]) {
        FAIL_CHECK("pixel (" << y << ", " << xx << ") is (" << int(p[0]) << ", " << int(p[1]) << ", " << int(p[2])
                             << ")");
        return;
      }
    }
  CHECK(luma(px) == max_luma);  // (0, 0) is on the diagonal: the brightest colour in the image

  // Row-normalised: a row split 1:3 gets 0.25 and 0.75; an empty row stays dark; the colour map's
  // brightness rises with the value.
  const Tensor conf = Tensor::from_vector({2, 2}, {1, 3, 0, 0}).to(DType::I64);
  const Tensor small = confusion_image(conf, 1);
  REQUIRE(small.shape() == Shape{2, 2, 3});
  const uint8_t* s = small.data<uint8_t>();
  uint8_t q1[3], q3[3];
  confusion_colour(0.25, q1);
  confusion_colour(0.75, q3);
  CHECK(std::vector<uint8_t>(s, s + 3) == std::vector<uint8_t>(q1, q1 + 3));
  CHECK(std::vector<uint8_t>(s + 3, s + 6) == std::vector<uint8_t>(q3, q3 + 3));
  CHECK(std::vector<uint8_t>(s + 6, s + 12) == std::vector<uint8_t>{dark[0], dark[1], dark[2], dark[0], dark[1], dark[2]});
  int last = -1;
  for (int i = 0; i <= 20; ++i) {
    uint8_t c[3];
    confusion_colour(i / 20.0, c);
    CHECK(luma(c) > last);
    last = luma(c);
  }
}

TEST_CASE("metrics errors name the function and the shapes or values") {
  const Tensor x = tiny_logits(), t = tiny_target();
  CHECK_ERROR(topk_accuracy(x, t, 0), "topk_accuracy", "k = 0", "[1, 4]", "[5, 4]");
  CHECK_ERROR(topk_accuracy(x, t, 5), "topk_accuracy", "k = 5", "[5, 4]");
  CHECK_ERROR(topk_accuracy(x, Tensor::from_labels({1, 2, 0, 4, 0}), 1), "topk_accuracy", "target[3] = 4",
              "[0, 4)");
  CHECK_ERROR(topk_accuracy(x, Tensor::from_labels({1, -1, 0, 1, 0}), 1), "topk_accuracy", "target[1] = -1");
  CHECK_ERROR(topk_accuracy(x, Tensor::from_labels({1, 2}), 1), "topk_accuracy", "[2]", "[5, 4]", "expected [5]");
  CHECK_ERROR(topk_accuracy(x, Tensor::zeros({5}), 1), "topk_accuracy", "int64", "float32");
  CHECK_ERROR(topk_accuracy(x, Tensor::zeros({5, 1}, DType::I64), 1), "topk_accuracy", "[5, 1]");
  CHECK_ERROR(topk_accuracy(Tensor::zeros({5, 4}, DType::I64), t, 1), "topk_accuracy", "logits", "int64");
  CHECK_ERROR(topk_accuracy(Tensor::ones({5, 4, 1}), t, 1), "topk_accuracy", "[N, C]", "[5, 4, 1]");
  CHECK_ERROR(topk_accuracy(Tensor::ones({20}), t, 1), "topk_accuracy", "[20]");
  CHECK_ERROR(topk_accuracy(Tensor::empty({0, 4}), Tensor::from_labels({}), 1), "topk_accuracy", "empty",
              "[0, 4]");
  CHECK_ERROR(topk_accuracy(Tensor(), t, 1), "topk_accuracy", "logits", "undefined");

  CHECK_ERROR(ClassificationMetrics(0), "ClassificationMetrics", "num_classes", "0");
  CHECK_ERROR(ClassificationMetrics(4, {1, 5}), "ClassificationMetrics", "k = 5", "[1, 4]");
  CHECK_ERROR(ClassificationMetrics(4, {0}), "ClassificationMetrics", "k = 0");
  CHECK_ERROR(ClassificationMetrics(4, {1, 2, 1}), "ClassificationMetrics", "repeated", "{1, 2, 1}");
#if !defined(__SANITIZE_ADDRESS__)  // (AddressSanitizer aborts on an 8 TiB request instead of failing it)
  // 2^20 classes pass the size check; their 8 TiB confusion matrix is a volt::Error, not std::bad_alloc.
  CHECK_ERROR(ClassificationMetrics(int64_t(1) << 20), "ClassificationMetrics", "1048576 x 1048576", "8192 GiB");
#endif

  ClassificationMetrics m(4, {1, 2});
  m.update(x, t);
  const std::vector<int64_t> before = m.counts();
  CHECK_ERROR(m.update(Tensor::ones({5, 3}), t), "ClassificationMetrics::update", "[5, 3]", "3 classes", "4");
  CHECK_ERROR(m.update(x, Tensor::from_labels({0, 1, 2, 3, 9})), "ClassificationMetrics::update", "target[4] = 9");
  CHECK_ERROR(m.update(x, Tensor::from_labels({0, 1})), "ClassificationMetrics::update", "[2]", "[5, 4]");
  CHECK(m.counts() == before);  // a rejected batch counts nothing

  CHECK_ERROR(m.merge(ClassificationMetrics(5, {1, 2})), "ClassificationMetrics::merge", "5 classes", "4 classes");
  CHECK_ERROR(m.merge(ClassificationMetrics(4, {1})), "ClassificationMetrics::merge", "topk {1}", "topk {1, 2}");
  CHECK_ERROR(m.load_counts({1, 2, 3}), "load_counts", "got 3 counts", "expected 19");
  std::vector<int64_t> bad = before;
  bad[5] = -1;
  CHECK_ERROR(m.load_counts(bad), "load_counts", "counts[5] = -1", "negative");
  bad = before;
  bad[0] += 1;
  CHECK_ERROR(m.load_counts(bad), "load_counts", "count = 6", "sums to 5");
  bad = before;
  bad[2] = 7;
  bad[0] = 5;
  CHECK_ERROR(m.load_counts(bad), "load_counts", "top-2 hits = 7", "count = 5");
  CHECK(m.counts() == before);

  CHECK_ERROR(m.confusion_image(0), "confusion_image", "cell_px = 0");
  CHECK_ERROR(m.confusion_image(4096), "confusion_image", "cell_px = 4096", "4 classes");
  CHECK_ERROR(confusion_image(Tensor::zeros({2, 3}, DType::I64)), "confusion_image", "[2, 3]");
  CHECK_ERROR(confusion_image(Tensor::zeros({2, 2})), "confusion_image", "int64", "float32");
  CHECK_ERROR(confusion_image(Tensor::from_vector({2, 2}, {1, -1, 0, 0}).to(DType::I64)), "confusion_image",
              "confusion[0, 1] = -1");
}
