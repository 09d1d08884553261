// A minimal protocol-buffer encoder (wire format only, no schema): enough to write TensorBoard's
// Event, Summary, GraphDef and hparams messages by field number without the protobuf library.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "utf8.h"

namespace volt::proto {

// Appends fields to a byte string; a nested message is another Writer's bytes passed to message().
class Writer {
 public:
  void varint(int field, uint64_t v) { tag(field, 0); put_varint(v); }
  void int64(int field, int64_t v) { varint(field, static_cast<uint64_t>(v)); }  // also int32 / enum
  void boolean(int field, bool v) { varint(field, v ? 1 : 0); }
  void float64(int field, double v) { tag(field, 1); put_double(v); }
  void float32(int field, float v) {
    tag(field, 5);
    uint32_t u;
    std::memcpy(&u, &v, 4);
    put_le(u, 4);
  }
  void bytes(int field, const std::string& v) { tag(field, 2); put_varint(v.size()); out_ += v; }
  // A `string` field: protobuf readers refuse one that is not UTF-8, so invalid bytes become U+FFFD.
  void string(int field, const std::string& v) { bytes(field, valid_utf8(v)); }
  void message(int field, const Writer& m) { bytes(field, m.str()); }
  void packed_doubles(int field, const std::vector<double>& v) {
    tag(field, 2);
    put_varint(v.size() * 8);
    for (double d : v) put_double(d);
  }
  const std::string& str() const { return out_; }

 private:
  void tag(int field, int wire_type) { put_varint((static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wire_type)); }
  void put_varint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>((v & 0x7F) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  // Protobuf fixed-width fields are little-endian whatever the host's byte order.
  void put_le(uint64_t u, int bytes) {
    for (int i = 0; i < bytes; ++i) out_.push_back(static_cast<char>((u >> (8 * i)) & 0xFF));
  }
  void put_double(double d) {
    uint64_t u;
    std::memcpy(&u, &d, 8);
    put_le(u, 8);
  }
  std::string out_;
};

}  // namespace volt::proto
