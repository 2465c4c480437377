// Errors a spindle program can see.
//
//   Cancelled        thrown at a cancelled fiber's next suspension point. It
//                    deliberately does not derive from std::exception (like
//                    asyncio's CancelledError deriving from BaseException), so
//                    `catch (const std::exception&)` in user code does not
//                    swallow it and stop the unwinding that cancellation is.
//   TimeoutError     a std::system_error with std::errc::timed_out: a
//                    Timeout scope's deadline passed, or wait_for gave up.
//   BrokenBarrierError, QueueFull, ... join with their primitives.
//   spindle::errc    misuse that a caller can recover from (a future
//                    retrieved twice, a broken promise, a task joined twice),
//                    reported as std::system_error in spindle's category.
#pragma once

#include <string>
#include <system_error>

namespace spindle {

class Cancelled {
 public:
  const char* what() const noexcept { return "spindle::Cancelled"; }
};

class TimeoutError : public std::system_error {
 public:
  explicit TimeoutError(const std::string& what)
      : std::system_error(std::make_error_code(std::errc::timed_out), what) {}
};

enum class errc {
  broken_promise = 1,
  future_already_retrieved,
  promise_already_satisfied,
  no_state,
  task_already_joined,
};

const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

}  // namespace spindle

template <>
struct std::is_error_code_enum<spindle::errc> : std::true_type {};
