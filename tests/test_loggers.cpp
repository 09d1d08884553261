// Experiment loggers: CRC-32C and TFRecord framing, the TensorBoard event files (decoded here and
// read back by TensorBoard's own EventAccumulator when it is installed), CSV metrics, hparams.yaml
// and Lightning's version_N folders, with the errors for a bad log folder.
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "dist/csv_logger.h"
#include "dist/log_dir.h"
#include "dist/tb_summary.h"
#include "dist/tensorboard.h"
#include "dist/tfrecord.h"
#include "dist/trainer_logging.h"
#include "dist/utf8.h"
#include "engine/error.h"
#include "layers/layers.h"
#include "tests/test_util.h"
#include "tests/trainer_fixtures.h"

namespace fs = std::filesystem;
using volt::test::contains;
using volt::test::error_of;

namespace {

struct TempDir : volt::test::TempDir {
  TempDir() : volt::test::TempDir("volt_test_loggers_") {}
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) files.push_back(e.path().string());
  return files;
}

// A minimal protobuf wire-format decoder: field number -> raw values (varints as uint64 in
// `ints`, fixed64/fixed32 and length-delimited bytes in `bytes`).
struct Fields {
  std::multimap<int, uint64_t> ints;
  std::multimap<int, std::string> bytes;
  std::string one(int field) const {
    REQUIRE(bytes.count(field) == 1);
    return bytes.find(field)->second;
  }
  double f64(int field) const {
    const std::string b = one(field);
    REQUIRE(b.size() == 8);
    double d;
    std::memcpy(&d, b.data(), 8);
    return d;
  }
  float f32(int field) const {
    const std::string b = one(field);
    REQUIRE(b.size() == 4);
    float f;
    std::memcpy(&f, b.data(), 4);
    return f;
  }
};

uint64_t read_varint(const std::string& s, size_t& pos) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    REQUIRE(pos < s.size());
    const auto byte = static_cast<unsigned char>(s[pos++]);
    v |= uint64_t(byte & 0x7F) << shift;
    if (!(byte & 0x80)) return v;
  }
  FAIL("varint too long");
  return 0;
}

Fields decode(const std::string& s) {
  Fields f;
  size_t pos = 0;
  while (pos < s.size()) {
    const uint64_t key = read_varint(s, pos);
    const int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
    if (wire == 0) {
      f.ints.emplace(field, read_varint(s, pos));
    } else if (wire == 1 || wire == 5) {
      const size_t n = wire == 1 ? 8 : 4;
      REQUIRE(pos + n <= s.size());
      f.bytes.emplace(field, s.substr(pos, n));
      pos += n;
    } else {
      REQUIRE(wire == 2);
      const uint64_t n = read_varint(s, pos);
      REQUIRE(n <= s.size() - pos);
      f.bytes.emplace(field, s.substr(pos, n));
      pos += n;
    }
  }
  return f;
}

}  // namespace

TEST_CASE("crc32c: check values") {
  const std::string digits = "123456789";
  CHECK(volt::crc32c(digits.data(), digits.size()) == 0xE3069283u);
  CHECK(volt::crc32c("", 0) == 0u);
  // RFC 3720 (iSCSI) B.4 test vectors.
  std::vector<unsigned char> zeros(32, 0), ones(32, 0xFF), ascending(32);
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<unsigned char>(i);
  CHECK(volt::crc32c(zeros.data(), 32) == 0x8A9136AAu);
  CHECK(volt::crc32c(ones.data(), 32) == 0x62A8AB43u);
  CHECK(volt::crc32c(ascending.data(), 32) == 0x46DD794Eu);
  // A running checksum over pieces equals the checksum of the whole.
  CHECK(volt::crc32c(digits.data() + 4, 5, volt::crc32c(digits.data(), 4)) == 0xE3069283u);
  // Masking: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
  const uint32_t crc = 0xE3069283u;
  CHECK(volt::masked_crc32c(digits.data(), digits.size()) == static_cast<uint32_t>(((crc >> 15) | (crc << 17)) + 0xa282ead8u));
}

