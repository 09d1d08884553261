// check_jpeg (see image_check.h): the marker walk of stb_image's JPEG decoder, checking each Huffman
// table's code count. Past the end of the data stb_image reads zeros; so does this walk. Each baseline
// scan's entropy-coded data is decoded (Huffman codes and the bits they announce, no coefficients)
// by walk_baseline_scan, to find where it ends. jpeg_with_standard_tables: T.81 Annex K's tables.
#include "data/image_check.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "engine/error.h"

namespace volt {

namespace {

// ITU-T T.81 Annex K.3, Tables K.3 to K.6: for each table, the number of codes of each length 1..16,
// then the symbols in order of increasing code length.
constexpr uint8_t kDcCounts[2][16] = {{0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0},
                                      {0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0}};
constexpr uint8_t kAcCounts[2][16] = {{0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d},
                                      {0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77}};
constexpr uint8_t kAcSymbols[2][162] = {
    {0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71,
     0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72,
     0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37,
     0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59,
     0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
     0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3,
     0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
     0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
     0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa},
    {0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22,
     0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1,
     0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36,
     0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58,
     0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
     0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a,
     0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba,
     0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
     0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa}};

constexpr int code_count(const uint8_t (&counts)[16]) {
  int total = 0;
  for (uint8_t c : counts) total += c;
  return total;
}
static_assert(code_count(kDcCounts[0]) == 12 && code_count(kDcCounts[1]) == 12, "a DC table codes categories 0..11");
static_assert(code_count(kAcCounts[0]) == 162 && code_count(kAcCounts[1]) == 162, "an AC table codes 162 symbols");

// A Huffman table as a DHT segment defines it: how many codes of each length 1..16, then the symbols in
// order of increasing code length.
struct HuffTable {
  uint8_t counts[16] = {};
  uint8_t symbols[256] = {};
};

// Canonical Huffman decoding (T.81 Annex C): the codes of each length are consecutive, and those of
// length L + 1 start at twice one past the last code of length L (the first code of length 1 is 0).
// Codes of up to kFastBits bits are looked up by that many bits; longer ones are found by comparing 16
// bits with where each length's codes end.
constexpr int kFastBits = 9;
struct HuffDecoder {
  uint16_t fast[1 << kFastBits] = {};  // length << 8 | symbol; 0: no code of up to kFastBits bits
  uint32_t end[17] = {};               // one past the last code of length L, left-aligned in 16 bits
  int index[17] = {};                  // the symbol index of a code of length L, less the code
  const uint8_t* symbols;

  // `t` has at most 256 codes whose lengths fit (check_jpeg stops at any other table, as stb_image does).
  explicit HuffDecoder(const HuffTable& t) : symbols(t.symbols) {
    uint32_t code = 0;
    int k = 0;
    for (int len = 1; len <= 16; ++len) {
      index[len] = k - int(code);
      for (int i = 0; i < t.counts[len - 1]; ++i, ++code, ++k)
        if (len <= kFastBits)
          for (uint32_t c = code << (kFastBits - len); c < (code + 1) << (kFastBits - len); ++c)
            fast[c] = uint16_t(len << 8 | t.symbols[k]);
      end[len] = code << (16 - len);
      code <<= 1;
    }
  }
};

// The entropy-coded bits of a scan as stb_image's decoder takes them: bytes up to a marker, a 0xFF
// data byte stuffed as FF 00 (stb_image also takes FF FF .. 00 so, skipping fill bytes). Where the
// data ends, at a marker or at the end of the bytes, stb_image goes on with zero bits; these are
// not counted as data here.
class ScanBits {
 public:
  ScanBits(const uint8_t* b, size_t n, size_t pos) : b_(b), n_(n), pos_(pos) {}

  // The next symbol of `h`: -1 when no code of the table begins the bits (stb_image refuses the file;
  // it would find none in its zero bits either), -2 when the code runs past the end of the data.
  int decode(const HuffDecoder& h) {
    if (bits_ < 16) fill();
    const uint32_t look = uint32_t(buf_ >> 48);
    unsigned len = 0, symbol = 0;
    if (const uint16_t f = h.fast[look >> (16 - kFastBits)]) {
      len = f >> 8;
      symbol = f & 0xFF;
    } else {
      for (len = kFastBits + 1; len <= 16 && look >= h.end[len]; ++len) {
      }
      if (len > 16) return -1;
      symbol = h.symbols[h.index[len] + int(look >> (16 - len))];
    }
    if (len > bits_) return -2;
    buf_ <<= len;
    bits_ -= len;
    return int(symbol);
  }

