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

namespace detail {
// from + d, saturating: a duration the clock cannot represent from `from` on
// (hours::max() meaning "forever") gives TimePoint::max(), which every wait
// reads as no deadline, instead of overflowing into the past; a hugely
// negative one gives TimePoint::min(). Rounds up, so waits are never early.
template <class Rep, class Period>
TimePoint deadline_after(TimePoint from, std::chrono::duration<Rep, Period> d) noexcept {
  using Seconds = std::chrono::duration<double>;
  // Below the int64 nanosecond range (~9.22e9 s) by a margin far larger than
  // the rounding of a double at that magnitude.
  constexpr double kLimit = 9.2e9;
  const double span = std::chrono::duration_cast<Seconds>(d).count();
  const double total = std::chrono::duration_cast<Seconds>(from.time_since_epoch()).count() + span;
  if (total >= kLimit || span >= kLimit) return TimePoint::max();
  if (total <= -kLimit || span <= -kLimit) return TimePoint::min();
  return from + std::chrono::ceil<Duration>(d);
}
}  // namespace detail

}  // namespace spindle
