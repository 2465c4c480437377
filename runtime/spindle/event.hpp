// Event: a flag that fibers can wait for, like asyncio.Event.
//
//   spindle::Event closing;
//   ... closing.wait();               // parks until someone calls set()
//   ... closing.set();                // from a fiber or any other thread
//
// set() sets the flag and wakes every waiter; each of them returns, even if
// clear() runs before it does (asyncio's rule). wait() of a set event
// returns at once and is not a suspension point, as in asyncio. Waiters are
// readied in FIFO order.
//
// Interrupted hand-off: there is nothing to pass on, since set() wakes
// everyone. A waiter readied by set() that resumes cancelled, or past a
// Timeout scope's deadline, throws as usual; one whose own wait_for/
// wait_until deadline passed in the same instant returns true, because the
// event was set before it gave up.
//
// Threads:
//   set, clear, is_set       any thread, including plain OS threads that do
//                            not run spindle; a fiber parked on another
//                            thread is woken through its poller's wake.
//   wait, wait_for/until     a fiber of any scheduler thread (when the event
//                            is not set; std::logic_error outside a fiber).
// The object must outlive every waiter and every set() in flight.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include <spindle/clock.hpp>
#include <spindle/detail/fiber.hpp>
#include <spindle/detail/sync_mutex.hpp>

namespace spindle {

class Event {
 public:
  Event() = default;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();

  void set();
  void clear() noexcept { set_.store(false, std::memory_order_release); }
  bool is_set() const noexcept { return set_.load(std::memory_order_acquire); }

  void wait() { (void)wait_until_ns(detail::kNoDeadline, "spindle::Event::wait"); }
  // True once the event is set; false when the deadline passed first.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) {
    return wait_until(detail::deadline_after(spindle::now(), d));
  }
  bool wait_until(TimePoint deadline) {
    return wait_until_ns(detail::to_ns(deadline), "spindle::Event::wait_until");
  }

 private:
  bool wait_until_ns(std::int64_t deadline_ns, const char* call);

  // set() writes it under mu_ (together with emptying waiters_); atomic so
  // that is_set(), clear() and the fast paths of wait() and set() need not
  // take the mutex: a waiter re-reads it under mu_ before it parks.
  std::atomic<bool> set_{false};
  detail::SyncMutex mu_;
  detail::WaitList waiters_;  // guarded by mu_; empty whenever set_ is true
};

}  // namespace spindle