  // Skips `count` (at most 16) bits; false when the data ends first.
  bool skip(unsigned count) {
    if (count > bits_) fill();
    if (count > bits_) return false;
    buf_ <<= count;
    bits_ -= count;
    return true;
  }

  // At the end of a restart interval: the rest of the current byte is padding, and a restart marker
  // RST0..RST7 (after any 0xFF fill bytes) must follow; the data goes on after it. Where anything else
  // follows, stb_image stops decoding the scan.
  bool restart() {
    if (bits_ >= 8) return false;  // whole bytes of data left over
    buf_ = 0;
    bits_ = 0;
    if (pos_ >= n_ || b_[pos_] != 0xFF) return false;
    size_t q = pos_ + 1;
    while (q < n_ && b_[q] == 0xFF) ++q;
    if (q >= n_ || b_[q] < 0xD0 || b_[q] > 0xD7) return false;
    pos_ = q + 1;
    ended_ = false;
    return true;
  }

 private:
  // Reads whole bytes into the look-ahead, up to the end of the data (pos_ then stays at its marker).
  void fill() {
    while (bits_ <= 56 && !ended_) {
      if (pos_ >= n_) {
        ended_ = true;
        break;
      }
      const uint8_t v = b_[pos_];
      if (v == 0xFF) {
        size_t q = pos_ + 1;
        while (q < n_ && b_[q] == 0xFF) ++q;
        if (q >= n_ || b_[q] != 0x00) {
          ended_ = true;
          break;
        }
        pos_ = q + 1;
      } else {
        ++pos_;
      }
      buf_ |= uint64_t(v) << (56 - bits_);
      bits_ += 8;
    }
  }