TEST_CASE("tfrecord: framing round-trip and corrupt files") {
  TempDir tmp;
  const std::string path = tmp.str("records.tfrecord");
  std::vector<std::string> records = {"", "a", std::string(1000, '\x7f'), std::string("\0\1\2\3", 4)};
  std::string big(70000, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 131) % 251);
  records.push_back(big);
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    for (const auto& r : records) volt::tfrecord_write(f, r, path);
    std::fclose(f);
  }
  CHECK(volt::tfrecord_read_all(path) == records);

  // Layout of the second record ("a"): u64 length 1, masked CRC of those 8 bytes, 'a', masked CRC of "a".
  const std::string bytes = read_text(path);
  const std::string second = bytes.substr(16, 17);
  const unsigned char len_le[8] = {1, 0, 0, 0, 0, 0, 0, 0};
  CHECK(std::memcmp(second.data(), len_le, 8) == 0);
  uint32_t len_crc, data_crc;
  std::memcpy(&len_crc, second.data() + 8, 4);
  std::memcpy(&data_crc, second.data() + 13, 4);
  CHECK(len_crc == volt::masked_crc32c(len_le, 8));
  CHECK(second[12] == 'a');
  CHECK(data_crc == volt::masked_crc32c("a", 1));
  CHECK(volt::tfrecord_frame("a") == second);

  SUBCASE("a flipped data byte fails the data checksum") {
    std::string bad = bytes;
    bad[16 + 12] = 'b';
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bad;
    const std::string msg = error_of([&] { volt::tfrecord_read_all(path); });
    CHECK(contains(msg, path));
    CHECK(contains(msg, "data checksum"));
  }
  SUBCASE("a truncated file is reported, not read short") {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() - 3);
    const std::string msg = error_of([&] { volt::tfrecord_read_all(path); });
    CHECK(contains(msg, path));
    CHECK(contains(msg, "file ends"));
  }
  SUBCASE("a missing file") {
    CHECK(contains(error_of([&] { volt::tfrecord_read_all(tmp.str("nope")); }), tmp.str("nope")));
  }
}

TEST_CASE("SummaryWriter: file name and Event records decoded in C++") {
  TempDir tmp;
  const std::string dir = tmp.str("run");  // created by the writer
  std::string path;
  {
    volt::SummaryWriter w(dir);
    path = w.file_path();
    w.add_scalar("train/loss", 0.75, 12);
    // Flushed after each add: the record is in the file before close().
    CHECK(volt::tfrecord_read_all(path).size() == 2);
    w.add_histogram("weights", {-1.f, 0.f, 0.5f, 2.f}, 3, 4);
    w.add_graph({{"input", "Input", {}, {}}, {"fc", "Linear", {"input"}, {{"out_features", "10"}}}});
  }
  const std::string name = fs::path(path).filename().string();
  INFO("file: " << name);
  CHECK(name.rfind("events.out.tfevents.", 0) == 0);
  CHECK(fs::path(path).parent_path() == fs::path(dir));
  CHECK(contains(name, "." + std::to_string(::getpid()) + "."));

  const std::vector<std::string> recs = volt::tfrecord_read_all(path);
  REQUIRE(recs.size() == 4);
  const double now = static_cast<double>(std::time(nullptr));

  const Fields first = decode(recs[0]);
  CHECK(first.one(3) == "brain.Event:2");
  CHECK(std::fabs(first.f64(1) - now) < 600);

  const Fields scalar_event = decode(recs[1]);
  REQUIRE(scalar_event.ints.count(2) == 1);
  CHECK(scalar_event.ints.find(2)->second == 12u);
  const Fields value = decode(decode(scalar_event.one(5)).one(1));
  CHECK(value.one(1) == "train/loss");
  CHECK(value.f32(2) == 0.75f);

  const Fields histo = decode(decode(decode(decode(recs[2]).one(5)).one(1)).one(5));
  CHECK(histo.f64(1) == -1.0);   // min
  CHECK(histo.f64(2) == 2.0);    // max
  CHECK(histo.f64(3) == 4.0);    // num
  CHECK(histo.f64(4) == 1.5);    // sum
  CHECK(histo.f64(5) == 5.25);   // sum of squares
  const std::string counts = histo.one(7);
  REQUIRE(counts.size() % 8 == 0);
  double total = 0;
  for (size_t i = 0; i < counts.size(); i += 8) {
    double c;
    std::memcpy(&c, counts.data() + i, 8);
    total += c;
  }
  CHECK(total == 4.0);
  CHECK(histo.one(6).size() == counts.size());

  const Fields graph = decode(decode(recs[3]).one(4));
  CHECK(graph.bytes.count(1) == 2);
  const auto fc_node = std::next(graph.bytes.find(1));
  const Fields fc = decode(fc_node->second);
  CHECK(fc.one(1) == "fc");
  CHECK(fc.one(2) == "Linear");
  CHECK(fc.one(3) == "input");
  const Fields attr = decode(fc.one(5));
  CHECK(attr.one(1) == "out_features");
  CHECK(decode(attr.one(2)).one(2) == "10");
}

TEST_CASE("SummaryWriter: two writers in one process get different files, and bad input throws") {
  TempDir tmp;
  volt::SummaryWriter a(tmp.str()), b(tmp.str());
  CHECK(a.file_path() != b.file_path());
  CHECK(event_files(tmp.str()).size() == 2);

  const uint8_t px[12] = {};
  CHECK(contains(error_of([&] { a.add_image_png("img", px, 2, 2, 5, 0); }), "channels"));
  CHECK(contains(error_of([&] { a.add_image_png("img", px, 0, 2, 3, 0); }), "img"));
  CHECK(contains(error_of([&] { a.add_image_png("img", nullptr, 2, 2, 3, 0); }), "null"));
  CHECK(contains(error_of([&] { a.add_histogram("h", {}, 0); }), "h"));
  CHECK(contains(error_of([&] { a.add_histogram("w/nan", {1.f, NAN, INFINITY}, 0); }), "w/nan"));
  a.close();
  a.close();  // idempotent
  CHECK(contains(error_of([&] { a.add_scalar("x", 1, 0); }), "closed"));
}

