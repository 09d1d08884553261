// TFRecord framing, the container of TensorBoard event files: each record is
//   uint64 length, uint32 masked_crc32c(length bytes), data, uint32 masked_crc32c(data) (little-endian).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace volt {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78); crc32c("123456789") == 0xE3069283.
// Pass the previous result as `crc` to continue a running checksum.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t n);

// The framed bytes of one record holding `data`.
std::string tfrecord_frame(const std::string& data);

// Appends one framed record to `f` and fflush()es it; throws volt::Error naming `path` on failure,
// after cutting the file back to where the record began (f a regular file, written only this way).
void tfrecord_write(std::FILE* f, const std::string& data, const std::string& path);

// Every record of a TFRecord file, with both checksums of each verified; throws volt::Error
// naming the file and the record's offset on a short, truncated or corrupt file.
std::vector<std::string> tfrecord_read_all(const std::string& path);

}  // namespace volt
