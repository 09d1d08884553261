// Log folders and atomic file writes (see log_dir.h).
#include "dist/log_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "engine/binary_io.h"
#include "engine/error.h"

namespace fs = std::filesystem;

namespace volt {
namespace {

// "version_12" -> 12; -1 for anything else (including "version_", "version_1a", "version_-1").
int parse_version(const std::string& name) {
  const std::string prefix = "version_";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  if (name.size() - prefix.size() > 9) return -1;
  int n = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    n = n * 10 + (name[i] - '0');
  }
  return n;
}

}  // namespace

void make_log_dir(const std::string& dir, const std::string& who) {
  VOLT_CHECK(!dir.empty(), who, ": the log directory is empty");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) VOLT_FAIL(who, ": cannot create log directory ", dir, ": ", ec.message());
  VOLT_CHECK(fs::is_directory(dir, ec), who, ": log directory ", dir, " exists but is not a directory");
}

int next_version(const std::string& parent) {
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) return 0;
  int largest = -1;
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    const int n = parse_version(it->path().filename().string());
    if (n > largest) largest = n;
  }
  VOLT_CHECK(!ec, "next_version: cannot list ", parent, ": ", ec.message());
  return largest + 1;
}

std::string next_version_dir(const std::string& root, const std::string& name) {
  const fs::path parent = name.empty() ? fs::path(root) : fs::path(root) / name;
  make_log_dir(parent.string(), "next_version_dir");
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const fs::path dir = parent / ("version_" + std::to_string(next_version(parent.string())));
    std::error_code ec;
    if (fs::create_directory(dir, ec)) return dir.string();  // claimed it
    if (ec) VOLT_FAIL("next_version_dir: cannot create log directory ", dir.string(), ": ", ec.message());
    // Another process created the same version between listing and mkdir: list again.
  }
  VOLT_FAIL("next_version_dir: could not claim a version_N folder in ", parent.string());
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  binio::write_file_atomic(path, contents, "write_file_atomic");
}

}  // namespace volt
