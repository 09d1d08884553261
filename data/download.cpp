// Dataset downloads: MD5 from RFC 1321, libcurl fetches to a part file renamed into place, libarchive
// extraction into a temporary folder renamed into place. The dataset fetchers are in prepare.cpp.
#include "data/download.h"

#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#include "engine/error.h"

namespace fs = std::filesystem;

namespace volt {

// ---------------------------------------------------------------------------------------------
// MD5 (RFC 1321)

namespace {

class Md5 {
 public:
  void update(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    size_t used = size_t(bytes_ % 64);
    bytes_ += n;
    if (used) {
      const size_t take = std::min(n, 64 - used);
      std::memcpy(buf_ + used, p, take);
      p += take;
      n -= take;
      if (used + take < 64) return;
      block(buf_);
    }
    for (; n >= 64; p += 64, n -= 64) block(p);
    std::memcpy(buf_, p, n);
  }

  std::string hex() {
    const uint64_t bits = bytes_ * 8;
    const uint8_t pad = 0x80, zero = 0;
    update(&pad, 1);
    while (bytes_ % 64 != 56) update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(bits >> (8 * i));
    update(len, 8);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (uint32_t word : state_)
      for (int i = 0; i < 4; ++i) {
        const uint8_t b = uint8_t(word >> (8 * i));
        out += digits[b >> 4];
        out += digits[b & 15];
      }
    return out;
  }

 private:
  static uint32_t rotl(uint32_t x, int c) { return (x << c) | (x >> (32 - c)); }

  void block(const uint8_t* p) {
    static const uint32_t K[64] = {
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
        0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
        0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
        0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
        0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
        0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
        0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
    static const int S[4][4] = {{7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};
    uint32_t M[16];
    for (int i = 0; i < 16; ++i)
      M[i] = uint32_t(p[4 * i]) | uint32_t(p[4 * i + 1]) << 8 | uint32_t(p[4 * i + 2]) << 16 |
             uint32_t(p[4 * i + 3]) << 24;
    uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
    for (int i = 0; i < 64; ++i) {
      uint32_t f;
      int g;
      switch (i / 16) {
        case 0: f = (b & c) | (~b & d); g = i; break;
        case 1: f = (d & b) | (~d & c); g = (5 * i + 1) % 16; break;
        case 2: f = b ^ c ^ d; g = (3 * i + 5) % 16; break;
        default: f = c ^ (b | ~d); g = (7 * i) % 16; break;
      }
      const uint32_t next = b + rotl(a + f + K[i] + M[g], S[i / 16][i % 4]);
      a = d;
      d = c;
      c = b;
      b = next;
    }
    state_[0] += a;
    state_[1] += b;
    state_[2] += c;
    state_[3] += d;
  }

  uint32_t state_[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
  uint8_t buf_[64] = {};
  uint64_t bytes_ = 0;
};

std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'F') c = char(c - 'A' + 'a');
  return s;
}

std::string errno_text(int err) { return std::strerror(err); }

// "<host>.<pid>.<random>" for a temporary name beside a destination that other processes may share:
// a pid alone repeats on another node of a shared filesystem, and a leftover from a crashed process
// may hold any name, so callers also create the name exclusively and try again when it exists.
std::string unique_tag() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  std::string tag;
  for (const char* c = host; *c && tag.size() < 64; ++c)
    tag += (std::isalnum(static_cast<unsigned char>(*c)) || *c == '-' || *c == '.') ? *c : '_';
  if (tag.empty()) tag = "host";
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char random[17];
  std::snprintf(random, sizeof random, "%016llx", static_cast<unsigned long long>(rng()));
  return tag + "." + std::to_string(::getpid()) + "." + random;
}

}  // namespace

std::string md5_hex_bytes(const void* data, size_t n) {
  Md5 m;
  m.update(data, n);
  return m.hex();
}

std::string md5_hex(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  VOLT_CHECK(fd >= 0, "md5: cannot open ", path, ": ", errno_text(errno));
  Md5 m;
  std::vector<char> buf(1 << 20);
  for (;;) {
    const ssize_t got = ::read(fd, buf.data(), buf.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int err = errno;
      ::close(fd);
      VOLT_FAIL("md5: cannot read ", path, ": ", errno_text(err));
    }
    if (got == 0) break;
    m.update(buf.data(), size_t(got));
  }
  ::close(fd);
  return m.hex();
}

// ---------------------------------------------------------------------------------------------
// download_file

namespace {

void curl_init_once() {
  static std::once_flag once;
  static CURLcode rc = CURLE_OK;
  std::call_once(once, [] { rc = curl_global_init(CURL_GLOBAL_DEFAULT); });
  VOLT_CHECK(rc == CURLE_OK, "download: curl_global_init failed: ", curl_easy_strerror(rc));
}

// The open part file: bytes are hashed as they are written; the file is removed unless kept.
struct PartFile {
  std::string path;
  int fd = -1;
  int write_errno = 0;
  Md5 md5;
  bool keep = false;
  ~PartFile() {
    if (fd >= 0) ::close(fd);
    if (!keep) ::unlink(path.c_str());
  }
};

size_t write_part(char* data, size_t size, size_t nmemb, void* user) {
  auto* part = static_cast<PartFile*>(user);
  const size_t n = size * nmemb;
  size_t done = 0;
  while (done < n) {
    const ssize_t w = ::write(part->fd, data + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      part->write_errno = errno;
      return 0;  // curl aborts with CURLE_WRITE_ERROR
    }
    done += size_t(w);
  }
  part->md5.update(data, n);
  return n;
}

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);  // best effort: the rename is what makes the file visible
    ::close(fd);
  }
}

}  // namespace

