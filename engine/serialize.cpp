// Volt tensor files (see serialize.h); the byte helpers and atomic write are in binary_io.h.
#include "engine/serialize.h"

#include <cstring>

#include "engine/error.h"

namespace volt {

namespace {
constexpr char kMagic[8] = {'V', 'O', 'L', 'T', 'T', 'E', 'N', 'S'};
constexpr uint32_t kVersion = 1;
}  // namespace

void save_tensors(const std::string& path, const NamedTensors& tensors) {
  std::string out(kMagic, 8);
  binio::put<uint32_t>(out, kVersion);
  binio::put<uint32_t>(out, uint32_t(tensors.size()));
  for (const auto& [name, t] : tensors) binio::put_tensor(out, name, t, "save_tensors");
  binio::put<uint32_t>(out, crc32(out.data(), out.size()));
  binio::write_file_atomic(path, out, "save_tensors");
}

NamedTensors load_tensors(const std::string& path) {
  const std::string buf = binio::read_file(path, "load_tensors");
  VOLT_CHECK(buf.size() >= 20 && std::memcmp(buf.data(), kMagic, 8) == 0, "load_tensors: ", path,
             " is not a Volt tensor file (bad magic or too short)");
  uint32_t stored_crc;
  std::memcpy(&stored_crc, buf.data() + buf.size() - 4, 4);
  VOLT_CHECK(crc32(buf.data(), buf.size() - 4) == stored_crc, "load_tensors: ", path,
             " is corrupt or truncated (checksum mismatch)");
  binio::Reader r{buf, "load_tensors", path, 8, buf.size() - 4};
  const uint32_t version = r.get<uint32_t>("version");
  VOLT_CHECK(version == kVersion, "load_tensors: ", path, " has version ", version, "; this Volt reads version ", kVersion);
  const uint32_t count = r.get<uint32_t>("count");
  NamedTensors out;
  for (uint32_t i = 0; i < count; ++i) {
    std::string name;
    Tensor t = r.get_tensor(name);
    out.emplace_back(std::move(name), t);
  }
  VOLT_CHECK(r.pos == buf.size() - 4, "load_tensors: ", path, " has ", buf.size() - 4 - r.pos, " unexpected trailing bytes");
  return out;
}

}  // namespace volt
