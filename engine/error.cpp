// volt::Error: the message names the problem; file:line says where it was detected.
#include "engine/error.h"

#include <cstring>

namespace volt {

static std::string with_location(const std::string& msg, const char* file, int line) {
  // Keep only the path from the source root (engine/..., layers/...) so messages stay short.
  const char* shown = file;
  for (const char* root : {"/engine/", "/kernels/", "/layers/", "/data/", "/dist/", "/tools/"}) {
    const char* p = std::strstr(file, root);
    if (p) { shown = p + 1; break; }
  }
  return msg + " [" + shown + ":" + std::to_string(line) + "]";
}

Error::Error(const std::string& msg, const char* file, int line)
    : std::runtime_error(with_location(msg, file, line)) {}

namespace detail {
void throw_error(const std::string& msg, const char* file, int line) { throw Error(msg, file, line); }
}  // namespace detail

}  // namespace volt