TEST_CASE("SummaryWriter: a failed write leaves whole records only, and a failed open no file or descriptor") {
  // The file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes writes fail part-way, as a full disk does.
  struct Limit {
    rlimit old{};
    void (*old_handler)(int);
    Limit() : old_handler(std::signal(SIGXFSZ, SIG_IGN)) { REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0); }
    void set(rlim_t bytes) {
      rlimit l = old;
      l.rlim_cur = bytes;
      REQUIRE(::setrlimit(RLIMIT_FSIZE, &l) == 0);
    }
    ~Limit() {
      ::setrlimit(RLIMIT_FSIZE, &old);
      std::signal(SIGXFSZ, old_handler);
    }
  };
  auto open_fds = [] {
    size_t n = 0;
    for (const auto& e : fs::directory_iterator("/proc/self/fd")) n += !e.path().empty();
    return n;
  };
  TempDir tmp;
  {
    volt::SummaryWriter w(tmp.str("torn"));
    w.add_scalar("a", 1.0, 1);
    Limit limit;
    limit.set(fs::file_size(w.file_path()) + 40);
    CHECK(contains(error_of([&] { w.add_scalar(std::string(200, 'b'), 2.0, 2); }), w.file_path()));
    limit.set(limit.old.rlim_cur);
    w.add_scalar("c", 3.0, 3);
    w.close();
    // file_version, a, c: the torn record was cut back, so c follows a and every record reads.
    const std::vector<std::string> records = volt::tfrecord_read_all(w.file_path());
    CHECK(records.size() == 3);
  }
  {
    Limit limit;
    const size_t fds = open_fds();
    limit.set(10);
    for (int i = 0; i < 3; ++i) CHECK(contains(error_of([&] { volt::SummaryWriter w(tmp.str("unopened")); }), "events.out"));
    limit.set(limit.old.rlim_cur);
    CHECK(open_fds() == fds);
    CHECK(event_files(tmp.str("unopened")).empty());
  }
}

TEST_CASE("module_graph: a chain from an input node to an output node, names unique even for layers called so") {
  struct Net : volt::Module {
    Net() {
      register_module("input", std::make_shared<volt::Linear>(4, 3));
      register_module("input_1", std::make_shared<volt::ReLU>());
      register_module("output", std::make_shared<volt::Linear>(3, 2));
    }
    volt::Tensor forward(const volt::Tensor& x) override { return x; }
    std::string type_name() const override { return "Net"; }
  };
  const std::vector<volt::GraphNode> g = volt::module_graph(Net());
  REQUIRE(g.size() == 5);
  std::set<std::string> names;
  for (const auto& n : g) names.insert(n.name);
  CHECK(names.size() == 5);
  CHECK(g[0].name == "input_2");
  CHECK(g[0].op == "Input");
  CHECK(g[1].name == "input");
  CHECK(g[1].inputs == std::vector<std::string>{"input_2"});
  CHECK(g[2].inputs == std::vector<std::string>{"input"});
  CHECK(g[3].name == "output");
  CHECK(g[3].inputs == std::vector<std::string>{"input_1"});
  CHECK(g[4].name == "output_1");
  CHECK(g[4].op == "Output");
  CHECK(g[4].inputs == std::vector<std::string>{"output"});
  const std::vector<volt::GraphNode> plain = volt::module_graph(volt::Linear(2, 2));
  REQUIRE(plain.size() == 3);
  CHECK(plain[0].name == "input");
  CHECK(plain[1].inputs == std::vector<std::string>{"input"});
  CHECK(plain[2].name == "output");
  CHECK(plain[2].inputs == std::vector<std::string>{plain[1].name});
}

TEST_CASE("hparams: the session ends STATUS_SUCCESS, or STATUS_UNKNOWN for a run cut short to be requeued") {
  for (const bool completed : {true, false}) {
    CAPTURE(completed);
    const std::vector<std::string> values = volt::tb::hparams_values({{"lr", 0.1}}, {"hp/acc"}, 5.0, completed);
    REQUIRE(values.size() == 3);
    const Fields value = decode(values[2]);
    CHECK(value.one(1) == "_hparams_/session_end_info");
    const Fields plugin = decode(decode(value.one(9)).one(1));  // SummaryMetadata.plugin_data
    CHECK(plugin.one(1) == "hparams");
    const Fields end = decode(decode(plugin.one(2)).one(4));  // HParamsPluginData.session_end_info
    REQUIRE(end.ints.count(1) == 1);
    CHECK(end.ints.find(1)->second == (completed ? 1u : 0u));  // tensorboard.hparams.Status
    CHECK(end.f64(2) == 5.0);
  }
}

