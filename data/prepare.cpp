// The dataset fetchers (download.h): CIFAR-10 / CIFAR-100 come as one .tar.gz archive extracted
// into a folder; MNIST / Fashion-MNIST as four gzip'ed IDX files. Each is a table entry below.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "data/cifar.h"
#include "data/download.h"
#include "engine/error.h"

namespace volt {

namespace fs = std::filesystem;

namespace {

std::string join_url(std::string base, const std::string& name) {
  if (!base.empty() && base.back() != '/') base += '/';
  return base + name;
}

std::string md5_for(const DatasetDownloadOptions& opts, const std::string& name, const std::string& builtin) {
  const auto it = opts.md5.find(name);
  return it != opts.md5.end() ? it->second : builtin;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// An exclusive flock on <root>/.volt-download.lock while a process checks, fetches and extracts a
// dataset there, so that two processes preparing one folder at once (two jobs, or local rank 0 of
// several nodes on a shared filesystem) take turns: the second finds the first's files complete and
// fetches nothing. The lock goes with the file descriptor, so it is released on every path, a crash
// included. The file stays: removing it would let a process that opened it just before lock a file
// no longer anyone else's. Where the filesystem has no flock (some Lustre mounts), the fetch goes on
// unlocked, with a warning; the checks after a failed extraction keep that case working too.
class FetchLock {
 public:
  explicit FetchLock(const fs::path& root) {
    std::error_code ec;
    fs::create_directories(root, ec);  // an error here is reported by the download itself
    const std::string path = (root / ".volt-download.lock").string();
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) return;  // an unwritable folder: the download that follows names the problem
    int rc;
    while ((rc = ::flock(fd_, LOCK_EX)) != 0 && errno == EINTR) {
    }
    if (rc != 0) {
      std::fprintf(stderr, "warning: cannot lock %s (%s); preparing the dataset without the lock\n", path.c_str(),
                   std::strerror(errno));
      std::fflush(stderr);
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~FetchLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }
  FetchLock(const FetchLock&) = delete;
  FetchLock& operator=(const FetchLock&) = delete;

 private:
  int fd_ = -1;
};

// Runs fetch on the downloading process, then the barrier on every process, exactly once each, so
// no process waits for one that skipped it; a failed fetch still reaches the barrier (releasing the
// others) before its error is rethrown.
void fetch_then_barrier(const DatasetDownloadOptions& opts, const std::function<void()>& fetch) {
  std::exception_ptr failed;
  if (opts.download) {
    try {
      fetch();
    } catch (...) {
      failed = std::current_exception();
    }
  }
  if (opts.barrier) opts.barrier();
  if (failed) std::rethrow_exception(failed);
}

// A dataset shipped as one archive holding one folder of files.
struct ArchiveSpec {
  const char* name;     // for messages
  const char* archive;  // file name under the base URL
  const char* md5;
  const char* folder;   // the archive's top-level folder, extracted to <root>/<folder>
  std::vector<const char*> files;
  // The folder the dataset's reader reads from: <root>/<folder>, or root itself when the files lie
  // there (CIFAR10Dataset::resolve_dir).
  std::string (*reader_dir)(const std::string& root);
};

const ArchiveSpec kCifar10{"CIFAR-10", "cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                           "cifar-10-batches-bin",
                           {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                            "data_batch_5.bin", "test_batch.bin"},
                           &CIFAR10Dataset::resolve_dir};
const ArchiveSpec kCifar100{"CIFAR-100", "cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
                            "cifar-100-binary", {"train.bin", "test.bin"}, &CIFAR100Dataset::resolve_dir};

// A dataset shipped as separate files: {name, md5}, each name ending in ".gz".
struct FileSetSpec {
  const char* name;
  std::vector<std::pair<const char*, const char*>> files;
};

const FileSetSpec kMnist{"MNIST",
                         {{"train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"},
                          {"train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"},
                          {"t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"},
                          {"t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"}}};
const FileSetSpec kFashionMnist{"Fashion-MNIST",
                                {{"train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"},
                                 {"train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"},
                                 {"t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"},
                                 {"t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"}}};

// The first file of spec missing from folder, or "" when all are there.
std::string missing_file(const ArchiveSpec& spec, const fs::path& folder) {
  for (const char* f : spec.files)
    if (!is_file(folder / f)) return f;
  return "";
}

// The folder the reader would read, when it holds every file (then nothing needs fetching, whichever
// layout it is in: the archive's sub-folder, or the files in root itself); "" otherwise.
std::string complete_dir(const ArchiveSpec& spec, const std::string& root) {
  const std::string dir = spec.reader_dir(root);
  return !dir.empty() && missing_file(spec, dir).empty() ? dir : "";
}

std::string prepare_archive(const ArchiveSpec& spec, const std::string& root, const std::string& base_url,
                            const DatasetDownloadOptions& opts) {
  const fs::path folder = fs::path(root) / spec.folder;
  fetch_then_barrier(opts, [&] {
    if (!complete_dir(spec, root).empty()) return;
    const FetchLock lock(root);
    if (!complete_dir(spec, root).empty()) return;  // made by the process that held the lock before us
    std::error_code ec;
    if (fs::exists(folder, ec) && !fs::is_empty(folder, ec))
      VOLT_FAIL(spec.name, ": ", folder.string(), " exists but lacks ", missing_file(spec, folder),
                "; delete the folder to download it again");
    const fs::path archive = fs::path(root) / spec.archive;
    const std::string want = md5_for(opts, spec.archive, spec.md5);
    // A kept archive is reused only when its MD5 can be (and is) confirmed.
    if (!(is_file(archive) && !want.empty() && md5_hex(archive.string()) == lower(want)))
      download_file(join_url(base_url, spec.archive), archive.string(), want, opts.timeouts);
    try {
      extract_tar_gz(archive.string(), folder.string());
    } catch (...) {
      // Another process that prepares this folder without our lock (no flock on this filesystem)
      // may have put its complete copy there first: then ours was not needed.
      if (!complete_dir(spec, root).empty()) return;
      // An archive whose MD5 was confirmed is the right one, and the failure lies elsewhere (a full
      // disk, the folder in the way): keep it. Without an MD5 it may be what is broken: drop it, so
      // that the next call fetches it again.
      if (want.empty()) fs::remove(archive, ec);
      throw;
    }
    const std::string missing = missing_file(spec, folder);
    if (!missing.empty()) {
      fs::remove_all(folder, ec);
      VOLT_FAIL(spec.name, ": ", archive.string(), " did not contain ", spec.folder, "/", missing);
    }
  });

  const std::string dir = complete_dir(spec, root);
  VOLT_CHECK(!dir.empty(), spec.name, ": ", (folder / missing_file(spec, folder)).string(),
             " is missing after the download (did the downloading process fail?)");
  return dir;
}

std::string prepare_files(const FileSetSpec& spec, const std::string& root, const std::string& base_url,
                          const DatasetDownloadOptions& opts) {
  // The un-gzipped file beside a .gz is what MNISTDataset reads (it prefers the raw file), so with it
  // there the .gz is not needed: fetching it could not change what is read, and offline would fail.
  auto have_raw = [&](const std::string& gz_name) {
    return is_file(fs::path(root) / gz_name.substr(0, gz_name.size() - 3));
  };
  fetch_then_barrier(opts, [&] {
    if (std::all_of(spec.files.begin(), spec.files.end(), [&](const auto& f) { return have_raw(f.first); })) return;
    const FetchLock lock(root);
    for (const auto& [name, builtin] : spec.files) {
      if (have_raw(name)) continue;
      const fs::path path = fs::path(root) / name;
      const std::string md5 = md5_for(opts, name, builtin);
      // Present with the right MD5 (or with any content when the check is switched off): kept.
      if (is_file(path) && (md5.empty() || md5_hex(path.string()) == lower(md5))) continue;
      download_file(join_url(base_url, name), path.string(), md5, opts.timeouts);
    }
  });
  for (const auto& f : spec.files)
    VOLT_CHECK(have_raw(f.first) || is_file(fs::path(root) / f.first), spec.name, ": ",
               (fs::path(root) / f.first).string(), " is missing after the download (did the downloading process fail?)");
  return root;
}

}  // namespace

std::string prepare_cifar10(const std::string& root, const std::string& base_url, const DatasetDownloadOptions& opts) {
  return prepare_archive(kCifar10, root, base_url, opts);
}

std::string prepare_cifar100(const std::string& root, const std::string& base_url,
                             const DatasetDownloadOptions& opts) {
  return prepare_archive(kCifar100, root, base_url, opts);
}

std::string prepare_mnist(const std::string& root, const std::string& base_url, const DatasetDownloadOptions& opts) {
  return prepare_files(kMnist, root, base_url, opts);
}

std::string prepare_fashion_mnist(const std::string& root, const std::string& base_url,
                                  const DatasetDownloadOptions& opts) {
  return prepare_files(kFashionMnist, root, base_url, opts);
}

}  // namespace volt
