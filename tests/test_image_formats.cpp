// Files that stb_image 2.27 alone decodes wrong, through ImageFolderDataset: a Motion JPEG frame (no
// DHT) decoded with the standard tables, baseline JPEG scans whose data ends before their last MCU
// refused, restart markers followed (and a missing one refused), OS/2 palette BMPs decoded with every
// palette entry; data/image_check.h says what stb_image does with each.
#include <doctest/doctest.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "data/image_check.h"
#include "data/image_folder.h"
#include "tests/dataset_files.h"
#include "tests/image_files.h"
#include "tests/test_util.h"

using namespace volt;
namespace fs = std::filesystem;

namespace {
using test::Bytes;
using test::contains;
using test::decode_error;
using test::error_of;
using test::file_bytes;
using test::pixel_at;
using test::write_file;
using TempDir = test::DatasetDir;
}  // namespace

TEST_CASE("ImageFolder decodes a Motion JPEG frame (no DHT segment) with the standard Huffman tables") {
  // stb_image_write codes with the standard tables of T.81 Annex K and writes them in one DHT segment:
  // the same file without that segment is a Motion JPEG frame, and must decode to the same pixels.
  // Noise, at quality 95 (no chroma subsampling), so that most of the tables' codes occur.
  const int w = 37, h = 21;
  Bytes px(size_t(w * h * 3));
  uint32_t state = 12345;
  for (uint8_t& v : px) v = uint8_t((state = state * 1664525u + 1013904223u) >> 24);
  TempDir d;
  fs::create_directories(d / "with/a");
  fs::create_directories(d / "without/a");
  REQUIRE(stbi_write_jpg((d / "with/a/1.jpg").c_str(), w, h, 3, px.data(), 95));
  const Bytes with = file_bytes(d / "with/a/1.jpg");
  size_t dht = 0;
  for (size_t i = 2; i + 3 < with.size() && dht == 0; ++i)
    if (with[i] == 0xFF && with[i + 1] == 0xC4) dht = i;
  REQUIRE(dht != 0);
  const size_t seg = 2 + (size_t(with[dht + 2]) << 8 | with[dht + 3]);
  Bytes without(with.begin(), with.begin() + long(dht));
  without.insert(without.end(), with.begin() + long(dht + seg), with.end());
  write_file(d / "without/a/1.jpg", without);

  const std::string s(without.begin(), without.end());
  const JpegCheck c = check_jpeg(without.data(), without.size(), false);
  CHECK(c.fault.empty());
  CHECK(c.standard_tables);
  CHECK_FALSE(check_jpeg(with.data(), with.size(), false).standard_tables);
  // The inserted segment, byte for byte stb_image_write's: same tables, same order.
  const std::string inserted = jpeg_with_standard_tables(s);
  CHECK(inserted.substr(2, seg) == std::string(with.begin() + long(dht), with.begin() + long(dht + seg)));
  CHECK(inserted.substr(0, 2) + inserted.substr(2 + seg) == s);

  const ImageFolderDataset a(d / "with"), b(d / "without");
  Bytes pa(size_t(a.image_bytes())), pb(size_t(b.image_bytes()));
  REQUIRE(a.get(0, pa.data()) == 0);
  REQUIRE(b.get(0, pb.data()) == 0);
  CHECK(pa == pb);
  size_t distinct = 0;  // not a flat image that a wrong table could also produce
  for (size_t i = 1; i < pa.size(); ++i) distinct += pa[i] != pa[i - 1];
  CHECK(distinct > pa.size() / 2);
}

// Offset of the first marker FF m after the SOI marker (0 when there is none).
size_t marker_at(const Bytes& b, uint8_t m) {
  for (size_t i = 2; i + 1 < b.size(); ++i)
    if (b[i] == 0xFF && b[i + 1] == m) return i;
  return 0;
}

