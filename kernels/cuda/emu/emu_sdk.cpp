// The emulated CUDA SDK (VOLT_CUDA=EMULATED): the CUDA runtime, cuBLAS and cuDNN calls that Volt's
// CUDA backend makes, implemented on the host, so that the whole backend (engine, autograd, layers,
// trainer, CUDA graphs) runs its GPU tests on a machine without a GPU. It is not a GPU: it cannot
// show speed, races or the memory model. What it does check, as the GPU would (or more strictly):
//  - device memory is a tracked allocation, filled with 0xFF bytes (NaN in every float type) when
//    allocated, so results that depend on memory nobody wrote show up; copies, memsets and library
//    calls whose device pointers fall outside a live allocation fail with cudaErrorInvalidValue;
//  - a stream being captured records its work instead of running it; a graph replays it. Waiting for a
//    capturing stream on the host invalidates the capture, as on the GPU; a stream that joined a capture
//    (through an event) must join back before it ends (cudaErrorStreamCaptureUnjoined);
//  - cuBLAS and cuDNN compute in the requested types (TF32 rounding where it is allowed; float32
//    accumulation of 16-bit inputs), read only what their arguments describe, and scribble over the
//    workspace they are given, so callers that keep data there across a call are caught.
// Outside a capture every stream's work runs at once, in issue order, so missing cross-stream
// dependencies cannot show here.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cublas_v2.h"
#include "cuda_runtime_api.h"
#include "cudnn.h"
#include "engine/dtype.h"
#include "engine/error.h"

// ---------------------------------------------------------------------------------------------
// Runtime: errors, devices, memory
// ---------------------------------------------------------------------------------------------

namespace {

thread_local cudaError_t g_last_error = cudaSuccess;
thread_local int g_device = 0;

cudaError_t fail(cudaError_t e) {
  g_last_error = e;
  return e;
}

int emulated_devices() {
  static const int n = [] {
    const char* v = std::getenv("VOLT_EMU_DEVICES");
    if (!v || !*v) return 1;
    const int k = std::atoi(v);
    return k < 0 ? 0 : (k > 8 ? 8 : k);
  }();
  return n;
}

constexpr size_t kDeviceMemory = size_t(16) << 30;  // what cudaMemGetInfo reports as the total

enum class Kind { Device, Pinned };
struct Allocation {
  size_t bytes;
  int device;
  Kind kind;
};

struct Memory {
  std::mutex mu;
  std::map<uintptr_t, Allocation> blocks;  // by base address
  size_t device_bytes = 0, pinned_bytes = 0;
  size_t device_limit = kDeviceMemory, pinned_limit = SIZE_MAX;  // volt_emu::limit_memory
};
Memory& memory() {
  static Memory* m = new Memory;  // never destroyed: tensors may be freed after main returns
  return *m;
}

// The allocation that holds [p, p + bytes), or nullptr.
const Allocation* find_allocation(Memory& m, const void* p, size_t bytes, uintptr_t* base = nullptr) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = m.blocks.upper_bound(a);
  if (it == m.blocks.begin()) return nullptr;
  --it;
  if (a < it->first || a + bytes > it->first + it->second.bytes) return nullptr;
  if (base) *base = it->first;
  return &it->second;
}

bool device_range(const void* p, size_t bytes) {
  if (bytes == 0) return true;
  Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  const Allocation* a = find_allocation(m, p, bytes);
  return a && a->kind == Kind::Device;
}

// 256-byte aligned as cudaMalloc's, but exactly `bytes` long, so that AddressSanitizer (in a sanitized
// emulated build) reports any access past the end, as compute-sanitizer would.
void* allocate(size_t bytes, Kind kind) {
  const size_t rounded = (bytes + 255) & ~size_t(255);
  Memory& m = memory();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (kind == Kind::Device && m.device_bytes + rounded > m.device_limit) return nullptr;
    if (kind == Kind::Pinned && m.pinned_bytes + rounded > m.pinned_limit) return nullptr;
  }
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0) return nullptr;
  std::memset(p, 0xFF, bytes);
  std::lock_guard<std::mutex> lock(m.mu);
  m.blocks[reinterpret_cast<uintptr_t>(p)] = Allocation{bytes, g_device, kind};
  (kind == Kind::Device ? m.device_bytes : m.pinned_bytes) += rounded;
  return p;
}

