// ImageFolderDataset on PNG, BMP and JPEG files written by stb_image_write (sorted classes and
// files, channel-planar decoding, errors naming the file), and concurrent get() on every dataset.
// Files stb_image alone would decode wrong (Motion JPEG, JPEG scans cut short or without their restart
// markers, OS/2 palette BMPs) are in test_image_formats.cpp.
#include <doctest/doctest.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "data/cifar.h"
#include "data/image_check.h"
#include "data/image_folder.h"
#include "data/synthetic.h"
#include "engine/error.h"
#include "tests/dataset_files.h"
#include "tests/image_files.h"
#include "tests/test_util.h"

using namespace volt;
namespace fs = std::filesystem;

namespace {
using test::Bytes;
using test::cifar_records;
using test::contains;
using test::decode_error;
using test::error_of;
using test::file_bytes;
using test::first_labels;
using test::pixel_at;
using test::write_file;
using TempDir = test::DatasetDir;
}  // namespace

namespace {
// w x h image with `comp` interleaved channels; value depends on (seed, y, x, c).
Bytes hwc_image(int w, int h, int comp, int seed) {
  Bytes b(size_t(w * h * comp));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < comp; ++c) b[size_t((y * w + x) * comp + c)] = uint8_t((seed * 53 + y * 29 + x * 7 + c * 85) % 256);
  return b;
}

void write_png(const std::string& path, int w, int h, int comp, int seed) {
  fs::create_directories(fs::path(path).parent_path());
  REQUIRE(stbi_write_png(path.c_str(), w, h, comp, hwc_image(w, h, comp, seed).data(), w * comp));
}
}  // namespace

TEST_CASE("ImageFolder: sorted classes and files, PNG/BMP/JPEG decoded to channel-planar [C, H, W]") {
  TempDir d;
  const int w = 5, h = 3;
  write_png(d / "b_dog/z.png", w, h, 3, 1);
  write_png(d / "b_dog/A.PNG", w, h, 3, 2);
  fs::create_directories(d / "a_cat");
  REQUIRE(stbi_write_bmp((d / "a_cat/x.bmp").c_str(), w, h, 3, hwc_image(w, h, 3, 3).data()));
  REQUIRE(stbi_write_jpg((d / "a_cat/y.JPEG").c_str(), w, h, 3, hwc_image(w, h, 3, 4).data(), 100));
  write_file(d / "a_cat/notes.txt", {1, 2, 3});  // not an image: ignored
  write_file(d / "readme.md", {1});                // not a folder: ignored
  const ImageFolderDataset ds(d.path);
  CHECK(ds.class_names() == std::vector<std::string>{"a_cat", "b_dog"});
  CHECK(ds.size() == 4);
  CHECK(ds.num_classes() == 2);
  CHECK(ds.image_shape() == Shape{3, h, w});
  CHECK(ds.path(0) == d / "a_cat/x.bmp");
  CHECK(ds.path(1) == d / "a_cat/y.JPEG");
  CHECK(ds.path(2) == d / "b_dog/A.PNG");
  CHECK(ds.path(3) == d / "b_dog/z.png");
  CHECK(first_labels(ds, 4) == std::vector<int64_t>{0, 0, 1, 1});
  Bytes img(size_t(ds.image_bytes()));
  for (int64_t i : {0, 2, 3}) {  // lossless formats: exact, seeds 3, 2, 1
    const Bytes want = hwc_image(w, h, 3, i == 0 ? 3 : i == 2 ? 2 : 1);
    ds.get(i, img.data());
    int bad = 0;
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < w * h; ++p) bad += img[size_t(c * w * h + p)] != want[size_t(p * 3 + c)];
    CHECK_MESSAGE(bad == 0, "image ", i);
  }
  ds.get(1, img.data());  // JPEG at quality 100: close
  const Bytes want = hwc_image(w, h, 3, 4);
  int worst = 0;
  for (int c = 0; c < 3; ++c)
    for (int p = 0; p < w * h; ++p) worst = std::max(worst, std::abs(img[size_t(c * w * h + p)] - want[size_t(p * 3 + c)]));
  CHECK(worst <= 40);

  // grey: a 1-channel PNG read as 1 channel is exact, and as 3 channels is replicated
  TempDir g;
  write_png(g / "only/a.png", 4, 6, 1, 5);
  const ImageFolderDataset grey(g.path, 1);
  CHECK(grey.image_shape() == Shape{1, 6, 4});
  CHECK(pixel_at(grey, 0, 0, 5, 3) == hwc_image(4, 6, 1, 5)[5 * 4 + 3]);
  const ImageFolderDataset rgb(g.path, 3);
  CHECK(pixel_at(rgb, 0, 2, 5, 3) == hwc_image(4, 6, 1, 5)[5 * 4 + 3]);
  CHECK(contains(error_of([&] { ImageFolderDataset(g.path, 5); }), "channels must be 1, 2, 3 or 4"));
}