TEST_CASE("histograms: exponential and fixed-width buckets") {
  std::vector<float> values;
  for (int i = 0; i < 1000; ++i) values.push_back(std::sin(0.37f * i) * 3.f + 0.25f);

  for (int bins : {0, 1, 7, 64}) {
    CAPTURE(bins);
    const volt::tb::Histogram h = volt::tb::make_histogram(values, bins, "t");
    double total = 0;
    for (double c : h.bucket) total += c;
    CHECK(total == 1000.0);
    CHECK(h.num == 1000.0);
    CHECK(h.bucket.size() == h.bucket_limit.size());
    CHECK(h.bucket.front() == 0.0);  // the empty bucket that marks the left edge
    CHECK(h.bucket.back() > 0.0);    // trailing empty buckets dropped
    for (size_t i = 1; i < h.bucket_limit.size(); ++i) CHECK(h.bucket_limit[i] > h.bucket_limit[i - 1]);
    CHECK(h.bucket_limit.front() <= h.min);
    CHECK(h.bucket_limit.back() >= h.max);
    if (bins > 0) CHECK(h.bucket.size() <= size_t(bins) + 1);
  }
  // Every value equal: the fixed-width range widens to +-0.5.
  const volt::tb::Histogram same = volt::tb::make_histogram({2.f, 2.f, 2.f}, 1, "same");
  CHECK(same.min == 2.0);
  CHECK(same.max == 2.0);
  CHECK(same.bucket_limit == std::vector<double>{1.5, 2.5});
  CHECK(same.bucket == std::vector<double>{0.0, 3.0});
  // Exponential edges: 1.0 falls in a bucket whose right edge is just above it (factor 1.1).
  const volt::tb::Histogram one = volt::tb::make_histogram({1.f}, 0, "one");
  REQUIRE(one.bucket.size() == 2);
  CHECK(one.bucket_limit[0] <= 1.0);
  CHECK(one.bucket_limit[1] > 1.0);
  CHECK(one.bucket_limit[1] < 1.1 * 1.0000001);
  CHECK(contains(error_of([] { volt::tb::make_histogram({1.f}, -1, "neg"); }), "bins"));
}

TEST_CASE("CSVLogger: columns grow, rows keep their cells, the file is replaced atomically") {
  TempDir tmp;
  const std::string dir = tmp.str("csv/version_0");
  {
    volt::CSVLogger log(dir, 1);
    log.log_metrics({{"train_loss", 0.5}}, 0, 0);
    CHECK(read_text(log.metrics_path()) == "epoch,step,train_loss\n0,0,0.5\n");
    log.log_metrics({{"train_loss", 0.25}, {"lr", 0.1}}, 50, 0);
    log.log_metrics({{"val_acc", 0.875}, {"weird,name", 3}}, 99);  // no epoch: empty cell
    const std::vector<std::string> lines = lines_of(read_text(log.metrics_path()));
    REQUIRE(lines.size() == 4);
    CHECK(lines[0] == "epoch,step,lr,train_loss,val_acc,\"weird,name\"");
    CHECK(lines[1] == "0,0,,0.5,,");
    CHECK(lines[2] == "0,50,0.1,0.25,,");
    CHECK(lines[3] == ",99,,,0.875,3");
    CHECK(contains(error_of([&] { log.log_metrics({{"step", 1}}, 0); }), "reserved"));
  }
  for (const auto& e : fs::directory_iterator(dir)) CHECK(e.path().filename() == "metrics.csv");

  SUBCASE("buffered rows are written at a step s with s + 1 a multiple of flush_every_n_steps, and on destruction") {
    const std::string d2 = tmp.str("buffered");
    {
      volt::CSVLogger log(d2, 3);
      log.log_metrics({{"a", 1}}, 0);
      log.log_metrics({{"a", 2}}, 1);
      CHECK_FALSE(fs::exists(log.metrics_path()));
      log.log_metrics({{"a", 3}}, 2);  // step 2: 3 steps done, as Lightning's flush_logs_every_n_steps
      CHECK(lines_of(read_text(log.metrics_path())).size() == 4);
      log.log_metrics({{"b", 1e-8}}, 3);
    }
    const std::vector<std::string> lines = lines_of(read_text(d2 + "/metrics.csv"));
    REQUIRE(lines.size() == 5);
    CHECK(lines[0] == "epoch,step,a,b");
    CHECK(lines[4] == ",3,,1e-08");
  }
  SUBCASE("same columns: new rows are appended, not the whole file rewritten; a failed append is redone") {
    const std::string d3 = tmp.str("appended");
    volt::CSVLogger log(d3, 2);
    log.log_metrics({{"a", 1}}, 0);
    log.log_metrics({{"b", 2}}, 1);  // first flush: header a,b
    const std::string path = log.metrics_path();
    struct stat before{};
    REQUIRE(::stat(path.c_str(), &before) == 0);
    log.log_metrics({{"a", 3}}, 2);
    log.log_metrics({{"b", 4}}, 3);  // appended: the same file (inode), two more lines
    struct stat after{};
    REQUIRE(::stat(path.c_str(), &after) == 0);
    CHECK(after.st_ino == before.st_ino);
    CHECK(read_text(path) == "epoch,step,a,b\n,0,1,\n,1,,2\n,2,3,\n,3,,4\n");
    // An append that fails (the file is gone, a folder in its place) throws, naming the file; the
    // next flush writes every row again, nothing lost.
    fs::remove(path);
    fs::create_directory(path);
    log.log_metrics({{"a", 5}}, 4);
    CHECK(contains(error_of([&] { log.log_metrics({{"a", 6}}, 5); }), path));
    fs::remove(path);
    log.flush();
    CHECK(read_text(path) == "epoch,step,a,b\n,0,1,\n,1,,2\n,2,3,\n,3,,4\n,4,5,\n,5,6,\n");
    log.log_metrics({{"c", 7}}, 6);
    log.log_metrics({{"a", 8}}, 7);  // a new column: rewritten, under the grown header
    CHECK(lines_of(read_text(path))[0] == "epoch,step,a,b,c");
    CHECK(lines_of(read_text(path)).size() == 9);
    CHECK(lines_of(read_text(path))[7] == ",6,,,7");
  }
  SUBCASE("a reserved name among others changes nothing") {
    const std::string d4 = tmp.str("reserved");
    volt::CSVLogger log(d4, 1);
    CHECK(contains(error_of([&] { log.log_metrics({{"acc", 1}, {"step", 2}}, 0); }), "reserved"));
    log.log_metrics({{"loss", 1}}, 1);
    CHECK(read_text(log.metrics_path()) == "epoch,step,loss\n,1,1\n");
  }
}

