// The one way platform/ turns a failed system call into a C++ error.
//
// Every OS failure leaves spindle as std::system_error whose message names
// the call and its key argument ("epoll_ctl(ADD, fd=7)"), so a log line says
// which descriptor misbehaved without a debugger. Callers capture errno at
// once, before anything else (fmt included) can overwrite it.
//
// EINTR is handled here and never escapes platform/: a signal landing on the
// scheduler's thread is not an error any caller could act on.
#pragma once

#include <cerrno>
#include <string_view>
#include <type_traits>
#include <utility>

namespace spindle::platform {

// Throws std::system_error(err, std::system_category(), std::string(what)).
[[noreturn]] void throw_system_error(int err, std::string_view what);

// Calls f() again while it fails with EINTR and returns its last result, so
// errno still describes that result. For calls whose retry is harmless and
// whose timeout (if any) the caller does not need to shorten; timed waits
// recompute their remaining time themselves.
template <typename F>
auto retry_eintr(F&& f) -> std::invoke_result_t<F&> {
  for (;;) {
    auto result = f();
    if (!(result == -1 && errno == EINTR)) return result;
  }
}

}  // namespace spindle::platform