// PNG files assembled chunk by chunk (CRCs by zlib), for pixel data stb_image_write does not write.
Bytes png_chunk(const char* type, const Bytes& data) {
  Bytes c = {uint8_t(data.size() >> 24), uint8_t(data.size() >> 16), uint8_t(data.size() >> 8), uint8_t(data.size())};
  for (int i = 0; i < 4; ++i) c.push_back(uint8_t(type[i]));
  for (uint8_t v : data) c.push_back(v);
  const uLong crc = crc32(crc32(0, reinterpret_cast<const Bytef*>(type), 4), data.data(), uInt(data.size()));
  for (int s = 24; s >= 0; s -= 8) c.push_back(uint8_t(crc >> s));
  return c;
}

// An 8-bit grey PNG (interlaced: Adam7) whose IDAT holds `zlib_stream`.
Bytes grey_png(int w, int h, bool interlaced, const Bytes& zlib_stream) {
  Bytes f = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  const Bytes ihdr = {0, 0, 0, uint8_t(w), 0, 0, 0, uint8_t(h), 8, 0, 0, 0, uint8_t(interlaced)};
  for (const Bytes& c : {png_chunk("IHDR", ihdr), png_chunk("IDAT", zlib_stream), png_chunk("IEND", {})})
    f.insert(f.end(), c.begin(), c.end());
  return f;
}

Bytes zlib_compress(const Bytes& raw, int level) {
  uLongf n = compressBound(uLong(raw.size()));
  Bytes out(n);
  REQUIRE(compress2(out.data(), &n, raw.data(), uLong(raw.size()), level) == Z_OK);
  out.resize(n);
  return out;
}

// DEFLATE's bit order: values least significant bit first, Huffman codes most significant bit first.
struct DeflateBits {
  Bytes out;
  uint32_t acc = 0;
  int count = 0;
  void bits(uint32_t v, int n) {
    for (int i = 0; i < n; ++i) {
      acc |= ((v >> i) & 1u) << count;
      if (++count == 8) {
        out.push_back(uint8_t(acc));
        acc = 0;
        count = 0;
      }
    }
  }
  void code(uint32_t c, int n) {
    for (int i = n - 1; i >= 0; --i) bits((c >> i) & 1u, 1);
  }
  Bytes finish() {
    if (count > 0) out.push_back(uint8_t(acc));
    return out;
  }
};

// An 8x8 RGB JPEG written by stb_image_write at `path` (its folder created), and its bytes.
Bytes write_jpeg_8x8(const std::string& path) {
  fs::create_directories(fs::path(path).parent_path());
  REQUIRE(stbi_write_jpg(path.c_str(), 8, 8, 3, hwc_image(8, 8, 3, 0).data(), 90));
  return file_bytes(path);
}

