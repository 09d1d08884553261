// Golden-file reader (see golden.h).
#include "tests/golden.h"

#include <cstring>
#include <fstream>
#include <iterator>

#include "engine/error.h"

namespace volt::test {

std::map<std::string, GoldenTensor> load_golden(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  VOLT_CHECK(in.good(), "load_golden: cannot open ", path);
  const std::string buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t pos = 0;
  auto need = [&](size_t n, const char* what) {
    VOLT_CHECK(buf.size() - pos >= n, "load_golden: ", path, " is truncated reading ", what, " at byte ", pos);
  };
  auto u32 = [&](const char* what) {
    need(4, what);
    uint32_t v;
    std::memcpy(&v, buf.data() + pos, 4);
    pos += 4;
    return v;
  };
  need(8, "magic");
  VOLT_CHECK(buf.compare(0, 8, "VOLTGOLD") == 0, "load_golden: ", path, " does not start with VOLTGOLD");
  pos = 8;
  const uint32_t count = u32("record count");
  std::map<std::string, GoldenTensor> out;
  for (uint32_t r = 0; r < count; ++r) {
    const uint32_t len = u32("name length");
    need(len, "name");
    const std::string name = buf.substr(pos, len);
    pos += len;
    const uint32_t ndim = u32("ndim");
    VOLT_CHECK(ndim <= 8, "load_golden: ", path, ": record '", name, "' has ", ndim, " dims");
    GoldenTensor g;
    need(size_t(ndim) * 8, "dims");
    for (uint32_t d = 0; d < ndim; ++d) {
      int64_t v;
      std::memcpy(&v, buf.data() + pos, 8);
      pos += 8;
      VOLT_CHECK(v >= 0, "load_golden: ", path, ": record '", name, "' has a negative dim");
      g.shape.push_back(v);
    }
    const size_t n = size_t(shape_numel(g.shape));
    need(n * 8, "values");
    g.values.resize(n);
    std::memcpy(g.values.data(), buf.data() + pos, n * 8);
    pos += n * 8;
    out[name] = std::move(g);
  }
  VOLT_CHECK(pos == buf.size(), "load_golden: ", path, " has trailing bytes after ", count, " records");
  return out;
}

Tensor to_tensor(const GoldenTensor& g) {
  std::vector<float> v(g.values.begin(), g.values.end());
  return Tensor::from_vector(g.shape, v);
}

}  // namespace volt::test
