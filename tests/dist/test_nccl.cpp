// The NCCL communicator on device buffers: alone (world size 1 on one GPU) and under `mpirun -n N`
// (one GPU per rank; $VOLT_TEST_WORLD_SIZE says how many ranks to expect). Every rank runs every
// case in the same order; results are copied back to the host and checked against values computed
// there, and the reductions are checked bitwise identical on every rank; host buffers (over MPI)
// and the queued collectives too. Skips (exit 77) when the build has no NCCL communicator, no GPU is
// visible, or this node has fewer GPUs than ranks (NCCL refuses two ranks on one GPU). Labelled `gpu`.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/process_env.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/gpu.h"
#include "engine/ops.h"
#include "tests/test_util.h"

using namespace volt;

namespace {

Communicator& comm() {
  static std::unique_ptr<Communicator> c = [] {
    if (!nccl_available()) test::skip("this build has no NCCL communicator (it needs the CUDA backend, NCCL and MPI)");
    test::require_gpu();
    const int gpus = cuda_device_count();
    const ProcessEnv env = detect_process_env();
    if (env.local_size > gpus)
      test::skip(std::to_string(env.local_size) + " ranks on this node but " + std::to_string(gpus) +
                 " GPU(s) visible: NCCL needs one GPU per rank (two ranks cannot share a GPU)");
    CommOptions opts;
    opts.timeout_s = 60;  // $VOLT_COMM_TIMEOUT overrides
    return make_nccl_communicator(env, opts);
  }();
  return *c;
}

Device gpu() { return Device::cuda(process_gpu(detect_process_env(), cuda_device_count())); }

// A device buffer of `bytes` (a U8 tensor keeps it alive) with host copies in and out.
struct DeviceBuffer {
  Tensor t;
  explicit DeviceBuffer(size_t bytes) : t(Tensor::empty({int64_t(std::max<size_t>(bytes, 1))}, DType::U8, gpu())) {}
  void* ptr() const { return t.raw_data(); }
  template <class T>
  T* as() const { return static_cast<T*>(t.raw_data()); }
  template <class T>
  void upload(const std::vector<T>& v) const {
    backend_for(t.device()).copy_from_host(ptr(), v.data(), v.size() * sizeof(T), t.device().index);
  }
  template <class T>
  std::vector<T> download(size_t count) const {
    std::vector<T> v(count);
    backend_for(t.device()).copy_to_host(v.data(), ptr(), count * sizeof(T), t.device().index);
    return v;
  }
};

double value(int rank, size_t i) { return std::sin(0.7 * double(i) + 1.3 * rank) * (1.0 + rank); }
int64_t ivalue(int rank, size_t i) { return int64_t((i * 7919 + size_t(rank) * 104729) % 1000003) - 500001; }

// Every rank's copy of `bytes` host bytes is the same as rank 0's (gathered on the device).
bool identical_on_all_ranks(const void* data, size_t bytes) {
  const int R = comm().size();
  DeviceBuffer send(bytes), recv(bytes * size_t(R));
  send.upload(std::vector<char>(static_cast<const char*>(data), static_cast<const char*>(data) + bytes));
  comm().all_gather(send.ptr(), recv.ptr(), bytes);
  const std::vector<char> all = recv.download<char>(bytes * size_t(R));
  for (int r = 1; r < R; ++r)
    if (std::memcmp(all.data(), all.data() + size_t(r) * bytes, bytes) != 0) return false;
  return true;
}

template <class T>
std::vector<T> reduced(const std::vector<T>& mine, ReduceOp op) {
  DeviceBuffer buf(mine.size() * sizeof(T));
  buf.upload(mine);
  comm().all_reduce(buf.as<T>(), mine.size(), op);
  return buf.download<T>(mine.size());
}

// sum / max over ranks of fn(rank, i), in double; the float sums differ from it by rounding only.
template <class T, class F>
std::vector<double> expected(size_t n, ReduceOp op, F fn) {
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    double s = 0, m = -1e300;
    for (int r = 0; r < comm().size(); ++r) {
      const double v = double(T(fn(r, i)));
      s += v;
      m = std::max(m, v);
    }
    out[i] = op == ReduceOp::Max ? m : s;
  }
  return out;
}

