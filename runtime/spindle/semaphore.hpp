// Semaphore and BoundedSemaphore: counted permits, like asyncio's, in
// std::counting_semaphore's shape.
//
//   spindle::Semaphore stove(2);        // two burners
//   stove.acquire();                    // parks while both are taken
//   ...
//   stove.release();                    // from a fiber or any other thread
//
// release() with fibers waiting hands each released permit straight to the
// longest waiter (FIFO); a permit is never left in the count while someone
// waits for it, and an acquire() cannot overtake the waiters. acquire() with
// a permit free takes it at once and is not a suspension point, as in
// asyncio. BoundedSemaphore(n) additionally refuses a release() that would
// raise the count above n: it throws std::invalid_argument (asyncio's
// ValueError) and changes nothing.
//
// Interrupted hand-off: a waiter that release() handed a permit, but that
// resumes cancelled or timed out, gives the permit back (to the next waiter,
// or to the count) and then throws Cancelled / TimeoutError
// (try_acquire_for/until: returns false). The count ends up exactly as if the
// waiter had left the queue a moment before release().
//
// Threads:
//   release, try_acquire, value, locked   any thread, including plain OS
//                           threads that do not run spindle; a fiber parked
//                           on another thread is woken through its poller.
//   acquire, try_acquire_for/until        a fiber of any scheduler thread when
//                           they have to park (std::logic_error outside one).
// The object must outlive every waiter and every release() in flight.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include <spindle/clock.hpp>
#include <spindle/detail/fiber.hpp>
#include <spindle/detail/sync_mutex.hpp>

namespace spindle {

namespace detail {

// What Semaphore and BoundedSemaphore share; bound_ tells them apart.
class SemaphoreCore {
 public:
  SemaphoreCore(const SemaphoreCore&) = delete;
  SemaphoreCore& operator=(const SemaphoreCore&) = delete;

 protected:
  SemaphoreCore(std::ptrdiff_t value, std::ptrdiff_t bound, const char* type);
  ~SemaphoreCore();

  bool acquire_until(std::int64_t deadline_ns, const char* call);
  bool try_acquire() noexcept;
  void release(std::ptrdiff_t n, const char* call);
  std::ptrdiff_t value() const noexcept;
  std::ptrdiff_t bound() const noexcept { return bound_; }

 private:
  // Under mu_: gives n permits to waiters first, the rest to the count.
  void give_locked(std::ptrdiff_t n) noexcept;

  mutable SyncMutex mu_;
  std::ptrdiff_t value_;        // guarded by mu_; 0 whenever waiters_ is not empty
  const std::ptrdiff_t bound_;  // the most value_ may reach; PTRDIFF_MAX: unbounded
  WaitList waiters_;            // guarded by mu_; fibers parked in acquire, FIFO
};

}  // namespace detail

class Semaphore : private detail::SemaphoreCore {
 public:
  // Starts with `value` permits (asyncio's default: 1); a negative value
  // throws std::invalid_argument.
  explicit Semaphore(std::ptrdiff_t value = 1);

  void acquire() { (void)acquire_until(detail::kNoDeadline, "spindle::Semaphore::acquire"); }
  using SemaphoreCore::try_acquire;
  template <class Rep, class Period>
  bool try_acquire_for(std::chrono::duration<Rep, Period> d) {
    return try_acquire_until(detail::deadline_after(spindle::now(), d));
  }
  bool try_acquire_until(TimePoint deadline) {
    return acquire_until(detail::to_ns(deadline), "spindle::Semaphore::try_acquire_until");
  }
  // Adds n permits (n >= 0, else std::invalid_argument).
  void release(std::ptrdiff_t n = 1) { SemaphoreCore::release(n, "spindle::Semaphore::release"); }
  // Permits free now (0 while fibers wait).
  using SemaphoreCore::value;
  // True when acquire() would park (asyncio's locked()).
  bool locked() const noexcept { return value() == 0; }
};

class BoundedSemaphore : private detail::SemaphoreCore {
 public:
  // Starts with `value` permits, which is also the most it may ever hold.
  explicit BoundedSemaphore(std::ptrdiff_t value = 1);

  void acquire() { (void)acquire_until(detail::kNoDeadline, "spindle::BoundedSemaphore::acquire"); }
  using SemaphoreCore::try_acquire;
  template <class Rep, class Period>
  bool try_acquire_for(std::chrono::duration<Rep, Period> d) {
    return try_acquire_until(detail::deadline_after(spindle::now(), d));
  }
  bool try_acquire_until(TimePoint deadline) {
    return acquire_until(detail::to_ns(deadline), "spindle::BoundedSemaphore::try_acquire_until");
  }
  // Adds n permits; throws std::invalid_argument, changing nothing, when n
  // is negative or the count would exceed the initial value.
  void release(std::ptrdiff_t n = 1) { SemaphoreCore::release(n, "spindle::BoundedSemaphore::release"); }
  using SemaphoreCore::value;
  bool locked() const noexcept { return value() == 0; }
  // The bound: the initial value.
  std::ptrdiff_t max() const noexcept { return bound(); }
};

}  // namespace spindle
