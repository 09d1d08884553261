// Downloads against a local server only (python3 -m http.server on 127.0.0.1, plus in-process
// servers that cut a transfer short or stall): MD5, download_file, extract_tar_gz. The dataset
// fetchers built on them are tested in test_prepare.cpp.
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

TEST_CASE("download_file and extract_tar_gz leave other processes' temporary files alone") {
  // Another node of a shared filesystem can run a process with our pid: what the old pid-only
  // names would have been must be left as they are, in use or not.
  TmpDir out;
  const std::string pid = std::to_string(::getpid());
  const fs::path part = out.path / ("x.part." + pid);
  write_file(part, "another node's download in progress");
  int port = 0;
  const int fd = bound_socket(false, &port);  // connections are refused: the download fails
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/x";
  CHECK(contains(error_of([&] { download_file(url, (out.path / "x").string(), "", quick_timeouts()); }), url));
  ::close(fd);
  CHECK(read_file(part) == "another node's download in progress");
  CHECK(listing(out.path) == std::vector<std::string>{"x.part." + pid});

  TmpDir tmp;
  const fs::path other = tmp.path / (".dest.extract." + pid);
  fs::create_directory(other);
  write_file(other / "f", "another node's extraction in progress");
  make_tar_gz(tmp.path / "a.tar.gz", {{"top/", "", true}, {"top/a.txt", "alpha"}});
  extract_tar_gz((tmp.path / "a.tar.gz").string(), (tmp.path / "dest").string());
  CHECK(read_file(tmp.path / "dest/a.txt") == "alpha");
  CHECK(read_file(other / "f") == "another node's extraction in progress");
  // The temporary folder of ours is gone, theirs is not.
  CHECK(listing(tmp.path) == std::vector<std::string>{".dest.extract." + pid, ".dest.extract." + pid + "/f", "a.tar.gz",
                                                      "dest", "dest/a.txt"});
}
