// CudaGraph and step_scalars (see cuda_graph.h). Eager step scalars live in a per-device ring of
// pinned host and device slots: each request is written on the host and copied to the device ahead
// of the kernels that read it; a ring segment is reused only after an event shows the work that read
// it has run. A captured graph has its own device slots, filled from two alternating pinned buffers
// before each replay.
#include "engine/cuda_graph.h"

#include <map>
#include <mutex>

#include "engine/error.h"
#include "engine/gpu.h"
#include "engine/tensor.h"
#include "volt/config.h"
#if VOLT_HAVE_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace volt {

namespace {

[[maybe_unused]] constexpr size_t kGraphScalars = 4096;  // values one captured step may use
constexpr size_t kRing = size_t(1) << 16;  // eager ring, in values
constexpr size_t kSegments = 8;

thread_local CudaGraph* g_capturing = nullptr;

#if VOLT_HAVE_CUDA
struct Ring {
  explicit Ring(Device d) : device(Device::cuda(d.index)) {
    host = static_cast<uint64_t*>(pinned_host_allocator().allocate(kRing * sizeof(uint64_t)));
    dev = Tensor::empty({int64_t(kRing)}, DType::I64, device);
    for (size_t s = 0; s < kSegments; ++s) used.push_back(std::make_unique<CudaEvent>(d.index));
    recorded.assign(kSegments, false);
  }
  Device device;
  uint64_t* host = nullptr;  // never freed: the ring lives as long as the process
  Tensor dev;
  std::vector<std::unique_ptr<CudaEvent>> used;  // recorded when the ring leaves a segment
  std::vector<bool> recorded;
  size_t pos = 0, seg = 0;
};

Ring& ring_of(Device d) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<Ring>>* rings = new std::map<int, std::unique_ptr<Ring>>();
  std::lock_guard<std::mutex> lock(mu);
  auto& r = (*rings)[d.index];
  if (!r) r = std::make_unique<Ring>(d);
  return *r;
}
#endif

}  // namespace

bool cuda_graph_capturing() { return g_capturing != nullptr; }

void cuda_graph_note_write(const std::shared_ptr<Storage>& s) {
  CudaGraph* g = g_capturing;
  if (!g) return;
  std::weak_ptr<Storage>& w = g->writes_[s.get()];
  if (w.expired()) w = s;  // new, or a freed storage's address reused by another
}

const void* step_scalars(Device d, size_t n, std::function<void(uint64_t*)> fill) {
  VOLT_CHECK(d.is_cuda(), "step_scalars: ", d.str(), " is not a CUDA device");
  VOLT_CHECK(n >= 1 && n <= kRing / kSegments, "step_scalars: ", n, " values in one request (at most ",
             kRing / kSegments, ")");
#if VOLT_HAVE_CUDA
  if (CudaGraph* g = g_capturing) {
    VOLT_CHECK(g->device_ == d, "step_scalars: a graph captures on ", g->device_.str(), " but the values are for ",
               d.str());
    VOLT_CHECK(g->used_ + n <= kGraphScalars, "step_scalars: a captured step may use at most ", kGraphScalars,
               " values");
    g->fills_.push_back({g->used_, n, std::move(fill)});
    const void* at = static_cast<const uint64_t*>(g->scalars_) + g->used_;
    g->used_ += n;
    return at;
  }
  Ring& r = ring_of(d);
  void* stream = cuda_stream(d);
  const size_t seg_size = kRing / kSegments;
  if (r.pos + n > kRing) r.pos = 0;
  if (r.pos / seg_size != (r.pos + n - 1) / seg_size) r.pos = (r.pos / seg_size + 1) * seg_size % kRing;
  const size_t seg = r.pos / seg_size;
  if (seg != r.seg) {
    r.used[r.seg]->record(stream);  // after every kernel that read the segment being left
    r.recorded[r.seg] = true;
    if (r.recorded[seg]) r.used[seg]->synchronize();
    r.seg = seg;
  }
  uint64_t* host = r.host + r.pos;
  fill(host);
  uint64_t* dev = reinterpret_cast<uint64_t*>(r.dev.data<int64_t>()) + r.pos;
  cuda::copy_h2d_async(dev, host, n * sizeof(uint64_t), stream);
  r.pos += n;
  return dev;
#else
  (void)fill;
  VOLT_FAIL("step_scalars: this build of Volt has no CUDA backend");
#endif
}