TEST_CASE("ImageFolder errors name the folder or file") {
  TempDir d;
  SUBCASE("missing directory") { CHECK(contains(error_of([&] { ImageFolderDataset(d / "none"); }), d / "none")); }
  SUBCASE("no class folders") {
    write_file(d / "stray.png", {1});
    const std::string e = error_of([&] { ImageFolderDataset(d.path); });
    CHECK(contains(e, "no class folders in " + d.path));
  }
  SUBCASE("empty class folder") {
    write_png(d / "a/1.png", 2, 2, 3, 0);
    fs::create_directories(d / "b");
    write_file(d / "b/readme.txt", {1});
    const std::string e = error_of([&] { ImageFolderDataset(d.path); });
    CHECK(contains(e, d / "b"));
    CHECK(contains(e, "holds no images"));
  }
  SUBCASE("unreadable image") {
    write_png(d / "a/1.png", 2, 2, 3, 0);
    write_file(d / "a/2.png", {'n', 'o', 't', ' ', 'a', ' ', 'p', 'n', 'g'});
    const std::string e = error_of([&] { ImageFolderDataset(d.path); });
    CHECK(contains(e, d / "a/2.png"));
    CHECK(contains(e, "cannot read image"));
  }
  SUBCASE("image whose header is fine but data is cut off fails in get()") {
    write_png(d / "a/1.png", 16, 16, 3, 0);
    Bytes b = file_bytes(d / "a/1.png");
    b.resize(60);
    const std::string e = decode_error(d, "a/1.png", b);
    CHECK(contains(e, d / "a/1.png"));
    CHECK(contains(e, "cannot decode"));
  }
  SUBCASE("a PNG whose deflate stream uses distance code 30 is refused (stb_image copies uninitialised memory)") {
    // 5x4 grey: 4 rows of a filter byte (0) and 5 pixels. A block with DEFLATE's fixed codes: a filter
    // byte and a pixel, then a match of length 3 at distance code 30, which DEFLATE does not define
    // (zlib: "invalid distance code"); stb_image takes it as distance 0 and copies 3 bytes it never
    // wrote into the pixels. Then the other 19 bytes.
    DeflateBits z;
    z.bits(0x78, 8);
    z.bits(0x01, 8);
    z.bits(1, 1);  // final block
    z.bits(1, 2);  // fixed Huffman codes
    auto literal = [&](unsigned v) { z.code(0x30 + v, 8); };  // fixed code of a byte below 144
    literal(0);
    literal(10);
    z.code(1, 7);   // length code 257: 3 bytes
    z.code(30, 5);  // distance code 30
    for (unsigned k = 5; k < 24; ++k) literal(k % 6 == 0 ? 0 : k);
    z.code(0, 7);   // end of block
    z.bits(0, 32);  // an Adler-32 slot
    const std::string e = decode_error(d, "a/1.png", grey_png(5, 4, false, z.finish()));
    CHECK(contains(e, d / "a/1.png"));
    CHECK(contains(e, "corrupt PNG: its compressed pixel data is invalid (zlib: invalid distance code)"));
  }
  SUBCASE("a PNG whose pixel data inflates to megabytes more than its header needs is refused") {
    // stb_image would inflate all 3 MiB (it keeps growing its buffer) for a 1x1 image.
    const Bytes zeros(size_t(3) << 20, 0);
    const std::string e = decode_error(d, "a/1.png", grey_png(1, 1, false, zlib_compress(zeros, 9)));
    CHECK(contains(e, d / "a/1.png"));
    CHECK(contains(e, "expands past 1048580 bytes, more than twice the 2 its header needs"));
  }
  SUBCASE("a PNG whose pixel data stops early is refused; one missing only its checksum is read") {
    // stb_image refuses the first too ("Corrupt PNG"); zlib's count says how much is missing.
    Bytes raw;
    for (int y = 0; y < 4; ++y) {
      raw.push_back(0);
      for (int x = 0; x < 5; ++x) raw.push_back(uint8_t(40 * y + 7 * x));
    }
    const Bytes stream = zlib_compress(raw, 0);  // stored: every byte of the rows in the stream
    const Bytes cut(stream.begin(), stream.begin() + 20);
    const std::string e = decode_error(d, "a/1.png", grey_png(5, 4, false, cut));
    CHECK(contains(e, d / "a/1.png"));
    CHECK(contains(e, "corrupt PNG: its compressed pixel data stops after 13 of the 24 bytes its header needs"));
    write_file(d / "a/1.png", grey_png(5, 4, false, Bytes(stream.begin(), stream.end() - 4)));
    const ImageFolderDataset ds(d.path);
    Bytes img(size_t(ds.image_bytes()));
    REQUIRE(ds.get(0, img.data()) == 0);
    CHECK(img[1 * 5 + 2] == 40 + 14);
  }
  SUBCASE("a PNG chunk that stb_image reads is refused when its CRC does not match; a damaged text chunk is not") {
    // 2x1, 8-bit palette: entry 0 red, entry 1 blue. stb_image ignores CRCs: with the palette's first
    // byte changed on disk it would decode another colour without a word.
    const Bytes ihdr = {0, 0, 0, 2, 0, 0, 0, 1, 8, 3, 0, 0, 0};
    const Bytes plte = {255, 0, 0, 0, 0, 255};
    const Bytes pixels = zlib_compress({0, 0, 1}, 9);  // filter byte, indices 0 and 1
    auto palette_png = [&](const Bytes& text) {
      Bytes f = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
      for (const Bytes& c : {png_chunk("IHDR", ihdr), text, png_chunk("PLTE", plte), png_chunk("IDAT", pixels),
                             png_chunk("IEND", {})})
        f.insert(f.end(), c.begin(), c.end());
      return f;
    };
    Bytes text = png_chunk("tEXt", {'C', 'o', 'm', 'm', 'e', 'n', 't', 0, 'h', 'i'});
    text[8] ^= 0x20;  // "comment": the text changed, its CRC not
    Bytes good = palette_png(text);
    write_file(d / "a/1.png", good);
    {
      const ImageFolderDataset ds(d.path, 3);
      Bytes img(size_t(ds.image_bytes()));
      REQUIRE(ds.get(0, img.data()) == 0);
      CHECK(img == Bytes{255, 0, 0, 0, 0, 255});  // planar: R of both pixels, G, B
    }
    const size_t plte_at = 8 + 25 + text.size(), idat_at = plte_at + 18;
    Bytes bad = good;
    bad[plte_at + 8] = 254;
    std::string e = decode_error(d, "a/1.png", bad);
    CHECK(contains(e, d / "a/1.png"));
    CHECK(contains(e, "corrupt PNG: its PLTE chunk at byte offset " + std::to_string(plte_at) + " fails its CRC check"));
    bad = good;
    bad[idat_at + 8 + pixels.size() + 3] ^= 1;  // the IDAT chunk's CRC itself
    e = decode_error(d, "a/1.png", bad);
    CHECK(contains(e, "corrupt PNG: its IDAT chunk at byte offset " + std::to_string(idat_at) + " fails its CRC check"));
    bad = good;
    bad.resize(idat_at + 8 + pixels.size() + 2);  // the IDAT chunk's CRC cut off, and IEND with it
    CHECK(contains(decode_error(d, "a/1.png", bad), "cannot decode"));
  }
  SUBCASE("a BMP cut short is refused, not decoded with zeros for the missing rows") {
    // stb_image reads past the end of a BMP as zeros and reports success; PNG and JPEG decoders fail.
    fs::create_directories(d / "a");
    REQUIRE(stbi_write_bmp((d / "a/1.bmp").c_str(), 16, 16, 3, hwc_image(16, 16, 3, 0).data()));
    Bytes b = file_bytes(d / "a/1.bmp");
    REQUIRE(b.size() == 54 + 16 * 48);
    b.pop_back();
    std::string e = decode_error(d, "a/1.bmp", b);  // the header is whole
    CHECK(contains(e, d / "a/1.bmp"));
    CHECK(contains(e, "truncated: its BMP header (16x16, 24 bits per pixel, pixels at byte 54) needs 822 bytes, "
                      "the file has 821"));
    // The compression field read as a negative int, which stb_image also takes as uncompressed (found by fuzzing).
    b[33] = 0xea;
    e = decode_error(d, "a/1.bmp", b);
    CHECK(contains(e, "needs 822 bytes, the file has 821"));
    // A V4 header with 800 bits per pixel, read by stb_image as 32, and that negative compression,
    // which leaves the colour masks the file gives (found by libFuzzer): 2x2 needs 122 + 8 + 8 bytes.
    b.assign(130, 0);
    for (auto [at, v] : std::vector<std::pair<int, uint8_t>>{
             {0, 'B'}, {1, 'M'}, {10, 122}, {14, 108}, {18, 2}, {22, 2}, {26, 1}, {28, 0x20}, {29, 3}, {33, 0x8e},
             {56, 0xff}, {59, 0xff}, {62, 0xff}})
      b[size_t(at)] = v;
    e = decode_error(d, "a/1.bmp", b);
    CHECK(contains(e, "(2x2, 800 bits per pixel, pixels at byte 122) needs 138 bytes, the file has 130"));
  }
  SUBCASE("a 135-byte BMP claiming 9000 x 9000 pixels is refused before anything is decoded") {
    Bytes b = {'B', 'M', 0, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0, 0x28, 0x23, 0, 0, 0x28, 0x23, 0, 0, 1, 0, 24, 0};
    b.resize(135, 0x7f);
    std::fill(b.begin() + 30, b.begin() + 54, 0);
    const std::string e = decode_error(d, "a/1.bmp", b);
    CHECK(contains(e, d / "a/1.bmp"));
    CHECK(contains(e, "(9000x9000, 24 bits per pixel, pixels at byte 54) needs 243000054 bytes, the file has 135"));
  }
  SUBCASE("a palette BMP whose pixel offset leaves no room for a palette is refused") {
    // stb_image takes (offset - 14 - 40) / 4 palette entries: -4 here, and would colour the pixels from
    // a palette it never filled.
    Bytes b = {'B', 'M', 0, 0, 0, 0, 0, 0, 0, 0, 38, 0, 0, 0, 40, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 1, 0, 8, 0};
    b.resize(54 + 16, 3);
    std::fill(b.begin() + 30, b.begin() + 54, 0);
    const std::string e = decode_error(d, "a/1.bmp", b);
    CHECK(contains(e, d / "a/1.bmp"));
    CHECK(contains(e, "pixel data offset 38 leaves the decoder a palette of no entries"));
  }
  SUBCASE("a header with an impossible size (found by tests/fuzz)") {
    // A BMP header whose width reads as int 0x80000000 and height 0: stbi_info passes both through.
    Bytes b = {'B', 'M', 0x76, 0, 0, 0, 0, 0, 0, 0, 0x36, 0, 0, 0, 0x28, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 1, 0, 0x18, 0};
    b.resize(118, 0);
    write_file(d / "a/1.bmp", b);
    const std::string e = error_of([&] { ImageFolderDataset(d.path); });
    CHECK(contains(e, d / "a/1.bmp"));
    CHECK(contains(e, "header gives a size of"));
  }
  SUBCASE("an image larger than Pillow's decompression-bomb limit is refused from its header") {
    // A PNG signature and IHDR claiming 10000 x 10000 RGB (100M pixels > 89,478,485); no pixel data.
    Bytes b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
               0, 0, 0x27, 0x10, 0, 0, 0x27, 0x10, 8, 2, 0, 0, 0, 0, 0, 0, 0};
    write_file(d / "a/1.png", b);
    const std::string e = error_of([&] { ImageFolderDataset(d.path); });
    CHECK(contains(e, d / "a/1.png"));
    CHECK(contains(e, "10000x10000"));
    CHECK(contains(e, "larger than the 89478485 pixels accepted"));
  }
  SUBCASE("a file named .png holding another format stb_image reads (GIF) is refused") {
    write_file(d / "a/1.png", {'G', 'I', 'F', '8', '9', 'a', 2, 0, 2, 0, 0x80, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x3b});
    const std::string e = error_of([&] { ImageFolderDataset(d.path); });
    CHECK(contains(e, d / "a/1.png"));
    CHECK(contains(e, "cannot read image"));
  }
  SUBCASE("a JPEG Huffman table of more than 256 codes is refused before stb_image overruns it") {
    // stb_image 2.27 (Debian 12) writes past its tables for such a file (stb issues #1289, #1291).
    Bytes b = write_jpeg_8x8(d / "a/1.jpg");
    size_t dht = 0;
    for (size_t i = 2; i + 1 < b.size() && !dht; ++i)
      if (b[i] == 0xFF && b[i + 1] == 0xC4) dht = i;
    REQUIRE(dht > 0);
    const size_t counts = dht + 5;  // FF C4, length (2), table class/id, then 16 counts
    const ImageFolderDataset ok(d.path);
    Bytes img(size_t(ok.image_bytes()));
    CHECK(ok.get(0, img.data()) == 0);
    b[counts + 15] = 255;  // with the table's own codes: more than 256
    write_file(d / "a/1.jpg", b);
    const ImageFolderDataset ds(d.path);  // the table follows the frame header: get() finds it
    const std::string e = error_of([&] { ds.get(0, img.data()); });
    CHECK(contains(e, d / "a/1.jpg"));
    CHECK(contains(e, "Huffman table at byte offset " + std::to_string(dht + 4)));
    CHECK(contains(e, "(at most 256)"));
    // stb_image also reads a JPEG whose SOI marker follows 0xFF fill bytes (found by libFuzzer).
    b.insert(b.begin(), {0xFF, 0xFF, 0xFF});
    write_file(d / "a/1.jpg", b);
    CHECK(contains(error_of([&] { ImageFolderDataset(d.path).get(0, img.data()); }), "Huffman table"));
  }
  SUBCASE("a JPEG scan that uses tables the file never defines, or a component no scan fills, is refused") {
    // stb_image keeps its tables and coefficients in memory it does not clear: without a DQT segment or
    // with a component in no scan it decodes pixels made of whatever that memory held (the first was
    // found by tests/fuzz); without a DHT segment for a table a scan uses it decodes with
    // uninitialised tables until it fails. (A file with no DHT at all is a Motion JPEG frame and gets
    // the standard tables: the test case after this one.)
    const Bytes good = write_jpeg_8x8(d / "a/1.jpg");
    auto marker = [&](uint8_t m) {
      for (size_t i = 2; i + 1 < good.size(); ++i)
        if (good[i] == 0xFF && good[i + 1] == m) return i;
      FAIL("no marker FF " << int(m));
      return size_t(0);
    };
    auto refusal = [&](const Bytes& b) { return decode_error(d, "a/1.jpg", b); };
    Bytes b = good;
    b[marker(0xDB) + 1] = 0xFE;  // the DQT segment becomes a comment of the same length
    std::string e = refusal(b);
    CHECK(contains(e, d / "a/1.jpg"));
    CHECK(contains(e, "corrupt JPEG: a scan of component 1 uses quantization table 0, which no DQT segment"));
    // stb_image_write's DHT segment holds DC 0, AC 0, DC 1, AC 1; keep the first two (12 and 162 codes).
    const size_t dht = marker(0xC4), kept = 2 * 17 + 12 + 162;
    REQUIRE((size_t(good[dht + 2]) << 8 | good[dht + 3]) == 2 + 2 * kept);
    b = Bytes(good.begin(), good.begin() + long(dht));
    for (int v : {0xFF, 0xC4, 0, int(2 + kept)}) b.push_back(uint8_t(v));
    b.insert(b.end(), good.begin() + long(dht + 4), good.begin() + long(dht + 4 + kept));
    b.insert(b.end(), good.begin() + long(dht + 4 + 2 * kept), good.end());
    CHECK(contains(refusal(b), "corrupt JPEG: a scan of component 2 uses DC Huffman table 1, which no DHT segment"));
    // The only scan is of component 1 (Y) of the three: one block, DC difference 0 (code 00) and
    // end of block (1010), padded with ones: 0x2B. Cb and Cr are never decoded.
    b = good;
    const size_t sos = marker(0xDA);
    REQUIRE(b[sos + 4] == 3);
    b.resize(sos);
    for (uint8_t v : {0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 63, 0, 0x2B, 0xFF, 0xD9}) b.push_back(v);
    CHECK(contains(refusal(b), "corrupt JPEG: component 2 is in no scan, so its pixels would be uninitialised memory"));
  }
  SUBCASE("the same table before the frame header, behind padding that stb_image skips there") {
    Bytes b = write_jpeg_8x8(d / "a/1.jpg");
    // Segments up to the scan: SOI, then [FF, marker, length (2), payload] each.
    std::vector<Bytes> segs;
    size_t pos = 2;
    while (pos + 4 <= b.size() && b[pos] == 0xFF && b[pos + 1] != 0xDA) {
      const size_t len = size_t(b[pos + 2]) << 8 | b[pos + 3];
      segs.emplace_back(b.begin() + long(pos), b.begin() + long(pos + 2 + len));
      pos += 2 + len;
    }
    auto find = [&](uint8_t m) {
      for (size_t i = 0; i < segs.size(); ++i)
        if (segs[i][1] == m) return i;
      FAIL("no segment FF ", int(m));
      return size_t(0);
    };
    const size_t sof = find(0xC0), dht = find(0xC4);
    REQUIRE(dht > sof);
    Bytes bad_dht = segs[dht];
    bad_dht[5 + 15] = 255;
    // SOI, the segments before the frame, 3 bytes of padding, the bad table, the frame and the rest.
    Bytes out(b.begin(), b.begin() + 2);
    for (size_t i = 0; i < sof; ++i) out.insert(out.end(), segs[i].begin(), segs[i].end());
    out.insert(out.end(), {0x00, 0x12, 0x34});
    out.insert(out.end(), bad_dht.begin(), bad_dht.end());
    for (size_t i = sof; i < segs.size(); ++i)
      if (i != dht) out.insert(out.end(), segs[i].begin(), segs[i].end());
    out.insert(out.end(), b.begin() + long(pos), b.end());
    write_file(d / "a/1.jpg", out);
    const std::string e = error_of([&] { ImageFolderDataset(d.path); });  // stbi_info reads it already
    CHECK(contains(e, d / "a/1.jpg"));
    CHECK(contains(e, "Huffman table"));
  }
  SUBCASE("mixed image sizes: the first file that differs") {
    write_png(d / "a/1.png", 4, 4, 3, 0);
    write_png(d / "a/2.png", 4, 4, 3, 1);
    write_png(d / "b/1.png", 4, 5, 3, 2);
    write_png(d / "b/2.png", 3, 3, 3, 3);
    const std::string e = error_of([&] { ImageFolderDataset(d.path); });
    CHECK(contains(e, d / "b/1.png"));
    CHECK(contains(e, "4x5"));
    CHECK(contains(e, d / "a/1.png"));
    CHECK_FALSE(contains(e, d / "b/2.png"));
  }
}

