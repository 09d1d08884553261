// The dataset fetchers (prepare_cifar10/100, prepare_mnist, prepare_fashion_mnist) against a local
// python3 -m http.server serving fake archives and files the tests make.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "data/download.h"
#include "tests/download_fixtures.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace volt;
using namespace volt::test;

namespace {

// What listing() finds in a dataset root, less the lock file a fetch leaves there on purpose
// (prepare.cpp: removing it would break the lock).
std::vector<std::string> left_in(const fs::path& root) {
  std::vector<std::string> out;
  for (auto& name : listing(root))
    if (name != ".volt-download.lock") out.push_back(name);
  return out;
}

}  // namespace

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
  for (const auto& name : left_in(root.path))
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
  CHECK(left_in(root.path).empty());
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
  CHECK(left_in(root.path).size() == 4);

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
  CHECK(left_in(root2.path).empty());
  CHECK(left_in(root.path).size() == 4);
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

TEST_CASE("prepare_cifar100 fetches and extracts cifar-100-binary, and its built-in md5 is the real archive's") {
  python3_or_skip();
  TmpDir served, root;
  make_tar_gz(served.path / "cifar-100-binary.tar.gz",
              {{"cifar-100-binary/", "", true},
               {"cifar-100-binary/train.bin", fake_bytes(3074 * 3, 31)},
               {"cifar-100-binary/test.bin", fake_bytes(3074 * 2, 32)},
               {"cifar-100-binary/fine_label_names.txt", "apple\naquarium_fish\n"}});
  HttpServer server(served.path);
  DatasetDownloadOptions builtin;
  builtin.timeouts = quick_timeouts();
  const std::string err = error_of([&] { prepare_cifar100(root.path.string(), server.url(), builtin); });
  CHECK(contains(err, "03b5dce01913d631647c71ecec9e9cb8"));
  CHECK(left_in(root.path).empty());

  DatasetDownloadOptions opts = builtin;
  opts.md5["cifar-100-binary.tar.gz"] = md5_hex((served.path / "cifar-100-binary.tar.gz").string());
  const std::string folder = prepare_cifar100(root.path.string(), server.url(), opts);
  CHECK(fs::path(folder) == root.path / "cifar-100-binary");
  CHECK(read_file(fs::path(folder) / "train.bin") == fake_bytes(3074 * 3, 31));
  CHECK(read_file(fs::path(folder) / "test.bin") == fake_bytes(3074 * 2, 32));
  // An archive without test.bin is refused and leaves no folder behind.
  TmpDir served2, root2;
  make_tar_gz(served2.path / "cifar-100-binary.tar.gz",
              {{"cifar-100-binary/", "", true}, {"cifar-100-binary/train.bin", fake_bytes(3074, 33)}});
  HttpServer server2(served2.path);
  opts.md5["cifar-100-binary.tar.gz"] = "";
  const std::string err2 = error_of([&] { prepare_cifar100(root2.path.string(), server2.url(), opts); });
  CHECK(contains(err2, "test.bin"));
  CHECK(!fs::exists(root2.path / "cifar-100-binary"));
}

