// CIFAR-10 / CIFAR-100 binary readers (see cifar.h): whole files are read once, checked (size,
// record count, label range) and split into one image buffer and the label arrays.
#include "data/cifar.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/error.h"

namespace volt {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kImageBytes = 3 * 32 * 32;
constexpr int64_t kBatchRecords = 10000;  // every CIFAR-10 batch, and CIFAR-100 test.bin

bool is_file(const std::string& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

bool is_dir(const std::string& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

std::string batch_name(int i) { return "data_batch_" + std::to_string(i) + ".bin"; }

// Reads `path`, which must be a whole number of `record`-byte records (exactly `expected` of them
// when expected >= 0). `what` ("CIFAR-10") starts every message.
std::vector<uint8_t> read_records(const std::string& what, const std::string& path, int64_t record,
                                  int64_t expected) {
  std::error_code ec;
  const auto size = int64_t(fs::file_size(path, ec));
  VOLT_CHECK(!ec, what, ": cannot read the size of ", path, ": ", ec.message());
  VOLT_CHECK(size > 0, what, ": ", path, " is empty (0 bytes); expected records of ", record, " bytes");
  VOLT_CHECK(size % record == 0, what, ": ", path, " is ", size, " bytes, not a multiple of the ", record,
             "-byte record: a partial record of ", size % record, " bytes starts at byte offset ",
             size - size % record, " (truncated download, or not a ", what, " binary file?)");
  const int64_t n = size / record;
  VOLT_CHECK(expected < 0 || n == expected, what, ": ", path, " holds ", n, " records of ", record, " bytes (",
             size, " bytes) but the official file holds ", expected, " (", expected * record,
             " bytes); truncated or wrong file?");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  std::ifstream in(path, std::ios::binary);
  VOLT_CHECK(in.good(), what, ": cannot open ", path, ": ", std::strerror(errno));
  in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(size));
  VOLT_CHECK(in.gcount() == std::streamsize(size), what, ": reading ", path, " stopped at byte offset ", in.gcount(),
             " of ", size);
  return bytes;
}

// "data_batch_2.bin..data_batch_5.bin" for a run of three or more, names joined by ", " otherwise.
std::string describe_batches(const std::vector<int>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!out.empty()) out += ", ";
    if (j - i >= 2) {
      out += batch_name(ids[i]) + ".." + batch_name(ids[j]);
    } else {
      out += batch_name(ids[i]);
      if (j > i) out += ", " + batch_name(ids[j]);
    }
    i = j + 1;
  }
  return out;
}

const char* kCifar10How =
    "run with --download to fetch it, or put the CIFAR-10 binary files (cifar-10-batches-bin: "
    "data_batch_1.bin..data_batch_5.bin, test_batch.bin) in that folder";
const char* kCifar100How =
    "run with --download to fetch it, or put the CIFAR-100 binary files (cifar-100-binary: train.bin, test.bin) "
    "in that folder";

// Which of root and its sub-folder holds the files: the one with all of them first, so that a
// partial copy beside a complete one (a batch or two left in root next to an extracted archive) is
// not read instead of it; with neither complete, the one holding any, root first.
std::string pick_dir(const std::string& root, const std::string& sub, int files, int (*count)(const std::string&)) {
  const int in_root = count(root), in_sub = count(sub);
  if (in_root == files) return root;
  if (in_sub == files) return sub;
  if (in_root > 0) return root;
  if (in_sub > 0) return sub;
  return "";
}

}  // namespace

// ---- CIFAR-10 ----

std::string CIFAR10Dataset::resolve_dir(const std::string& root) {
  return pick_dir(root, root + "/cifar-10-batches-bin", 6, [](const std::string& d) {
    int n = is_file(d + "/test_batch.bin");
    for (int i = 1; i <= 5; ++i) n += is_file(d + "/" + batch_name(i));
    return n;
  });
}

bool CIFAR10Dataset::present(const std::string& root, bool train) {
  const std::string d = resolve_dir(root);
  if (d.empty()) return false;
  if (!train) return is_file(d + "/test_batch.bin");
  for (int i = 1; i <= 5; ++i)
    if (!is_file(d + "/" + batch_name(i))) return false;
  return true;
}

const std::vector<std::string>& CIFAR10Dataset::class_names() {
  static const std::vector<std::string> names = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                 "dog",      "frog",       "horse", "ship", "truck"};
  return names;
}