TEST_CASE("ImageFolder reads an interlaced (Adam7) PNG") {
  // 5x4 grey, interlaced: the seven passes' rows, each with its filter byte, in one zlib stream; the
  // byte count that check_png expects must match what stb_image inflates.
  static const int x0[7] = {0, 4, 0, 2, 0, 1, 0}, y0[7] = {0, 0, 4, 0, 2, 0, 1};
  static const int dx[7] = {8, 8, 4, 4, 2, 2, 1}, dy[7] = {8, 8, 8, 4, 4, 2, 2};
  const int w = 5, h = 4;
  auto value = [](int x, int y) { return uint8_t(50 * y + 9 * x + 1); };
  Bytes raw;
  for (int p = 0; p < 7; ++p)
    for (int y = y0[p]; y < h; y += dy[p]) {
      if (x0[p] >= w) break;
      raw.push_back(0);
      for (int x = x0[p]; x < w; x += dx[p]) raw.push_back(value(x, y));
    }
  TempDir d;
  fs::create_directories(d / "a");
  write_file(d / "a/1.png", grey_png(w, h, true, zlib_compress(raw, 9)));
  const ImageFolderDataset ds(d.path, 1);
  Bytes img(size_t(ds.image_bytes()));
  REQUIRE(ds.get(0, img.data()) == 0);
  int wrong = 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) wrong += img[size_t(y * w + x)] != value(x, y);
  CHECK(wrong == 0);
}

