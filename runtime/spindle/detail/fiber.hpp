// The fiber record and the one park/ready mechanism every wait goes through.
//
// This header is public only because templates (Task<T>, Queue<T>) need it;
// users should not depend on anything in namespace detail.
//
// Fiber state machine (owned by the fiber's scheduler thread):
//
//   runnable --park--> parked --ready--> runnable
//      |  \--yield: stays runnable, goes to the back of the run queue
//      \--body returns or throws--> done
//
// "runnable" covers both queued and running (the scheduler knows which one
// runs): only parked and done change what ready(), cancel and join do, and
// the switch path saves a store per side by not tracking the difference.
//
// A parked fiber may hold a timer (its deadline) and be registered with one
// wait source (a WaitList, an IoSlot, a join). The first of them to fire
// calls ready() with a reason; ready() cancels the timer, and the fiber,
// when resumed, withdraws its registration from the wait source itself.
// ready() on a fiber that is not parked does nothing, so late wake-ups from
// the losing side are harmless.
#pragma once

#include <cstdint>
#include <exception>
#include <limits>
#include <new>
#include <string>

#include <spindle/clock.hpp>
#include <spindle/detail/wait_list.hpp>

namespace spindle::detail {

class Scheduler;
struct GroupCore;

enum class WakeReason : std::uint8_t { ready, timed_out, cancelled, closed };
enum class FiberState : std::uint8_t { runnable, parked, done };

inline constexpr std::int64_t kNoDeadline = std::numeric_limits<std::int64_t>::max();
inline constexpr std::uint32_t kNotInHeap = std::numeric_limits<std::uint32_t>::max();

// Nanoseconds since the steady clock's epoch; the timer heap's unit.
inline std::int64_t to_ns(TimePoint t) noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// A Timeout scope on a fiber's stack; scopes form a stack through `outer`.
struct TimeoutScopeRec {
  std::int64_t deadline;
  std::int64_t outer_min;  // the fiber's scope_deadline before this scope
  TimeoutScopeRec* outer;
  // std::uncaught_exceptions() when the scope opened: while the fiber is
  // unwinding, only scopes opened at the current depth (inside the
  // destructor that runs) apply; the ones outside are suspended.
  int uncaught = 0;
  bool expired = false;
};

// Per-fiber copy of the C++ runtime's exception globals (__cxa_eh_globals),
// swapped on every switch so a fiber that parks inside a catch block, or
// while unwinding, keeps its own view of std::uncaught_exceptions() and of
// the exception `throw;` rethrows.
struct EhState {
  void* caught = nullptr;
  unsigned int uncaught = 0;
};

struct Fiber {
  // --- switching (runtime/context.cpp) ---
  void* ctx = nullptr;  // boost fcontext_t of the suspended fiber
  Scheduler* sched = nullptr;
  Fiber* next = nullptr;  // run-queue link
  FiberState state = FiberState::runnable;
  WakeReason wake_reason = WakeReason::ready;
  bool cancel_requested = false;  // Task::cancel() was called, not yet delivered
  // cancel_requested || scope_deadline != kNoDeadline: one byte that the hot
  // paths (yield, every wait) test to skip the checks in the common case.
  // refresh_attention() after changing either.
  bool attention = false;
  bool cancelled_exit = false;    // the body ended by Cancelled
  bool interruptible = false;     // set at park: may cancel/timeouts end this park
  bool detached = false;
  bool fresh = false;  // never resumed yet: entered once by jump_fcontext
  bool small_stack = false;  // canary checked at every switch out (runtime/stack.hpp)
  std::uint16_t shield_depth = 0;
  std::uint32_t park_seq = 0;  // bumped on every resume from park; see WaitNode
  std::uint32_t timer_index = kNotInHeap;
  // x86-64: the MXCSR image the switch that left this fiber was about to
  // load, compared after it with what this fiber saved (runtime/context.cpp).
  std::uint32_t incoming_mxcsr = 0;
  std::int64_t scope_deadline = kNoDeadline;  // earliest Timeout scope in force
  TimeoutScopeRec* scopes = nullptr;
  EhState eh;

