// Structural checks of image files before stb_image decodes them.
// check_jpeg: the stb_image that Debian 12 ships (2.27) writes past its Huffman tables when a DHT
// segment declares more than 256 codes (stb issues #1289 and #1291, fixed in 2.28): a corrupt or
// crafted .jpg in an image folder could corrupt memory. And it keeps its quantization and Huffman
// tables and its coefficients in memory it does not clear, so a scan using a table the file never
// defined, or a component that no scan fills, decodes to pixels made of stale heap memory. check_jpeg
// walks the file's segments the way stb_image's decoder does and reports all three. A Motion JPEG
// frame (no DHT at all) gets the standard tables that its format implies, instead of stale memory.
// And where a baseline scan's entropy-coded data ends before its last MCU (a file cut short and closed
// with an EOI marker, or another file's bytes spliced in), stb_image decodes on from zero bits without
// an error (with the marker met inside a block its bit count can go negative, then it shifts by 32 bits
// or more: undefined behaviour), and where a restart interval ends without a restart marker it stops
// decoding the scan, leaving the rest of the image uninitialised memory. check_jpeg decodes the
// Huffman codes of each baseline scan as stb_image does and reports both.
// check_bmp: stb_image reads a BMP cut short as if zeros followed (black rows, no error), after
// allocating the whole image its header claims, and a palette BMP whose pixel data offset leaves it
// fewer than zero palette entries as one with a palette it never fills. Both are refused. And it
// reads four palette entries too few from an OS/2 1.x BMP (12-byte header), so pixels of the top
// four indices come from uninitialised stack memory: bmp_with_info_header rewrites such a file as
// the same image with a Windows header, which it reads right.
// check_png: stb_image skips every chunk's CRC, so a palette, transparency or header changed on disk
// decodes to other pixels without a word; check_png checks the CRC of each chunk stb_image reads
// (IHDR, PLTE, tRNS, IDAT, CgBI; a damaged text chunk or other chunk it skips changes no pixel and is
// left alone). And stb_image's own inflate takes distance codes 30 and 31 of a fixed-code block,
// which DEFLATE does not have, as a distance of 0 and copies uninitialised memory into the pixels,
// and keeps inflating however far the stream expands (a 3 MiB stream for a 1x1 image). zlib inflates
// the pixel data first (checking the Adler-32 sum too, which stb_image ignores) and refuses both.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace volt {

struct JpegCheck {
  std::string fault;    // "" when nothing unsafe was found
  bool complete = true;  // false: the bytes ended before the walk did (give it the whole file)
  // No DHT segment before the first scan: a Motion JPEG frame (AVI1), whose scans use the standard
  // Huffman tables of ITU-T T.81 Annex K.3 (DC and AC, tables 0 and 1). stb_image does not supply
  // them; decode jpeg_with_standard_tables(file) instead.
  bool standard_tables = false;
};

// `data` holds the file's first `size` bytes (all of it, or a prefix: then `complete` may be false).
// Not a JPEG (no SOI marker first, after any 0xFF fill): nothing to check. stop_at_frame: stop at the
// frame header (SOF), as far as stb_image reads for stbi_info. Anything stb_image itself refuses is
// left for it to report.
// Without stop_at_frame (give it the whole file then), each baseline (SOF0, SOF1) scan's entropy-coded
// data is decoded as stb_image 2.27 takes it, to the end of its last MCU: the data is the bytes up to
// the next marker or the end of `data` (FF 00 is a data byte 0xFF); the Huffman tables are those of
// the DHT segments before the scan (the standard ones for a Motion JPEG frame); every MCU of the scan
// is decoded, h x v blocks of each component in an interleaved scan over MCUs of 8 h_max x 8 v_max
// pixels, one block per MCU in a scan of one component over that component's share of the pixels.
// Data that ends before the last MCU's last bit is a fault ("the scan at byte offset N ends after M of
// its T MCUs"). With a restart interval (DRI) of R > 0, after every R MCUs (unless they were the last)
// the rest of the current byte is padding and a restart marker (RST0..7, after any 0xFF fill) must
// follow at once, or that is a fault ("has no restart marker right after MCU M"); stb_image itself
// takes up to three stray bytes there, depending on how far it has read ahead, but encoders write none.
// A code not in its table, or a DC magnitude over 15, is left for stb_image to refuse. Progressive
// scans are not decoded.
JpegCheck check_jpeg(const uint8_t* data, size_t size, bool stop_at_frame);

// The JPEG `file` with one DHT segment holding the four standard Huffman tables (DC 0, AC 0, DC 1,
// AC 1) inserted right after its SOI marker. For a file that check_jpeg says needs them.
std::string jpeg_with_standard_tables(const std::string& file);

// `data` holds the whole file. Not a BMP stb_image would decode ("BM", then a header size, bit depth
// and compression it takes): nothing to check, left for it to report. Otherwise "" when the file
// holds every byte stb_image will read (the pixel data's offset, then every row but the last with
// its padding to 4 bytes, then the last row) and, below 16 bits per pixel, its offset leaves room for
// a palette that is not negative in size.
std::string check_bmp(const uint8_t* data, size_t size);

// An OS/2 1.x BMP (12-byte header) of 1, 4 or 8 bits per pixel whose offset leaves room for its
// palette, as the same image with a 40-byte BITMAPINFOHEADER and 4-byte palette entries (the pixel
// data, from the file's offset on, unchanged); "" for any other file.
std::string bmp_with_info_header(const std::string& file);

// What stb_image is to decode of a `file` that passed the checks: the file itself (false), or a
// rewritten copy in *out (true): with the standard Huffman tables for a Motion JPEG frame (`jpeg`, its
// check_jpeg result, says), with a Windows header for an OS/2 palette BMP.
bool rewrite_for_stb_image(const std::string& file, const JpegCheck& jpeg, std::string* out);

// `data` holds the whole file. Not a PNG (no signature): nothing to check. A chunk stb_image reads,
// met before IEND, whose CRC-32 does not match is reported (one cut off before its CRC is left for
// stb_image to refuse). A file stb_image would not get as far as inflating (an IHDR chunk first,
// IEND reached) is left for it to refuse. Otherwise "" when the concatenated IDAT data is a zlib
// stream (raw deflate after a CgBI chunk, as stb_image takes it) that zlib inflates without error to
// at least the bytes the header needs (rows with their filter bytes) and at most twice that plus 1 MiB.
std::string check_png(const uint8_t* data, size_t size);

}  // namespace volt