TEST_CASE("ImageFolder accepts every variant Pillow writes, with Pillow's pixels") {
  // tests/image_corpus.py writes PNG (grey, alpha, palettes of 1, 4 and 8 bits, several IDAT chunks,
  // stored and optimised streams), JPEG (4:4:4, 4:2:2, 4:2:0, progressive, optimised, grey) and BMP
  // (24-bit, 8-bit, palette, 1-bit) with Pillow, and Pillow's decode of each. Not one may be
  // refused by the checks stb_image's decoders need, and each must decode to Pillow's pixels.
  if (std::system("python3 -c 'import numpy, PIL' >/dev/null 2>&1") != 0)
    volt::test::skip("Pillow and numpy not installed (pip install pillow numpy)");
  TempDir d;
  const std::string cmd = std::string("python3 '") + VOLT_SOURCE_DIR + "/tests/image_corpus.py' '" + d.path + "'";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream listing(d / "list.txt");
  std::string name;
  int w = 0, h = 0, checked = 0;
  double tolerance = 0;
  while (listing >> name >> w >> h >> tolerance) {
    CAPTURE(name);
    const Bytes want = file_bytes(d / (name + ".rgb"));
    REQUIRE(want.size() == size_t(w * h * 3));
    std::string refused;
    Bytes got;
    try {
      const ImageFolderDataset ds(d / name, 3);
      REQUIRE(ds.image_shape() == Shape{3, h, w});
      got.resize(size_t(ds.image_bytes()));
      ds.get(0, got.data());
    } catch (const volt::Error& e) {
      refused = e.what();
    }
    CHECK(refused == "");
    if (!refused.empty()) continue;
    double sum = 0;
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < w * h; ++p) sum += std::abs(int(got[size_t(c * w * h + p)]) - int(want[size_t(p * 3 + c)]));
    const double mean = sum / double(w * h * 3);
    CAPTURE(mean);
    CHECK(mean <= tolerance);
    ++checked;
  }
  CHECK(checked == 22);
}

