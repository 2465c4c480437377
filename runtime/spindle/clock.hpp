// Time as the scheduler sees it.
//
// Deadlines are std::chrono::steady_clock time points. A scheduler normally
// reads the real monotonic clock; tests hand run() a ManualClock instead, and
// then every sleep, Timeout and timer in that run follows the manual clock.
#pragma once

#include <chrono>
#include <cstdint>

namespace spindle {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = Clock::duration;

// A clock that only moves when told. With auto_advance (the default), a
// scheduler that has nothing runnable and no I/O ready jumps the clock to the
// earliest pending timer, so a test of "sleep 1 s" takes microseconds and is
// exactly repeatable (what Tokio calls paused time). Only the scheduler's own
// thread may call advance()/set().
class ManualClock {
 public:
  explicit ManualClock(TimePoint start = TimePoint{} + std::chrono::hours(1),
                       bool auto_advance = true)
      : now_(start), auto_advance_(auto_advance) {}

  TimePoint now() const noexcept { return now_; }
  // Moving the clock readies timers that fall due at the next scheduling
  // point (the caller's next suspension, or its next yield).
  void advance(Duration d) noexcept { now_ += d; }
  void set(TimePoint t) noexcept {
    if (t > now_) now_ = t;
  }
  bool auto_advance() const noexcept { return auto_advance_; }

 private:
  TimePoint now_;
  bool auto_advance_;
};

// The current scheduler's notion of now (the real clock outside run()).
TimePoint now() noexcept;

}  // namespace spindle