TEST_CASE("hparams.yaml: key: value lines, strings quoted when plain YAML would misread them") {
  const volt::HParams hp = {{"lr", 0.001},
                            {"batch_size", 64.0},
                            {"optimizer", std::string("adam")},
                            {"nesterov", true},
                            {"note", std::string("yes")},
                            {"empty", std::string("")},
                            {"ratio", std::string("1e3")},
                            {"path", std::string("a: b # c")},
                            {"tiny", 1e-8},
                            {"has space", std::string("line\nbreak \"q\"")}};
  const std::string yaml = volt::hparams_to_yaml(hp);
  CHECK(yaml ==
        "batch_size: 64\n"
        "empty: \"\"\n"
        "\"has space\": \"line\\nbreak \\\"q\\\"\"\n"
        "lr: 0.001\n"
        "nesterov: true\n"
        "note: \"yes\"\n"
        "optimizer: adam\n"
        "path: \"a: b # c\"\n"
        "ratio: \"1e3\"\n"
        "tiny: 1.0e-08\n");
  TempDir tmp;
  volt::CSVLogger log(tmp.str());
  log.log_hparams(hp);
  CHECK(read_text(log.hparams_path()) == yaml);
  CHECK(volt::hparams_to_yaml({}) == "{}\n");
  CHECK(volt::format_double(0.1) == "0.1");
  CHECK(volt::format_double(1.0 / 3.0) == "0.3333333333333333");
  CHECK(volt::format_double(-2) == "-2");
}

TEST_CASE("valid_utf8: well-formed text unchanged, each byte of a malformed sequence U+FFFD") {
  const std::string fffd = "\xEF\xBF\xBD";
  for (const std::string& ok : std::vector<std::string>{"", "plain", "caf\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\xF4\x8F\xBF\xBF",
                               "\xED\x9F\xBF", std::string("nul\0in", 6)})
    CHECK(volt::valid_utf8(ok) == ok);
  CHECK(volt::valid_utf8("a\xFFz") == "a" + fffd + "z");                   // never valid
  CHECK(volt::valid_utf8("\x80") == fffd);                                  // a stray continuation
  CHECK(volt::valid_utf8("\xC3") == fffd);                                  // cut short
  CHECK(volt::valid_utf8("\xC0\xAF") == fffd + fffd);                       // overlong '/'
  CHECK(volt::valid_utf8("\xE0\x80\xAF") == fffd + fffd + fffd);            // overlong, 3 bytes
  CHECK(volt::valid_utf8("\xED\xA0\x80") == fffd + fffd + fffd);            // a surrogate
  CHECK(volt::valid_utf8("\xF4\x90\x80\x80") == fffd + fffd + fffd + fffd); // past U+10FFFF
  CHECK(volt::valid_utf8("\xE2\x82x") == fffd + fffd + "x");
}

TEST_CASE("CSV and hparams.yaml stay UTF-8, and YAML's own line breaks are escaped") {
  const volt::HParams hp = {{"class\xFF", std::string("a\xC2\x85" "b\xE2\x80\xA8" "c\xE2\x80\xA9" "d\xC3\xA9")}};
  CHECK(volt::hparams_to_yaml(hp) == "\"class\xEF\xBF\xBD\": \"a\\Nb\\Lc\\Pd\xC3\xA9\"\n");
  TempDir tmp;
  {
    volt::CSVLogger log(tmp.str());
    log.log_metrics({{"acc/\xFE", 0.5}}, 3, 0);
  }
  const std::string csv = read_text(tmp.str("metrics.csv"));
  CHECK(contains(csv, "acc/\xEF\xBF\xBD"));
  CHECK_FALSE(contains(csv, "\xFE"));
}

