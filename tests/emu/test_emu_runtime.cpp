// The CUDA emulator itself (kernels/cuda/emu/): thread and block indices in 3-D, __syncthreads and
// the warp shuffles with CUDA's rules, dynamic shared memory, the half/bfloat16 conversions against
// Volt's own, and the errors a GPU would give (bad launch configuration) or leave undefined
// (a barrier some threads never reach, a shuffle from a lane that does not exist).
#include <set>

#include "engine/dtype.h"
#include "engine/error.h"
#include "kernels/cuda/launch.cuh"
#include "tests/emu/emu_util.h"

using namespace volt;
using namespace volt::emu_test;
using volt::cuda::detail::launch;

namespace {

__global__ void record_indices(int* out) {
  const int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int threads = blockDim.x * blockDim.y * blockDim.z;
  const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  out[block * threads + t] = block * 1000 + t;
}

// Reverses each block's values through shared memory: needs the barrier between write and read.
__global__ void reverse_in_block(const float* in, float* out) {
  __shared__ float tile[256];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  tile[threadIdx.x] = in[i];
  __syncthreads();
  out[i] = tile[blockDim.x - 1 - threadIdx.x];
}

__global__ void shuffles(int* down, int* up, int* xr, int* bcast, int* seg) {
  const int l = threadIdx.x;
  down[l] = __shfl_down_sync(0xffffffffu, l * 10, 3);
  up[l] = __shfl_up_sync(0xffffffffu, l * 10, 2);
  xr[l] = __shfl_xor_sync(0xffffffffu, l * 10, 5);
  bcast[l] = __shfl_sync(0xffffffffu, l * 10, 7);
  seg[l] = __shfl_down_sync(0xffffffffu, l * 10, 1, 8);  // segments of 8 lanes
}

__global__ void ballot(unsigned* out) { out[threadIdx.x] = __ballot_sync(0xffffffffu, threadIdx.x % 3 == 0); }

__global__ void dynamic_shared(float* out) {
  VOLT_DYNAMIC_SMEM(float, buf);
  buf[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = buf[(threadIdx.x + 1) % blockDim.x];
}

__global__ void divergent_barrier(int* out) {
  if (threadIdx.x < 16) __syncthreads();  // undefined on a GPU: the other threads never arrive
  out[threadIdx.x] = 1;
}

__global__ void crossed_barriers(int* out) {
  if (threadIdx.x < 48)
    __syncthreads();  // waits for lanes 48..63, which wait at a warp barrier for lanes 32..47
  else
    __syncwarp();
  out[threadIdx.x] = 1;
}

__global__ void shuffle_past_block(int* out) { out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1, 4); }

__global__ void block_sum_kernel(const double* in, double* out) {
  const double s = volt::cuda::detail::block_sum(in[threadIdx.x]);
  if (threadIdx.x == 0) out[0] = s;
}

// c = a * b + c0 with the warp matrix operations; a and b in either memory layout (ld 24 halves).
template <class LA, class LB>
__global__ void wmma_product(const __half* a, const __half* b, const float* c0, float* c, int lda) {
  nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, LA> fa;
  nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __half, LB> fb;
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc;
  nvcuda::wmma::load_matrix_sync(fa, a, unsigned(lda));
  nvcuda::wmma::load_matrix_sync(fb, b, 24);
  nvcuda::wmma::load_matrix_sync(acc, c0, 16, nvcuda::wmma::mem_row_major);
  nvcuda::wmma::mma_sync(acc, fa, fb, acc);
  nvcuda::wmma::store_matrix_sync(c, acc, 16, nvcuda::wmma::mem_col_major);
}

// Only the first 16 lanes take part: undefined on the GPU.
__global__ void wmma_half_warp(float* c) {
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc;
  if (threadIdx.x < 16) {
    nvcuda::wmma::fill_fragment(acc, 1.f);
    nvcuda::wmma::store_matrix_sync(c, acc, 16, nvcuda::wmma::mem_row_major);
  }
}

}  // namespace