template <class T>
void check_float_all_reduce(size_t n) {
  const int R = comm().size(), me = comm().rank();
  std::vector<T> mine(n);
  for (size_t i = 0; i < n; ++i) mine[i] = T(value(me, i));
  const std::vector<T> sum = reduced(mine, ReduceOp::Sum);
  const std::vector<T> avg = reduced(mine, ReduceOp::Avg);
  const std::vector<T> mx = reduced(mine, ReduceOp::Max);
  const std::vector<double> want_sum = expected<T>(n, ReduceOp::Sum, value);
  const std::vector<double> want_max = expected<T>(n, ReduceOp::Max, value);
  const double eps = sizeof(T) == 4 ? 1e-6 : 1e-14;
  const T inv = T(1.0 / R);
  size_t bad_sum = 0, bad_avg = 0, bad_max = 0, worst = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::fabs(double(sum[i]) - want_sum[i]) > eps * R * (1.0 + R)) bad_sum++, worst = i;
    // The average is the sum times 1/size, rounded once: exactly what the host computes from the sum.
    const T a = R == 1 ? sum[i] : T(sum[i] * inv);
    if (std::memcmp(&a, &avg[i], sizeof(T)) != 0) bad_avg++, worst = i;
    if (double(mx[i]) != want_max[i]) bad_max++, worst = i;
  }
  INFO("count " << n << ", rank " << me << " of " << R << ", last bad element " << worst << ": sum " << sum[worst]
                << " (want " << want_sum[worst] << "), avg " << avg[worst] << ", max " << mx[worst] << " (want "
                << want_max[worst] << ")");
  CHECK(bad_sum == 0);
  CHECK(bad_avg == 0);
  CHECK(bad_max == 0);
  if (R == 1) CHECK(std::memcmp(sum.data(), mine.data(), n * sizeof(T)) == 0);  // world size 1: untouched
  CHECK(identical_on_all_ranks(sum.data(), n * sizeof(T)));
  CHECK(identical_on_all_ranks(avg.data(), n * sizeof(T)));
}

}  // namespace

TEST_CASE("nccl: world size, backend and device buffers") {
  const char* want = std::getenv("VOLT_TEST_WORLD_SIZE");
  INFO("rank " << comm().rank() << " of " << comm().size());
  if (want) CHECK(comm().size() == std::atoi(want));
  CHECK(std::string(comm().backend()) == "nccl");
  CHECK(comm().device_buffers());
  const ProcessEnv env = detect_process_env();
  CHECK(env.world_size == comm().size());
  CHECK(env.rank == comm().rank());
}

TEST_CASE("nccl: all_reduce sum, avg and max on float32 and float64, odd sizes") {
  for (size_t n : {size_t(1), size_t(7), size_t(1001), size_t(65537), size_t(1) << 20 | 3}) {
    check_float_all_reduce<float>(n);
    check_float_all_reduce<double>(n);
  }
}

TEST_CASE("nccl: all_reduce on int64 is exact; avg rounds toward zero") {
  const int R = comm().size(), me = comm().rank();
  for (size_t n : {size_t(1), size_t(13), size_t(4099)}) {
    INFO("count " << n);
    std::vector<int64_t> mine(n);
    for (size_t i = 0; i < n; ++i) mine[i] = ivalue(me, i);
    const std::vector<int64_t> sum = reduced(mine, ReduceOp::Sum), avg = reduced(mine, ReduceOp::Avg),
                               mx = reduced(mine, ReduceOp::Max);
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
      int64_t s = 0, m = INT64_MIN;
      for (int r = 0; r < R; ++r) s += ivalue(r, i), m = std::max(m, ivalue(r, i));
      bad += (sum[i] != s) + (avg[i] != s / R) + (mx[i] != m);
    }
    CHECK(bad == 0);
  }
}

TEST_CASE("nccl: broadcast from every root, odd byte counts") {
  const int R = comm().size(), me = comm().rank();
  for (size_t bytes : {size_t(1), size_t(1001), size_t(3) << 20 | 5}) {
    for (int root = 0; root < R; ++root) {
      INFO("bytes " << bytes << ", root " << root);
      auto pattern = [&](int r) {
        std::vector<unsigned char> v(bytes);
        for (size_t i = 0; i < bytes; ++i) v[i] = (unsigned char)((i * 31 + size_t(r) * 17 + 5) & 0xff);
        return v;
      };
      DeviceBuffer buf(bytes);
      buf.upload(pattern(me));
      comm().broadcast(buf.ptr(), bytes, root);
      CHECK(buf.download<unsigned char>(bytes) == pattern(root));
    }
  }
  CHECK_THROWS_AS(comm().broadcast(DeviceBuffer(4).ptr(), 4, R), Error);  // not a rank
}