cudaError_t release(void* p, Kind kind) {
  if (!p) return cudaSuccess;
  Memory& m = memory();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    auto it = m.blocks.find(reinterpret_cast<uintptr_t>(p));
    if (it == m.blocks.end() || it->second.kind != kind) return fail(cudaErrorInvalidValue);
    (kind == Kind::Device ? m.device_bytes : m.pinned_bytes) -= (it->second.bytes + 255) & ~size_t(255);
    m.blocks.erase(it);
  }
  std::free(p);
  return cudaSuccess;
}

// ---------------------------------------------------------------------------------------------
// Streams, captures, events, graphs
// ---------------------------------------------------------------------------------------------

struct Capture {
  std::vector<std::function<void()>> work;
  cudaStream_t origin = nullptr;
  bool invalidated = false;
  std::vector<cudaStream_t> joined;  // streams that joined through an event (origin excluded)
};

std::mutex g_stream_mu;  // guards the streams' and events' capture state, and g_active
std::vector<Capture*> g_active;  // the captures in progress

}  // namespace

struct volt_emu_stream {
  int device = 0;
  std::shared_ptr<Capture> capture;
  uint64_t work_seq = 0;       // work submitted so far
  uint64_t rejoined_seq = 0;   // work the capture's origin has waited for (joined streams)
};

struct volt_emu_event {
  int device = 0;
  bool timing = true;
  bool recorded = false;
  std::chrono::steady_clock::time_point when{};
  std::shared_ptr<Capture> capture;  // recorded inside this capture
  cudaStream_t stream = nullptr;     // where it was recorded
  uint64_t seq = 0;                  // that stream's work count at the record
};

struct volt_emu_graph {
  std::vector<std::function<void()>> work;
};
struct volt_emu_graph_exec {
  std::vector<std::function<void()>> work;
};

namespace {
volt_emu_stream& legacy_stream() {
  static volt_emu_stream* s = new volt_emu_stream;
  return *s;
}
volt_emu_stream* resolve(cudaStream_t s) { return s ? s : &legacy_stream(); }

// Ends the capture on every stream that takes part in it.
void detach(const std::shared_ptr<Capture>& c) {
  if (!c) return;
  if (c->origin) c->origin->capture.reset();
  for (cudaStream_t s : c->joined) s->capture.reset();
}
}  // namespace

namespace volt_emu {

void submit(cudaStream_t stream, std::function<void()> work) {
  volt_emu_stream* s = resolve(stream);
  {
    std::lock_guard<std::mutex> lock(g_stream_mu);
    ++s->work_seq;
    if (s->capture) {
      s->capture->work.push_back(std::move(work));
      return;
    }
  }
  work();
}

bool is_device_range(const void* ptr, size_t bytes) { return device_range(ptr, bytes); }

void limit_memory(MemoryKind kind, size_t more) {
  Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  if (kind == MemoryKind::Device) m.device_limit = std::min(kDeviceMemory, m.device_bytes + more);
  else m.pinned_limit = m.pinned_bytes + more;
}

void lift_memory_limits() {
  Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  m.device_limit = kDeviceMemory;
  m.pinned_limit = SIZE_MAX;
}

}  // namespace volt_emu

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureUnjoined: return "cudaErrorStreamCaptureUnjoined";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    case cudaErrorCapturedEvent: return "cudaErrorCapturedEvent";
    default: return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument (emulator: a pointer outside any live allocation of the "
                                       "kind the call needs, a bad size or handle, or overlapping copy ranges)";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected (VOLT_EMU_DEVICES=0)";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureUnjoined: return "capture was not joined back to the origin stream";
    case cudaErrorCapturedEvent: return "operation not permitted on an event last recorded in a capturing stream";
    default: return cudaGetErrorName(e);
  }
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return g_last_error; }