TEST_CASE("emu runtime: every thread of a 3-D grid of 3-D blocks runs once with its own indices") {
  const dim3 grid(3, 2, 2), block(5, 3, 2);
  const int n = 12 * 30;
  Guarded<int> out{size_t(n), -1};
  launch(record_indices, grid, block, 0, nullptr, out.data());
  std::set<int> seen(out.data(), out.data() + n);
  CHECK(seen.size() == size_t(n));
  CHECK(out[n - 1] == 11 * 1000 + 29);
  CHECK(out.guards_intact());
}

TEST_CASE("emu runtime: __syncthreads orders shared-memory writes before reads") {
  const auto in = random_floats(512, 1);
  Guarded<float> gi(in), go(512);
  launch(reverse_in_block, 2, 256, 0, nullptr, gi.data(), go.data());
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 256; ++t) REQUIRE(go[size_t(b * 256 + t)] == in[size_t(b * 256 + 255 - t)]);
}

TEST_CASE("emu runtime: warp shuffles follow CUDA's rules (own value past the segment end)") {
  Guarded<int> down{32}, up{32}, xr{32}, bc{32}, seg{32};
  launch(shuffles, 1, 32, 0, nullptr, down.data(), up.data(), xr.data(), bc.data(), seg.data());
  for (int l = 0; l < 32; ++l) {
    INFO("lane " << l);
    CHECK(down[size_t(l)] == (l + 3 < 32 ? (l + 3) * 10 : l * 10));
    CHECK(up[size_t(l)] == (l >= 2 ? (l - 2) * 10 : l * 10));
    CHECK(xr[size_t(l)] == (l ^ 5) * 10);
    CHECK(bc[size_t(l)] == 70);
    CHECK(seg[size_t(l)] == (l % 8 + 1 < 8 ? (l + 1) * 10 : l * 10));
  }
  Guarded<unsigned> b{64};
  launch(ballot, 1, 64, 0, nullptr, b.data());
  unsigned want = 0;
  for (int l = 0; l < 32; ++l)
    if (l % 3 == 0) want |= 1u << l;
  CHECK(b[0] == want);
  unsigned want2 = 0;  // lanes 32..63: thread 32 + l
  for (int l = 0; l < 32; ++l)
    if ((32 + l) % 3 == 0) want2 |= 1u << l;
  CHECK(b[40] == want2);
}

TEST_CASE("emu runtime: block_sum over 1024 threads and dynamic shared memory") {
  std::vector<double> v(1024);
  double want = 0;
  for (size_t i = 0; i < v.size(); ++i) want += (v[i] = double(i) * 0.5 - 100);
  Guarded<double> gi(v), go{1};
  launch(block_sum_kernel, 1, 1024, 0, nullptr, gi.data(), go.data());
  CHECK(go[0] == want);
  Guarded<float> out{96};
  launch(dynamic_shared, 1, 96, 96 * sizeof(float), nullptr, out.data());
  for (int t = 0; t < 96; ++t) REQUIRE(out[size_t(t)] == float((t + 1) % 96));
}

TEST_CASE("emu runtime: bad configurations and undefined behaviour are errors, not silent results") {
  Guarded<int> out{64};
  CHECK_THROWS_WITH_AS(launch(record_indices, 0, 32, 0, nullptr, out.data()), doctest::Contains("invalid grid"),
                       Error);
  CHECK_THROWS_WITH_AS(launch(record_indices, 1, 2048, 0, nullptr, out.data()), doctest::Contains("invalid block"),
                       Error);
  CHECK_THROWS_WITH_AS(launch(dynamic_shared, 1, 32, 64 * 1024, nullptr, reinterpret_cast<float*>(out.data())),
                       doctest::Contains("shared memory"), Error);
  CHECK_THROWS_WITH_AS(launch(divergent_barrier, 1, 64, 0, nullptr, out.data()), doctest::Contains("have exited"),
                       Error);
  CHECK_THROWS_WITH_AS(launch(crossed_barriers, 1, 64, 0, nullptr, out.data()), doctest::Contains("deadlock"), Error);
  CHECK_THROWS_WITH_AS(launch(shuffle_past_block, 1, 20, 0, nullptr, out.data()), doctest::Contains("reads lane"),
                       Error);
  // The emulator is usable again after an error.
  launch(record_indices, 1, 32, 0, nullptr, out.data());
  CHECK(out[31] == 31);
}