// ---- synthetic, and concurrent reads ----

TEST_CASE("get() is safe to call from several threads at once") {
  TempDir d;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 4; ++i) write_png(d / ("c" + std::to_string(c) + "/" + std::to_string(i) + ".png"), 8, 6, 3, c * 4 + i);
  TempDir cd;
  write_file(cd / "test_batch.bin", cifar_records({{1}, {2}, {3}, {4}, {5}}));
  const ImageFolderDataset folder(d.path, 3);
  const CIFAR10Dataset cifar(cd.path, false, false);
  SyntheticOptions so;
  so.size = 12;
  const SyntheticDataset synth(so);
  for (const Dataset* ds : std::vector<const Dataset*>{&folder, &cifar, &synth}) {
    std::vector<Bytes> want(size_t(ds->size()), Bytes(size_t(ds->image_bytes())));
    std::vector<int64_t> want_label(size_t(ds->size()));
    for (int64_t i = 0; i < ds->size(); ++i) want_label[size_t(i)] = ds->get(i, want[size_t(i)].data());
    std::vector<int> mismatches(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        Bytes img(size_t(ds->image_bytes()));
        for (int rep = 0; rep < 5; ++rep)
          for (int64_t i = 0; i < ds->size(); ++i) {
            const int64_t j = (i + t + rep) % ds->size();
            const int64_t l = ds->get(j, img.data());
            mismatches[size_t(t)] += l != want_label[size_t(j)] || img != want[size_t(j)];
          }
      });
    for (auto& th : threads) th.join();
    CHECK_MESSAGE(mismatches == std::vector<int>(4, 0), ds->name());
  }
}