TEST_CASE("next_version_dir: version_N with N = 1 + the largest existing") {
  TempDir tmp;
  const std::string root = tmp.str("logs");
  CHECK(volt::next_version_dir(root, "exp") == (fs::path(root) / "exp" / "version_0").string());
  CHECK(fs::is_directory(fs::path(root) / "exp" / "version_0"));
  CHECK(volt::next_version_dir(root, "exp") == (fs::path(root) / "exp" / "version_1").string());
  fs::create_directories(fs::path(root) / "exp" / "version_7");
  fs::create_directories(fs::path(root) / "exp" / "version_x");
  fs::create_directories(fs::path(root) / "exp" / "version_12a");
  std::ofstream(fs::path(root) / "exp" / "version_40");  // a file, not a folder: ignored
  CHECK(volt::next_version(root + "/exp") == 8);
  CHECK(volt::next_version_dir(root, "exp") == (fs::path(root) / "exp" / "version_8").string());
  // A gap below the largest is not reused (Lightning's rule).
  fs::remove_all(fs::path(root) / "exp" / "version_1");
  CHECK(volt::next_version(root + "/exp") == 9);
  // No name: versions directly under root; another name counts on its own.
  CHECK(volt::next_version_dir(tmp.str("flat"), "") == (fs::path(tmp.str("flat")) / "version_0").string());
  CHECK(volt::next_version_dir(root, "other") == (fs::path(root) / "other" / "version_0").string());
  CHECK(volt::next_version(tmp.str("missing")) == 0);
}

TEST_CASE("bad log dir: volt::Error naming the path") {
  TempDir tmp;
  const std::string file = tmp.str("plain_file");
  std::ofstream(file) << "x";
  const std::string under_file = file + "/logs";

  std::string msg = error_of([&] { volt::SummaryWriter w(under_file); });
  CHECK(contains(msg, under_file));
  CHECK(contains(msg, "SummaryWriter"));
  msg = error_of([&] { volt::SummaryWriter w(file); });  // exists but is a file
  CHECK(contains(msg, file));
  msg = error_of([&] { volt::CSVLogger log(under_file); });
  CHECK(contains(msg, under_file));
  msg = error_of([&] { volt::next_version_dir(file, "exp"); });
  CHECK(contains(msg, file));
  msg = error_of([&] { volt::write_file_atomic(under_file + "/metrics.csv", "x"); });
  CHECK(contains(msg, under_file));
  CHECK(contains(error_of([] { volt::SummaryWriter w(""); }), "empty"));
}

