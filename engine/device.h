// Where a tensor lives (CPU or a CUDA device) and the backend interface each device kind implements.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace volt {

class Allocator;

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && (is_cpu() || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;  // "cpu", "cuda:0"
};

// Parses "cpu", "cuda", "cuda:1"; throws volt::Error naming the text otherwise.
Device parse_device(const std::string& text);

// What engine/ needs from a device: memory and copies. Ops dispatch to kernels separately.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual Allocator& allocator(int device_index) = 0;
  virtual void copy_from_host(void* dst, const void* src, size_t bytes, int device_index) = 0;
  virtual void copy_to_host(void* dst, const void* src, size_t bytes, int device_index) = 0;
  virtual void copy_within(void* dst, const void* src, size_t bytes, int device_index) = 0;
  virtual void zero(void* dst, size_t bytes, int device_index) = 0;
  virtual void synchronize(int device_index) = 0;
};

// The backend for a device kind; throws volt::Error if that kind is not built in or not present.
Backend& backend_for(Device d);
// Lets a backend library (the CUDA one) make itself available.
void register_backend(DeviceType type, Backend* backend);
bool backend_available(DeviceType type);  // CUDA: built in and at least one GPU visible

// CUDA devices visible to this build (0 when built without CUDA, or with no GPU or driver).
int cuda_device_count();
// Why cuda_device_count() is 0, for messages: "this build has no CUDA backend", the CUDA runtime's
// error ("cudaErrorInsufficientDriver: ..."), or "no CUDA device" ("" when there are devices).
std::string cuda_unavailable_reason();

}  // namespace volt
