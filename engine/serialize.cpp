// Volt tensor files (see serialize.h).
#include "engine/serialize.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "engine/error.h"

namespace volt {

uint32_t crc32(const void* data, size_t n, uint32_t crc) {
  static uint32_t table[256];
  static const bool init = [] {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    return true;
  }();
  (void)init;
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

namespace {
constexpr char kMagic[8] = {'V', 'O', 'L', 'T', 'T', 'E', 'N', 'S'};
constexpr uint32_t kVersion = 1;

template <class T> void put(std::string& out, T v) { out.append(reinterpret_cast<const char*>(&v), sizeof(T)); }

struct Reader {
  const std::string& buf;
  const std::string& path;
  size_t pos = 0;
  void need(size_t n, const char* what) {
    VOLT_CHECK(buf.size() - pos >= n, "load_tensors: ", path, " is truncated (reading ", what, " at byte ", pos, ")");
  }
  template <class T> T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, buf.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
};
}  // namespace

void save_tensors(const std::string& path, const NamedTensors& tensors) {
  std::string out(kMagic, 8);
  put<uint32_t>(out, kVersion);
  put<uint32_t>(out, uint32_t(tensors.size()));
  for (const auto& [name, t] : tensors) {
    VOLT_CHECK(t.defined(), "save_tensors: '", name, "' is undefined");
    Tensor host = t.to(Device::cpu());
    put<uint32_t>(out, uint32_t(name.size()));
    out += name;
    put<uint8_t>(out, uint8_t(host.dtype()));
    put<uint32_t>(out, uint32_t(host.dim()));
    for (int64_t d : host.shape()) put<int64_t>(out, d);
    put<uint64_t>(out, uint64_t(host.nbytes()));
    out.append(static_cast<const char*>(host.raw_data()), host.nbytes());
  }
  put<uint32_t>(out, crc32(out.data(), out.size()));

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  VOLT_CHECK(fd >= 0, "save_tensors: cannot create ", tmp, ": ", std::strerror(errno));
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t w = ::write(fd, out.data() + done, out.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      VOLT_FAIL("save_tensors: writing ", tmp, " failed: ", std::strerror(e));
    }
    done += size_t(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    VOLT_FAIL("save_tensors: flushing ", tmp, " failed: ", std::strerror(e));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    VOLT_FAIL("save_tensors: renaming ", tmp, " to ", path, " failed: ", std::strerror(e));
  }
}

NamedTensors load_tensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  VOLT_CHECK(in.good(), "load_tensors: cannot open ", path, ": ", std::strerror(errno));
  std::string buf;
  try {  // a read error (a directory, EIO) surfaces as std::ios_base::failure from the stream buffer
    buf.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } catch (const std::exception& e) {
    VOLT_FAIL("load_tensors: cannot read ", path, ": ", e.what());
  }
  VOLT_CHECK(buf.size() >= 20 && std::memcmp(buf.data(), kMagic, 8) == 0, "load_tensors: ", path,
             " is not a Volt tensor file (bad magic or too short)");
  uint32_t stored_crc;
  std::memcpy(&stored_crc, buf.data() + buf.size() - 4, 4);
  VOLT_CHECK(crc32(buf.data(), buf.size() - 4) == stored_crc, "load_tensors: ", path,
             " is corrupt or truncated (checksum mismatch)");
  Reader r{buf, path, 8};
  const uint32_t version = r.get<uint32_t>("version");
  VOLT_CHECK(version == kVersion, "load_tensors: ", path, " has version ", version, "; this Volt reads version ", kVersion);
  const uint32_t count = r.get<uint32_t>("count");
  NamedTensors out;
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t len = r.get<uint32_t>("name length");
    r.need(len, "name");
    std::string name = buf.substr(r.pos, len);
    r.pos += len;
    const uint8_t dt = r.get<uint8_t>("dtype");
    VOLT_CHECK(dt <= uint8_t(DType::U8), "load_tensors: ", path, ": tensor '", name, "' has unknown dtype ", int(dt));
    const uint32_t ndim = r.get<uint32_t>("ndim");
    VOLT_CHECK(ndim <= 16, "load_tensors: ", path, ": tensor '", name, "' has ", ndim, " dims");
    Shape shape;
    for (uint32_t d = 0; d < ndim; ++d) {
      shape.push_back(r.get<int64_t>("dims"));
      VOLT_CHECK(shape.back() >= 0, "load_tensors: ", path, ": tensor '", name, "' has a negative dim");
    }
    const uint64_t nbytes = r.get<uint64_t>("byte count");
    VOLT_CHECK(nbytes == uint64_t(shape_numel(shape)) * dtype_size(DType(dt)), "load_tensors: ", path, ": tensor '", name,
               "' has ", nbytes, " bytes, which does not match shape ", shape_str(shape));
    r.need(nbytes, "tensor data");
    Tensor t = Tensor::empty(shape, DType(dt));
    std::memcpy(t.raw_data(), buf.data() + r.pos, nbytes);
    r.pos += nbytes;
    out.emplace_back(std::move(name), t);
  }
  VOLT_CHECK(r.pos == buf.size() - 4, "load_tensors: ", path, " has ", buf.size() - 4 - r.pos, " unexpected trailing bytes");
  return out;
}

}  // namespace volt