TEST_CASE("emu runtime: the half and bfloat16 intrinsics convert as Volt does, for every half and many floats") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = __half2float(__ushort_as_half(uint16_t(h)));
    const float want = half_to_float(uint16_t(h));
    REQUIRE((std::isnan(want) ? std::isnan(f) : f == want));
    const float b = __bfloat162float(__ushort_as_bfloat16(uint16_t(h)));
    const float bwant = bf16_to_float(uint16_t(h));
    REQUIRE((std::isnan(bwant) ? std::isnan(b) : b == bwant));
  }
  auto fs = random_floats(100000, 2, -70000.f, 70000.f);
  const auto small = random_floats(100000, 3, -1e-4f, 1e-4f);
  fs.insert(fs.end(), small.begin(), small.end());
  for (float extra : {0.f, -0.f, 65504.f, 65519.f, 65520.f, 5.96046448e-8f, 2.98023224e-8f, 2.98023225e-8f,
                      6.10351562e-5f, INFINITY, -INFINITY})
    fs.push_back(extra);
  for (float f : fs) {
    INFO("f = " << f);
    REQUIRE(__half_as_ushort(__float2half_rn(f)) == float_to_half(f));
    REQUIRE(__bfloat16_as_ushort(__float2bfloat16_rn(f)) == float_to_bf16(f));
  }
}

TEST_CASE("emu runtime: warp matrix operations multiply 16x16 tiles in both layouts and check their pointers") {
  const auto av = random_floats(16 * 24, 11), bv = random_floats(16 * 24, 12), cv = random_floats(256, 13);
  Guarded<__half> a(16 * 24), b(16 * 24);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = __float2half_rn(av[i]);
    b[i] = __float2half_rn(bv[i]);
  }
  Guarded<float> c0(cv), c(256);
  const auto at = [&](const Guarded<__half>& m, bool row_major, int r, int k) {
    return __half2float(m[size_t(row_major ? r * 24 + k : k * 24 + r)]);
  };
  for (int layout = 0; layout < 4; ++layout) {
    const bool a_row = layout & 1, b_row = layout & 2;
    INFO("a " << (a_row ? "row" : "column") << "-major, b " << (b_row ? "row" : "column") << "-major");
    using nvcuda::wmma::col_major;
    using nvcuda::wmma::row_major;
    auto k = a_row ? (b_row ? wmma_product<row_major, row_major> : wmma_product<row_major, col_major>)
                   : (b_row ? wmma_product<col_major, row_major> : wmma_product<col_major, col_major>);
    launch(k, 1, 32, 0, nullptr, a.data(), b.data(), c0.data(), c.data(), 24);
    std::vector<float> want(256);
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 16; ++j) {
        double sum = cv[size_t(i * 16 + j)];
        for (int q = 0; q < 16; ++q) sum += double(at(a, a_row, i, q)) * at(b, !b_row, j, q);
        want[size_t(j * 16 + i)] = float(sum);  // stored column-major
      }
    check_near(c.vec(), want, 1e-5, 1e-5, "c");
  }
  CHECK(c.guards_intact());
  using K = void (*)(const __half*, const __half*, const float*, float*, int);
  const K k = wmma_product<nvcuda::wmma::row_major, nvcuda::wmma::col_major>;
  CHECK_THROWS_WITH_AS(launch(k, 1, 32, 0, nullptr, a.data() + 1, b.data(), c0.data(), c.data(), 24),
                       doctest::Contains("not 32-byte aligned"), Error);
  CHECK_THROWS_WITH_AS(launch(k, 1, 32, 0, nullptr, a.data(), b.data(), c0.data(), c.data(), 20),
                       doctest::Contains("not a multiple of 16"), Error);
  CHECK_THROWS_WITH_AS(launch(k, 1, 16, 0, nullptr, a.data(), b.data(), c0.data(), c.data(), 24),
                       doctest::Contains("fewer than 32 lanes"), Error);
  CHECK_THROWS_WITH_AS(launch(wmma_half_warp, 1, 32, 0, nullptr, c.data()), doctest::Contains("have exited"), Error);
}