cudaError_t cudaGetDeviceCount(int* count) {
  *count = emulated_devices();
  return *count > 0 ? cudaSuccess : fail(cudaErrorNoDevice);
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= emulated_devices()) return fail(cudaErrorInvalidDevice);
  g_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = g_device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device < 0 || device >= emulated_devices()) return fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "Volt CUDA emulator (host)");
  char uuid[32];  // one per device index, as every process on a machine sees the same GPUs
  std::snprintf(uuid, sizeof uuid, "VOLT-EMU-GPU-%02d", device % 100);
  std::memcpy(prop->uuid.bytes, uuid, sizeof prop->uuid.bytes);
  prop->totalGlobalMem = kDeviceMemory;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 1;
  prop->warpSize = 32;
  prop->sharedMemPerBlock = 48 * 1024;
  prop->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device < 0 || device >= emulated_devices()) return fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = 1; return cudaSuccess;  // as its cudaDeviceProp says
    case cudaDevAttrMemoryClockRate: *value = 1000000; return cudaSuccess;  // kHz (nominal figures:
    case cudaDevAttrGlobalMemoryBusWidth: *value = 64; return cudaSuccess;  // 16 GB/s "peak")
  }
  return fail(cudaErrorInvalidValue);
}

namespace {
// Host waits are illegal while the waited-for work is being captured: the capture is invalidated.
cudaError_t host_wait(volt_emu_stream* s) {
  std::lock_guard<std::mutex> lock(g_stream_mu);
  if (s && s->capture) {
    s->capture->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaDeviceSynchronize() {
  std::lock_guard<std::mutex> lock(g_stream_mu);
  bool capturing = false;
  for (Capture* c : g_active) {
    if (c->origin && c->origin->device == g_device) {
      c->invalidated = true;
      capturing = true;
    }
  }
  return capturing ? fail(cudaErrorStreamCaptureUnsupported) : cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  *total_bytes = kDeviceMemory;
  *free_bytes = kDeviceMemory - m.device_bytes;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  *ptr = allocate(bytes, Kind::Device);
  return *ptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}
cudaError_t cudaFree(void* ptr) { return release(ptr, Kind::Device); }
cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t) { return cudaMalloc(ptr, bytes); }
cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream) {
  // Freed when the stream reaches this point (a captured free happens at each replay's end).
  if (!device_range(ptr, 1)) return fail(cudaErrorInvalidValue);
  volt_emu::submit(stream, [ptr] { (void)release(ptr, Kind::Device); });
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned) {
  *ptr = allocate(bytes, Kind::Pinned);
  return *ptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}
cudaError_t cudaFreeHost(void* ptr) { return release(ptr, Kind::Pinned); }

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
  Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mu);
  *attr = cudaPointerAttributes{cudaMemoryTypeUnregistered, -1, nullptr, nullptr};
  if (const Allocation* a = find_allocation(m, ptr, 1)) {
    attr->device = a->device;
    if (a->kind == Kind::Device) {
      attr->type = cudaMemoryTypeDevice;
      attr->devicePointer = const_cast<void*>(ptr);
    } else {
      attr->type = cudaMemoryTypeHost;
      attr->hostPointer = const_cast<void*>(ptr);
      attr->devicePointer = const_cast<void*>(ptr);
    }
  }
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  if (!dst || !src) return fail(cudaErrorInvalidValue);
  const bool dst_dev = device_range(dst, bytes), src_dev = device_range(src, bytes);
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToDevice: ok = dst_dev && !device_range(src, 1); break;
    case cudaMemcpyDeviceToHost: ok = src_dev && !device_range(dst, 1); break;
    case cudaMemcpyDeviceToDevice: ok = dst_dev && src_dev; break;
    case cudaMemcpyHostToHost: ok = !device_range(dst, 1) && !device_range(src, 1); break;
    case cudaMemcpyDefault: ok = true; break;
  }
  if (!ok) return fail(cudaErrorInvalidValue);
  // Overlapping ranges are undefined for cudaMemcpy (a GPU copies in any order): refused here, where
  // memmove would make them right.
  const auto *d = static_cast<const char*>(dst), *s = static_cast<const char*>(src);
  if (d != s && d < s + bytes && s < d + bytes) return fail(cudaErrorInvalidValue);
  volt_emu::submit(stream, [=] { std::memmove(dst, src, bytes); });
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
  return e != cudaSuccess ? e : host_wait(&legacy_stream());
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  if (!device_range(dst, bytes)) return fail(cudaErrorInvalidValue);
  volt_emu::submit(stream, [=] { std::memset(dst, value, bytes); });
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  *stream = new volt_emu_stream;
  (*stream)->device = g_device;
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (!stream) return fail(cudaErrorInvalidResourceHandle);
  {
    std::lock_guard<std::mutex> lock(g_stream_mu);
    if (stream->capture) return fail(cudaErrorStreamCaptureUnsupported);
  }
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) { return host_wait(resolve(stream)); }