TEST_CASE("TensorBoard's EventAccumulator reads the event file") {
  if (std::system("python3 -c 'import tensorboard' >/dev/null 2>&1") != 0)
    volt::test::skip("tensorboard not installed (pip install tensorboard)");
  TempDir tmp;
  const std::string dir = tmp.str("tb");
  {
    volt::SummaryWriter w(dir);
    const double losses[] = {2.5, 1.25, 0.625, 0.5};
    for (int i = 0; i < 4; ++i) w.add_scalar("train/loss", losses[i], i * 10);
    w.add_scalar("val/acc", 0.75, 30);
    // A tag that is not UTF-8 (an ImageFolder class folder's raw name): TensorBoard's reader refused
    // the record and everything after it.
    w.add_scalar("class/bad\xff", 1.0, 30);
    w.add_scalar("after_bad", 0.25, 31);
    std::vector<float> weights;
    for (int i = 0; i < 257; ++i) weights.push_back(std::cos(0.1f * i) * 0.5f);
    w.add_histogram("fc/weight", weights, 30);
    w.add_histogram("fc/bias", weights, 30, 16);
    std::vector<uint8_t> rgb(5 * 7 * 3), gray(4 * 6);
    for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>(i * 37);
    for (size_t i = 0; i < gray.size(); ++i) gray[i] = static_cast<uint8_t>(i * 11);
    w.add_image_png("samples/rgb", rgb.data(), 5, 7, 3, 30);
    w.add_image_png("samples/gray", gray.data(), 4, 6, 1, 30);
    w.add_hparams({{"lr", 0.5}, {"optimizer", std::string("sgd")}, {"nesterov", true}}, {{"hp/final_acc", 0.875}});
    w.add_graph({{"input", "Input", {}, {{"shape", "[N, 1, 28, 28]"}}},
                 {"features/conv1", "Conv2d", {"input"}, {{"kernel_size", "3x3"}}},
                 {"features/relu1", "ReLU", {"features/conv1"}, {}},
                 {"classifier/fc", "Linear", {"features/relu1"}, {{"out_features", "10"}}}});
  }
  const std::string script = std::string(VOLT_SOURCE_DIR) + "/tests/tensorboard_read.py";
  const std::string err_path = tmp.str("stderr.txt");
  const std::string cmd = "python3 '" + script + "' '" + dir + "' 2>'" + err_path + "'";
  std::FILE* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), pipe)) > 0;) out.append(buf, n);
  const int status = ::pclose(pipe);
  INFO("command: " << cmd << "\nstdout: " << out << "\nstderr: " << read_text(err_path));
  REQUIRE(status == 0);
  MESSAGE("TensorBoard saw: " << out);

  // json.dumps(sort_keys=True) output; the values are exact in float32 so they print exactly.
  CHECK(contains(out, "\"train/loss\": [[0, 2.5], [10, 1.25], [20, 0.625], [30, 0.5]]"));
  CHECK(contains(out, "\"val/acc\": [[30, 0.75]]"));
  CHECK(contains(out, "\"class/bad\\ufffd\": [[30, 1.0]]"));
  CHECK(contains(out, "\"after_bad\": [[31, 0.25]]"));
  CHECK(contains(out, "\"hp/final_acc\": [[0, 0.875]]"));
  CHECK(contains(out, "\"histograms\": [\"fc/bias\", \"fc/weight\"]"));
  CHECK(contains(out, "\"images\": [\"samples/gray\", \"samples/rgb\"]"));
  CHECK(contains(out, "\"bucket_count_total\": 257.0"));
  CHECK(contains(out, "\"num\": 257.0"));
  CHECK(contains(out, "\"height\": 5, \"png_signature_ok\": true, \"step\": 30, \"width\": 7"));
  CHECK(contains(out, "\"height\": 4, \"png_signature_ok\": true, \"step\": 30, \"width\": 6"));
  CHECK(contains(out, "\"graph\": true"));
  CHECK(contains(out, "{\"attrs\": {\"kernel_size\": \"3x3\"}, \"inputs\": [\"input\"], \"name\": \"features/conv1\", \"op\": \"Conv2d\"}"));
  CHECK(contains(out, "\"classifier/fc\""));
  // The hparams plugin's three summaries, with the values and the metric.
  CHECK(contains(out, "\"_hparams_/experiment\""));
  CHECK(contains(out, "\"_hparams_/session_start_info\""));
  CHECK(contains(out, "\"_hparams_/session_end_info\""));
  CHECK(contains(out, "{\"name\": \"lr\", \"type\": \"DATA_TYPE_FLOAT64\"}"));
  CHECK(contains(out, "{\"name\": \"optimizer\", \"type\": \"DATA_TYPE_STRING\"}"));
  CHECK(contains(out, "{\"name\": \"nesterov\", \"type\": \"DATA_TYPE_BOOL\"}"));
  CHECK(contains(out, "\"metric_infos\": [{\"name\": {\"tag\": \"hp/final_acc\"}}]"));
  CHECK(contains(out, "\"hparams\": {\"lr\": 0.5, \"nesterov\": true, \"optimizer\": \"sgd\"}"));
  CHECK(contains(out, "\"status\": \"STATUS_SUCCESS\""));
}

using namespace volt;

namespace {

// A linear classifier of the synthetic 3x16x16 images into `classes` classes, whose test_step also
// logs a value kept from the loggers.
class WideClassifier : public ClassifierModule {
 public:
  explicit WideClassifier(int64_t classes)
      : ClassifierModule(std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
                             std::make_shared<Flatten>(), std::make_shared<Linear>(3 * 16 * 16, classes)}),
                         volt::test::adam()) {}
  void test_step(const Batch& b, int64_t i) override {
    ClassifierModule::test_step(b, i);
    LogOptions lo;
    lo.logger = false;
    log("test_hidden", 1.0, lo);
  }
};

// The test_confusion_matrix image in the event files under dir: its [height, width], or {} if none.
std::vector<uint64_t> confusion_image_size(const std::string& dir) {
  for (const std::string& file : event_files(dir))
    for (const std::string& rec : volt::tfrecord_read_all(file)) {
      const Fields event = decode(rec);
      if (event.bytes.count(5) == 0) continue;
      const Fields summary = decode(event.one(5));
      for (auto [it, end] = summary.bytes.equal_range(1); it != end; ++it) {
        const Fields value = decode(it->second);
        if (value.bytes.count(1) == 0 || value.one(1) != "test_confusion_matrix") continue;
        const Fields image = decode(value.one(4));
        return {image.ints.find(1)->second, image.ints.find(2)->second};
      }
    }
  return {};
}

}  // namespace