void replay_check(Device d, std::function<void()> check) {
  if (CudaGraph* g = g_capturing; g && g->device_ == d) g->checks_.push_back(std::move(check));
}

CudaGraph::CudaGraph(Device d) : device_(d) {
  VOLT_CHECK(d.is_cuda(), "CudaGraph: ", d.str(), " is not a CUDA device");
}

CudaGraph::~CudaGraph() {
#if VOLT_HAVE_CUDA
  try {
    if (exec_) {
      cuda_synchronize(device_.index);  // replays may still run
      cuda::graph_destroy(exec_);
    }
    cuda_caching_allocator(device_.index).release_pool(this);
    for (uint64_t*& s : staging_)
      if (s) pinned_host_allocator().deallocate(s, kGraphScalars * sizeof(uint64_t));
    if (scalars_) cuda_caching_allocator(device_.index).deallocate(scalars_, kGraphScalars * sizeof(uint64_t));
  } catch (...) {
    // A destructor does not throw; the process is likely tearing down the driver.
  }
#endif
}

void CudaGraph::capture(const std::function<void()>& fn) {
  VOLT_CHECK(!exec_, "CudaGraph::capture: already captured");
  VOLT_CHECK(!g_capturing, "CudaGraph::capture: another graph is being captured on this thread");
#if VOLT_HAVE_CUDA
  void* stream = cuda_stream(device_);
  CachingDeviceAllocator& alloc = cuda_caching_allocator(device_.index);
  if (!scalars_) {
    scalars_ = alloc.allocate(kGraphScalars * sizeof(uint64_t));
    for (int k = 0; k < 2; ++k) {
      staging_[k] = static_cast<uint64_t*>(pinned_host_allocator().allocate(kGraphScalars * sizeof(uint64_t)));
      staged_[k] = std::make_unique<CudaEvent>(device_.index);
    }
  }
  clear_recorded();
  used_ = 0;
  cuda_synchronize(device_.index);  // nothing eager is still queued when recording starts
  alloc.begin_pool(this);
  g_capturing = this;
  struct Reset {
    CachingDeviceAllocator& a;
    ~Reset() {
      g_capturing = nullptr;
      a.end_pool();
    }
  } reset{alloc};
  cuda::graph_capture_begin(stream);
  try {
    fn();
  } catch (const std::exception& e) {
    cuda::graph_capture_abandon(stream);
    clear_recorded();
    throw Error(std::string("CUDA graph capture failed, the step runs eagerly: ") + e.what());
  } catch (...) {  // (whatever the step threw: the stream must not stay capturing)
    cuda::graph_capture_abandon(stream);
    clear_recorded();
    throw;
  }
  try {
    exec_ = cuda::graph_capture_end(stream, &nodes_);
  } catch (const std::exception& e) {
    clear_recorded();
    throw Error(std::string("CUDA graph capture failed, the step runs eagerly: ") + e.what());
  }
#else
  (void)fn;
  VOLT_FAIL("CudaGraph: this build of Volt has no CUDA backend");
#endif
}

void CudaGraph::replay() {
  VOLT_CHECK(exec_, "CudaGraph::replay: nothing captured");
  for (const auto& check : checks_) check();
#if VOLT_HAVE_CUDA
  void* stream = cuda_stream(device_);
  const int k = next_;
  next_ ^= 1;
  staged_[k]->synchronize();  // the copy from this buffer two replays ago has run
  for (const Fill& f : fills_) f.fill(staging_[k] + f.offset);
  if (used_) cuda::copy_h2d_async(scalars_, staging_[k], used_ * sizeof(uint64_t), stream);
  staged_[k]->record(stream);
  cuda::graph_launch(exec_, stream);
#endif
  for (auto& entry : writes_)
    if (std::shared_ptr<Storage> s = entry.second.lock()) ++s->version;
}

}  // namespace volt