cudaError_t cudaStreamQuery(cudaStream_t stream) { return host_wait(resolve(stream)); }

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  volt_emu_stream* s = resolve(stream);
  std::lock_guard<std::mutex> lock(g_stream_mu);
  if (event->capture && event->capture->origin) {
    const std::shared_ptr<Capture> c = event->capture;
    if (s->capture && s->capture != c) {
      c->invalidated = true;  // two captures cannot be merged
      return fail(cudaErrorStreamCaptureUnsupported);
    }
    if (!s->capture) {
      s->capture = c;  // s joins the capture: its later work is part of the graph
      c->joined.push_back(s);
    } else if (s == c->origin && event->stream != c->origin) {
      event->stream->rejoined_seq = std::max(event->stream->rejoined_seq, event->seq);
    }
  }
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  *event = new volt_emu_event;
  (*event)->device = g_device;
  (*event)->timing = !(flags & cudaEventDisableTiming);
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  volt_emu_stream* s = resolve(stream);
  std::lock_guard<std::mutex> lock(g_stream_mu);
  event->capture = s->capture;
  event->stream = s;
  event->seq = s->work_seq;
  event->recorded = !s->capture;
  event->when = std::chrono::steady_clock::now();
  return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lock(g_stream_mu);
  if (event->capture && event->capture->origin) return fail(cudaErrorCapturedEvent);
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) { return cudaEventQuery(event); }

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!start || !end || !start->timing || !end->timing || !start->recorded || !end->recorded)
    return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  if (!stream) return fail(cudaErrorStreamCaptureUnsupported);  // the legacy stream cannot be captured
  std::lock_guard<std::mutex> lock(g_stream_mu);
  if (stream->capture) return fail(cudaErrorStreamCaptureUnsupported);
  stream->capture = std::make_shared<Capture>();
  stream->capture->origin = stream;
  g_active.push_back(stream->capture.get());
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  *graph = nullptr;
  if (!stream) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lock(g_stream_mu);
  const std::shared_ptr<Capture> c = stream->capture;
  if (!c) return fail(cudaErrorInvalidValue);
  if (c->origin != stream) return fail(cudaErrorStreamCaptureUnsupported);  // cudaErrorStreamCaptureUnmatched
  bool unjoined = false;
  for (cudaStream_t s : c->joined) unjoined = unjoined || s->work_seq > s->rejoined_seq;
  detach(c);
  c->origin = nullptr;
  g_active.erase(std::find(g_active.begin(), g_active.end(), c.get()));
  if (c->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
  if (unjoined) return fail(cudaErrorStreamCaptureUnjoined);
  *graph = new volt_emu_graph{std::move(c->work)};
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  volt_emu_stream* s = resolve(stream);
  std::lock_guard<std::mutex> lock(g_stream_mu);
  *status = !s->capture ? cudaStreamCaptureStatusNone
                        : (s->capture->invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive);
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return fail(cudaErrorInvalidValue);
  *exec = new volt_emu_graph_exec{graph->work};
  return cudaSuccess;
}

cudaError_t cudaGraphGetNodes(cudaGraph_t graph, void* nodes, size_t* num_nodes) {
  if (!graph || !num_nodes) return fail(cudaErrorInvalidValue);
  if (nodes) return fail(cudaErrorNotSupported);
  *num_nodes = graph->work.size();
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec) return fail(cudaErrorInvalidResourceHandle);
  for (const auto& w : exec->work) volt_emu::submit(stream, w);
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