  const uint8_t* b_;
  size_t n_, pos_;
  uint64_t buf_ = 0;  // the look-ahead, left-aligned: bits_ bits of data, then zeros
  unsigned bits_ = 0;
  bool ended_ = false;
};

// How a baseline scan's entropy-coded data ends, as stb_image decodes it.
enum class ScanEnd {
  kComplete,   // every MCU decoded from the data
  kRefused,    // a code not in its table, or a DC magnitude over 15: stb_image fails
  kCutShort,   // the data ends before the last MCU: stb_image goes on with zero bits
  kNoRestart,  // no restart marker where a restart interval ends: stb_image stops there
};

struct ScanBlocks {
  const HuffDecoder* dc;
  const HuffDecoder* ac;
  unsigned count;  // blocks of the component in each MCU
};

// Decodes `mcus` MCUs of `blocks` from the data at b[pos]; *done: how many it got through.
ScanEnd walk_baseline_scan(const uint8_t* b, size_t n, size_t pos, const ScanBlocks* blocks, unsigned nblocks,
                           uint64_t mcus, unsigned restart_interval, uint64_t* done) {
  ScanBits bits(b, n, pos);
  unsigned left_in_interval = restart_interval;
  for (*done = 0; *done < mcus;) {
    for (unsigned i = 0; i < nblocks; ++i)
      for (unsigned k = 0; k < blocks[i].count; ++k) {
        const int t = bits.decode(*blocks[i].dc);  // the DC difference's magnitude, then its bits
        if (t == -2) return ScanEnd::kCutShort;
        if (t < 0 || t > 15) return ScanEnd::kRefused;
        if (!bits.skip(unsigned(t))) return ScanEnd::kCutShort;
        for (unsigned z = 1; z < 64;) {  // AC coefficients: zero run r, magnitude s, then s bits
          const int rs = bits.decode(*blocks[i].ac);
          if (rs == -2) return ScanEnd::kCutShort;
          if (rs < 0) return ScanEnd::kRefused;
          const unsigned s = unsigned(rs) & 15, r = unsigned(rs) >> 4;
          if (s == 0) {
            if (rs != 0xF0) break;  // end of block; 0xF0 is a run of 16 zeros
            z += 16;
          } else {
            if (!bits.skip(s)) return ScanEnd::kCutShort;
            z += r + 1;
          }
        }
      }
    ++*done;
    if (restart_interval != 0 && --left_in_interval == 0 && *done < mcus) {
      if (!bits.restart()) return ScanEnd::kNoRestart;
      left_in_interval = restart_interval;
    }
  }
  return ScanEnd::kComplete;
}

}  // namespace

JpegCheck check_jpeg(const uint8_t* b, size_t n, bool stop_at_frame) {
  JpegCheck out;
  // stb_image takes a file for a JPEG when its first marker, after any 0xFF fill bytes, is SOI.
  size_t pos = 0;
  while (pos < n && b[pos] == 0xFF) ++pos;
  if (pos < 1 || pos >= n || b[pos] != 0xD8) return out;
  ++pos;
  auto at = [&](size_t i) -> unsigned { return i < n ? b[i] : 0u; };
  auto fault = [&](std::string what) {
    out.fault = "corrupt JPEG: " + std::move(what);
    return out;
  };
  // Tables defined so far (bit t: table t), and the frame's components. stb_image keeps its tables in
  // memory it does not clear: a scan that uses one never defined, or a component no scan fills,
  // gives pixels made of whatever that memory held.
  unsigned quant = 0, huff_dc = 0, huff_ac = 0;
  HuffTable dc_tables[4], ac_tables[4];  // their contents, for walking baseline scans
  struct Component {
    unsigned id, table;
    bool filled;
    unsigned h, v;  // sampling factors
  };
  Component comps[4] = {};
  unsigned ncomp = 0, width = 0, height = 0, h_max = 1, v_max = 1;
  unsigned restart_interval = 0;  // DRI: MCUs between restart markers, 0 for none
  bool progressive = false, first = true, before_frame = true;
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
    if (m == 0xD9) {  // end of image
      for (unsigned c = 0; c < ncomp; ++c)
        if (!comps[c].filled)
          return fault("component " + std::to_string(comps[c].id) + " is in no scan" +
                       (progressive ? " of DC coefficients" : "") + ", so its pixels would be uninitialised memory");
      return out;
    }
    const size_t len = size_t(at(pos)) << 8 | at(pos + 1);
    if (m == 0xC4) {  // DHT: tables until the segment's length is used up, as stb_image reads them
      long left = long(len) - 2;
      size_t p = pos + 2;
      while (left > 0) {
        const unsigned q = at(p);
        if ((q >> 4) > 1 || (q & 15) > 3) return out;  // stb_image: "bad DHT header"
        unsigned codes = 0;
        for (size_t i = 0; i < 16; ++i) codes += at(p + 1 + i);
        if (codes > 256)
          return fault("the Huffman table at byte offset " + std::to_string(p) + " declares " + std::to_string(codes) +
                       " codes (at most 256)");
        // More codes of a length than that length has room for: stb_image's "bad code lengths".
        uint32_t next = 0;  // one past the last code so far
        for (unsigned i = 0; i < 16; ++i) {
          next += at(p + 1 + i);
          if (at(p + 1 + i) != 0 && next - 1 >= 2u << i) return out;
          next <<= 1;
        }
        ((q >> 4) == 0 ? huff_dc : huff_ac) |= 1u << (q & 15);
        HuffTable& table = ((q >> 4) == 0 ? dc_tables : ac_tables)[q & 15];
        for (size_t i = 0; i < 16; ++i) table.counts[i] = uint8_t(at(p + 1 + i));
        for (size_t i = 0; i < codes; ++i) table.symbols[i] = uint8_t(at(p + 17 + i));
        p += 17 + codes;
        left -= long(17 + codes);
      }
      if (left != 0) return out;  // stb_image: the segment's length disagrees, an error
      pos = p;
      continue;
    }
    if (len < 2) return out;  // stb_image skips to the end of the file and fails
    if (m == 0xDD) {  // DRI: the restart interval, for the scans that follow
      if (len != 4) return out;  // stb_image: "bad DRI len"
      restart_interval = at(pos + 2) << 8 | at(pos + 3);
    }
    if (m == 0xDB) {  // DQT: 8-bit (65-byte) or 16-bit (129-byte) tables
      long left = long(len) - 2;
      for (size_t p = pos + 2; left > 0;) {
        const unsigned q = at(p);
        if ((q >> 4) > 1 || (q & 15) > 3) return out;  // stb_image: "bad DQT type" / "bad DQT table"
        quant |= 1u << (q & 15);
        p += (q >> 4) ? 129 : 65;
        left -= (q >> 4) ? 129 : 65;
      }
      if (left != 0) return out;  // stb_image fails
    }
    if (m >= 0xC0 && m <= 0xC2) {  // the frame header: stbi_info stops here
      if (stop_at_frame) return out;
      before_frame = false;
      progressive = m == 0xC2;
      ncomp = at(pos + 7);
      if (ncomp != 1 && ncomp != 3 && ncomp != 4) return out;  // stb_image: "bad component count"
      height = at(pos + 3) << 8 | at(pos + 4);
      width = at(pos + 5) << 8 | at(pos + 6);
      if (width == 0 || height == 0) return out;  // stb_image: "no header height", "0 width"
      for (unsigned c = 0; c < ncomp; ++c) {
        const unsigned hv = at(pos + 9 + 3 * c);
        comps[c] = {at(pos + 8 + 3 * c), at(pos + 10 + 3 * c), false, hv >> 4, hv & 15};
        if (comps[c].table > 3) return out;  // stb_image: "bad TQ"
        if (comps[c].h < 1 || comps[c].h > 4 || comps[c].v < 1 || comps[c].v > 4) return out;  // "bad H", "bad V"
        h_max = std::max(h_max, comps[c].h);
        v_max = std::max(v_max, comps[c].v);
      }
      for (unsigned c = 0; c < ncomp; ++c)
        if (h_max % comps[c].h != 0 || v_max % comps[c].v != 0) return out;  // stb_image: "bad H", "bad V"
    }
    if (m == 0xDA) {  // start of scan: which components, with which tables
      const unsigned count = at(pos + 2);
      if (ncomp == 0 || count < 1 || count > ncomp) return out;  // stb_image fails
      if (huff_dc == 0 && huff_ac == 0) {  // no DHT yet: Motion JPEG, the standard tables 0 and 1
        out.standard_tables = true;
        huff_dc = huff_ac = 3;
        for (int t = 0; t < 2; ++t) {
          std::copy(std::begin(kDcCounts[t]), std::end(kDcCounts[t]), dc_tables[t].counts);
          for (uint8_t v = 0; v < 12; ++v) dc_tables[t].symbols[v] = v;
          std::copy(std::begin(kAcCounts[t]), std::end(kAcCounts[t]), ac_tables[t].counts);
          std::copy(std::begin(kAcSymbols[t]), std::end(kAcSymbols[t]), ac_tables[t].symbols);
        }
      }
      const unsigned spectral_start = at(pos + 3 + 2 * count), approx_high = at(pos + 5 + 2 * count) >> 4;
      unsigned order[4], dc_of[4], ac_of[4];  // the scan's components (frame indices) and tables
      for (unsigned i = 0; i < count; ++i) {
        const unsigned id = at(pos + 3 + 2 * i), dc = at(pos + 4 + 2 * i) >> 4, ac = at(pos + 4 + 2 * i) & 15;
        Component* c = std::find_if(comps, comps + ncomp, [&](const Component& k) { return k.id == id; });
        if (c == comps + ncomp || dc > 3 || ac > 3) return out;  // stb_image fails
        if (!(quant >> c->table & 1))
          return fault("a scan of component " + std::to_string(id) + " uses quantization table " +
                       std::to_string(c->table) + ", which no DQT segment before it defines");
        // Baseline scans decode with both tables; progressive DC scans with the DC table (first
        // pass only), AC scans with the AC table.
        const bool uses_dc = !progressive || (spectral_start == 0 && approx_high == 0);
        const bool uses_ac = !progressive || spectral_start > 0;
        if (uses_dc && !(huff_dc >> dc & 1))
          return fault("a scan of component " + std::to_string(id) + " uses DC Huffman table " + std::to_string(dc) +
                       ", which no DHT segment before it defines");
        if (uses_ac && !(huff_ac >> ac & 1))
          return fault("a scan of component " + std::to_string(id) + " uses AC Huffman table " + std::to_string(ac) +
                       ", which no DHT segment before it defines");
        if (uses_dc) c->filled = true;
        order[i] = unsigned(c - comps);
        dc_of[i] = dc;
        ac_of[i] = ac;
      }
      // A baseline scan (stb_image refuses a header other than 6 + 2 * count bytes, or a spectral
      // selection or successive approximation but 0): its data must hold every MCU, and a restart
      // marker after each restart interval. Progressive scans are not walked.
      if (!progressive && len == 6 + 2 * count && spectral_start == 0 && at(pos + 5 + 2 * count) == 0) {
        // Interleaved (several components): MCUs of h x v blocks of each over the whole frame.
        // One component: a block per MCU, over the component's own pixels (its sampling's share).
        uint64_t mcus = uint64_t((width + 8 * h_max - 1) / (8 * h_max)) * ((height + 8 * v_max - 1) / (8 * v_max));
        if (count == 1) {
          const Component& c = comps[order[0]];
          const unsigned x = (width * c.h + h_max - 1) / h_max, y = (height * c.v + v_max - 1) / v_max;
          mcus = uint64_t((x + 7) / 8) * ((y + 7) / 8);
        }
        std::vector<HuffDecoder> decoders;
        decoders.reserve(2 * count);
        ScanBlocks blocks[4];
        for (unsigned i = 0; i < count; ++i) {
          decoders.emplace_back(dc_tables[dc_of[i]]);
          decoders.emplace_back(ac_tables[ac_of[i]]);
          const Component& c = comps[order[i]];
          blocks[i] = {&decoders[2 * i], &decoders[2 * i + 1], count == 1 ? 1 : c.h * c.v};
        }
        uint64_t done = 0;
        const size_t sos = pos - 2, data = pos + len;
        const std::string where = "the scan at byte offset " + std::to_string(sos);
        switch (walk_baseline_scan(b, n, data, blocks, count, mcus, restart_interval, &done)) {
          case ScanEnd::kComplete:
            break;
          case ScanEnd::kRefused:
            return out;
          case ScanEnd::kCutShort:
            return fault(where + " ends after " + std::to_string(done) + " of its " + std::to_string(mcus) +
                         " MCUs (cut short, or another file's data inside)");
          case ScanEnd::kNoRestart:
            return fault(where + " has no restart marker right after MCU " + std::to_string(done) + " of its " +
                         std::to_string(mcus) + ", where its restart interval of " + std::to_string(restart_interval) +
                         (restart_interval == 1 ? " MCU" : " MCUs") +
                         " ends (cut short, or another file's data inside)");
        }
      }
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

std::string jpeg_with_standard_tables(const std::string& file) {
  std::string dht = "\xFF\xC4";
  dht += std::string(2, '\0');  // the length, below
  for (int t = 0; t < 2; ++t) {
    dht += char(t);  // DC table t: the symbols are the magnitude categories 0..11
    dht.append(reinterpret_cast<const char*>(kDcCounts[t]), 16);
    for (char v = 0; v < 12; ++v) dht += v;
    dht += char(0x10 | t);  // AC table t
    dht.append(reinterpret_cast<const char*>(kAcCounts[t]), 16);
    dht.append(reinterpret_cast<const char*>(kAcSymbols[t]), 162);
  }
  const size_t len = dht.size() - 2;
  dht[2] = char(len >> 8);
  dht[3] = char(len & 0xFF);
  size_t soi = 0;  // after any 0xFF fill bytes, as check_jpeg finds it
  while (soi < file.size() && uint8_t(file[soi]) == 0xFF) ++soi;
  VOLT_CHECK(soi >= 1 && soi < file.size() && uint8_t(file[soi]) == 0xD8, "jpeg_with_standard_tables: not a JPEG");
  return file.substr(0, soi + 1) + dht + file.substr(soi + 1);
}

}  // namespace volt