void download_file(const std::string& url, const std::string& dest_path, const std::string& expected_md5,
                   const DownloadTimeouts& timeouts) {
  curl_init_once();
  const fs::path dest(dest_path);
  if (dest.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(dest.parent_path(), ec);
    VOLT_CHECK(!ec, "download of ", url, ": cannot create folder ", dest.parent_path().string(), ": ",
               ec.message());
  }

  PartFile part;
  // A name of our own, created exclusively: another process's part file (this node's or another's)
  // is never truncated, renamed or removed from here.
  for (int attempt = 0; part.fd < 0; ++attempt) {
    const std::string path = dest_path + ".part." + unique_tag();
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    const int err = errno;
    if (fd < 0 && err == EEXIST && attempt < 100) continue;
    VOLT_CHECK(fd >= 0, "download of ", url, ": cannot create ", path, ": ", errno_text(err));
    part.path = path;  // ours from here on: removed unless renamed into place
    part.fd = fd;
  }

  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), &curl_easy_cleanup);
  VOLT_CHECK(curl != nullptr, "download of ", url, ": curl_easy_init failed");
  char errbuf[CURL_ERROR_SIZE] = {};
  CURL* h = curl.get();
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &write_part);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &part);
  curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM for resolver timeouts (threads)
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, timeouts.connect_s);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, timeouts.low_speed_bytes);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, timeouts.low_speed_s);
  if (timeouts.total_s > 0) curl_easy_setopt(h, CURLOPT_TIMEOUT, timeouts.total_s);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "volt-download/1");

  const CURLcode rc = curl_easy_perform(h);
  if (rc != CURLE_OK) {
    std::string why = errbuf[0] ? std::string(errbuf) : std::string(curl_easy_strerror(rc));
    if (rc == CURLE_WRITE_ERROR && part.write_errno)
      why += " (writing " + part.path + ": " + errno_text(part.write_errno) + ")";
    VOLT_FAIL("download of ", url, " failed: ", why);
  }

  const std::string actual = part.md5.hex();
  if (!expected_md5.empty() && lower(expected_md5) != actual)
    VOLT_FAIL("download of ", url, ": md5 mismatch: expected ", lower(expected_md5), ", got ", actual);

  VOLT_CHECK(::fsync(part.fd) == 0, "download of ", url, ": fsync of ", part.path, " failed: ", errno_text(errno));
  const int close_rc = ::close(part.fd);
  part.fd = -1;
  VOLT_CHECK(close_rc == 0, "download of ", url, ": closing ", part.path, " failed: ", errno_text(errno));
  VOLT_CHECK(::rename(part.path.c_str(), dest_path.c_str()) == 0, "download of ", url, ": cannot rename ",
             part.path, " to ", dest_path, ": ", errno_text(errno));
  part.keep = true;
  fsync_dir(dest.parent_path());
}

// ---------------------------------------------------------------------------------------------
// extract_tar_gz

