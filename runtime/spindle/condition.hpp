// Condition: std::condition_variable's shape over spindle::Lock.
//
//   spindle::Lock lock;
//   spindle::Condition cond;
//   std::unique_lock lk(lock);
//   cond.wait(lk, [&] { return !queue.empty(); });   // unlocks while parked
//
// Semantics are asyncio.Condition's (and std::condition_variable's): wait()
// releases the lock, parks until notified, and reacquires the lock before it
// returns or throws, also when it throws Cancelled or TimeoutError. Waiters
// are notified in FIFO order; notify_one() wakes the longest waiter. There
// are no spurious wake-ups, but, as with std::condition_variable, another
// fiber may take the lock (and change the state) between the notification
// and the waiter's reacquiring it, so waits belong in a predicate loop.
//
// Interrupted hand-off: a waiter that notify_one() chose but that resumes
// cancelled or timed out passes the notification on to the next waiter
// (asyncio does the same since Python 3.13), so notify_one() is not lost.
//
// Timed waits return std::cv_status (without a predicate) or the
// predicate's value (with one), as std::condition_variable does; a Timeout
// scope or cancellation throws instead. Reacquiring the lock after the wait
// is neither cancellable nor limited by Timeout scopes: the lock must be
// held again when the call returns or throws.
//
// Threads: a Condition serves the fibers of one scheduler thread, like the
// Lock it is used with. wait* need a fiber (std::logic_error otherwise) and
// the calling fiber must hold the lock (std::system_error with
// errc::operation_not_permitted otherwise). notify_* may be called from
// anywhere on that thread (a fiber, or outside run() when nobody waits);
// from another thread they throw std::logic_error when there are waiters to
// wake. The object must outlive every fiber waiting on it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <utility>

#include <spindle/clock.hpp>
#include <spindle/detail/fiber.hpp>
#include <spindle/lock.hpp>

namespace spindle {

class Condition {
 public:
  Condition() = default;
  Condition(const Condition&) = delete;
  Condition& operator=(const Condition&) = delete;
  ~Condition();

  void wait(std::unique_lock<Lock>& lk) {
    (void)wait_until_ns(lk, detail::kNoDeadline, "spindle::Condition::wait");
  }

  template <class Predicate>
  void wait(std::unique_lock<Lock>& lk, Predicate pred) {
    while (!pred()) wait(lk);
  }

  std::cv_status wait_until(std::unique_lock<Lock>& lk, TimePoint deadline) {
    return wait_until_ns(lk, detail::to_ns(deadline), "spindle::Condition::wait_until");
  }

  template <class Predicate>
  bool wait_until(std::unique_lock<Lock>& lk, TimePoint deadline, Predicate pred) {
    while (!pred()) {
      if (wait_until(lk, deadline) == std::cv_status::timeout) return pred();
    }
    return true;
  }

  template <class Rep, class Period>
  std::cv_status wait_for(std::unique_lock<Lock>& lk, std::chrono::duration<Rep, Period> d) {
    return wait_until(lk, detail::deadline_after(spindle::now(), d));
  }

  template <class Rep, class Period, class Predicate>
  bool wait_for(std::unique_lock<Lock>& lk, std::chrono::duration<Rep, Period> d, Predicate pred) {
    return wait_until(lk, detail::deadline_after(spindle::now(), d), std::move(pred));
  }

  // Wakes the longest waiter, if any.
  void notify_one();
  // Wakes every waiter; they reacquire the lock one after another, FIFO.
  void notify_all();

 private:
  std::cv_status wait_until_ns(std::unique_lock<Lock>& lk, std::int64_t deadline_ns, const char* call);
  void check_thread(const char* call) const;
  void wake_first() noexcept;

  detail::WaitList waiters_;  // fibers parked in wait*, FIFO
};

}  // namespace spindle
