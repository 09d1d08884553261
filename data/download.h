// Dataset downloads: MD5 (RFC 1321), an HTTP(S) fetch and a tar.gz extraction that never leave a
// half-written file or folder that looks complete, and the CIFAR-10/100 and (Fashion-)MNIST fetchers
// built on them.
#pragma once
#include <cstddef>
#include <functional>
#include <map>
#include <string>

namespace volt {

// Lower-case hex MD5 of a file's bytes (throws volt::Error naming the path if it can't be read).
std::string md5_hex(const std::string& path);
// Lower-case hex MD5 of n bytes in memory.
std::string md5_hex_bytes(const void* data, size_t n);

// Limits that keep a download from hanging: connecting must finish within connect_s, and the
// transfer fails once it moves less than low_speed_bytes per second for low_speed_s seconds.
// total_s > 0 also caps the whole transfer.
struct DownloadTimeouts {
  long connect_s = 30;
  long low_speed_s = 60;
  long low_speed_bytes = 1;
  long total_s = 0;
};

// Fetches url (redirects followed, HTTP errors are failures) into "<dest_path>.part.<host>.<pid>.<random>"
// (created exclusively: processes on several nodes of a shared filesystem never share one),
// checks its MD5 when expected_md5 is not empty, then fsyncs and renames it to dest_path (creating
// dest_path's parent folders). On any failure (HTTP error, refused connection, timeout, truncated
// transfer, MD5 mismatch) it throws volt::Error naming the URL and the cause, and leaves neither
// dest_path nor the part file behind. An existing dest_path is replaced only on success.
void download_file(const std::string& url, const std::string& dest_path, const std::string& expected_md5 = "",
                   const DownloadTimeouts& timeouts = {});

// Extracts a .tar.gz (or plain .tar) into dest_dir, which must not exist yet (or be empty). The
// entries go to a temporary folder beside dest_dir first (".<name>.extract.<host>.<pid>.<random>",
// created exclusively); if the archive holds a single top-level folder, that folder is renamed to
// dest_dir, otherwise the temporary folder itself is. Only regular files and folders are accepted; absolute paths, ".." components and links are refused
// with a volt::Error naming the entry. A corrupt or truncated archive throws a volt::Error naming
// the archive. On failure nothing is left behind.
void extract_tar_gz(const std::string& archive_path, const std::string& dest_dir);

// What prepare_cifar10 / prepare_mnist may change from their defaults.
struct DatasetDownloadOptions {
  // MD5 per file name (e.g. "cifar-10-binary.tar.gz"), overriding the built-in table; an empty
  // value skips the check for that file. Names not listed keep the built-in MD5.
  std::map<std::string, std::string> md5;
  DownloadTimeouts timeouts;
  // Distributed hook: only the process with download == true (local rank 0) checks and fetches;
  // then every process calls barrier (when set) exactly once, whether or not anything was fetched,
  // after which the others check that the files are there. The downloading process reaches the
  // barrier even when its download fails (then rethrows), so the others never wait forever; they
  // report the missing files instead.
  bool download = true;
  std::function<void()> barrier;
};

inline constexpr const char* kCifar10BaseUrl = "https://www.cs.toronto.edu/~kriz/";
inline constexpr const char* kCifar100BaseUrl = "https://www.cs.toronto.edu/~kriz/";
inline constexpr const char* kMnistBaseUrl = "https://ossci-datasets.s3.amazonaws.com/mnist/";
inline constexpr const char* kFashionMnistBaseUrl = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

// Makes <root>/cifar-10-batches-bin/ hold data_batch_{1..5}.bin and test_batch.bin, fetching
// <base_url>cifar-10-binary.tar.gz into root (kept there; a copy with the right MD5 is reused)
// and extracting it, unless those files are already present there or in root itself (both layouts
// CIFAR10Dataset reads). Returns the folder the reader reads them from (CIFAR10Dataset::resolve_dir). An
// incomplete existing folder is an error (delete it to fetch again); nothing is deleted for you.
// Processes preparing one root at once take turns through an flock on <root>/.volt-download.lock
// (left there): the later ones find the files complete. An archive whose MD5 was confirmed is kept
// when extracting it fails; one fetched without an MD5 check is removed then.
std::string prepare_cifar10(const std::string& root, const std::string& base_url = kCifar10BaseUrl,
                            const DatasetDownloadOptions& opts = {});

// The same for CIFAR-100: <root>/cifar-100-binary/ with train.bin and test.bin, from
// <base_url>cifar-100-binary.tar.gz.
std::string prepare_cifar100(const std::string& root, const std::string& base_url = kCifar100BaseUrl,
                             const DatasetDownloadOptions& opts = {});

// Makes root hold the four gzip'ed MNIST IDX files (train-images-idx3-ubyte.gz, ...), fetching
// from <base_url><name> each one that is missing or has the wrong MD5 (under the same lock as
// prepare_cifar10), unless its un-gzipped file (train-images-idx3-ubyte, ...) is there: MNISTDataset
// reads that one instead. Returns root.
std::string prepare_mnist(const std::string& root, const std::string& base_url = kMnistBaseUrl,
                          const DatasetDownloadOptions& opts = {});
// The same for Fashion-MNIST (same file names, its own MD5s).
std::string prepare_fashion_mnist(const std::string& root, const std::string& base_url = kFashionMnistBaseUrl,
                                  const DatasetDownloadOptions& opts = {});

}  // namespace volt
