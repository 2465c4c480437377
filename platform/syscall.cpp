// Out-of-line error paths: kept here so the inline fast paths that call them
// stay small, and so <system_error> and fmt stay out of hot headers.
#include "platform/syscall.hpp"

#include <fmt/core.h>

#include <cstdio>
#include <cstdlib>
#include <spindle/detail/assert.hpp>
#include <string>
#include <system_error>

namespace spindle::platform {

void throw_system_error(int err, std::string_view what) {
  throw std::system_error(err, std::system_category(), std::string(what));
}

}  // namespace spindle::platform

namespace spindle::detail {

// No try/catch around the print: should writing to stderr itself throw, the
// noexcept turns that into std::terminate, which ends the process just as
// abort() would.
void assert_fail(const char* file, int line, const char* expr,
                 std::string_view message) noexcept {
  fmt::print(stderr, "spindle: assertion failed at {}:{}: {}: {}\n", file, line,
             expr, message);
  std::fflush(stderr);
  std::abort();
}

}  // namespace spindle::detail
