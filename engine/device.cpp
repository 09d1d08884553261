// Device names and the backend registry; the CPU backend is always present.
#include "engine/device.h"

#include <cstring>

#include "engine/allocator.h"
#include "engine/error.h"
#include "engine/gpu.h"
#include "volt/config.h"
#if VOLT_HAVE_CUDA
#include "kernels/cuda/device_query.h"
#endif

namespace volt {

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

Device parse_device(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda" || text == "gpu") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0 && text.size() > 5) {
    const std::string idx = text.substr(5);
    VOLT_CHECK(idx.find_first_not_of("0123456789") == std::string::npos,
               "bad device '", text, "': expected cpu, cuda or cuda:N");
    return Device::cuda(std::stoi(idx));
  }
  VOLT_FAIL("bad device '", text, "': expected cpu, cuda or cuda:N");
}

namespace {
class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  Allocator& allocator(int) override { return host_allocator(); }
  // n == 0 returns early: an empty std::vector's data() may be null, and mem* on null is undefined.
  void copy_from_host(void* dst, const void* src, size_t n, int) override { if (n) std::memcpy(dst, src, n); }
  void copy_to_host(void* dst, const void* src, size_t n, int) override { if (n) std::memcpy(dst, src, n); }
  void copy_within(void* dst, const void* src, size_t n, int) override { if (n) std::memmove(dst, src, n); }
  void zero(void* dst, size_t n, int) override { if (n) std::memset(dst, 0, n); }
  void synchronize(int) override {}
};

Backend*& slot(DeviceType t) {
  static Backend* slots[2] = {nullptr, nullptr};
  return slots[int(t)];
}
}  // namespace

void register_backend(DeviceType type, Backend* backend) { slot(type) = backend; }

bool backend_available(DeviceType type) {
  if (type == DeviceType::CUDA) {
    detail::init_cuda_backend();
    return slot(type) != nullptr && cuda_device_count() > 0;
  }
  return true;
}

int cuda_device_count() {
#if VOLT_HAVE_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

std::string cuda_unavailable_reason() {
#if VOLT_HAVE_CUDA
  if (cuda::device_count() > 0) return "";
  const std::string e = cuda::device_count_error();
  return e.empty() ? "the CUDA runtime found no device" : "the CUDA runtime reports " + e;
#else
  return "this build has no CUDA backend";
#endif
}

Backend& backend_for(Device d) {
  if (d.is_cpu()) {
    static CpuBackend cpu;
    return cpu;
  }
  // Referenced from here so that the registration is linked in from the static library (a static
  // initialiser in an otherwise unreferenced object file would be dropped by the linker).
  if (d.is_cuda()) detail::init_cuda_backend();
  Backend* b = slot(d.type);
  VOLT_CHECK(b != nullptr, "device ", d.str(),
             " is not available: this build of Volt has no CUDA backend (VOLT_CUDA=OFF, or the CUDA "
             "backend is not built yet); use the cpu device");
  return *b;
}

}  // namespace volt