namespace {

// Removes a temporary folder (and all in it) unless released.
struct TempDir {
  fs::path path;
  bool keep = false;
  ~TempDir() {
    if (!keep && !path.empty()) {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  }
};

// The entry's path relative to the extraction folder, with "." and empty components dropped;
// throws on absolute paths and ".." components.
fs::path safe_relative(const std::string& archive, const std::string& name) {
  VOLT_CHECK(!name.empty() && name[0] != '/', "extract ", archive, ": refusing entry \"", name,
             "\" (absolute or empty path)");
  fs::path rel;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    const std::string part = name.substr(start, end - start);
    VOLT_CHECK(part != "..", "extract ", archive, ": refusing entry \"", name, "\" (\"..\" component)");
    if (!part.empty() && part != ".") rel /= part;
    start = end + 1;
  }
  return rel;
}

void write_entry_data(archive* a, const std::string& archive_path, const std::string& name,
                      const fs::path& out) {
  const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  VOLT_CHECK(fd >= 0, "extract ", archive_path, ": cannot create ", out.string(), " for entry \"", name, "\": ",
             errno_text(errno));
  std::vector<char> buf(1 << 16);
  for (;;) {
    const la_ssize_t got = archive_read_data(a, buf.data(), buf.size());
    if (got == 0) break;
    if (got < 0) {
      const std::string why = archive_error_string(a) ? archive_error_string(a) : "read error";
      ::close(fd);
      VOLT_FAIL("extract ", archive_path, ": corrupt or truncated archive at entry \"", name, "\": ", why);
    }
    size_t done = 0;
    while (done < size_t(got)) {
      const ssize_t w = ::write(fd, buf.data() + done, size_t(got) - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        const int err = errno;
        ::close(fd);
        VOLT_FAIL("extract ", archive_path, ": writing ", out.string(), " failed: ", errno_text(err));
      }
      done += size_t(w);
    }
  }
  const bool ok = ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  VOLT_CHECK(ok, "extract ", archive_path, ": fsync of ", out.string(), " failed: ", errno_text(err));
}

void create_dirs(const std::string& archive_path, const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  VOLT_CHECK(!ec, "extract ", archive_path, ": cannot create folder ", dir.string(), ": ", ec.message());
}

// Reads every entry of archive_path into the existing folder `into`.
void extract_entries(const std::string& archive_path, const fs::path& into) {
  std::unique_ptr<archive, decltype(&archive_read_free)> a(archive_read_new(), &archive_read_free);
  VOLT_CHECK(a != nullptr, "extract ", archive_path, ": archive_read_new failed");
  archive_read_support_filter_gzip(a.get());
  archive_read_support_format_tar(a.get());
  VOLT_CHECK(archive_read_open_filename(a.get(), archive_path.c_str(), 1 << 16) == ARCHIVE_OK, "extract ",
             archive_path, ": cannot open: ", archive_error_string(a.get()) ? archive_error_string(a.get()) : "");
  size_t entries = 0;
  for (;;) {
    archive_entry* entry = nullptr;
    const int r = archive_read_next_header(a.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      const char* why = archive_error_string(a.get());
      VOLT_FAIL("extract ", archive_path, ": corrupt or truncated archive after ", entries,
                " entries: ", why ? why : "read error");
    }
    ++entries;
    const char* raw = archive_entry_pathname(entry);
    const std::string name = raw ? raw : "";
    const fs::path rel = safe_relative(archive_path, name);
    VOLT_CHECK(archive_entry_hardlink(entry) == nullptr && archive_entry_symlink(entry) == nullptr, "extract ",
               archive_path, ": refusing entry \"", name, "\" (links are not supported)");
    const auto type = archive_entry_filetype(entry);
    if (rel.empty()) continue;  // "./" itself
    const fs::path out = into / rel;
    if (type == AE_IFDIR) {
      create_dirs(archive_path, out);
    } else if (type == AE_IFREG) {
      create_dirs(archive_path, out.parent_path());
      write_entry_data(a.get(), archive_path, name, out);
    } else {
      VOLT_FAIL("extract ", archive_path, ": refusing entry \"", name, "\" (not a regular file or folder)");
    }
  }
  VOLT_CHECK(entries > 0, "extract ", archive_path, ": the archive holds no entries");
}

}  // namespace

void extract_tar_gz(const std::string& archive_path, const std::string& dest_dir) {
  fs::path dest = fs::path(dest_dir).lexically_normal();
  if (dest.filename().empty()) dest = dest.parent_path();  // "a/b/" -> "a/b"
  VOLT_CHECK(!dest.empty() && dest.filename() != "..", "extract ", archive_path, ": bad destination \"",
             dest_dir, "\"");
  std::error_code ec;
  if (fs::exists(dest, ec)) {
    VOLT_CHECK(fs::is_directory(dest, ec) && fs::is_empty(dest, ec), "extract ", archive_path, ": destination ",
               dest.string(), " already exists and is not an empty folder");
  }
  const fs::path parent = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
  create_dirs(archive_path, parent);

  // A folder of our own, created exclusively: another process's (this node's or another's, or a
  // leftover of a crashed one) is never reused or removed from here.
  TempDir tmp;
  for (int attempt = 0; tmp.path.empty(); ++attempt) {
    const fs::path path = parent / ("." + dest.filename().string() + ".extract." + unique_tag());
    const bool made = fs::create_directory(path, ec);  // false without an error: it exists already
    if (!made && !ec && attempt < 100) continue;
    VOLT_CHECK(made && !ec, "extract ", archive_path, ": cannot create ", path.string(), ": ",
               ec ? ec.message() : std::string("it exists"));
    tmp.path = path;  // ours from here on: removed unless it becomes dest
  }
  extract_entries(archive_path, tmp.path);

  // One top-level folder becomes dest; anything else means the temporary folder itself does.
  std::vector<fs::path> top;
  for (const auto& e : fs::directory_iterator(tmp.path, ec)) top.push_back(e.path());
  VOLT_CHECK(!ec, "extract ", archive_path, ": cannot list ", tmp.path.string(), ": ", ec.message());
  const bool single = top.size() == 1 && fs::is_directory(top[0], ec);
  const fs::path from = single ? top[0] : tmp.path;
  fsync_dir(from);
  if (fs::exists(dest, ec)) fs::remove(dest, ec);  // checked above to be an empty folder
  if (::rename(from.c_str(), dest.c_str()) != 0)
    VOLT_FAIL("extract ", archive_path, ": cannot rename ", from.string(), " to ", dest.string(), ": ",
              errno_text(errno));
  if (!single) tmp.keep = true;  // it is dest now
  fsync_dir(parent);
}

}  // namespace volt
