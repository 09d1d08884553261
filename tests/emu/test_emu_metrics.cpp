// The CUDA classification-count and accuracy kernels, run by the CPU emulator, against the CPU ones:
// the same integer counts with ties, NaN rows and targets out of range, in every storage type.
#include "kernels/metrics.h"
#include "kernels/reduce.h"
#include "tests/emu/emu_util.h"

using namespace volt;
using namespace volt::emu_test;

TEST_CASE("emu metrics: confusion matrix, top-k hits and bad targets equal the CPU's") {
  const int64_t N = 301, C = 7;
  auto labels = random_labels(size_t(N), C, 3);
  labels[5] = C;   // out of range
  labels[6] = -2;
  const TopK ks{{1, 3, 5}, 3};
  for (FType t : all_ftypes()) {
    INFO(std::string(ftype_name(t)));
    auto z = round_to(t, random_floats(size_t(N * C), 4, -3.f, 3.f));
    z[10] = z[11];         // a tie in row 1
    z[3 * C + 2] = NAN;    // a NaN in row 3 (ranks above every number)
    TypedBuf gz(t, z);
    Guarded<int64_t> gt(labels), conf1{size_t(C * C), 0}, hits1{3, 0}, bad1{1, 0};
    std::vector<int64_t> conf2(size_t(C * C)), hits2(3);
    int64_t bad2 = 0;
    cuda::classification_update(t, N, C, gz.data(), gt.data(), ks, conf1.data(), hits1.data(), bad1.data(), nullptr);
    cpu::classification_update(N, C, z.data(), labels.data(), ks, conf2.data(), hits2.data(), &bad2);
    CHECK(conf1.vec() == conf2);
    CHECK(hits1.vec() == hits2);
    CHECK(bad1[0] == 2);
    CHECK(bad2 == 2);
    int64_t total = 0;
    for (int64_t v : conf2) total += v;
    CHECK(total == N - 2);
    CHECK((conf1.guards_intact() && hits1.guards_intact() && bad1.guards_intact()));
  }
}

TEST_CASE("emu metrics: the batch accuracy fraction equals the CPU's") {
  for (int64_t N : {int64_t(1), int64_t(37), int64_t(3000)}) {
    const int64_t C = 10;
    const auto labels = random_labels(size_t(N), C, 5);
    for (FType t : all_ftypes()) {
      const auto z = round_to(t, random_floats(size_t(N * C), 6));
      TypedBuf gz(t, z);
      Guarded<int64_t> gt(labels);
      Guarded<float> out{1};
      Guarded<int64_t> bad{3, 0};
      float want = 0;
      cuda::accuracy_fraction(t, N, C, gz.data(), gt.data(), out.data(), bad.data(), nullptr);
      cpu::accuracy_fraction(N, C, z.data(), labels.data(), &want);
      CHECK(out[0] == want);
      CHECK(bad[0] == 0);
      CHECK((out.guards_intact() && bad.guards_intact()));
    }
  }
}

TEST_CASE("emu metrics: a batch-accuracy target out of range counts as wrong and is recorded for the host") {
  const int64_t N = 5, C = 3;
  // Rows whose top-1 class is 0, 1, 2, 0, 1; targets 0, 1, 7 (bad), -2 (bad), 1.
  const std::vector<float> z = {9, 0, 0, 0, 9, 0, 0, 0, 9, 9, 0, 0, 0, 9, 0};
  Guarded<float> gz(z), out{1};
  Guarded<int64_t> gt(std::vector<int64_t>{0, 1, 7, -2, 1}), bad{3, 0};
  cuda::accuracy_fraction(FType::F32, N, C, gz.data(), gt.data(), out.data(), bad.data(), nullptr);
  CHECK(out[0] == doctest::Approx(3.0 / 5.0));
  CHECK(bad[0] == 2);
  const BadTarget first = decode_bad_target(uint64_t(bad[1]));  // the lowest row, in any schedule
  CHECK(first.row == 2);
  CHECK(first.value == 7);
}
