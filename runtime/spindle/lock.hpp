// Lock: mutual exclusion between fibers, in std::mutex's shape.
//
//   spindle::Lock lock;
//   {
//     std::scoped_lock guard(lock);   // or std::unique_lock, or lock()/unlock()
//     ...                             // may park: other fibers run meanwhile
//   }
//
// Semantics are asyncio.Lock's, with one deliberate difference: unlock()
// with fibers waiting hands the lock straight to the longest waiter (FIFO),
// which owns it from that moment. asyncio only wakes the waiter and lets
// whoever runs first take the lock; here a fiber that unlocks and relocks in
// a loop cannot overtake (starve) the fibers queued behind it.
//
// Suspension points: lock() of a free lock takes it at once and is not a
// suspension point (no Cancelled, no TimeoutError), as asyncio's acquire()
// of a free lock does not yield. Only a lock() that has to park honours
// cancellation and Timeout scopes.
//
// Interrupted hand-off: a waiter that unlock() chose, but that resumes
// cancelled or timed out (the cancel or the deadline reached it first, the
// unlock before it could run), passes the lock on to the next waiter, or
// leaves it unlocked if there is none, and then throws Cancelled /
// TimeoutError (try_lock_for/until: returns false). The lock ends up exactly
// as if the waiter had left the queue a moment before unlock().
//
// Ownership belongs to the fiber: unlock() by any other fiber throws
// std::system_error(std::errc::operation_not_permitted); lock() by the owner
// throws std::system_error(std::errc::resource_deadlock_would_occur) rather
// than deadlocking. A fiber must not end while it holds a lock.
//
// Threads: a Lock serves the fibers of one scheduler thread. Every member
// must be called on a fiber of that thread; lock/try_lock/unlock outside any
// fiber throw std::logic_error naming the call, and waiting for a lock held
// by a fiber of another thread's scheduler throws std::logic_error. The
// object must outlive every fiber waiting on it.
#pragma once

#include <chrono>
#include <cstdint>

#include <spindle/clock.hpp>
#include <spindle/detail/fiber.hpp>

namespace spindle {

class Condition;

class Lock {
 public:
  Lock() = default;
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;
  ~Lock();

  // Parks until the lock is this fiber's.
  void lock() {
    detail::Fiber* f = detail::current_fiber();
    // Inline fast path: a free lock has no waiters (a hand-off never leaves
    // the lock free while someone waits), so taking it needs nothing else.
    if (owner_ == nullptr && f != nullptr) [[likely]] {
      owner_ = f;
      return;
    }
    lock_until(f, detail::kNoDeadline, "spindle::Lock::lock");
  }

  // Takes the lock if it is free; never parks.
  bool try_lock();

  // As lock(), giving up (false) once the deadline has passed.
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> d) {
    return try_lock_until(detail::deadline_after(spindle::now(), d));
  }
  bool try_lock_until(TimePoint deadline) {
    return lock_until(detail::current_fiber(), detail::to_ns(deadline), "spindle::Lock::try_lock_until");
  }

  // Releases the lock, handing it to the longest waiter if there is one.
  void unlock() {
    if (owner_ != nullptr && waiters_.empty() && on_stack_of(owner_)) [[likely]] {
      owner_ = nullptr;
      return;
    }
    unlock_slow(detail::current_fiber());
  }

  // True while some fiber holds the lock (asyncio's locked()).
  bool locked() const noexcept { return owner_ != nullptr; }

 private:
  friend class Condition;

  // True when the calling code runs on f's stack, i.e. is f: the owner check
  // of unlock() without a thread-local lookup. A frame elsewhere (the
  // thread's own stack, an ASan fake stack) fails it and takes the slow
  // path, which asks the scheduler.
  static bool on_stack_of(const detail::Fiber* f) noexcept {
    const auto frame = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
    return frame - reinterpret_cast<std::uintptr_t>(f->stack_base) < f->stack_size;
  }
  bool lock_until(detail::Fiber* f, std::int64_t deadline_ns, const char* call);
  void unlock_slow(detail::Fiber* f);
  // Gives the lock to the first waiter, or frees it. The caller owns it.
  void hand_off() noexcept;

  detail::Fiber* owner_ = nullptr;  // the fiber holding the lock
  detail::WaitList waiters_;        // fibers parked in lock(), FIFO
};

}  // namespace spindle