TEST_CASE("ImageFolder refuses a baseline JPEG whose scan data ends before its last MCU") {
  // stb_image 2.27 decodes on with zero bits where a scan's data ends early: a JPEG cut short and
  // closed with an EOI marker (or with another file's data in place of its own) decodes without an
  // error to made-up pixels (and with the marker met inside a block it can shift by 33 bits: UB).
  const int w = 40, h = 24;
  Bytes px(size_t(w * h * 3));
  uint32_t state = 777;
  for (uint8_t& v : px) v = uint8_t((state = state * 1664525u + 1013904223u) >> 24);
  // Quality 90: 2x2 chroma subsampling, MCUs of 16x16 pixels (3 x 2); 95: none, 8x8 (5 x 3).
  for (const std::pair<int, int> q : {std::pair{90, 6}, std::pair{95, 15}}) {
    const int quality = q.first, mcus = q.second;
    CAPTURE(quality);
    TempDir d;
    fs::create_directories(d / "a");
    REQUIRE(stbi_write_jpg((d / "a/1.jpg").c_str(), w, h, 3, px.data(), quality));
    const Bytes good = file_bytes(d / "a/1.jpg");
    CHECK(check_jpeg(good.data(), good.size(), false).fault == "");
    {
      const ImageFolderDataset ds(d.path);
      Bytes img(size_t(ds.image_bytes()));
      CHECK(ds.get(0, img.data()) == 0);
    }
    const size_t sos = marker_at(good, 0xDA);
    REQUIRE(sos != 0);
    const size_t data = sos + 2 + (size_t(good[sos + 2]) << 8 | good[sos + 3]), end = good.size() - 2;
    REQUIRE((good[end] == 0xFF && good[end + 1] == 0xD9));
    for (int percent : {3, 30, 60, 90, 99}) {  // stb_image decodes each of these without an error
      CAPTURE(percent);
      Bytes cut(good.begin(), good.begin() + long(data + (end - data) * size_t(percent) / 100));
      cut.insert(cut.end(), {0xFF, 0xD9});
      const std::string e = decode_error(d, "a/1.jpg", cut);
      CHECK(contains(e, d / "a/1.jpg"));
      CHECK(contains(e, "corrupt JPEG: the scan at byte offset " + std::to_string(sos) + " ends after "));
      CHECK(contains(e, " of its " + std::to_string(mcus) + " MCUs (cut short, or another file's data inside)"));
    }
  }
}

