// The checks of data/image_check.h other than JPEG's (data/jpeg_check.cpp):
// check_bmp: the header fields stb_image's BMP reader uses (BITMAPFILEHEADER, then a
// BITMAPCOREHEADER of 12 bytes or an INFO/V3/V4/V5 header of 40, 56, 108 or 124).
// bmp_with_info_header: an OS/2 palette BMP rewritten with a Windows header.
// check_png: the chunk walk of stb_image's PNG reader, checking the CRC of each chunk it reads, then
// zlib's inflate over the IDAT data.
#include "data/image_check.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "engine/binary_io.h"

namespace volt {

std::string check_bmp(const uint8_t* b, size_t n) {
  if (n < 2 || b[0] != 'B' || b[1] != 'M') return "";
  // Past the end stb_image reads zeros; so does this (a 25-byte OS/2 header still gives it a size).
  auto at = [&](size_t i) -> uint32_t { return i < n ? b[i] : 0u; };
  auto u16 = [&](size_t i) { return at(i) | at(i + 1) << 8; };
  auto u32 = [&](size_t i) { return u16(i) | u16(i + 2) << 16; };
  const uint64_t offset = u32(10);
  const uint32_t header = u32(14);
  uint64_t w = 0, h = 0;
  uint32_t bpp = 0;
  if (header == 12) {
    w = u16(18);
    h = u16(20);
    bpp = u16(24);
  } else if (header == 40 || header == 56 || header == 108 || header == 124) {
    const int32_t compression = int32_t(u32(30));  // stb_image reads it as an int: negative passes
    if (compression == 1 || compression == 2 || compression >= 4) return "";  // RLE, JPEG, PNG: refused
    w = u32(18);
    h = uint64_t(std::llabs(int64_t(int32_t(u32(22)))));  // negative: rows stored top-down
    bpp = u16(28);
  } else {
    return "";
  }
  if (offset >= 0x80000000u) return "";  // stb_image: "bad BMP"
  if (bpp < 16 && bpp != 1 && bpp != 4 && bpp != 8) return "";  // stb_image: "bad bpp"
  if (w == 0 || h == 0) return "";                       // no pixels: stb_image decides
  if (w > (1u << 24) || h > (1u << 24)) return "";       // stb_image: "too large"
  // Below 16 bits per pixel a palette lies between the headers and the pixels. stb_image takes its
  // entry count from the offset, (offset - 14 - header) / 4, and when that comes out negative it
  // colours the pixels from a palette it never filled. (After a 12-byte header it counts
  // (offset - 38) / 3, four entries too few; bmp_with_info_header gives it the file in the other form.)
  if (bpp < 16 && offset < 14 + header)
    return "unsupported BMP: its pixel data offset " + std::to_string(offset) +
           " leaves the decoder a palette of no entries (its colours would be uninitialised memory)";
  // A row: its pixels, padded to 4 bytes. stb_image reads any depth from 16 bits up other than 16
  // and 24 as 32 (a header's 800 bits per pixel included).
  const uint64_t pixel_bytes = bpp == 16 ? 2 : bpp == 24 ? 3 : 4;
  const uint64_t row = bpp < 16 ? (w * bpp + 7) / 8 : w * pixel_bytes;
  const uint64_t stride = (row + 3) / 4 * 4;
  const uint64_t needed = offset + stride * (h - 1) + row;
  if (needed > n)
    return "truncated: its BMP header (" + std::to_string(w) + "x" + std::to_string(h) + ", " + std::to_string(bpp) +
           " bits per pixel, pixels at byte " + std::to_string(offset) + ") needs " + std::to_string(needed) +
           " bytes, the file has " + std::to_string(n);
  return "";
}

std::string bmp_with_info_header(const std::string& file) {
  const auto* b = reinterpret_cast<const uint8_t*>(file.data());
  const size_t n = file.size();
  if (n < 26 || b[0] != 'B' || b[1] != 'M') return "";
  auto u16 = [&](size_t i) { return uint32_t(b[i]) | uint32_t(b[i + 1]) << 8; };
  auto u32 = [&](size_t i) { return u16(i) | u16(i + 2) << 16; };
  const uint32_t offset = u32(10), bpp = u16(24);
  if (u32(14) != 12 || (bpp != 1 && bpp != 4 && bpp != 8) || offset < 26 || offset > n) return "";
  const uint32_t entries = (offset - 26) / 3;  // 3 bytes each: blue, green, red
  if (entries > 256) return "";                // stb_image refuses more, in either form
  std::string out;
  auto put16 = [&](uint32_t v) { out += char(v & 0xFF), out += char(v >> 8 & 0xFF); };
  auto put32 = [&](uint32_t v) { put16(v & 0xFFFF), put16(v >> 16); };
  const uint32_t new_offset = 14 + 40 + 4 * entries;
  out += "BM";
  put32(uint32_t(std::min<uint64_t>(uint64_t(new_offset) + (n - offset), 0xFFFFFFFFu)));  // file size
  put32(0);           // reserved
  put32(new_offset);  // the pixels
  put32(40);          // BITMAPINFOHEADER
  put32(u16(18));     // width
  put32(u16(20));     // height: positive, rows bottom-up as in the OS/2 file
  put16(1);           // planes
  put16(bpp);
  for (uint32_t v : {0u, 0u, 0u, 0u, entries, 0u}) put32(v);  // no compression, sizes, colours used
  for (uint32_t e = 0; e < entries; ++e) out.append(file, 26 + 3 * size_t(e), 3).push_back('\0');
  out.append(file, offset, std::string::npos);
  return out;
}

bool rewrite_for_stb_image(const std::string& file, const JpegCheck& jpeg, std::string* out) {
  if (jpeg.standard_tables) {
    *out = jpeg_with_standard_tables(file);
    return true;
  }
  *out = bmp_with_info_header(file);
  return !out->empty();
}

std::string check_png(const uint8_t* b, size_t n) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (n < 8 || std::memcmp(b, kSignature, 8) != 0) return "";
  auto be32 = [&](size_t i) { return load_be32(b + i); };
  auto type_is = [&](size_t i, const char* t) { return std::memcmp(b + i, t, 4) == 0; };
  struct Span {
    size_t at, len;
  };
  std::vector<Span> idat;
  // The bytes stb_image's inflate must produce: a filter byte and the packed samples of every row, of
  // the whole image or of each of the seven Adam7 passes of an interlaced one.
  auto needed_by = [&](size_t pos, uint64_t len) -> uint64_t {
    if (len < 13) return 0;
    const uint64_t w = be32(pos + 8), h = be32(pos + 12), depth = b[pos + 16], color = b[pos + 17];
    if (w == 0 || h == 0 || w > (1u << 24) || h > (1u << 24) || depth > 16) return 0;  // stb_image refuses
    const uint64_t bits = (color == 2 ? 3 : color == 4 ? 2 : color == 6 ? 4 : 1) * depth;
    if (b[pos + 20] == 0) return ((w * bits + 7) / 8 + 1) * h;
    static const uint64_t x0[7] = {0, 4, 0, 2, 0, 1, 0}, y0[7] = {0, 0, 4, 0, 2, 0, 1};
    static const uint64_t dx[7] = {8, 8, 4, 4, 2, 2, 1}, dy[7] = {8, 8, 8, 4, 4, 2, 2};
    uint64_t total = 0;
    for (int p = 0; p < 7; ++p) {
      const uint64_t pw = w > x0[p] ? (w - x0[p] + dx[p] - 1) / dx[p] : 0;
      const uint64_t ph = h > y0[p] ? (h - y0[p] + dy[p] - 1) / dy[p] : 0;
      if (pw && ph) total += ((pw * bits + 7) / 8 + 1) * ph;
    }
    return total;
  };
  bool raw_deflate = false;  // a CgBI chunk (Apple's PNGs): raw deflate, no zlib header
  uint64_t needed = 0;
  for (size_t pos = 8;;) {
    if (pos > n || n - pos < 8) return "";  // cut short: stb_image fails
    const uint64_t len = be32(pos);
    if (type_is(pos + 4, "IEND") && needed != 0) break;  // stb_image reads no further (its CRC may be missing)
    if (len > n - pos - 8) return "";  // stb_image: "outofdata", or it fails at the next chunk
    // The chunks whose contents stb_image reads; it skips every CRC. Without its 4 bytes of CRC the
    // chunk is the file's last, and stb_image fails at the next chunk header.
    static const char* kRead[] = {"CgBI", "IHDR", "PLTE", "tRNS", "IDAT"};
    const bool read = std::any_of(std::begin(kRead), std::end(kRead), [&](const char* t) { return type_is(pos + 4, t); });
    if (read && n - pos - 8 - len >= 4) {
      const uint32_t stored = be32(pos + 8 + size_t(len));
      const uint32_t computed = uint32_t(::crc32(::crc32(0L, b + pos + 4, 4), b + pos + 8, uInt(len)));
      if (stored != computed) {
        char hex[64];
        std::snprintf(hex, sizeof hex, "stored 0x%08x, computed 0x%08x", stored, computed);
        return "corrupt PNG: its " + std::string(reinterpret_cast<const char*>(b + pos + 4), 4) +
               " chunk at byte offset " + std::to_string(pos) + " fails its CRC check (" + hex + ")";
      }
    }
    if (type_is(pos + 4, "CgBI")) {
      raw_deflate = true;
    } else if (type_is(pos + 4, "IHDR")) {
      if (needed != 0 || (needed = needed_by(pos, len)) == 0) return "";  // a second IHDR, or a bad one
    } else if (needed == 0) {
      return "";  // stb_image: "first not IHDR"
    } else if (type_is(pos + 4, "IDAT")) {
      idat.push_back({pos + 8, size_t(len)});
    }
    pos += 12 + len;
  }
  if (idat.empty()) return "";  // stb_image: "no IDAT"

