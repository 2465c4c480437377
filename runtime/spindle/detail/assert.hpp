// Invariant checks that stay on in release builds.
//
// A broken invariant is a bug in spindle or a misuse that cannot be reported
// as an exception (double wait on a slot, resuming a dead fiber, live fibers
// at scheduler exit): print file:line and a message, then abort.
#pragma once

#include <string_view>

namespace spindle::detail {
[[noreturn]] void assert_fail(const char* file, int line, const char* expr,
                              std::string_view message) noexcept;
}  // namespace spindle::detail

// The message expression is evaluated only when the check fails, so it may
// format (fmt::format(...)) without costing the fast path.
#define SPINDLE_ASSERT(cond, message)                                          \
  do {                                                                         \
    if (__builtin_expect(!(cond), 0))                                          \
      ::spindle::detail::assert_fail(__FILE__, __LINE__, #cond, (message));    \
  } while (0)
