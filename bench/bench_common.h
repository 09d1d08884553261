// What the benchmark programs share: flag parsing that names a bad value (a benchmark is a command a
// user types, so "--batch-size abc" is an error, not a silent 0) and the seed CNN's synthetic batch.
#pragma once

#include <volt/volt.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

namespace volt::bench {

// "a,b,c" -> {"a", "b", "c"}.
inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  if (out.empty()) throw Error("empty list");
  return out;
}

// An integer in [min, max] (every count here is an int), or a volt::Error naming the flag: never
// one wrapped or narrowed into range.
inline long long parse_int(const std::string& v, const std::string& flag, long long min = 1,
                           long long max = INT_MAX) {
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || errno == ERANGE || x < min || x > max)
    throw Error("bad value '" + v + "' for " + flag + " (an integer >= " + std::to_string(min) +
                " and <= " + std::to_string(max) + ")");
  return x;
}

// A finite number > 0, or a volt::Error naming the flag.
inline double parse_double(const std::string& v, const std::string& flag) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || !(x > 0) || !std::isfinite(x))
    throw Error("bad value '" + v + "' for " + flag + " (a positive number)");
  return x;
}

inline std::vector<int> parse_int_list(const std::string& v, const std::string& flag) {
  std::vector<int> out;
  for (const std::string& s : split_list(v)) out.push_back(int(parse_int(s, flag)));
  return out;
}

// Walks argv: `flag()` is the current argument, `value()` the next one (a volt::Error when missing).
class Args {
 public:
  Args(int argc, char** argv) : argc_(argc), argv_(argv) {}
  bool next() { return ++i_ < argc_; }
  const std::string& flag() {
    flag_ = argv_[i_];
    return flag_;
  }
  std::string value() {
    if (i_ + 1 >= argc_) throw Error("missing value for " + std::string(argv_[i_]));
    return argv_[++i_];
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 0;
  std::string flag_;
};

// The seed CNN's synthetic batch: b uniform 3x32x32 images and labels i % 10, on `dev`.
struct SyntheticBatch {
  Tensor x, y;
};
inline SyntheticBatch synthetic_batch(int b, Device dev) {
  Generator g(1, 0);
  Tensor x = Tensor::empty({b, 3, 32, 32});
  uniform_(x, -1.f, 1.f, g);
  std::vector<int64_t> labels(static_cast<size_t>(b));
  for (int i = 0; i < b; ++i) labels[size_t(i)] = i % 10;
  return {x.to(dev), Tensor::from_labels(labels).to(dev)};
}

}  // namespace volt::bench