// A 16x16 grey baseline JPEG written by hand, with a restart interval of 2 MCUs (of one block each).
// Its quantization table is 8 throughout, so that a block of DC coefficient d is flat at 128 + d. DC
// table 0 codes 0 (magnitude 0) and 1 (magnitude 4: 4 bits follow), AC table 0 codes 0 (end of
// block). Each interval: DC +8, end of block, DC +8, end of block (110000 110000), then 1111 to the
// byte: C3 0F. With the DC prediction reset at each restart marker the blocks are 136, 144 in both
// rows (152 and 160 in the second row without the reset).
Bytes restart_jpeg() {
  Bytes f = {0xFF, 0xD8, 0xFF, 0xDB, 0, 67, 0};
  f.insert(f.end(), 64, 8);
  f.insert(f.end(), {0xFF, 0xC0, 0, 11, 8, 0, 16, 0, 16, 1, 1, 0x11, 0});  // SOF0: 16x16, one component
  f.insert(f.end(), {0xFF, 0xC4, 0, 39, 0x00, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4});
  f.insert(f.end(), {0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  f.insert(f.end(), {0xFF, 0xDD, 0, 4, 0, 2});                        // DRI: 2 MCUs
  f.insert(f.end(), {0xFF, 0xDA, 0, 8, 1, 1, 0x00, 0, 63, 0});         // SOS: component 1, tables 0
  f.insert(f.end(), {0xC3, 0x0F, 0xFF, 0xD0, 0xC3, 0x0F, 0xFF, 0xD9});  // the two intervals, EOI
  return f;
}

TEST_CASE("ImageFolder decodes baseline JPEGs with restart markers, and refuses one whose marker is missing") {
  TempDir d;
  const Bytes good = restart_jpeg();
  write_file(d / "a/1.jpg", good);
  {
    const ImageFolderDataset ds(d.path, 1);
    REQUIRE(ds.image_shape() == Shape{1, 16, 16});
    for (int y : {0, 7, 8, 15}) {
      CHECK(std::abs(pixel_at(ds, 0, 0, y, 3) - 136) <= 1);
      CHECK(std::abs(pixel_at(ds, 0, 0, y, 12) - 144) <= 1);
    }
  }
  // Without its restart marker stb_image stops after the first interval (the second row of blocks left
  // as uninitialised memory); cut short after it, it decodes that row from zero bits.
  const size_t rst = marker_at(good, 0xD0);
  REQUIRE(rst != 0);
  Bytes b = good;
  b.erase(b.begin() + long(rst), b.begin() + long(rst + 2));
  const std::string e = decode_error(d, "a/1.jpg", b);
  CHECK(contains(e, d / "a/1.jpg"));
  CHECK(contains(e, "corrupt JPEG: the scan at byte offset " + std::to_string(marker_at(good, 0xDA)) +
                        " has no restart marker right after MCU 2 of its 4, where its restart interval of 2 MCUs"
                        " ends (cut short, or another file's data inside)"));
  b = Bytes(good.begin(), good.begin() + long(rst + 2));
  b.insert(b.end(), {0xFF, 0xD9});
  CHECK(contains(decode_error(d, "a/1.jpg", b), "ends after 2 of its 4 MCUs (cut short"));

}

TEST_CASE("ImageFolder decodes Pillow's JPEGs with restart markers, and refuses each without its first marker") {
  // Pillow (libjpeg) with a restart interval of 1 MCU (4:2:0), of a row of MCUs (4:4:4) and of 4
  // MCUs (grey): each decodes to Pillow's pixels, and is refused without its first restart marker (stb_image
  // stops after the first interval, then fails on the bytes that follow, unlike the hand-written file).
  if (std::system("python3 -c 'import PIL' >/dev/null 2>&1") != 0)
    test::skip("Pillow not installed (pip install pillow): its JPEGs with restart markers not tried");
  const std::string script = R"(import sys
from PIL import Image
out, w, h, state, px = sys.argv[1], 40, 24, 99, bytearray()
for _ in range(w * h * 3):
    state = (state * 1664525 + 1013904223) % 2**32
    px.append(state >> 24)
im = Image.frombytes("RGB", (w, h), bytes(px))
for name, image, options in [("420", im, {"quality": 90, "subsampling": 2, "restart_marker_blocks": 1}),
                             ("444", im, {"quality": 95, "subsampling": 0, "restart_marker_rows": 1}),
                             ("grey", im.convert("L"), {"quality": 90, "restart_marker_blocks": 4})]:
    image.save(f"{out}/{name}.jpg", **options)
    with Image.open(f"{out}/{name}.jpg") as decoded:
        open(f"{out}/{name}.rgb", "wb").write(decoded.convert("RGB").tobytes())
)";
  TempDir p;
  write_file(p / "restart.py", Bytes(script.begin(), script.end()));
  REQUIRE(std::system(("python3 '" + p / "restart.py" + "' '" + p.path + "'").c_str()) == 0);
  struct Variant {
    std::string name;
    int interval, mcus;
  };
  for (const Variant& v : {Variant{"420", 1, 6}, Variant{"444", 5, 15}, Variant{"grey", 4, 15}}) {
    const std::string& name = v.name;
    const int interval = v.interval, mcus = v.mcus;
    CAPTURE(name);
    TempDir one;
    const Bytes jpg = file_bytes(p / (name + ".jpg")), want = file_bytes(p / (name + ".rgb"));
    write_file(one / "a/1.jpg", jpg);
    const ImageFolderDataset ds(one.path, 3);
    REQUIRE(ds.image_shape() == Shape{3, 24, 40});
    REQUIRE(want.size() == size_t(40 * 24 * 3));
    Bytes got(size_t(ds.image_bytes()));
    ds.get(0, got.data());
    double sum = 0;  // as the Pillow corpus's JPEGs: within 1 on average
    const size_t hw = 40 * 24;
    for (size_t c = 0; c < 3; ++c)
      for (size_t i = 0; i < hw; ++i) sum += std::abs(int(got[c * hw + i]) - int(want[i * 3 + c]));
    CHECK(sum / double(hw * 3) <= 1.0);
    const size_t dri = marker_at(jpg, 0xDD), first_rst = marker_at(jpg, 0xD0);
    REQUIRE((dri != 0 && first_rst != 0));
    CHECK((jpg[dri + 4] << 8 | jpg[dri + 5]) == interval);
    Bytes b = jpg;
    b.erase(b.begin() + long(first_rst), b.begin() + long(first_rst + 2));
    const std::string want_error =
        "has no restart marker right after MCU " + std::to_string(interval) + " of its " + std::to_string(mcus) + ",";
    CHECK(contains(decode_error(one, "a/1.jpg", b), want_error));
  }
}

TEST_CASE("ImageFolder decodes OS/2 1.x palette BMPs with every entry of their palette") {
  // A 12-byte BITMAPCOREHEADER and 3-byte palette entries. stb_image counts (offset - 38) / 3 entries
  // there, four too few: pixels of the top four indices came from uninitialised stack memory, and a
  // 1-bit file (two entries) was refused. Each index is used; the pixels must be the palette's colours.
  for (const int bpp : {1, 4, 8}) {
    CAPTURE(bpp);
    const int entries = 1 << bpp, w = 13, h = 3;
    auto colour = [](int i, int c) { return uint8_t(c == 0 ? 255 - i : c == 1 ? (i * 37) % 256 : i / 2 + 40); };
    Bytes f = {'B', 'M'};
    auto put16 = [&](uint32_t v) { f.push_back(uint8_t(v)), f.push_back(uint8_t(v >> 8)); };
    auto put32 = [&](uint32_t v) { put16(v & 0xFFFF), put16(v >> 16); };
    const int stride = ((w * bpp + 7) / 8 + 3) / 4 * 4;
    const uint32_t offset = 14 + 12 + 3 * uint32_t(entries);
    put32(offset + uint32_t(stride * h));
    put32(0);
    put32(offset);
    put32(12);
    put16(w);
    put16(h);
    put16(1);
    put16(uint32_t(bpp));
    for (int i = 0; i < entries; ++i)
      for (int c : {2, 1, 0}) f.push_back(colour(i, c));  // blue, green, red
    auto index = [&](int x, int y) { return entries - 1 - (y * w + x) % entries; };  // the top ones first
    for (int y = h - 1; y >= 0; --y) {  // bottom-up
      Bytes row(size_t(stride), 0);
      for (int x = 0; x < w; ++x) {
        const int bit = x * bpp;
        row[size_t(bit / 8)] |= uint8_t(index(x, y) << (8 - bpp - bit % 8));
      }
      f.insert(f.end(), row.begin(), row.end());
    }
    TempDir d;
    fs::create_directories(d / "a");
    write_file(d / "a/1.bmp", f);
    CHECK(bmp_with_info_header(std::string(f.begin(), f.end())).size() == f.size() + 28 + size_t(entries));
    const ImageFolderDataset ds(d.path, 3);
    Bytes img(size_t(ds.image_bytes()));
    REQUIRE(ds.get(0, img.data()) == 0);
    int wrong = 0;
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) wrong += img[size_t((c * h + y) * w + x)] != colour(index(x, y), c);
    CHECK(wrong == 0);
    // Cut inside the palette (found by tests/fuzz: below 30 bytes the file was not checked, and
    // stb_image decoded it as if zeros followed).
    const std::string e = decode_error(d, "a/1.bmp", Bytes(f.begin(), f.begin() + 29));
    CHECK(contains(e, d / "a/1.bmp"));
    CHECK(contains(e, "truncated: its BMP header (13x3, " + std::to_string(bpp) + " bits per pixel"));
  }
}
