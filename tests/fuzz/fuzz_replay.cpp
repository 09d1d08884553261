// fuzz_replay: runs a fuzz target (tests/fuzz/fuzz_targets.h) without libFuzzer, deterministically,
// so that every build's CTest covers the readers' handling of damaged input.
//
//   fuzz_replay TARGET [--mutations N] [--seed S] [FILE...]
//   fuzz_replay TARGET --write-seeds DIR     (writes the seeds as files: libFuzzer's first corpus)
//
// Runs TARGET's seeds (each must be accepted: the target really parses valid input), the FILEs
// given (a corpus, or a crash input found by libFuzzer: they may be accepted or refused), then N
// mutations (default 2000) of the seeds drawn from a seeded generator: bit flips, bytes and words set
// to boundary values, truncation, deletion, insertion and duplication of ranges. A mutation the
// target refuses with a clear error is fine; a crash, a sanitizer report, another exception or a
// violated property is a failure, and the input is written to fuzz-failure-TARGET.bin first (run
// fuzz_replay TARGET fuzz-failure-TARGET.bin to reproduce). It also fails when no mutation was
// refused (the target would not be checking anything).
#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_targets.h"

namespace {

using volt::fuzz::Target;

std::string g_target_name;
std::string g_current;  // the input being run, written out when it fails

void save_current() {
  const std::string path = "fuzz-failure-" + g_target_name + ".bin";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(g_current.data(), std::streamsize(g_current.size()));
  std::fprintf(stderr, "fuzz_replay: the failing input (%zu bytes) is in %s\n", g_current.size(), path.c_str());
}

// A crash or a violated property (abort) still leaves the input behind: write(2) only, then die as
// the signal would have it.
char g_failure_path[256];
void on_fatal_signal(int sig) {
  const int fd = ::open(g_failure_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    size_t done = 0;
    while (done < g_current.size()) {
      const ssize_t n = ::write(fd, g_current.data() + done, g_current.size() - done);
      if (n <= 0) break;
      done += size_t(n);
    }
    ::close(fd);
  }
  static const char kMsg[] = "fuzz_replay: fatal signal; the input is in fuzz-failure-<target>.bin\n";
  (void)!::write(2, kMsg, sizeof kMsg - 1);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

bool run_one(const Target& t, const std::string& input) {
  g_current = input;
  try {
    return t.run(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_replay: %s: an exception other than the readers' errors escaped: %s\n", t.name, e.what());
  } catch (...) {
    std::fprintf(stderr, "fuzz_replay: %s: an unknown exception escaped\n", t.name);
  }
  save_current();
  std::exit(1);
}

std::string mutate(std::string s, std::mt19937_64& rng) {
  auto pick = [&](uint64_t n) { return n == 0 ? uint64_t(0) : rng() % n; };
  static const uint8_t kBytes[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x10, 0x20};
  static const uint64_t kWords[] = {0, 1, 2, 0xff, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff, 0xfffffffe,
                                    0x7fffffffffffffffull, 0x8000000000000000ull, 0xffffffffffffffffull, 3072, 10000};
  const int ops = 1 + int(pick(3));
  for (int k = 0; k < ops; ++k) {
    switch (pick(s.empty() ? 1 : 8)) {
      case 0: {  // insert random bytes
        const size_t at = size_t(pick(s.size() + 1)), n = 1 + size_t(pick(16));
        std::string b;
        for (size_t i = 0; i < n; ++i) b.push_back(char(rng()));
        s.insert(at, b);
        break;
      }
      case 1: s[size_t(pick(s.size()))] ^= char(1u << pick(8)); break;
      case 2: s[size_t(pick(s.size()))] = char(kBytes[pick(sizeof kBytes)]); break;
      case 3: {  // a 1, 2, 4 or 8-byte word, either byte order
        const size_t w = size_t(1) << pick(4);
        if (s.size() < w) break;
        const size_t at = size_t(pick(s.size() - w + 1));
        uint64_t v = kWords[pick(sizeof kWords / sizeof kWords[0])];
        if (pick(2)) v += pick(3) - 1;
        const bool big = pick(2);
        for (size_t i = 0; i < w; ++i) s[at + i] = char(v >> (8 * (big ? w - 1 - i : i)));
        break;
      }
      case 4: s.resize(size_t(pick(s.size()))); break;  // truncate
      case 5: {  // delete a range
        const size_t at = size_t(pick(s.size())), n = 1 + size_t(pick(std::min<uint64_t>(s.size() - at, 64)));
        s.erase(at, n);
        break;
      }
      case 6: {  // duplicate a range
        const size_t at = size_t(pick(s.size())), n = 1 + size_t(pick(std::min<uint64_t>(s.size() - at, 64)));
        s.insert(size_t(pick(s.size() + 1)), s.substr(at, n));
        break;
      }
      case 7: s[size_t(pick(s.size()))] = char(rng()); break;
    }
  }
  return s;
}

int usage() {
  std::fprintf(stderr, "usage: fuzz_replay TARGET [--mutations N] [--seed S] [FILE...]\n       fuzz_replay TARGET --write-seeds DIR\ntargets:");
  for (const Target& t : volt::fuzz::targets()) std::fprintf(stderr, " %s", t.name);
  std::fprintf(stderr, "\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const Target* t = volt::fuzz::find_target(argv[1]);
  if (!t) {
    std::fprintf(stderr, "fuzz_replay: unknown target '%s'\n", argv[1]);
    return usage();
  }
  g_target_name = t->name;
  std::snprintf(g_failure_path, sizeof g_failure_path, "fuzz-failure-%s.bin", t->name);
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) std::signal(sig, on_fatal_signal);
  unsigned long long mutations = 2000, seed = 1;
  std::string seeds_dir;
  std::vector<std::string> files;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    char* end = nullptr;
    if ((a == "--mutations" || a == "--seed") && i + 1 < argc) {
      const char* v = argv[++i];
      const unsigned long long n = std::strtoull(v, &end, 10);
      if (!*v || *end || *v == '-') return usage();
      (a == "--seed" ? seed : mutations) = n;
    } else if (a == "--write-seeds" && i + 1 < argc) {
      seeds_dir = argv[++i];
    } else if (a.rfind("--", 0) == 0) {
      return usage();
    } else {
      files.push_back(a);
    }
  }

  const std::vector<std::string> seeds = t->seeds();
  if (!seeds_dir.empty()) {  // a starting corpus for libFuzzer (tools/fuzz.sh)
    for (size_t i = 0; i < seeds.size(); ++i) {
      const std::string path = seeds_dir + "/seed-" + std::to_string(i);
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(seeds[i].data(), std::streamsize(seeds[i].size()));
      if (!out) {
        std::fprintf(stderr, "fuzz_replay: cannot write %s\n", path.c_str());
        return 1;
      }
    }
    return 0;
  }
  for (size_t i = 0; i < seeds.size(); ++i)
    if (!run_one(*t, seeds[i])) {
      std::fprintf(stderr, "fuzz_replay: %s: seed %zu (%zu bytes) was refused; a seed must be valid input\n", t->name,
                   i, seeds[i].size());
      save_current();
      return 1;
    }
  long long accepted = 0, refused = 0;
  for (const std::string& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "fuzz_replay: cannot read %s\n", f.c_str());
      return 1;
    }
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    (run_one(*t, bytes) ? accepted : refused) += 1;
  }
  std::mt19937_64 rng(seed);
  for (unsigned long long m = 0; m < mutations; ++m)
    (run_one(*t, mutate(seeds[size_t(rng() % seeds.size())], rng)) ? accepted : refused) += 1;
  std::printf("fuzz_replay %s: %zu seeds accepted; %zu files and %llu mutations (seed %llu): %lld accepted, %lld refused "
              "with a clear error\n",
              t->name, seeds.size(), files.size(), mutations, seed, accepted, refused);
  if (mutations > 0 && refused == 0) {
    std::fprintf(stderr, "fuzz_replay: %s refused none of %llu mutations: is it checking its input?\n", t->name, mutations);
    return 1;
  }
  return 0;
}