  void refresh_attention() noexcept { attention = cancel_requested || scope_deadline != kNoDeadline; }

  // --- stack (runtime/stack.cpp) ---
  void* stack_base = nullptr;  // lowest usable byte; the guard lies below
  std::size_t stack_size = 0;
  void* asan_fake_stack = nullptr;
  void* tsan_fiber = nullptr;  // TSan's record of this context (TSan builds)

  // --- identity and completion ---
  std::uint64_t id = 0;
  std::string name;
  WaitList joiners;
  std::exception_ptr error;
  GroupCore* group = nullptr;
  Fiber* all_prev = nullptr;  // the scheduler's list of live fibers
  Fiber* all_next = nullptr;
  std::uint32_t refs = 0;  // Task handles + 1 while the fiber is alive
  void (*body)(Fiber*) noexcept = nullptr;     // runs the function, stores the outcome
  void (*destroy)(Fiber*) noexcept = nullptr;  // deletes the most-derived object

  // Fiber records (with their task's result and function) come from a
  // per-thread free list of 64-byte size classes, not from malloc each time:
  // spawn+join is a hot path (runtime/fiber_pool.cpp).
  static void* operator new(std::size_t size);
  static void operator delete(void* p, std::size_t size) noexcept;
  static void* operator new(std::size_t size, std::align_val_t align) { return ::operator new(size, align); }
  static void operator delete(void* p, std::size_t, std::align_val_t align) noexcept {
    // Not the sized form: clang before 16 does not declare it without
    // -fsized-deallocation, and this header is compiled by users.
    ::operator delete(p, align);
  }
};

// ---- the wait API (runtime/scheduler.cpp) ----

// The fiber running on this thread, or nullptr outside run().
Fiber* current_fiber() noexcept;

// Starts a blocking call: throws std::logic_error naming `call` when not on a
// fiber; throws Cancelled or TimeoutError when one is already due (nothing
// has been registered yet, so nothing needs undoing). Returns the fiber.
Fiber* enter_wait(const char* call);

// Parks the running fiber until ready() or the deadline (absolute ns on the
// scheduler clock; kNoDeadline for none). The effective deadline also
// includes the fiber's Timeout scopes unless it is shielded or unwinding.
// Never throws: the caller withdraws its registration, then calls leave_wait.
WakeReason park(std::int64_t deadline_ns = kNoDeadline) noexcept;

// Ends a blocking call: throws Cancelled for `cancelled`, TimeoutError when a
// Timeout scope (not the call's own deadline) expired; otherwise returns r.
WakeReason leave_wait(WakeReason r, std::int64_t own_deadline_ns, const char* call);

// Readies a parked fiber of the calling thread's scheduler. No-op otherwise.
void ready(Fiber* f, WakeReason r = WakeReason::ready) noexcept;

// Readies `node`'s fiber from any thread; the caller must hold the lock of
// the primitive the node was (and no longer is) linked in, so the waiter can
// tell a wake is in flight. Routes to the waiter's scheduler through the
// poller's wake when called from another thread. Contract for the waiter:
// after resuming, it takes the primitive's lock again before it returns,
// even when woken with `ready`, so that a waker on another thread has left
// ready_node (and stopped touching the waiter's scheduler) before the waiter
// can move on, end its fiber, or let run() tear the scheduler down.
void ready_node(WaitNode& node) noexcept;

// After a waiter finds its node unlinked (handed a wake) but was resumed for
// another reason, it calls this so the in-flight cross-thread wake is
// consumed before the fiber moves on (and possibly ends).
void settle_remote_wake(WaitNode& node) noexcept;

// Requests cancellation; a parked, interruptible fiber is readied at once.
void request_cancel(Fiber* f) noexcept;

std::int64_t now_ns() noexcept;

// Releases one reference to a fiber record; the last one frees it.
void release_fiber(Fiber* f) noexcept;

}  // namespace spindle::detail
