// Timeout and Shield: scopes that change how a fiber's waits may end.
//
//   {
//     spindle::Timeout t(2s);      // like `async with asyncio.timeout(2)`
//     auto r = slow_call();        // any blocking spindle call in here throws
//   }                              // spindle::TimeoutError once 2 s have passed
//
// Scopes nest; the earliest deadline wins and expired() tells which scope's
// deadline fired. A Shield defers cancellation (and hides the Timeouts
// outside it) until it closes, like asyncio.shield: a Timeout opened inside
// the Shield still applies. Both are RAII objects of the fiber that made
// them and must be destroyed in reverse order of construction.
#pragma once

#include <spindle/clock.hpp>
#include <spindle/detail/fiber.hpp>

namespace spindle {

class Timeout {
 public:
  explicit Timeout(Duration d);
  explicit Timeout(TimePoint deadline);
  template <class Rep, class Period>
  explicit Timeout(std::chrono::duration<Rep, Period> d)
      : Timeout(detail::deadline_after(spindle::now(), d)) {}
  ~Timeout();
  Timeout(const Timeout&) = delete;
  Timeout& operator=(const Timeout&) = delete;

  // True once this scope's deadline made a call throw TimeoutError.
  bool expired() const noexcept { return rec_.expired; }
  TimePoint deadline() const noexcept;

 private:
  detail::Fiber* fiber_;
  detail::TimeoutScopeRec rec_;
};

class Shield {
 public:
  Shield();
  ~Shield();
  Shield(const Shield&) = delete;
  Shield& operator=(const Shield&) = delete;

 private:
  detail::Fiber* fiber_;
  std::int64_t saved_scope_deadline_;
};

}  // namespace spindle
