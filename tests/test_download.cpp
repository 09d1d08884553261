// Downloads against a local server only (python3 -m http.server on 127.0.0.1, plus in-process
// servers that cut a transfer short or stall): MD5, download_file, extract_tar_gz, prepare_*.
#include <archive.h>
#include <archive_entry.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "data/download.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace volt;
using test::contains;
using test::error_of;

namespace {

// A fresh folder under /tmp (test::TempDir), seen as a filesystem path.
struct TmpDir : test::TempDir {
  TmpDir() : test::TempDir("volt_download_"), path(test::TempDir::path) {}
  fs::path path;
};

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f << bytes;
  REQUIRE(f.good());
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Every entry under dir (recursive, relative names, sorted): what an operation left behind.
std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) out.push_back(fs::relative(e.path(), dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + " ";
  return s;
}

// Distinct, non-trivial bytes for a fake file.
std::string fake_bytes(size_t n, unsigned seed) {
  std::string s(n, '\0');
  uint32_t x = 2463534242u ^ seed;
  for (auto& c : s) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    c = char(x & 0xff);
  }
  return s;
}

struct Entry {
  std::string name, data;
  bool dir = false;
};

// Packs entries into a gzip'ed tar (libarchive's writer).
void make_tar_gz(const fs::path& path, const std::vector<Entry>& entries) {
  archive* a = archive_write_new();
  REQUIRE(archive_write_add_filter_gzip(a) == ARCHIVE_OK);
  REQUIRE(archive_write_set_format_pax_restricted(a) == ARCHIVE_OK);
  REQUIRE(archive_write_open_filename(a, path.c_str()) == ARCHIVE_OK);
  for (const auto& e : entries) {
    archive_entry* en = archive_entry_new();
    archive_entry_set_pathname(en, e.name.c_str());
    archive_entry_set_filetype(en, e.dir ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(en, e.dir ? 0755 : 0644);
    archive_entry_set_size(en, e.dir ? 0 : la_int64_t(e.data.size()));
    REQUIRE(archive_write_header(a, en) == ARCHIVE_OK);
    if (!e.dir) REQUIRE(archive_write_data(a, e.data.data(), e.data.size()) == la_ssize_t(e.data.size()));
    archive_entry_free(en);
  }
  REQUIRE(archive_write_close(a) == ARCHIVE_OK);
  archive_write_free(a);
}

// A gzip file holding data (libarchive's raw format).
void make_gz(const fs::path& path, const std::string& data) {
  archive* a = archive_write_new();
  REQUIRE(archive_write_add_filter_gzip(a) == ARCHIVE_OK);
  REQUIRE(archive_write_set_format_raw(a) == ARCHIVE_OK);
  REQUIRE(archive_write_open_filename(a, path.c_str()) == ARCHIVE_OK);
  archive_entry* en = archive_entry_new();
  archive_entry_set_filetype(en, AE_IFREG);
  REQUIRE(archive_write_header(a, en) == ARCHIVE_OK);
  REQUIRE(archive_write_data(a, data.data(), data.size()) == la_ssize_t(data.size()));
  archive_entry_free(en);
  REQUIRE(archive_write_close(a) == ARCHIVE_OK);
  archive_write_free(a);
}

const char* const kCifarBins[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                  "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};

// A fake CIFAR-10 archive in dir (cifar-10-batches-bin/ with small .bin files); returns its md5.
std::string make_fake_cifar(const fs::path& dir) {
  std::vector<Entry> entries = {{"cifar-10-batches-bin/", "", true},
                                {"cifar-10-batches-bin/batches.meta.txt", "airplane\nautomobile\n"}};
  unsigned seed = 1;
  for (const char* f : kCifarBins) entries.push_back({std::string("cifar-10-batches-bin/") + f, fake_bytes(3073 * 2, seed++)});
  make_tar_gz(dir / "cifar-10-binary.tar.gz", entries);
  return md5_hex((dir / "cifar-10-binary.tar.gz").string());
}

const char* const kMnistNames[] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                   "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

// Fake MNIST .gz files in dir; returns the md5 table for them.
std::map<std::string, std::string> make_fake_mnist(const fs::path& dir) {
  std::map<std::string, std::string> md5;
  unsigned seed = 100;
  for (const char* n : kMnistNames) {
    make_gz(dir / n, fake_bytes(1000 + seed, seed));
    ++seed;
    md5[n] = md5_hex((dir / n).string());
  }
  return md5;
}

void truncate_file(const fs::path& p, double keep_fraction) {
  const std::string all = read_file(p);
  write_file(p, all.substr(0, size_t(double(all.size()) * keep_fraction)));
}

std::string find_in_path(const std::string& exe) {
  const char* path = std::getenv("PATH");
  if (!path) return "";
  std::stringstream ss(path);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + exe;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// Every request here goes to 127.0.0.1: never through a proxy named in the environment.
const bool kNoProxy = ::setenv("no_proxy", "127.0.0.1,localhost", 1) == 0 &&
                      ::setenv("NO_PROXY", "127.0.0.1,localhost", 1) == 0;

// The python3 that serves files; skips the test (before it creates anything) when there is none.
std::string python3_or_skip() {
  const std::string python = find_in_path("python3");
  if (python.empty()) test::skip("python3 not found");
  return python;
}

bool can_connect(int port) {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(s);
  return ok;
}

// A socket bound to 127.0.0.1 on a free port; listening when listen_too.
int bound_socket(bool listen_too, int* port) {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(s >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  if (listen_too) REQUIRE(::listen(s, 4) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  *port = ntohs(addr.sin_port);
  return s;
}

// python3 -m http.server serving dir on 127.0.0.1 (the port it prints); killed when destroyed.
class HttpServer {
 public:
  explicit HttpServer(const fs::path& dir) {
    REQUIRE(kNoProxy);
    const std::string python = python3_or_skip();
    int out[2];
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    const std::string dir_s = dir.string();
    std::vector<const char*> argv = {python.c_str(), "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                                     "--directory", dir_s.c_str(), nullptr};
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {  // child: only async-signal-safe calls until exec
#ifdef __linux__
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
#endif
      const int devnull = ::open("/dev/null", O_RDWR);
      ::dup2(devnull, 0);
      ::dup2(out[1], 1);
      ::dup2(devnull, 2);  // request logs; an undrained pipe would block the server
      ::execv(python.c_str(), const_cast<char* const*>(argv.data()));
      ::_exit(127);
    }
    ::close(out[1]);
    out_fd_ = out[0];

    // Read "Serving HTTP on 127.0.0.1 port NNNN ..." within 10 s, then wait until it accepts.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::string text;
    while (port_ == 0 && std::chrono::steady_clock::now() < deadline) {
      pollfd p{out_fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[256];
      const ssize_t n = ::read(out_fd_, buf, sizeof buf);
      if (n <= 0) break;  // exited
      text.append(buf, size_t(n));
      const size_t at = text.find(" port ");
      if (at != std::string::npos && text.find(' ', at + 6) != std::string::npos) port_ = std::atoi(text.c_str() + at + 6);
    }
    INFO("http.server said: " << text);
    REQUIRE(port_ > 0);
    while (!can_connect(port_) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(can_connect(port_));
  }
  ~HttpServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    if (out_fd_ >= 0) ::close(out_fd_);
  }
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/"; }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int port_ = 0;
};

// An in-process server for one connection that misbehaves: kPartial promises 100000 bytes, sends
// 1000 and closes; kStall accepts and then sends nothing until it is destroyed.
class BadServer {
 public:
  enum Mode { kPartial, kStall };
  explicit BadServer(Mode mode) : mode_(mode) {
    listen_fd_ = bound_socket(true, &port_);
    thread_ = std::thread([this] { serve(); });
  }
  ~BadServer() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }
  std::string url(const std::string& name) const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/" + name;
  }

 private:
  // Waits up to ms for fd to be readable, returning early once stop_ is set.
  bool wait_readable(int fd, int ms) {
    for (int waited = 0; waited < ms && !stop_; waited += 50) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) > 0) return true;
    }
    return false;
  }
  void serve() {
    if (!wait_readable(listen_fd_, 10000)) return;
    const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    std::string request;
    char buf[1024];
    while (request.find("\r\n\r\n") == std::string::npos && wait_readable(c, 5000)) {
      const ssize_t n = ::read(c, buf, sizeof buf);
      if (n <= 0) break;
      request.append(buf, size_t(n));
    }
    if (mode_ == kPartial) {
      const std::string head =
          "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n"
          "Connection: close\r\n\r\n";
      const std::string body = head + fake_bytes(1000, 7);
      (void)!::send(c, body.data(), body.size(), MSG_NOSIGNAL);
    } else {
      while (!stop_) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::close(c);
  }

  Mode mode_;
  int listen_fd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

DownloadTimeouts quick_timeouts() {
  DownloadTimeouts t;
  t.connect_s = 5;
  t.low_speed_s = 5;
  t.total_s = 20;
  return t;
}

}  // namespace

TEST_CASE("md5_hex matches the RFC 1321 test suite, in memory and from files") {
  const std::pair<std::string, std::string> suite[] = {
      {"", "d41d8cd98f00b204e9800998ecf8427e"},
      {"a", "0cc175b9c0f1b6a831c399e269772661"},
      {"abc", "900150983cd24fb0d6963f7d28e17f72"},
      {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
      {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
      {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"},
      {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
       "57edf4a22be3c955ac49da2e2107b67a"},
  };
  TmpDir tmp;
  for (const auto& [text, want] : suite) {
    INFO("input \"" << text << "\"");
    CHECK(md5_hex_bytes(text.data(), text.size()) == want);
    write_file(tmp.path / "m", text);
    CHECK(md5_hex((tmp.path / "m").string()) == want);
  }
  // Lengths around the 56- and 64-byte padding boundaries agree between one call and a file.
  for (size_t n : {55, 56, 57, 63, 64, 65, 119, 120, 128}) {
    const std::string s = fake_bytes(n, unsigned(n));
    write_file(tmp.path / "m", s);
    CHECK(md5_hex((tmp.path / "m").string()) == md5_hex_bytes(s.data(), s.size()));
  }
  // A million 'a's spans several of md5_hex's read buffers (a well-known value).
  write_file(tmp.path / "a", std::string(1000000, 'a'));
  CHECK(md5_hex((tmp.path / "a").string()) == "7707d6ae4e027c70eea2a935c2296f21");
  const std::string err = error_of([&] { md5_hex((tmp.path / "absent").string()); });
  CHECK(contains(err, "absent"));
}

TEST_CASE("download_file fetches into place, checks the md5, and replaces only on success") {
  python3_or_skip();
  TmpDir served, out;
  const std::string data = fake_bytes(200000, 3);
  write_file(served.path / "blob.bin", data);
  const std::string md5 = md5_hex_bytes(data.data(), data.size());
  HttpServer server(served.path);

  const fs::path dest = out.path / "sub" / "blob.bin";  // the parent folder is created
  download_file(server.url() + "blob.bin", dest.string(), md5, quick_timeouts());
  CHECK(read_file(dest) == data);
  CHECK(listing(out.path) == std::vector<std::string>{"sub", "sub/blob.bin"});

  // Upper-case expected md5 and no md5 at all are both accepted.
  std::string upper = md5;
  for (char& c : upper) c = char(std::toupper(c));
  download_file(server.url() + "blob.bin", (out.path / "u.bin").string(), upper, quick_timeouts());
  download_file(server.url() + "blob.bin", (out.path / "n.bin").string(), "", quick_timeouts());
  CHECK(read_file(out.path / "n.bin") == data);

  // A wrong md5 names the URL, both sums, and leaves neither the file nor the part file; an
  // existing file at dest is left as it was.
  const std::string url = server.url() + "blob.bin";
  const std::string wrong = "0123456789abcdef0123456789abcdef";
  std::string err = error_of([&] { download_file(url, (out.path / "w.bin").string(), wrong, quick_timeouts()); });
  CHECK(contains(err, "md5"));
  CHECK(contains(err, url));
  CHECK(contains(err, wrong));
  CHECK(contains(err, md5));
  write_file(out.path / "old.bin", "old");
  err = error_of([&] { download_file(url, (out.path / "old.bin").string(), wrong, quick_timeouts()); });
  CHECK(contains(err, "md5"));
  CHECK(read_file(out.path / "old.bin") == "old");
  CHECK(listing(out.path) == std::vector<std::string>{"n.bin", "old.bin", "sub", "sub/blob.bin", "u.bin"});
}

TEST_CASE("download_file on a 404 throws naming the URL and leaves nothing") {
  python3_or_skip();
  TmpDir served, out;
  HttpServer server(served.path);
  const std::string url = server.url() + "missing.tar.gz";
  const std::string err = error_of([&] { download_file(url, (out.path / "x").string(), "", quick_timeouts()); });
  CHECK(contains(err, url));
  CHECK(contains(err, "404"));
  CHECK(listing(out.path).empty());
}

TEST_CASE("download_file on a refused connection throws quickly") {
  TmpDir out;
  int port = 0;
  const int fd = bound_socket(false, &port);  // bound, never listening: connections are refused
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/file.gz";
  const auto t0 = std::chrono::steady_clock::now();
  const std::string err = error_of([&] { download_file(url, (out.path / "x").string(), "", quick_timeouts()); });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ::close(fd);
  INFO(err);
  CHECK(contains(err, url));
  CHECK(seconds < 5.0);  // a refusal is immediate; this only guards against hanging
  CHECK(listing(out.path).empty());
}

TEST_CASE("download_file on a transfer cut short throws and leaves nothing") {
  TmpDir out;
  BadServer server(BadServer::kPartial);
  const std::string url = server.url("cut.tar.gz");
  const std::string err = error_of([&] { download_file(url, (out.path / "cut.tar.gz").string(), "", quick_timeouts()); });
  INFO(err);
  CHECK(contains(err, url));
  CHECK(contains(err, "transfer closed"));  // curl's partial-file message
  CHECK(listing(out.path).empty());
}

TEST_CASE("download_file gives up on a stalled server") {
  TmpDir out;
  BadServer server(BadServer::kStall);
  const std::string url = server.url("stall.bin");
  DownloadTimeouts t;
  t.connect_s = 2;
  t.low_speed_s = 1;  // under 1 byte/s for 1 s: give up
  const auto t0 = std::chrono::steady_clock::now();
  const std::string err = error_of([&] { download_file(url, (out.path / "stall.bin").string(), "", t); });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(err);
  CHECK(contains(err, url));
  CHECK(seconds < 8.0);
  CHECK(listing(out.path).empty());
}

TEST_CASE("extract_tar_gz renames the top folder into place and refuses unsafe entries") {
  TmpDir tmp;
  // One top folder: it becomes dest, whatever its name.
  make_tar_gz(tmp.path / "one.tar.gz", {{"top/", "", true}, {"top/a.txt", "alpha"}, {"top/sub/b.bin", fake_bytes(70000, 9)}});
  extract_tar_gz((tmp.path / "one.tar.gz").string(), (tmp.path / "out" / "dest").string());
  CHECK(read_file(tmp.path / "out/dest/a.txt") == "alpha");
  CHECK(read_file(tmp.path / "out/dest/sub/b.bin") == fake_bytes(70000, 9));
  CHECK(listing(tmp.path / "out") == std::vector<std::string>{"dest", "dest/a.txt", "dest/sub", "dest/sub/b.bin"});
  // An existing non-empty dest is refused and kept.
  std::string err = error_of([&] { extract_tar_gz((tmp.path / "one.tar.gz").string(), (tmp.path / "out" / "dest").string()); });
  CHECK(contains(err, "already exists"));
  CHECK(read_file(tmp.path / "out/dest/a.txt") == "alpha");

  // Several top-level entries (no directory entries, "./" prefixes): all of them become dest's.
  make_tar_gz(tmp.path / "flat.tar.gz", {{"./x.txt", "x"}, {"y/z.txt", "z"}});
  extract_tar_gz((tmp.path / "flat.tar.gz").string(), (tmp.path / "flat").string());
  CHECK(listing(tmp.path / "flat") == std::vector<std::string>{"x.txt", "y", "y/z.txt"});

  // Unsafe entries: the error names the entry, and nothing is created beside or above dest.
  for (const std::string bad : {"../evil.txt", "top/../../evil.txt", "/tmp/volt_abs_evil.txt"}) {
    INFO(bad);
    TmpDir d;
    make_tar_gz(d.path / "bad.tar.gz", {{"top/ok.txt", "ok"}, {bad, "evil"}});
    err = error_of([&] { extract_tar_gz((d.path / "bad.tar.gz").string(), (d.path / "out").string()); });
    CHECK(contains(err, bad));
    CHECK(listing(d.path) == std::vector<std::string>{"bad.tar.gz"});
    CHECK(!fs::exists(d.path.parent_path() / "evil.txt"));
  }
  CHECK(!fs::exists("/tmp/volt_abs_evil.txt"));
}

TEST_CASE("extract_tar_gz on a truncated or corrupt archive throws naming it and leaves nothing") {
  TmpDir tmp;
  std::vector<Entry> entries = {{"top/", "", true}};
  for (int i = 0; i < 4; ++i) entries.push_back({"top/f" + std::to_string(i), fake_bytes(50000, unsigned(i))});
  const fs::path cut = tmp.path / "cut.tar.gz", junk = tmp.path / "junk.tar.gz";
  make_tar_gz(cut, entries);
  truncate_file(cut, 0.6);
  write_file(junk, fake_bytes(5000, 11));
  for (const fs::path& bad : {cut, junk, tmp.path / "absent.tar.gz"}) {
    INFO(bad);
    const std::string err = error_of([&] { extract_tar_gz(bad.string(), (tmp.path / "out").string()); });
    CHECK(contains(err, bad.string()));
    CHECK(!fs::exists(tmp.path / "out"));
  }
  CHECK(listing(tmp.path) == std::vector<std::string>{"cut.tar.gz", "junk.tar.gz"});
}

TEST_CASE("prepare_cifar10 downloads and extracts once, then skips") {
  python3_or_skip();
  TmpDir served, root;
  DatasetDownloadOptions opts;
  opts.md5["cifar-10-binary.tar.gz"] = make_fake_cifar(served.path);
  opts.timeouts = quick_timeouts();
  int barriers = 0;
  opts.barrier = [&] { ++barriers; };
  HttpServer server(served.path);

  const std::string folder = prepare_cifar10(root.path.string(), server.url(), opts);
  CHECK(fs::path(folder) == root.path / "cifar-10-batches-bin");
  unsigned seed = 1;
  for (const char* f : kCifarBins) CHECK(read_file(fs::path(folder) / f) == fake_bytes(3073 * 2, seed++));
  CHECK(fs::exists(fs::path(folder) / "batches.meta.txt"));
  CHECK(barriers == 1);
  // Only the archive and the folder: no part files or temporary folders.
  for (const auto& name : listing(root.path))
    CHECK((name == "cifar-10-binary.tar.gz" || name.rfind("cifar-10-batches-bin", 0) == 0));

  // Present: no download (the server no longer has it, and a base URL without '/' works too).
  fs::remove(served.path / "cifar-10-binary.tar.gz");
  CHECK(prepare_cifar10(root.path.string(), server.url() + "nothing-here", opts) == folder);
  CHECK(barriers == 2);

  // The folder gone but the archive kept: extracted again without a download.
  fs::remove_all(folder);
  CHECK(prepare_cifar10(root.path.string(), server.url(), opts) == folder);
  CHECK(fs::exists(fs::path(folder) / "test_batch.bin"));

  // An incomplete folder is reported, not deleted.
  fs::remove(fs::path(folder) / "data_batch_3.bin");
  const std::string err = error_of([&] { prepare_cifar10(root.path.string(), server.url(), opts); });
  CHECK(contains(err, "data_batch_3.bin"));
  CHECK(fs::exists(fs::path(folder) / "data_batch_1.bin"));
}

TEST_CASE("prepare_cifar10 with a wrong md5, a truncated archive, or a 404 leaves nothing") {
  python3_or_skip();
  TmpDir served, root;
  const std::string good_md5 = make_fake_cifar(served.path);
  HttpServer server(served.path);
  DatasetDownloadOptions opts;
  opts.timeouts = quick_timeouts();

  SUBCASE("built-in md5 (the real archive's) against the fake archive") {
    const std::string err = error_of([&] { prepare_cifar10(root.path.string(), server.url(), opts); });
    CHECK(contains(err, "md5"));
    CHECK(contains(err, "c32a1d4ab5d03f1284b67883e8d87530"));
    CHECK(contains(err, good_md5));
  }
  SUBCASE("truncated archive with the right name, md5 checked") {
    opts.md5["cifar-10-binary.tar.gz"] = good_md5;
    truncate_file(served.path / "cifar-10-binary.tar.gz", 0.5);
    const std::string err = error_of([&] { prepare_cifar10(root.path.string(), server.url(), opts); });
    CHECK(contains(err, "md5"));
  }
  SUBCASE("truncated archive with the md5 check switched off: extraction fails") {
    opts.md5["cifar-10-binary.tar.gz"] = "";
    truncate_file(served.path / "cifar-10-binary.tar.gz", 0.5);
    const std::string err = error_of([&] { prepare_cifar10(root.path.string(), server.url(), opts); });
    CHECK(contains(err, "cifar-10-binary.tar.gz"));
    CHECK(contains(err, "truncated"));
  }
  SUBCASE("404") {
    const std::string url = server.url() + "elsewhere/";
    const std::string err = error_of([&] { prepare_cifar10(root.path.string(), url, opts); });
    CHECK(contains(err, url + "cifar-10-binary.tar.gz"));
    CHECK(contains(err, "404"));
  }
  INFO("left in root: " << join(listing(root.path)));
  CHECK(listing(root.path).empty());
}

TEST_CASE("prepare_mnist fetches the four files and keeps those with the right md5") {
  python3_or_skip();
  TmpDir served, root;
  DatasetDownloadOptions opts;
  opts.md5 = make_fake_mnist(served.path);
  opts.timeouts = quick_timeouts();
  HttpServer server(served.path);

  CHECK(prepare_mnist(root.path.string(), server.url(), opts) == root.path.string());
  for (const char* n : kMnistNames) CHECK(read_file(root.path / n) == read_file(served.path / n));
  CHECK(listing(root.path).size() == 4);

  // All present: nothing fetched (the server has none of them any more).
  const fs::path stash = served.path / "stash";
  fs::create_directory(stash);
  for (const char* n : kMnistNames) fs::rename(served.path / n, stash / n);
  CHECK_NOTHROW(prepare_mnist(root.path.string(), server.url(), opts));

  // A damaged file is fetched again; the others are not (they are still missing on the server).
  write_file(root.path / kMnistNames[2], "damaged");
  std::string err = error_of([&] { prepare_mnist(root.path.string(), server.url(), opts); });
  CHECK(contains(err, server.url() + kMnistNames[2]));
  CHECK(contains(err, "404"));
  CHECK(read_file(root.path / kMnistNames[2]) == "damaged");  // replaced only on success
  fs::rename(stash / kMnistNames[2], served.path / kMnistNames[2]);
  prepare_mnist(root.path.string(), server.url(), opts);
  CHECK(read_file(root.path / kMnistNames[2]) == read_file(served.path / kMnistNames[2]));

  // The built-in md5s (the real files') reject the fakes.
  for (const char* n : kMnistNames)
    if (fs::exists(stash / n)) fs::rename(stash / n, served.path / n);
  DatasetDownloadOptions builtin;
  builtin.timeouts = quick_timeouts();
  TmpDir root2;
  err = error_of([&] { prepare_mnist(root2.path.string(), server.url(), builtin); });
  CHECK(contains(err, "md5"));
  CHECK(listing(root2.path).empty());
  CHECK(listing(root.path).size() == 4);
}

TEST_CASE("prepare_* distributed hook: one process downloads, every process passes the barrier") {
  python3_or_skip();
  TmpDir served, root;
  DatasetDownloadOptions opts;
  opts.md5 = make_fake_mnist(served.path);
  opts.timeouts = quick_timeouts();
  std::vector<std::string> events;
  opts.barrier = [&] { events.push_back("barrier"); };
  HttpServer server(served.path);

  // A non-downloading process reaches the barrier and then reports the missing files.
  DatasetDownloadOptions other = opts;
  other.download = false;
  std::string err = error_of([&] { prepare_mnist(root.path.string(), server.url(), other); });
  CHECK(contains(err, "missing"));
  CHECK(events.size() == 1);
  CHECK(listing(root.path).empty());

  // A failing downloader still reaches the barrier before throwing.
  err = error_of([&] { prepare_cifar10(root.path.string(), server.url(), opts); });
  CHECK(contains(err, "404"));
  CHECK(events.size() == 2);

  // The downloader fetches; the others find the files after the barrier.
  prepare_mnist(root.path.string(), server.url(), opts);
  CHECK(events.size() == 3);
  CHECK_NOTHROW(prepare_mnist(root.path.string(), server.url(), other));
  CHECK(events.size() == 4);
  // With everything present, the barrier is still called once (no process may skip it).
  prepare_mnist(root.path.string(), server.url(), opts);
  CHECK(events.size() == 5);
}