CIFAR10Dataset::CIFAR10Dataset(const std::string& root, bool train, bool require_full) : train_(train) {
  VOLT_CHECK(is_dir(root), "CIFAR-10: directory ", root, " does not exist; ", kCifar10How);
  dir_ = resolve_dir(root);
  if (dir_.empty()) dir_ = root;

  std::vector<std::string> files;
  if (train) {
    std::vector<int> missing;
    for (int i = 1; i <= 5; ++i) {
      if (is_file(dir_ + "/" + batch_name(i))) files.push_back(dir_ + "/" + batch_name(i));
      else missing.push_back(i);
    }
    VOLT_CHECK(!files.empty(), "CIFAR-10: no training batch (data_batch_1.bin..data_batch_5.bin) in ", dir_, "; ",
               kCifar10How);
    if (!missing.empty()) warning_ = "CIFAR-10: " + describe_batches(missing) + " missing in " + dir_ + "; ";
  } else {
    VOLT_CHECK(is_file(dir_ + "/test_batch.bin"), "CIFAR-10: test_batch.bin missing in ", dir_, "; ", kCifar10How);
    files.push_back(dir_ + "/test_batch.bin");
  }

  const int64_t record = 1 + kImageBytes;
  for (const std::string& path : files) {
    const std::vector<uint8_t> bytes = read_records("CIFAR-10", path, record, require_full ? kBatchRecords : -1);
    const int64_t n = int64_t(bytes.size()) / record;
    const size_t base = labels_.size();
    labels_.resize(base + size_t(n));
    images_.resize((base + size_t(n)) * size_t(kImageBytes));
    for (int64_t r = 0; r < n; ++r) {
      const uint8_t* rec = bytes.data() + r * record;
      VOLT_CHECK(rec[0] < 10, "CIFAR-10: ", path, ": record ", r, " (byte offset ", r * record, ") has label ",
                 int(rec[0]), ", expected 0..9");
      labels_[base + size_t(r)] = rec[0];
      std::memcpy(images_.data() + (base + size_t(r)) * size_t(kImageBytes), rec + 1, size_t(kImageBytes));
    }
  }
  if (!warning_.empty()) {
    warning_ += "training on " + std::to_string(labels_.size()) +
                (require_full ? " of 50000 images" : " images from " + std::to_string(files.size()) + " of 5 batches");
    std::fprintf(stderr, "warning: %s\n", warning_.c_str());
    std::fflush(stderr);
  }
}

int64_t CIFAR10Dataset::get(int64_t index, uint8_t* dst) const {
  VOLT_CHECK(index >= 0 && index < size(), name(), ": index ", index, " is out of range [0, ", size(), ")");
  std::memcpy(dst, images_.data() + size_t(index) * size_t(kImageBytes), size_t(kImageBytes));
  return labels_[size_t(index)];
}

// ---- CIFAR-100 ----

std::string CIFAR100Dataset::resolve_dir(const std::string& root) {
  return pick_dir(root, root + "/cifar-100-binary", 2,
                  [](const std::string& d) { return int(is_file(d + "/train.bin")) + int(is_file(d + "/test.bin")); });
}

bool CIFAR100Dataset::present(const std::string& root, bool train) {
  const std::string d = resolve_dir(root);
  return !d.empty() && is_file(d + (train ? "/train.bin" : "/test.bin"));
}

std::string CIFAR100Dataset::name() const {
  return std::string("CIFAR-100 ") + (train_ ? "train" : "test") + (fine_labels_ ? "" : " (coarse labels)");
}

CIFAR100Dataset::CIFAR100Dataset(const std::string& root, bool train, bool fine_labels, bool require_full)
    : train_(train), fine_labels_(fine_labels) {
  VOLT_CHECK(is_dir(root), "CIFAR-100: directory ", root, " does not exist; ", kCifar100How);
  dir_ = resolve_dir(root);
  if (dir_.empty()) dir_ = root;
  const std::string file = train ? "train.bin" : "test.bin";
  const std::string path = dir_ + "/" + file;
  VOLT_CHECK(is_file(path), "CIFAR-100: ", file, " missing in ", dir_, "; ", kCifar100How);

  const int64_t record = 2 + kImageBytes;
  const int64_t expected = require_full ? (train ? 5 * kBatchRecords : kBatchRecords) : -1;
  const std::vector<uint8_t> bytes = read_records("CIFAR-100", path, record, expected);
  const int64_t n = int64_t(bytes.size()) / record;
  coarse_.resize(size_t(n));
  fine_.resize(size_t(n));
  images_.resize(size_t(n * kImageBytes));
  for (int64_t r = 0; r < n; ++r) {
    const uint8_t* rec = bytes.data() + r * record;
    VOLT_CHECK(rec[0] < 20, "CIFAR-100: ", path, ": record ", r, " (byte offset ", r * record, ") has coarse label ",
               int(rec[0]), ", expected 0..19");
    VOLT_CHECK(rec[1] < 100, "CIFAR-100: ", path, ": record ", r, " (byte offset ", r * record,
               ") has fine label ", int(rec[1]), ", expected 0..99");
    coarse_[size_t(r)] = rec[0];
    fine_[size_t(r)] = rec[1];
    std::memcpy(images_.data() + size_t(r * kImageBytes), rec + 2, size_t(kImageBytes));
  }
}

int64_t CIFAR100Dataset::get(int64_t index, uint8_t* dst) const {
  VOLT_CHECK(index >= 0 && index < size(), name(), ": index ", index, " is out of range [0, ", size(), ")");
  std::memcpy(dst, images_.data() + size_t(index) * size_t(kImageBytes), size_t(kImageBytes));
  return fine_labels_ ? fine_[size_t(index)] : coarse_[size_t(index)];
}

}  // namespace volt
