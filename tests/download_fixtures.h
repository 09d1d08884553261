// The download tests' fixtures, shared by test_download.cpp and test_prepare.cpp: scratch folders,
// fake files and archives, and local servers (python3 -m http.server; in-process servers that
// misbehave). Header-only: two test programs include it.
#pragma once
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
#include <map>
#include <string>
#include <vector>

#include "data/download.h"
#include "tests/test_util.h"

namespace volt::test {

namespace fs = std::filesystem;


// A fresh folder under /tmp (TempDir), seen as a filesystem path.
struct TmpDir : TempDir {
  TmpDir() : TempDir("volt_download_"), path(TempDir::path) {}
  fs::path path;
};

inline void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f << bytes;
  REQUIRE(f.good());
}

inline std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Every entry under dir (recursive, relative names, sorted): what an operation left behind.
inline std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) out.push_back(fs::relative(e.path(), dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

inline std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + " ";
  return s;
}

// Distinct, non-trivial bytes for a fake file.
inline std::string fake_bytes(size_t n, unsigned seed) {
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
inline void make_tar_gz(const fs::path& path, const std::vector<Entry>& entries) {
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
inline void make_gz(const fs::path& path, const std::string& data) {
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

inline const char* const kCifarBins[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                  "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};

// A fake CIFAR-10 archive in dir (cifar-10-batches-bin/ with small .bin files); returns its md5.
inline std::string make_fake_cifar(const fs::path& dir) {
  std::vector<Entry> entries = {{"cifar-10-batches-bin/", "", true},
                                {"cifar-10-batches-bin/batches.meta.txt", "airplane\nautomobile\n"}};
  unsigned seed = 1;
  for (const char* f : kCifarBins) entries.push_back({std::string("cifar-10-batches-bin/") + f, fake_bytes(3073 * 2, seed++)});
  make_tar_gz(dir / "cifar-10-binary.tar.gz", entries);
  return md5_hex((dir / "cifar-10-binary.tar.gz").string());
}

inline const char* const kMnistNames[] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                   "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

// Fake MNIST .gz files in dir; returns the md5 table for them.
inline std::map<std::string, std::string> make_fake_mnist(const fs::path& dir) {
  std::map<std::string, std::string> md5;
  unsigned seed = 100;
  for (const char* n : kMnistNames) {
    make_gz(dir / n, fake_bytes(1000 + seed, seed));
    ++seed;
    md5[n] = md5_hex((dir / n).string());
  }
  return md5;
}

inline void truncate_file(const fs::path& p, double keep_fraction) {
  const std::string all = read_file(p);
  write_file(p, all.substr(0, size_t(double(all.size()) * keep_fraction)));
}

inline std::string find_in_path(const std::string& exe) {
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
inline const bool kNoProxy = ::setenv("no_proxy", "127.0.0.1,localhost", 1) == 0 &&
                      ::setenv("NO_PROXY", "127.0.0.1,localhost", 1) == 0;

// The python3 that serves files; skips the test (before it creates anything) when there is none.
inline std::string python3_or_skip() {
  const std::string python = find_in_path("python3");
  if (python.empty()) skip("python3 not found");
  return python;
}

inline bool can_connect(int port) {
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
inline int bound_socket(bool listen_too, int* port) {
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

inline DownloadTimeouts quick_timeouts() {
  DownloadTimeouts t;
  t.connect_s = 5;
  t.low_speed_s = 5;
  t.total_s = 20;
  return t;
}

}  // namespace volt::test
