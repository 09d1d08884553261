// A structural check of JPEG files before stb_image decodes them. The stb_image that Debian 12 ships
// (2.27) writes past its Huffman tables when a DHT segment declares more than 256 codes (stb issues
// #1289 and #1291, fixed in 2.28): a corrupt or crafted .jpg in an image folder could corrupt memory.
// This walks the file's segments the way stb_image's decoder does and reports such a table.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace volt {

struct JpegCheck {
  std::string fault;    // "" when nothing unsafe was found
  bool complete = true;  // false: the bytes ended before the walk did (give it the whole file)
};

// `data` holds the file's first `size` bytes (all of it, or a prefix: then `complete` may be false).
// Not a JPEG (no SOI marker first, after any 0xFF fill): nothing to check. stop_at_frame: stop at the
// frame header (SOF), as far as stb_image reads for stbi_info. Anything stb_image itself refuses is
// left for it to report.
JpegCheck check_jpeg(const uint8_t* data, size_t size, bool stop_at_frame);

}  // namespace volt