TEST_CASE("Trainer.test logs the confusion matrix image for any class count, and keeps logger=false values out") {
  // 16 px cells up to 128 classes, smaller ones up to a side of 2048 px, no image past 2048 classes
  // (with 600, the test's end threw: 16 px cells made a side over confusion_image's limit).
  for (const auto& [classes, side] : std::vector<std::pair<int64_t, uint64_t>>{{4, 64}, {600, 1800}, {2100, 0}}) {
    INFO(classes << " classes");
    TempDir tmp;
    volt::test::SynthDM dm(64, 32, 32);
    WideClassifier m(classes);
    volt::test::Quiet q;
    Trainer t(q.cpu_fit(tmp.path, 1));
    t.fit(m, dm);
    const auto results = t.test(m, dm);
    INFO(q.os.str());
    CHECK(results.at(0).count("test_hidden") == 1);  // returned and printed, as Lightning's
    CHECK(t.logged_metrics().count("test_acc") == 1);
    CHECK(t.logged_metrics().count("test_hidden") == 0);
    CHECK_FALSE(contains(read_text(t.log_dir() + "/metrics.csv"), "test_hidden"));
    const std::vector<uint64_t> size = confusion_image_size(t.log_dir());
    CHECK(size == (side ? std::vector<uint64_t>{side, side} : std::vector<uint64_t>{}));
  }
}

TEST_CASE("metrics.csv holds each finished epoch's rows when the next epoch starts") {
  // Flushed only at steps 99, 199, ... (Lightning's rule), a default CIFAR run had no metrics.csv
  // for its first 12 epochs, and a run stopped then kept none of it.
  class Peek : public ClassifierModule {
   public:
    Peek() : ClassifierModule(volt::test::small_cnn(), volt::test::adam()) {}
    void on_train_epoch_start() override {
      if (current_epoch() == 1) seen = read_text(trainer_dir + "/metrics.csv");
    }
    std::string trainer_dir, seen;
  };
  TempDir tmp;
  volt::test::SynthDM dm(64, 32, 32);
  Peek m;
  volt::test::Quiet q;
  auto o = q.cpu_fit(tmp.path, 2);
  o.log_every_n_steps = 1;
  m.trainer_dir = tmp.path + "/lightning_logs/version_0";
  Trainer t(o);
  t.fit(m, dm);
  INFO(m.seen);
  const std::vector<std::string> rows = lines_of(m.seen);
  REQUIRE(rows.size() >= 2);
  CHECK(contains(rows[0], "val_loss"));
  CHECK(contains(rows.back(), "0,"));  // epoch 0's
}

TEST_CASE("log() in the training epoch's hooks defaults to on_epoch, as Lightning's: the value reaches the logs") {
  // With the training steps' on_step default it was a step value that no step logged: dropped.
  class Hooks : public ClassifierModule {
   public:
    Hooks() : ClassifierModule(volt::test::small_cnn(), volt::test::adam()) {}
    void on_train_epoch_start() override { log("epoch_started", double(current_epoch()) + 10); }
    void on_train_epoch_end() override { log("epoch_ended", double(current_epoch()) + 20); }
  };
  TempDir tmp;
  volt::test::SynthDM dm(64, 32, 32);
  Hooks m;
  volt::test::Quiet q;
  Trainer t(q.cpu_fit(tmp.path, 2));
  t.fit(m, dm);
  INFO(q.os.str());
  CHECK(t.callback_metrics().at("epoch_started") == 11);
  CHECK(t.callback_metrics().at("epoch_ended") == 21);
  CHECK(t.logged_metrics().at("epoch_ended") == 21);
  const std::vector<std::string> csv = lines_of(read_text(t.log_dir() + "/metrics.csv"));
  REQUIRE_FALSE(csv.empty());
  CHECK(contains(csv[0], "epoch_started"));
  CHECK(contains(csv[0], "epoch_ended"));
}

TEST_CASE("a value logged on_step and on_epoch is logged as name_step and name_epoch, as Lightning's") {
  // Under one name, the step values and the epoch mean were two series in one column and one tag.
  class Both : public ClassifierModule {
   public:
    Both() : ClassifierModule(volt::test::small_cnn(), volt::test::adam()) {}
    Tensor training_step(const Batch& b, int64_t i) override {
      LogOptions lo;
      lo.on_step = lo.on_epoch = true;
      log("both", double(i), lo);  // batches 0, 1: step values 0 and 1, epoch mean 0.5
      return ClassifierModule::training_step(b, i);
    }
  };
  TempDir tmp;
  volt::test::SynthDM dm(128, 32, 64);  // 2 training batches of 32
  Both m;
  volt::test::Quiet q;
  auto o = q.cpu_fit(tmp.path, 1);
  o.log_every_n_steps = 1;
  Trainer t(o);
  t.fit(m, dm);
  INFO(q.os.str());
  CHECK(t.logged_metrics().at("both_step") == 1.0);
  CHECK(t.logged_metrics().at("both_epoch") == 0.5);
  CHECK(t.logged_metrics().count("both") == 0);
  CHECK(t.callback_metrics().at("both") == 0.5);  // the plain name too, for monitors: the epoch's at its end
  CHECK(t.callback_metrics().at("both_step") == 1.0);
  CHECK(t.callback_metrics().at("both_epoch") == 0.5);
  const std::vector<std::string> csv = lines_of(read_text(t.log_dir() + "/metrics.csv"));
  REQUIRE_FALSE(csv.empty());
  CHECK(contains(csv[0], "both_step"));
  CHECK(contains(csv[0], "both_epoch"));
  CHECK_FALSE(contains("," + csv[0] + ",", ",both,"));
}
