// Byte-buffer helpers, CRC32 and atomic file writes (see binary_io.h).
#include "engine/binary_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <iterator>

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

namespace binio {

void put_string(std::string& out, const std::string& s) {
  VOLT_CHECK(s.size() <= UINT32_MAX, "binary writer: string of ", s.size(), " bytes is too long");
  put<uint32_t>(out, uint32_t(s.size()));
  out += s;
}

void put_tensor(std::string& out, const std::string& name, const Tensor& t, const std::string& who) {
  VOLT_CHECK(t.defined(), who, ": '", name, "' is undefined");
  Tensor host = t.to(Device::cpu());
  put_string(out, name);
  put<uint8_t>(out, uint8_t(host.dtype()));
  put<uint32_t>(out, uint32_t(host.dim()));
  for (int64_t d : host.shape()) put<int64_t>(out, d);
  put<uint64_t>(out, uint64_t(host.nbytes()));
  out.append(static_cast<const char*>(host.raw_data()), host.nbytes());
}

void Reader::need(size_t n, const char* what) const {
  VOLT_CHECK(pos <= limit() && limit() - pos >= n, who, ": ", path, " is truncated (reading ", what, " at byte ", pos,
             ")");
}

std::string Reader::get_string(const char* what) {
  const uint32_t len = get<uint32_t>(what);
  need(len, what);
  std::string s = buf.substr(pos, len);
  pos += len;
  return s;
}

Tensor Reader::get_tensor(std::string& name) {
  name = get_string("name");
  const uint8_t dt = get<uint8_t>("dtype");
  VOLT_CHECK(dt <= uint8_t(DType::U8), who, ": ", path, ": tensor '", name, "' has unknown dtype ", int(dt));
  const uint32_t ndim = get<uint32_t>("ndim");
  VOLT_CHECK(ndim <= 16, who, ": ", path, ": tensor '", name, "' has ", ndim, " dims");
  Shape shape;
  for (uint32_t d = 0; d < ndim; ++d) {
    shape.push_back(get<int64_t>("dims"));
    VOLT_CHECK(shape.back() >= 0, who, ": ", path, ": tensor '", name, "' has a negative dim");
  }
  const uint64_t nbytes = get<uint64_t>("byte count");
  // Check the element count against the bytes left before multiplying, so absurd dims cannot overflow.
  uint64_t numel = 1, extent = 1;  // extent: the product of the non-zero dims (an empty tensor's too)
  for (int64_t d : shape) {
    VOLT_CHECK(d == 0 || numel <= left() / uint64_t(d), who, ": ", path, ": tensor '", name, "' has shape ",
               shape_str(shape), ", larger than the file");
    VOLT_CHECK(d == 0 || extent <= (uint64_t(1) << 48) / uint64_t(d), who, ": ", path, ": tensor '", name,
               "' has shape ", shape_str(shape), ", too large for a tensor");
    numel *= uint64_t(d);
    if (d != 0) extent *= uint64_t(d);
  }
  VOLT_CHECK(nbytes == numel * dtype_size(DType(dt)), who, ": ", path, ": tensor '", name, "' has ", nbytes,
             " bytes, which does not match shape ", shape_str(shape));
  need(nbytes, "tensor data");
  Tensor t = Tensor::empty(shape, DType(dt));
  if (nbytes) std::memcpy(t.raw_data(), buf.data() + pos, nbytes);
  pos += nbytes;
  return t;
}

namespace {

// Writes all of `bytes` to fd and fsyncs it; 0, or the errno of the failure and what failed.
int write_all_and_sync(int fd, const std::string& bytes, const char*& failed) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      failed = "writing";
      return w < 0 ? errno : EIO;
    }
    done += size_t(w);
  }
  failed = "flushing";
  return ::fsync(fd) != 0 ? errno : 0;
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes, const std::string& who) {
  // Unique per call, not only per process: two threads saving one path must not share a temporary.
  static std::atomic<uint64_t> calls{0};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(calls.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  VOLT_CHECK(fd >= 0, who, ": cannot create ", tmp, ": ", std::strerror(errno));
  const char* failed = "";
  int e = write_all_and_sync(fd, bytes, failed);
  if (::close(fd) != 0 && e == 0) e = errno;
  if (e != 0) {
    ::unlink(tmp.c_str());
    VOLT_FAIL(who, ": ", failed, " ", tmp, " failed: ", std::strerror(e));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    VOLT_FAIL(who, ": renaming ", tmp, " to ", path, " failed: ", std::strerror(e));
  }
  // The rename is durable only once the folder's entry is: without this, a power loss soon after
  // could leave the old file (or none) although the write returned. Best effort: some filesystems
  // cannot fsync a folder, and the file itself is complete either way.
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

void append_file(const std::string& path, const std::string& bytes, const std::string& who) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND);
  VOLT_CHECK(fd >= 0, who, ": cannot open ", path, " to append: ", std::strerror(errno));
  struct stat st;
  const off_t before = ::fstat(fd, &st) == 0 ? st.st_size : -1;
  const char* failed = "";
  int e = write_all_and_sync(fd, bytes, failed);
  if (e != 0 && before >= 0) (void)::ftruncate(fd, before);  // best effort: no torn tail
  if (::close(fd) != 0 && e == 0) e = errno;
  VOLT_CHECK(e == 0, who, ": ", failed, " ", path, " failed: ", std::strerror(e));
}

std::string read_file(const std::string& path, const std::string& who) {
  std::ifstream in(path, std::ios::binary);
  VOLT_CHECK(in.good(), who, ": cannot open ", path, ": ", std::strerror(errno));
  std::string buf;
  try {  // a read error (a directory, EIO) surfaces as std::ios_base::failure from the stream buffer
    buf.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } catch (const std::exception& e) {
    VOLT_FAIL(who, ": cannot read ", path, ": ", e.what());
  }
  return buf;
}

}  // namespace binio
}  // namespace volt
