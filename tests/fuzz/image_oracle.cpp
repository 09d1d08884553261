// decode_padded (see image_oracle.h).
#include "tests/fuzz/image_oracle.h"

#include <cstdlib>
#include <cstring>

namespace {
// stb_image's heap, filled with the padding byte: memory it reads before writing shows up too.
thread_local unsigned char fill_byte = 0;
void* filled_malloc(size_t n) {
  void* p = std::malloc(n);
  if (p) std::memset(p, fill_byte, n);
  return p;
}
void* filled_realloc(void* old, size_t old_size, size_t n) {
  void* p = filled_malloc(n);
  if (p && old) std::memcpy(p, old, old_size < n ? old_size : n);
  if (p) std::free(old);
  return p;
}
}  // namespace

#define STBI_MALLOC(n) filled_malloc(n)
#define STBI_REALLOC_SIZED(p, old, n) filled_realloc(p, old, n)
#define STBI_FREE(p) std::free(p)
#include "data/stb_image_impl.inc"

#include <memory>
#include <utility>

#include "data/image_check.h"

namespace volt::fuzz {

std::optional<std::string> decode_padded(const std::string& file, int channels, uint8_t pad) {
  fill_byte = pad;
  std::string bytes = file + std::string(65536, char(pad));
  const JpegCheck jpeg = check_jpeg(reinterpret_cast<const stbi_uc*>(bytes.data()), bytes.size(), false);
  if (!jpeg.fault.empty()) return std::nullopt;
  std::string rewritten;  // as ImageFolder decodes it
  if (rewrite_for_stb_image(bytes, jpeg, &rewritten)) bytes = std::move(rewritten);
  const auto* p = reinterpret_cast<const stbi_uc*>(bytes.data());
  int w = 0, h = 0, n = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> px(stbi_load_from_memory(p, int(bytes.size()), &w, &h, &n, channels),
                                               stbi_image_free);
  if (!px) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(px.get()), size_t(w) * size_t(h) * size_t(channels));
}

}  // namespace volt::fuzz
