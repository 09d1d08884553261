// MNIST / Fashion-MNIST IDX reader (see mnist.h): each file's header is read first (gunzipped with
// zlib when it ends in .gz) and checked against what MNIST needs, then the data it promises, whose
// size is checked against the bytes actually there.
#include "data/mnist.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "engine/binary_io.h"
#include "engine/error.h"

namespace volt {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kRows = 28, kCols = 28, kImageBytes = kRows * kCols;
constexpr uint32_t kImagesMagic = 2051, kLabelsMagic = 2049;

bool is_file(const std::string& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The most items an IDX file may hold: twice the largest official split (60,000 training images of
// MNIST, Fashion-MNIST or KMNIST), which also admits QMNIST's 120,000 images. The header is checked
// against it before the data is read, so the most a file can make the reader allocate is this many
// images (94 MB), whatever count its header claims.
constexpr int64_t kMaxItems = 120000;

// Checks the header at the start of `bytes` (at least `header` of them): the magic number, the
// image dimensions, and a count the reader is willing to hold. Returns the count.
int64_t check_header(const std::string& what, const std::string& path, const uint8_t* bytes, uint32_t magic,
                     int64_t item_bytes, const char* item) {
  const uint32_t got = load_be32(bytes);
  VOLT_CHECK(got == magic, what, ": ", path, " has IDX magic number ", got, ", expected ", magic, " (",
             magic == kImagesMagic ? "unsigned-byte images, 3 dimensions" : "unsigned-byte labels, 1 dimension",
             "); not an MNIST ", item, " file?");
  if (magic == kImagesMagic) {
    const int64_t rows = load_be32(bytes + 8), cols = load_be32(bytes + 12);
    VOLT_CHECK(rows == kRows && cols == kCols, what, ": ", path, " holds images of ", rows, "x", cols,
               ", expected ", kRows, "x", kCols);
  }
  const int64_t count = load_be32(bytes + 4);
  VOLT_CHECK(count <= kMaxItems, what, ": ", path, "'s header promises ", count, " ", item, " (",
             uint64_t(count) * uint64_t(item_bytes), " bytes of data), more than the ", kMaxItems,
             " an MNIST-style IDX file is read with; corrupt, or not an MNIST ", item, " file?");
  return count;
}

// A raw IDX file: its header, checked (check_header) before anything else is read, then the data
// only when the file holds exactly what the header promises; otherwise just the header, for
// check_idx to report against `*size`, the file's size. So a file with a good header and gigabytes
// after it cannot make the reader allocate more than the header allows either.
std::vector<uint8_t> read_raw(const std::string& what, const std::string& path, uint32_t magic, size_t header,
                              size_t item_bytes, const char* item, int64_t* size) {
  std::ifstream in(path, std::ios::binary);
  VOLT_CHECK(in.good(), what, ": cannot open ", path, ": ", std::strerror(errno));
  in.seekg(0, std::ios::end);
  *size = int64_t(in.tellg());
  in.seekg(0, std::ios::beg);
  VOLT_CHECK(*size >= 0, what, ": cannot read the size of ", path);
  auto read_exact = [&](std::vector<uint8_t>& bytes, size_t at) {
    in.read(reinterpret_cast<char*>(bytes.data() + at), std::streamsize(bytes.size() - at));
    VOLT_CHECK(size_t(in.gcount()) == bytes.size() - at, what, ": reading ", path, " stopped at byte offset ",
               at + size_t(in.gcount()), " of ", *size);
  };
  std::vector<uint8_t> bytes(std::min(size_t(*size), header));
  read_exact(bytes, 0);
  if (bytes.size() < header) return bytes;
  const size_t want =
      header + size_t(check_header(what, path, bytes.data(), magic, int64_t(item_bytes), item)) * item_bytes;
  if (int64_t(want) != *size) return bytes;
  bytes.resize(want);
  read_exact(bytes, header);
  return bytes;
}

// The gunzipped file, or its first (promised + 1) bytes when it holds more (check_idx reports the
// extra bytes). The header is inflated and checked first, so a small .gz that claims a huge count,
// or is no IDX file at all, is refused before anything else is inflated; the buffer then grows with
// the data actually inflated and never past the size the header promises.
std::vector<uint8_t> read_gzip(const std::string& what, const std::string& path, uint32_t magic, size_t header,
                               size_t item_bytes, const char* item) {
  std::unique_ptr<gzFile_s, decltype(&gzclose)> f(gzopen(path.c_str(), "rb"), &gzclose);
  VOLT_CHECK(f != nullptr, what, ": cannot open ", path, ": ", std::strerror(errno));
  gzbuffer(f.get(), 1 << 18);
  std::vector<uint8_t> bytes;
  size_t limit = header;  // until the header is in and checked
  for (;;) {
    const size_t at = bytes.size();
    const size_t chunk = std::min<size_t>(size_t(1) << 20, limit - at);
    if (bytes.capacity() < at + chunk)  // doubling, but never past the limit: no 2x overshoot
      bytes.reserve(std::min(limit, std::max(at + chunk, 2 * bytes.capacity())));
    bytes.resize(at + chunk);
    const int got = gzread(f.get(), bytes.data() + at, unsigned(chunk));
    int code = Z_OK;
    const char* msg = gzerror(f.get(), &code);
    VOLT_CHECK(got >= 0 && (code == Z_OK || code == Z_STREAM_END), what, ": ", path,
               " is not a valid gzip file or is truncated (zlib: ", msg ? msg : "unknown error", ") after ",
               at + size_t(got > 0 ? got : 0), " uncompressed bytes");
    bytes.resize(at + size_t(got));
    if (got == 0) break;
    if (at < header && bytes.size() == header)
      limit = header + size_t(check_header(what, path, bytes.data(), magic, int64_t(item_bytes), item)) * item_bytes + 1;
    if (bytes.size() >= limit) break;
  }
  return bytes;
}

// Checks an IDX file's header (check_header) and that it holds exactly the `count` items of
// `item_bytes` it promises; returns count. `header` is the header length (8 labels, 16 images);
// `have` the data's size (a raw file's size; what read_gzip inflated), of which `bytes` holds the
// start, all of it when it is the size promised.
int64_t check_idx(const std::string& what, const std::string& path, const std::vector<uint8_t>& bytes, int64_t have,
                  uint32_t magic, int64_t header, int64_t item_bytes, const char* item) {
  const char* gz = ends_with(path, ".gz") ? " (uncompressed)" : "";
  VOLT_CHECK(have >= header, what, ": ", path, " is ", have, " bytes", gz,
             ", shorter than the ", header, "-byte IDX header; truncated or not an IDX file?");
  const int64_t count = check_header(what, path, bytes.data(), magic, item_bytes, item);
  const int64_t want = header + count * item_bytes;
  VOLT_CHECK(have >= want, what, ": ", path, " is truncated: its header promises ", count, " ", item, " (", want,
             " bytes", gz, ") but the data ends at byte offset ", have, ", after ", (have - header) / item_bytes,
             " complete ", item);
  // (read_gzip stops one byte past the promise: how many more there are is not known)
  VOLT_CHECK(have == want, what, ": ", path, " has ", *gz ? "" : std::to_string(have - want) + " ",
             "unexpected bytes after the ", count, " ", item, " its header promises (from byte offset ", want, gz, ")");
  VOLT_CHECK(int64_t(bytes.size()) == want, what, ": ", path, " was not read whole");  // (a reader's bug)
  return count;
}

}  // namespace

std::string MNISTDataset::find_file(const std::string& root, bool train, bool labels) {
  const std::string base =
      root + "/" + (train ? "train" : "t10k") + (labels ? "-labels-idx1-ubyte" : "-images-idx3-ubyte");
  if (is_file(base)) return base;
  if (is_file(base + ".gz")) return base + ".gz";
  return "";
}

bool MNISTDataset::present(const std::string& root, bool train) {
  return !find_file(root, train, false).empty() && !find_file(root, train, true).empty();
}

const std::vector<std::string>& MNISTDataset::class_names(MNISTVariant variant) {
  static const std::vector<std::string> digits = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
  static const std::vector<std::string> fashion = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                   "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return variant == MNISTVariant::MNIST ? digits : fashion;
}

std::string MNISTDataset::name() const {
  return std::string(variant_ == MNISTVariant::MNIST ? "MNIST" : "Fashion-MNIST") + (train_ ? " train" : " test");
}

MNISTDataset::MNISTDataset(const std::string& root, bool train, MNISTVariant variant)
    : train_(train), variant_(variant) {
  const std::string what = variant == MNISTVariant::MNIST ? "MNIST" : "Fashion-MNIST";
  const std::string how = "run with --download to fetch it, or put the " + what +
                          " IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                          "t10k-labels-idx1-ubyte, raw or .gz) in that folder";
  std::error_code ec;
  VOLT_CHECK(fs::is_directory(root, ec), what, ": directory ", root, " does not exist; ", how);
  const std::string prefix = train ? "train" : "t10k";
  images_path_ = find_file(root, train, false);
  labels_path_ = find_file(root, train, true);
  VOLT_CHECK(!images_path_.empty(), what, ": ", prefix, "-images-idx3-ubyte (or .gz) missing in ", root, "; ", how);
  VOLT_CHECK(!labels_path_.empty(), what, ": ", prefix, "-labels-idx1-ubyte (or .gz) missing in ", root, "; ", how);

  // Reads and checks one file: its bytes (all of them), and the item count.
  auto read = [&](const std::string& p, uint32_t magic, size_t header, size_t item_bytes, const char* item,
                  int64_t* count) {
    int64_t size = 0;
    std::vector<uint8_t> bytes;
    if (ends_with(p, ".gz")) {
      bytes = read_gzip(what, p, magic, header, item_bytes, item);
      size = int64_t(bytes.size());
    } else {
      bytes = read_raw(what, p, magic, header, item_bytes, item, &size);
    }
    *count = check_idx(what, p, bytes, size, magic, int64_t(header), int64_t(item_bytes), item);
    return bytes;
  };
  int64_t n_images = 0, n_labels = 0;
  std::vector<uint8_t> img = read(images_path_, kImagesMagic, 16, kImageBytes, "images", &n_images);
  const std::vector<uint8_t> lab = read(labels_path_, kLabelsMagic, 8, 1, "labels", &n_labels);
  VOLT_CHECK(n_images == n_labels, what, ": ", images_path_, " holds ", n_images, " images but ", labels_path_,
             " holds ", n_labels, " labels; the two files must come from the same split");
  VOLT_CHECK(n_images > 0, what, ": ", images_path_, " holds no images");
  for (int64_t i = 0; i < n_labels; ++i)
    VOLT_CHECK(lab[size_t(8 + i)] < 10, what, ": ", labels_path_, ": label ", i, " (byte offset ", 8 + i, ") is ",
               int(lab[size_t(8 + i)]), ", expected 0..9");
  labels_.assign(lab.begin() + 8, lab.end());
  img.erase(img.begin(), img.begin() + 16);
  images_ = std::move(img);
}

int64_t MNISTDataset::get(int64_t index, uint8_t* dst) const {
  VOLT_CHECK(index >= 0 && index < size(), name(), ": index ", index, " is out of range [0, ", size(), ")");
  std::memcpy(dst, images_.data() + size_t(index) * size_t(kImageBytes), size_t(kImageBytes));
  return labels_[size_t(index)];
}

}  // namespace volt