  z_stream z{};
  if ((raw_deflate ? inflateInit2(&z, -MAX_WBITS) : inflateInit(&z)) != Z_OK) return "";
  struct End {
    z_stream* z;
    ~End() { inflateEnd(z); }
  } end{&z};
  const uint64_t limit = 2 * needed + (1u << 20);
  // Output goes to a scratch buffer and is dropped; stb_image inflates again. Not zeroed: zlib only writes.
  const size_t scratch_size = size_t(std::min<uint64_t>(uint64_t(1) << 16, limit));
  std::unique_ptr<unsigned char[]> scratch(new unsigned char[scratch_size]);
  uint64_t produced = 0;
  size_t next = 0;  // the next IDAT span to feed
  for (;;) {
    while (z.avail_in == 0 && next < idat.size()) {
      z.next_in = const_cast<Bytef*>(b + idat[next].at);
      z.avail_in = uInt(idat[next].len);
      ++next;
    }
    z.next_out = scratch.get();
    z.avail_out = uInt(scratch_size);
    const int rc = inflate(&z, Z_NO_FLUSH);
    produced += scratch_size - z.avail_out;
    if (rc == Z_STREAM_END) return "";
    if (rc == Z_NEED_DICT) return "corrupt PNG: its pixel data asks for a preset zlib dictionary";
    if (rc != Z_OK && rc != Z_BUF_ERROR)
      return std::string("corrupt PNG: its compressed pixel data is invalid (zlib: ") + (z.msg ? z.msg : "error") + ")";
    if (produced > limit)
      return "corrupt PNG: its compressed pixel data expands past " + std::to_string(limit) +
             " bytes, more than twice the " + std::to_string(needed) + " its header needs";
    // Z_BUF_ERROR, or a buffer not filled with no input left: nothing more is coming.
    if (rc == Z_BUF_ERROR || (z.avail_in == 0 && z.avail_out != 0 && next == idat.size())) break;
  }
  // The stream stops unfinished. Short of the pixels (stb_image refuses it too) it is named with what
  // it lacks; after all of them (its checksum missing, say) nothing is lost.
  if (produced < needed)
    return "corrupt PNG: its compressed pixel data stops after " + std::to_string(produced) + " of the " +
           std::to_string(needed) + " bytes its header needs (cut short?)";
  return "";
}

}  // namespace volt