TEST_CASE("prepare_fashion_mnist fetches its four files, and its built-in md5s are the real files'") {
  python3_or_skip();
  TmpDir served, root;
  DatasetDownloadOptions opts;
  opts.md5 = make_fake_mnist(served.path);
  opts.timeouts = quick_timeouts();
  HttpServer server(served.path);
  DatasetDownloadOptions builtin;
  builtin.timeouts = quick_timeouts();
  const std::string err = error_of([&] { prepare_fashion_mnist(root.path.string(), server.url(), builtin); });
  CHECK(contains(err, "md5"));
  CHECK(contains(err, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"));  // train-images, fetched first
  CHECK(left_in(root.path).empty());

  CHECK(prepare_fashion_mnist(root.path.string(), server.url(), opts) == root.path.string());
  for (const char* n : kMnistNames) CHECK(read_file(root.path / n) == read_file(served.path / n));
}

TEST_CASE("prepare_cifar10 in two processes at once on one folder: both succeed, the archive stays") {
  // Two jobs, or local rank 0 of two nodes on a shared filesystem, start on the same root with the
  // archive already there. Nothing is fetched (the base URL leads nowhere). Large enough files that
  // the two extractions overlap, and several rounds, so that the old code's race shows.
  TmpDir served;
  std::vector<Entry> entries = {{"cifar-10-batches-bin/", "", true}};
  unsigned seed = 50;
  for (const char* f : kCifarBins)
    entries.push_back({std::string("cifar-10-batches-bin/") + f, fake_bytes(3073 * 200, seed++)});
  make_tar_gz(served.path / "cifar-10-binary.tar.gz", entries);
  DatasetDownloadOptions opts;
  opts.md5["cifar-10-binary.tar.gz"] = md5_hex((served.path / "cifar-10-binary.tar.gz").string());
  opts.timeouts = quick_timeouts();
  for (int round = 0; round < 6; ++round) {
    INFO("round " << round);
    TmpDir root, notes;
    fs::copy_file(served.path / "cifar-10-binary.tar.gz", root.path / "cifar-10-binary.tar.gz");
    int go[2];
    REQUIRE(::pipe(go) == 0);
    pid_t kids[2];
    for (int k = 0; k < 2; ++k) {
      kids[k] = ::fork();
      REQUIRE(kids[k] >= 0);
      if (kids[k] == 0) {  // child: wait for the start, prepare, report through the exit status
        ::close(go[1]);
        char c;
        (void)!::read(go[0], &c, 1);
        int status = 0;
        try {
          prepare_cifar10(root.path.string(), "http://127.0.0.1:9/", opts);
        } catch (const std::exception& e) {
          std::ofstream(notes.path / ("error" + std::to_string(k))) << e.what();
          status = 1;
        }
        ::_exit(status);
      }
    }
    ::close(go[0]);
    REQUIRE(::write(go[1], "gg", 2) == 2);  // both start together
    ::close(go[1]);
    for (int k = 0; k < 2; ++k) {
      int status = 0;
      REQUIRE(::waitpid(kids[k], &status, 0) == kids[k]);
      INFO("process " << k << ": " << read_file(notes.path / ("error" + std::to_string(k))));
      CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    }
    CHECK(fs::exists(root.path / "cifar-10-binary.tar.gz"));
    unsigned s = 50;
    for (const char* f : kCifarBins) CHECK(read_file(root.path / "cifar-10-batches-bin" / f) == fake_bytes(3073 * 200, s++));
    CHECK(left_in(root.path) == std::vector<std::string>{"cifar-10-batches-bin", "cifar-10-batches-bin/data_batch_1.bin",
                                                         "cifar-10-batches-bin/data_batch_2.bin",
                                                         "cifar-10-batches-bin/data_batch_3.bin",
                                                         "cifar-10-batches-bin/data_batch_4.bin",
                                                         "cifar-10-batches-bin/data_batch_5.bin",
                                                         "cifar-10-batches-bin/test_batch.bin", "cifar-10-binary.tar.gz"});
  }
}

TEST_CASE("prepare_cifar10 keeps an archive whose md5 was confirmed when extracting it fails") {
  TmpDir served, root;
  const std::string md5 = make_fake_cifar(served.path);
  fs::copy_file(served.path / "cifar-10-binary.tar.gz", root.path / "cifar-10-binary.tar.gz");
  write_file(root.path / "cifar-10-batches-bin", "");  // a file where the folder goes: extraction fails
  DatasetDownloadOptions opts;
  opts.md5["cifar-10-binary.tar.gz"] = md5;
  opts.timeouts = quick_timeouts();
  const std::string err = error_of([&] { prepare_cifar10(root.path.string(), "http://127.0.0.1:9/", opts); });
  CHECK(contains(err, (root.path / "cifar-10-batches-bin").string()));
  CHECK(contains(err, "not an empty folder"));
  CHECK(fs::exists(root.path / "cifar-10-binary.tar.gz"));  // the right archive: not fetched again
  // Out of the way, the kept archive is extracted without a download.
  fs::remove(root.path / "cifar-10-batches-bin");
  CHECK(prepare_cifar10(root.path.string(), "http://127.0.0.1:9/", opts) ==
        (root.path / "cifar-10-batches-bin").string());
}

TEST_CASE("prepare_cifar10/100 fetch nothing when every file lies in root itself, a layout the readers accept") {
  // Offline (the base URL leads nowhere): a fetch would fail.
  TmpDir root10, root100;
  for (const char* f : kCifarBins) write_file(root10.path / f, fake_bytes(3073 * 2, 7));
  write_file(root100.path / "train.bin", fake_bytes(3074 * 2, 8));
  write_file(root100.path / "test.bin", fake_bytes(3074, 9));
  DatasetDownloadOptions opts;
  opts.timeouts = quick_timeouts();
  int barriers = 0;
  opts.barrier = [&] { ++barriers; };
  CHECK(fs::path(prepare_cifar10(root10.path.string(), "http://127.0.0.1:9/", opts)) == root10.path);
  CHECK(fs::path(prepare_cifar100(root100.path.string(), "http://127.0.0.1:9/", opts)) == root100.path);
  CHECK(barriers == 2);
  // A process that does not download accepts them after the barrier too.
  DatasetDownloadOptions other = opts;
  other.download = false;
  CHECK(fs::path(prepare_cifar10(root10.path.string(), "http://127.0.0.1:9/", other)) == root10.path);
  CHECK(left_in(root10.path).size() == 6);  // nothing fetched, nothing extracted
  // One file short in root: the archive is what would complete it, so it is fetched (and fails here).
  fs::remove(root10.path / "data_batch_4.bin");
  CHECK(contains(error_of([&] { prepare_cifar10(root10.path.string(), "http://127.0.0.1:9/", opts); }),
                 "cifar-10-binary.tar.gz"));
}

TEST_CASE("prepare_mnist fetches no .gz whose raw IDX file is there (MNISTDataset reads the raw one)") {
  // Offline (the base URL leads nowhere): a fetch would fail.
  TmpDir root;
  for (const char* n : kMnistNames) write_file(root.path / std::string(n).substr(0, std::strlen(n) - 3), "raw IDX");
  DatasetDownloadOptions opts;
  opts.timeouts = quick_timeouts();
  CHECK(prepare_mnist(root.path.string(), "http://127.0.0.1:9/", opts) == root.path.string());
  CHECK(prepare_fashion_mnist(root.path.string(), "http://127.0.0.1:9/", opts) == root.path.string());
  DatasetDownloadOptions other = opts;
  other.download = false;
  CHECK_NOTHROW(prepare_mnist(root.path.string(), "http://127.0.0.1:9/", other));
  CHECK(listing(root.path).size() == 4);  // nothing fetched, not even a lock taken
  // One split raw, the other gzip'ed: only the .gz files are checked (and fetched when wrong).
  fs::remove(root.path / "t10k-images-idx3-ubyte");
  const std::string err = error_of([&] { prepare_mnist(root.path.string(), "http://127.0.0.1:9/", opts); });
  CHECK(contains(err, "http://127.0.0.1:9/t10k-images-idx3-ubyte.gz"));
  CHECK(!fs::exists(root.path / "train-images-idx3-ubyte.gz"));
}