TEST_CASE("nccl: all_gather in rank order, separate and in place") {
  const int R = comm().size(), me = comm().rank();
  for (size_t bytes : {size_t(1), size_t(53), size_t(1) << 16 | 1}) {
    INFO("bytes per rank " << bytes);
    auto pattern = [&](int r) {
      std::vector<unsigned char> v(bytes);
      for (size_t i = 0; i < bytes; ++i) v[i] = (unsigned char)((i * 7 + size_t(r) * 101 + 3) & 0xff);
      return v;
    };
    std::vector<unsigned char> want;
    for (int r = 0; r < R; ++r) {
      const auto p = pattern(r);
      want.insert(want.end(), p.begin(), p.end());
    }
    DeviceBuffer send(bytes), recv(bytes * size_t(R));
    send.upload(pattern(me));
    comm().all_gather(send.ptr(), recv.ptr(), bytes);
    CHECK(recv.download<unsigned char>(want.size()) == want);
    // In place: this rank's contribution already sits at its slot of the output.
    DeviceBuffer inplace(bytes * size_t(R));
    backend_for(gpu()).copy_from_host(inplace.as<char>() + bytes * size_t(me), pattern(me).data(), bytes, gpu().index);
    comm().all_gather(inplace.as<char>() + bytes * size_t(me), inplace.ptr(), bytes);
    CHECK(inplace.download<unsigned char>(want.size()) == want);
    // The send buffer at the start of the output: in place on rank 0, an overlap (copied first) elsewhere.
    DeviceBuffer overlap(bytes * size_t(R));
    overlap.upload(pattern(me));
    comm().all_gather(overlap.ptr(), overlap.ptr(), bytes);
    CHECK(overlap.download<unsigned char>(want.size()) == want);
  }
}

TEST_CASE("nccl: tensor conveniences on GPU tensors, ordered after Volt's stream") {
  const int R = comm().size(), me = comm().rank();
  std::vector<float> host(1003);
  for (size_t i = 0; i < host.size(); ++i) host[i] = float(value(me, i));
  // mul() is queued on Volt's stream of the device; the all-reduce must see its result.
  const Tensor x = mul(Tensor::from_vector({17, 59}, host, gpu()), 2.0f);
  comm().all_reduce(x, ReduceOp::Max);
  const std::vector<float> got = x.to_vector();
  size_t bad = 0;
  for (size_t i = 0; i < host.size(); ++i) {
    float m = -INFINITY;
    for (int r = 0; r < R; ++r) m = std::max(m, float(value(r, i)) * 2.0f);
    bad += got[i] != m;
  }
  CHECK(bad == 0);

  const Tensor g = comm().all_gather(Tensor::from_vector({3}, {float(me), float(me) + 0.5f, -1.f}, gpu()));
  CHECK(g.device() == gpu());
  REQUIRE(g.shape() == Shape{R, 3});
  const std::vector<float> gv = g.to_vector();
  for (int r = 0; r < R; ++r) CHECK(gv[size_t(r) * 3 + 1] == float(r) + 0.5f);

  const Tensor b = Tensor::from_vector({2}, {float(me) + 1, 7.f}, gpu());
  comm().broadcast(b, R - 1);
  CHECK(b.to_vector() == std::vector<float>{float(R), 7.f});

  CHECK(comm().all_reduce_value(double(me) + 1) == double(R) * (R + 1) / 2);
  CHECK(comm().all_reduce_value(double(me), ReduceOp::Max) == double(R - 1));
  comm().barrier();
}

