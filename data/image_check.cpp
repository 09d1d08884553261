// check_jpeg (see image_check.h): the marker walk of stb_image's JPEG decoder, checking each Huffman
// table's code count. Past the end of the data stb_image reads zeros; so does this walk.
// bmp_bytes_needed: the header fields stb_image's BMP reader uses (BITMAPFILEHEADER, then a
// BITMAPCOREHEADER of 12 bytes or an INFO/V3/V4/V5 header of 40, 56, 108 or 124).
#include "data/image_check.h"

#include <cstdlib>

#include <string>

namespace volt {

JpegCheck check_jpeg(const uint8_t* b, size_t n, bool stop_at_frame) {
  JpegCheck out;
  // stb_image takes a file for a JPEG when its first marker, after any 0xFF fill bytes, is SOI.
  size_t pos = 0;
  while (pos < n && b[pos] == 0xFF) ++pos;
  if (pos < 1 || pos >= n || b[pos] != 0xD8) return out;
  ++pos;
  auto at = [&](size_t i) -> unsigned { return i < n ? b[i] : 0u; };
  bool first = true, before_frame = true;
  for (;;) {
    // Between the segments before the frame header stb_image skips padding up to the next 0xFF
    // (after the first marker); anywhere else a byte that is not 0xFF is its "expected marker" error.
    if (before_frame && !first)
      while (pos < n && b[pos] != 0xFF) ++pos;
    first = false;
    if (pos >= n) {  // stb_image would read on (zeros, then fail): only a prefix can hide more
      out.complete = false;
      return out;
    }
    if (b[pos] != 0xFF) return out;
    while (pos < n && b[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= n) {
      out.complete = false;
      return out;
    }
    const unsigned m = b[pos++];
    if (m == 0xD9) return out;  // end of image
    const size_t len = size_t(at(pos)) << 8 | at(pos + 1);
    if (m == 0xC4) {  // DHT: tables until the segment's length is used up, as stb_image reads them
      long left = long(len) - 2;
      size_t p = pos + 2;
      while (left > 0) {
        const unsigned q = at(p);
        if ((q >> 4) > 1 || (q & 15) > 3) return out;  // stb_image: "bad DHT header"
        unsigned codes = 0;
        for (size_t i = 0; i < 16; ++i) codes += at(p + 1 + i);
        if (codes > 256) {
          out.fault = "corrupt JPEG: the Huffman table at byte offset " + std::to_string(p) + " declares " +
                      std::to_string(codes) + " codes (at most 256)";
          return out;
        }
        p += 17 + codes;
        left -= long(17 + codes);
      }
      if (left != 0) return out;  // stb_image: the segment's length disagrees, an error
      pos = p;
      continue;
    }
    if (len < 2) return out;  // stb_image skips to the end of the file and fails
    if (m >= 0xC0 && m <= 0xC2) {  // the frame header: stbi_info stops here
      if (stop_at_frame) return out;
      before_frame = false;
    }
    pos += len;
    if (m == 0xDA) {  // start of scan: entropy-coded data up to the next marker
      while (pos < n) {
        if (b[pos] != 0xFF) {
          ++pos;
          continue;
        }
        const unsigned next = at(pos + 1);
        if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {  // a stuffed 0xFF, a restart marker
          pos += 2;
          continue;
        }
        break;  // a marker (or fill bytes before one)
      }
    }
  }
}

std::string check_bmp(const uint8_t* b, size_t n) {
  if (n < 30 || b[0] != 'B' || b[1] != 'M') return "";
  auto u16 = [&](size_t i) { return uint32_t(b[i]) | uint32_t(b[i + 1]) << 8; };
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
    if (n < 34) return "";
    const int32_t compression = int32_t(u32(30));  // stb_image reads it as an int: negative passes
    if (compression == 1 || compression == 2 || compression >= 4) return "";  // RLE, JPEG, PNG: refused
    w = u32(18);
    h = uint64_t(std::llabs(int64_t(int32_t(u32(22)))));  // negative: rows stored top-down
    bpp = u16(28);
  } else {
    return "";
  }
  if (offset >= 0x80000000u) return "";  // stb_image: "bad BMP"
  if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32) return "";
  if (w == 0 || h == 0) return "";                       // no pixels: stb_image decides
  if (w > (1u << 24) || h > (1u << 24)) return "";       // stb_image: "too large"
  // Below 16 bits per pixel a palette lies between the headers and the pixels. stb_image takes its
  // entry count from the offset, (offset - 14 - header) / 4, or (offset - 38) / 3 after a 12-byte
  // header (sic), and when that comes out negative it colours the pixels from a palette it never filled.
  if (bpp < 16 && (header == 12 ? offset < 36 : offset < 14 + header))
    return "unsupported BMP: its pixel data offset " + std::to_string(offset) +
           " leaves the decoder a palette of no entries (its colours would be uninitialised memory)";
  const uint64_t row = (w * bpp + 7) / 8;
  const uint64_t stride = (w * bpp + 31) / 32 * 4;
  const uint64_t needed = offset + stride * (h - 1) + row;
  if (needed > n)
    return "truncated: its BMP header (" + std::to_string(w) + "x" + std::to_string(h) + ", " + std::to_string(bpp) +
           " bits per pixel, pixels at byte " + std::to_string(offset) + ") needs " + std::to_string(needed) +
           " bytes, the file has " + std::to_string(n);
  return "";
}

}  // namespace volt
