// check_jpeg (see jpeg_check.h): the marker walk of stb_image's JPEG decoder, checking each Huffman
// table's code count. Past the end of the data stb_image reads zeros; so does this walk.
#include "data/jpeg_check.h"

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

}  // namespace volt
