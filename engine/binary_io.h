// Byte-buffer helpers shared by Volt's binary files (tensor files, checkpoints) and its readers of
// others' formats: appending and bounds-checked reading of little-endian scalars, strings and tensor
// records, big-endian loads, CRC32, and atomic whole-file writes (temporary name, fsync, rename) and
// whole-file reads.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "error.h"
#include "tensor.h"

namespace volt {

uint32_t crc32(const void* data, size_t n, uint32_t crc = 0);  // IEEE 802.3; chain with `crc`

// The big-endian u32 at p (the byte order of IDX headers and PNG chunks).
inline uint32_t load_be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

namespace binio {

template <class T> void put(std::string& out, T v) { out.append(reinterpret_cast<const char*>(&v), sizeof(T)); }
void put_string(std::string& out, const std::string& s);  // u32 length, bytes
// Tensor record: u32 name_len, name, u8 dtype, u32 ndim, i64 dims[ndim], u64 nbytes, bytes (host copy).
// `who` prefixes the error when t is undefined.
void put_tensor(std::string& out, const std::string& name, const Tensor& t, const std::string& who);

// Reads buf[pos, end) with bounds checks. Errors read "<who>: <path> is truncated (reading X at byte N)"
// or "<who>: <path>: ...".
struct Reader {
  const std::string& buf;
  std::string who, path;
  size_t pos = 0;
  size_t end = std::string::npos;  // npos: buf.size()

  size_t limit() const { return end == std::string::npos ? buf.size() : end; }
  size_t left() const { return limit() - pos; }
  void need(size_t n, const char* what) const;
  template <class T> T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, buf.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string get_string(const char* what);
  Tensor get_tensor(std::string& name);  // a CPU tensor; checks dtype, dims and byte count
};

// Writes `bytes` to "<path>.tmp.<pid>.<n>", fsyncs, and renames it over path; on failure removes the
// temporary and throws "<who>: ..." naming the file.
void write_file_atomic(const std::string& path, const std::string& bytes, const std::string& who);
// Appends `bytes` to the existing file `path` and fsyncs it; on failure cuts the file back to its
// length before (no torn tail is left for the next append to follow) and throws "<who>: ..." naming it.
void append_file(const std::string& path, const std::string& bytes, const std::string& who);
// The whole file; throws "<who>: cannot open/read <path>: ...".
std::string read_file(const std::string& path, const std::string& who);

}  // namespace binio
}  // namespace volt
