// volt::Error and the check macros every layer of Volt uses to report bad input.
// A library never exits or aborts: it throws volt::Error carrying file:line and a message.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace volt {

class Error : public std::runtime_error {
 public:
  Error(const std::string& msg, const char* file, int line);
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
inline void format_into(std::ostringstream&) {}
template <class T, class... Rest>
void format_into(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  format_into(os, rest...);
}
template <class... Args>
std::string format(const Args&... args) {
  std::ostringstream os;
  format_into(os, args...);
  return os.str();
}
[[noreturn]] void throw_error(const std::string& msg, const char* file, int line);
}  // namespace detail

}  // namespace volt

// VOLT_CHECK(cond, "conv2d: input has ", c, " channels") throws volt::Error when cond is false.
#define VOLT_CHECK(cond, ...)                                                        \
  do {                                                                               \
    if (!(cond)) ::volt::detail::throw_error(::volt::detail::format(__VA_ARGS__),    \
                                             __FILE__, __LINE__);                    \
  } while (0)

#define VOLT_FAIL(...) ::volt::detail::throw_error(::volt::detail::format(__VA_ARGS__), __FILE__, __LINE__)
