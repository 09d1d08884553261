// TFRecord framing (see tfrecord.h): CRC-32C by a 256-entry table, the masked checksum, and
// writing and reading framed records.
#include "dist/tfrecord.h"

#include <stdio_ext.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "engine/error.h"

namespace volt {
namespace {

std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
    table[i] = c;
  }
  return table;
}

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}
uint64_t get_le(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_crc32c_table();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(const void* data, size_t n) {
  const uint32_t crc = crc32c(data, n);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string tfrecord_frame(const std::string& data) {
  std::string out;
  out.reserve(data.size() + 16);
  put_u64(out, data.size());
  put_u32(out, masked_crc32c(out.data(), 8));
  out += data;
  put_u32(out, masked_crc32c(data.data(), data.size()));
  return out;
}

void tfrecord_write(std::FILE* f, const std::string& data, const std::string& path) {
  VOLT_CHECK(f != nullptr, "tfrecord: ", path, " is not open");
  const std::string framed = tfrecord_frame(data);
  const long before = std::ftell(f);  // every record is flushed: where this one starts in the file
  if (std::fwrite(framed.data(), 1, framed.size(), f) != framed.size() || std::fflush(f) != 0) {
    const int e = errno;
    // A reader stops for good at a torn record, so what reached the file of this one is cut back (and
    // what is still buffered dropped): a caller that goes on after the error appends whole records.
    __fpurge(f);
    if (before >= 0 && ::ftruncate(::fileno(f), before) == 0) std::fseek(f, before, SEEK_SET);
    std::clearerr(f);
    VOLT_FAIL("tfrecord: writing ", path, " failed: ", std::strerror(e));
  }
}

std::vector<std::string> tfrecord_read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  VOLT_CHECK(in.good(), "tfrecord: cannot open ", path);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  std::vector<std::string> records;
  size_t pos = 0;
  while (pos < bytes.size()) {
    VOLT_CHECK(bytes.size() - pos >= 12, "tfrecord: ", path, ": truncated record header at offset ", pos);
    const uint64_t len = get_le(p + pos, 8);
    VOLT_CHECK(static_cast<uint32_t>(get_le(p + pos + 8, 4)) == masked_crc32c(p + pos, 8), "tfrecord: ", path,
               ": bad length checksum at offset ", pos);
    VOLT_CHECK(len <= bytes.size() - pos - 12 && bytes.size() - pos - 12 - len >= 4, "tfrecord: ", path,
               ": record at offset ", pos, " claims ", len, " bytes but the file ends first");
    const size_t data_at = pos + 12;
    VOLT_CHECK(static_cast<uint32_t>(get_le(p + data_at + len, 4)) == masked_crc32c(p + data_at, len),
               "tfrecord: ", path, ": bad data checksum in the record at offset ", pos);
    records.emplace_back(bytes, data_at, len);
    pos = data_at + len + 4;
  }
  return records;
}

}  // namespace volt