TEST_CASE("nccl: host buffers and CPU tensors go over the host communicator (MPI)") {
  const int R = comm().size(), me = comm().rank();
  // A host vector (the metrics' sums, the pre-emption flag): reduced without the GPU.
  std::vector<double> sums(5);
  for (size_t i = 0; i < sums.size(); ++i) sums[i] = value(me, i);
  comm().all_reduce(sums.data(), sums.size(), ReduceOp::Sum);
  const std::vector<double> want = expected<double>(5, ReduceOp::Sum, value);
  for (size_t i = 0; i < sums.size(); ++i) CHECK(std::fabs(sums[i] - want[i]) <= 1e-12 * R * (1 + R));
  int64_t flag = me == R - 1 ? 1 : 0;
  comm().all_reduce(&flag, 1, ReduceOp::Max);
  CHECK(flag == 1);
  std::vector<float> big(70001, float(me + 1));
  comm().all_reduce(big.data(), big.size(), ReduceOp::Avg);
  CHECK(big.front() == float(R + 1) / 2);
  CHECK(big.back() == float(R + 1) / 2);
  // A CPU tensor, a host broadcast (the log folder's name) and a host all-gather.
  const Tensor t = Tensor::from_vector({2}, {1.f, float(me)});
  comm().all_reduce(t);
  CHECK(t.to_vector() == std::vector<float>{float(R), float(R * (R - 1) / 2)});
  std::string name = me == 0 ? "lightning_logs/version_7" : std::string(24, '?');
  comm().broadcast(name.data(), name.size(), 0);
  CHECK(name == "lightning_logs/version_7");
  std::vector<int32_t> mine{me, 10 * me}, all(size_t(2 * R));
  comm().all_gather(mine.data(), all.data(), sizeof(int32_t) * 2);
  for (int r = 0; r < R; ++r) CHECK(all[size_t(2 * r + 1)] == 10 * r);
  DeviceBuffer dev(sizeof(int32_t) * 2 * size_t(R));  // one side host, the other device: refused
  CHECK_THROWS_AS(comm().all_gather(mine.data(), dev.ptr(), sizeof(int32_t) * 2), Error);
  // Queued collectives run while the host goes on: no point to copy a host buffer back.
  CHECK_THROWS_AS(comm().all_reduce_queued(big.data(), big.size(), ReduceOp::Sum), Error);
  CHECK(comm().all_reduce_value(1.0) == double(R));  // still usable
}

TEST_CASE("nccl: queued all-reduces and broadcasts overlap Volt's stream and order what follows") {
  const int R = comm().size(), me = comm().rank();
  // Several buckets queued back to back, each after the kernel that produced it.
  std::vector<Tensor> buckets;
  std::vector<std::vector<float>> host;
  for (int b = 0; b < 4; ++b) {
    const size_t n = size_t(1) << (8 + 3 * b) | size_t(b);
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = float(value(me, i + size_t(b)));
    host.push_back(v);
    buckets.push_back(mul(Tensor::from_vector({int64_t(n)}, v, gpu()), 1.0f));  // a kernel on Volt's stream
    comm().all_reduce_queued(buckets.back().data<float>(), n, ReduceOp::Avg);
  }
  Tensor root = Tensor::from_vector({3}, {float(me), 2.f, 3.f}, gpu());
  comm().broadcast_queued(root.raw_data(), root.nbytes(), R - 1);
  comm().wait_queued();
  // Queued on Volt's stream after the wait: sees the averages.
  const Tensor doubled = mul(buckets[3], 2.0f);
  const float inv = float(1.0 / R);
  for (int b = 0; b < 4; ++b) {
    const std::vector<float> got = buckets[size_t(b)].to_vector();
    size_t bad = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      float s = 0;  // two ranks: one correctly rounded addition, as NCCL's
      for (int r = 0; r < R; ++r) s += float(value(r, i + size_t(b)));
      const float want = R == 1 ? host[size_t(b)][i] : s * inv;
      bad += R <= 2 ? got[i] != want : std::fabs(got[i] - want) > 1e-5f * (1 + std::fabs(want));
    }
    INFO("bucket " << b << " of " << got.size() << " elements");
    CHECK(bad == 0);
    CHECK(identical_on_all_ranks(got.data(), got.size() * sizeof(float)));
  }
  const std::vector<float> d = doubled.to_vector(), b3 = buckets[3].to_vector();
  for (size_t i = 0; i < d.size(); i += 97) CHECK(d[i] == 2 * b3[i]);
  CHECK(root.to_vector() == std::vector<float>{float(R - 1), 2.f, 3.f});
  comm().wait_queued();  // nothing in flight: a no-op

  // Several buffers (of other types and sizes, one empty) in one grouped broadcast from rank 0.
  Tensor f = Tensor::from_vector({5}, {float(me), 1.f, 2.f, 3.f, 4.f}, gpu());
  Tensor i = Tensor::from_labels({int64_t(me) + 7, 8}, gpu());
  Tensor empty = Tensor::zeros({0}, DType::F32, gpu());
  comm().broadcast_queued({{f.raw_data(), f.nbytes()}, {empty.raw_data(), 0}, {i.raw_data(), i.nbytes()}}, 0);
  comm().wait_queued();
  CHECK(f.to_vector() == std::vector<float>{0.f, 1.f, 2.f, 3.f, 4.f});
  CHECK(i.to_int_vector() == std::vector<int64_t>{7, 8});
}
