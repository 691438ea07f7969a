// Kestrel's one error story: failed checks throw kestrel::Error with a message that says what went
// wrong and what to do; the CLI and server catch it at their boundary and turn it into an exit code or
// an HTTP error. Nothing in the library aborts on bad input.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace kestrel {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
[[noreturn, gnu::cold]] void throw_error(const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace kestrel

// KS_CHECK(cond, "format {}", args...) — throws kestrel::Error when cond is false.
#define KS_CHECK(cond, ...)                                                           \
  do {                                                                                \
    if (!(cond)) [[unlikely]]                                                         \
      ::kestrel::detail::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__)); \
  } while (0)

// KS_FAIL("format {}", args...) — unconditional error.
#define KS_FAIL(...) ::kestrel::detail::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))
