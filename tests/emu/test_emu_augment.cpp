// The CUDA fused gather + augmentation kernel, run by the CPU emulator, against its CPU twin: every
// option (crop padding up to larger than the image, flip, cutout, per-channel / one / no
// normalisation), odd image sizes and batch positions, keys past 2^40; float32 bit for bit, float16
// and bfloat16 equal to the float32 result rounded to nearest even; labels gathered; guard zones intact.
#include <numeric>
#include <tuple>

#include "engine/dtype.h"
#include "kernels/augment.h"
#include "tests/emu/emu_util.h"

using namespace volt;
using namespace volt::emu_test;

namespace {

struct Case {
  int64_t c, h, w, crop, cutout;
  bool flip;
  int64_t n_stats;  // 0: no normalisation, 1: one mean/std, else per channel
};

const std::vector<Case> kCases = {
    {3, 32, 32, 4, 8, true, 3},  // CIFAR with everything
    {1, 28, 28, 0, 0, false, 1},  // MNIST, normalise only
    {3, 5, 7, 2, 3, true, 0},     // odd, no normalisation
    {4, 9, 6, 9, 0, true, 4},     // crop padding larger than the image
    {2, 1, 1, 1, 1, true, 2},     // one pixel
    {1, 3, 40, 3, 2, false, 1},   // a row longer than a warp
};

struct Store {
  std::vector<uint8_t> images;
  std::vector<int64_t> labels, order;
  std::vector<float> lut;
};

Store make_store(const Case& c, AugmentSpec& s, int64_t n, int64_t positions, uint64_t seed) {
  s = AugmentSpec{};
  s.channels = c.c;
  s.height = c.h;
  s.width = c.w;
  s.crop_padding = c.crop;
  s.horizontal_flip = c.flip;
  s.cutout = c.cutout;
  s.seed = seed;
  Store st;
  std::mt19937_64 rng(seed);
  st.images.resize(size_t(n * c.c * c.h * c.w));
  for (uint8_t& v : st.images) v = uint8_t(rng());
  st.labels = random_labels(size_t(n), 10, seed + 1);
  for (int64_t p = 0; p < positions; ++p) st.order.push_back(int64_t(rng() % uint64_t(n)));  // repeats allowed
  const auto mean = random_floats(size_t(c.c), seed + 2, 0.1f, 0.9f), std = random_floats(size_t(c.c), seed + 3, 0.1f, 0.5f);
  st.lut.resize(size_t(c.c) * 256);
  cpu::augment_lut(c.c, c.n_stats, mean.data(), std.data(), st.lut.data());
  return st;
}

}  // namespace

TEST_CASE("emu augment: float32 batches equal the CPU twin bit for bit over every option and odd sizes") {
  for (const Case& c : kCases) {
    AugmentSpec s;
    const int64_t n = 13, positions = 29;
    const Store st = make_store(c, s, n, positions, 40 + uint64_t(c.c * 100 + c.h));
    const int64_t d = c.c * c.h * c.w;
    // (begin, count, key base, key stride): the first batch, an odd one in the middle, the tail, large keys.
    const std::vector<std::tuple<int64_t, int64_t, uint64_t, uint64_t>> batches = {
        {0, 8, 0, 1}, {8, 7, 3 * 27 + 1, 2}, {24, 5, (uint64_t(1) << 41) + 5, 3}};
    for (const auto& [begin, count, base, stride] : batches) {
      INFO("shape [" << c.c << ", " << c.h << ", " << c.w << "] crop " << c.crop << " cutout " << c.cutout
                     << " flip " << c.flip << " batch at " << begin);
      Guarded<uint8_t> images(st.images);
      Guarded<int64_t> labels(st.labels), order(st.order), got_labels{size_t(count)};
      Guarded<float> lut(st.lut), got{size_t(count * d)};
      cuda::augment_batch(s, lut.data(), images.data(), labels.data(), n, order.data(), begin, count, base, stride,
                          FType::F32, got.data(), got_labels.data(), nullptr);
      std::vector<float> want(size_t(count * d));
      std::vector<int64_t> want_labels(static_cast<size_t>(count));
      cpu::augment_batch(s, st.lut.data(), st.images.data(), st.labels.data(), st.order.data(), begin, count, base,
                         stride, want.data(), want_labels.data());
      check_bitwise(got.vec(), want, "images");
      CHECK(got_labels.vec() == want_labels);
      CHECK((got.guards_intact() && got_labels.guards_intact()));
    }
  }
}

