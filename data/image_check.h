// Structural checks of image files before stb_image decodes them.
// check_jpeg: the stb_image that Debian 12 ships (2.27) writes past its Huffman tables when a DHT
// segment declares more than 256 codes (stb issues #1289 and #1291, fixed in 2.28): a corrupt or
// crafted .jpg in an image folder could corrupt memory. It walks the file's segments the way
// stb_image's decoder does and reports such a table.
// check_bmp: stb_image reads a BMP cut short as if zeros followed (black rows, no error), after
// allocating the whole image its header claims, and a palette BMP whose pixel data offset leaves it
// fewer than zero palette entries as one with a palette it never fills. Both are refused.
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

// `data` holds the whole file. Not a BMP stb_image would decode ("BM", then a header size, bit depth
// and compression it takes): nothing to check, left for it to report. Otherwise "" when the file
// holds every byte stb_image will read (the pixel data's offset, then every row but the last with
// its padding to 4 bytes, then the last row) and, below 16 bits per pixel, its offset gives stb_image a
// palette size that is not negative.
std::string check_bmp(const uint8_t* data, size_t size);

}  // namespace volt