TEST_CASE("emu augment: float16 and bfloat16 batches are the float32 batch rounded to nearest even") {
  for (const Case& c : {kCases[0], kCases[2], kCases[3]}) {
    AugmentSpec s;
    const Store st = make_store(c, s, 11, 11, 7);
    const int64_t count = 11, d = c.c * c.h * c.w;
    std::vector<float> want(size_t(count * d));
    std::vector<int64_t> want_labels(static_cast<size_t>(count));
    cpu::augment_batch(s, st.lut.data(), st.images.data(), st.labels.data(), st.order.data(), 0, count, 99, 1,
                       want.data(), want_labels.data());
    for (FType t : {FType::F16, FType::BF16}) {
      INFO(std::string(ftype_name(t)) << " shape [" << c.c << ", " << c.h << ", " << c.w << "]");
      Guarded<uint16_t> got{size_t(count * d)};
      Guarded<int64_t> got_labels{size_t(count)};
      cuda::augment_batch(s, st.lut.data(), st.images.data(), st.labels.data(), 11, st.order.data(), 0, count, 99, 1,
                          t, got.data(), got_labels.data(), nullptr);
      size_t bad = 0, first = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        const uint16_t r = t == FType::F16 ? float_to_half(want[i]) : float_to_bf16(want[i]);
        if (got[i] != r && bad++ == 0) first = i;
      }
      INFO("first difference at " << first << ": got bits " << got[first] << " for float32 " << want[first]);
      CHECK(bad == 0);
      CHECK(got_labels.vec() == want_labels);
      CHECK(got.guards_intact());
    }
  }
}

TEST_CASE("emu augment: the draws are the host transform's (crop, flip and cutout land where the CPU puts them)") {
  // A ramp image makes each draw visible: out(y, x) is the table's value of ramp(y + dy, (W-1-x) + dx)
  // (padding: of 0), or 0 inside the cutout.
  const Case c{1, 6, 9, 2, 2, true, 0};
  AugmentSpec s;
  Store st = make_store(c, s, 1, 1, 3);
  std::iota(st.images.begin(), st.images.end(), uint8_t(1));
  st.order = {0};
  for (uint64_t key : {uint64_t(0), uint64_t(1), uint64_t(12345), (uint64_t(7) << 40) + 3}) {
    const AugmentDraw dr = augment_draw(s, key);
    std::vector<float> got(54);
    int64_t label = -1;
    cuda::augment_batch(s, st.lut.data(), st.images.data(), st.labels.data(), 1, st.order.data(), 0, 1, key, 1,
                        FType::F32, got.data(), &label, nullptr);
    CHECK(label == st.labels[0]);
    for (int y = 0; y < 6; ++y)
      for (int x = 0; x < 9; ++x) {
        const int sy = y + dr.dy, sx = (dr.flip ? 8 - x : x) + dr.dx;
        const bool cut = y >= dr.cut_y0 && y < dr.cut_y1 && x >= dr.cut_x0 && x < dr.cut_x1;
        const bool inside = sy >= 0 && sy < 6 && sx >= 0 && sx < 9;
        const float want = cut ? 0.f : st.lut[inside ? st.images[size_t(sy * 9 + sx)] : 0];
        REQUIRE(got[size_t(y * 9 + x)] == want);
      }
    CHECK(dr.cut_y1 - dr.cut_y0 >= 1);  // cutout 2 always leaves at least one row inside the image
  }
}

TEST_CASE("emu augment: an order value outside the store reads nothing: a zero image labelled -1") {
  const Case c = kCases[0];
  AugmentSpec s;
  const int64_t n = 5;
  Store st = make_store(c, s, n, 4, 11);
  st.order = {2, n, -1, 0};  // two bad indices between good ones
  const int64_t d = c.c * c.h * c.w;
  Guarded<uint8_t> images(st.images);
  Guarded<int64_t> labels(st.labels), order(st.order), got_labels{4};
  Guarded<float> got{size_t(4 * d)};
  cuda::augment_batch(s, st.lut.data(), images.data(), labels.data(), n, order.data(), 0, 4, 7, 1, FType::F32,
                      got.data(), got_labels.data(), nullptr);
  CHECK(got_labels.vec() == std::vector<int64_t>{st.labels[2], -1, -1, st.labels[0]});
  for (int64_t k : {1, 2})
    for (int64_t i = 0; i < d; ++i) REQUIRE(got[size_t(k * d + i)] == 0.f);
  std::vector<float> want(static_cast<size_t>(d));
  int64_t want_label = 0;
  cpu::augment_batch(s, st.lut.data(), st.images.data(), st.labels.data(), st.order.data(), 3, 1, 7, 1, want.data(),
                     &want_label);
  const std::vector<float> all = got.vec();
  CHECK(std::vector<float>(all.begin() + 3 * d, all.end()) == want);
  CHECK((got.guards_intact() && got_labels.guards_intact() && images.guards_intact()));
}
