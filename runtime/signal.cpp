// spindle::wait_signal: fibers parked until a POSIX signal arrives.
//
// All the signals a thread's fibers wait for share one source slot: the
// poller reports it readable when any of them arrives, and take_signal then
// says which. A fiber can park on only one wait source, and a fiber may wait
// for several signals at once, so the waiters do not park on the slot
// themselves. Instead, one of them at a time, the *leader*, parks on the slot
// and the others park plainly. Whoever learns of a delivery (the leader when
// the slot fires, a new waiter reading what is already pending, a waiter
// leaving by Timeout) *drains*: for every watched signal that an unsatisfied
// waiter wants it calls take_signal, and hands a delivery to every such
// waiter (broadcast), readying them.
//
// Waiter states (all on the scheduler's thread, no locks):
//   waiting    got == 0, linked in the hub, parked on the slot (leader) or
//              plainly, or runnable after a Timeout/cancel/promotion
//   satisfied  got != 0: readied by a drain, returns got once it runs
// When a leader leaves, it promotes the first unsatisfied waiter (readies
// it); that one, finding no leader, parks on the slot in its place. An edge
// that arrives while no leader is parked stays recorded in the slot
// (read_ready), so the next leader's park returns at once and drains.
//
// Invariant: after a drain, the signalfd (or kqueue filter) of every signal
// that an unsatisfied waiter wants is empty, so that waiter cannot miss an
// edge; a signal left pending because all its waiters were already
// satisfied is read by the next waiter's drain on entry.
#include <spindle/signal.hpp>

#include <fmt/format.h>
#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include <spindle/detail/assert.hpp>
#include <spindle/detail/fiber.hpp>

#include "platform/syscall.hpp"
#include "runtime/scheduler.hpp"

namespace spindle {
namespace {

using detail::Fiber;
using detail::IoSlot;
using detail::Scheduler;
using detail::WakeReason;

constexpr const char* kCall = "spindle::wait_signal";

// One per call of wait_signal, on the waiting fiber's stack.
struct SignalWaiter {
  Fiber* fiber;
  std::span<const int> set;
  int got = 0;  // the signal handed to this waiter; 0 while it waits
  SignalWaiter* prev = nullptr;
  SignalWaiter* next = nullptr;

  bool wants(int signo) const noexcept { return got == 0 && std::find(set.begin(), set.end(), signo) != set.end(); }
};

// True for the first occurrence of set[i] in set, so duplicates in a signal
// set count once.
bool first_occurrence(std::span<const int> set, std::size_t i) noexcept {
  return std::find(set.begin(), set.begin() + static_cast<std::ptrdiff_t>(i), set[i]) ==
         set.begin() + static_cast<std::ptrdiff_t>(i);
}

// The thread's signal waits. Trivially destructible on purpose: it is a
// thread_local that outlives schedulers, and it is empty (no slot, no
// watches) whenever no fiber waits, in particular when a scheduler ends.
struct SignalHub {
  Scheduler* sched = nullptr;  // whose slot `slot` is; valid while slot != nullptr
  IoSlot* slot = nullptr;
  SignalWaiter* head = nullptr;
  SignalWaiter* tail = nullptr;
  SignalWaiter* leader = nullptr;  // the waiter parked on the slot, if any
  int watched = 0;                 // signals with watchers > 0
  int watchers[NSIG] = {};         // waiters per signal
  bool blocked_before[NSIG] = {};  // in the thread's mask before its watch

  void link(SignalWaiter& w) noexcept {
    w.prev = tail;
    w.next = nullptr;
    if (tail)
      tail->next = &w;
    else
      head = &w;
    tail = &w;
  }

  void unlink(SignalWaiter& w) noexcept {
    if (w.prev)
      w.prev->next = w.next;
    else
      head = w.next;
    if (w.next)
      w.next->prev = w.prev;
    else
      tail = w.prev;
    w.prev = w.next = nullptr;
  }

  // Starts a watch for every signal of w's set that has none yet. All or
  // nothing: on failure the watches this call started are ended again.
  void watch(Scheduler& s, const SignalWaiter& w) {
    SPINDLE_ASSERT(slot == nullptr || sched == &s, "signal waits of two schedulers on one thread");
    std::size_t done = 0;
    try {
      for (; done < w.set.size(); ++done) {
        const int signo = w.set[done];
        if (!first_occurrence(w.set, done) || watchers[signo]++ > 0) continue;
        try {
          start_watch(s, signo);
        } catch (...) {
          --watchers[signo];
          throw;
        }
      }
    } catch (...) {
      unwatch(w.set.first(done));
      throw;
    }
  }

  void start_watch(Scheduler& s, int signo) {
    if (slot == nullptr) {
      slot = &s.acquire_source_slot();
      sched = &s;
    }
    sigset_t current;
    ::pthread_sigmask(SIG_BLOCK, nullptr, &current);
    blocked_before[signo] = sigismember(&current, signo) == 1;
    try {
      s.with_poller([&](platform::Poller& p) { p.add_signal(signo, *slot); });
    } catch (...) {
      if (watched == 0) release_slot();
      throw;
    }
    ++watched;
  }

  // Ends the watches of `set`'s signals that no other waiter needs.
  void unwatch(std::span<const int> set) noexcept {
    for (std::size_t i = 0; i < set.size(); ++i) {
      const int signo = set[i];
      if (!first_occurrence(set, i) || --watchers[signo] > 0) continue;
      sched->with_poller([&](platform::Poller& p) { p.remove_signal(signo); });
      if (--watched == 0) release_slot();
    }
  }

  void release_slot() noexcept {
    sched->release_source_slot(*slot);
    slot = nullptr;
  }

  bool wanted(int signo) const noexcept {
    for (const SignalWaiter* w = head; w; w = w->next)
      if (w->wants(signo)) return true;
    return false;
  }

  // Reads pending deliveries of the signals unsatisfied waiters want and
  // hands each to all of them.
  void drain() noexcept {
    if (slot == nullptr) return;
    for (int signo = 1; signo < NSIG; ++signo) {
      if (watchers[signo] == 0 || !wanted(signo)) continue;
      if (sched->with_poller([&](platform::Poller& p) { return p.take_signal(signo); }) == 0) continue;
      for (SignalWaiter* w = head; w; w = w->next) {
        if (!w->wants(signo)) continue;
        w->got = signo;
        // A no-op for the draining fiber itself, which is running.
        detail::ready(w->fiber);
      }
    }
  }

  // Without a leader, readies the first unsatisfied waiter to become one.
  // If that waiter is already runnable (its Timeout fired), it will promote
  // the next one when it leaves in turn.
  void promote() noexcept {
    if (leader != nullptr) return;
    for (SignalWaiter* w = head; w; w = w->next) {
      if (w->got == 0) {
        detail::ready(w->fiber);
        return;
      }
    }
  }
};

thread_local SignalHub hub;

void check_signal(int signo) {
  if (signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP)
    platform::throw_system_error(EINVAL, fmt::format("{}(signal={}): not a signal that can be waited for", kCall, signo));
}

}  // namespace

int wait_signal(std::span<const int> signals) {
  if (signals.empty()) platform::throw_system_error(EINVAL, fmt::format("{}: empty signal set", kCall));
  for (int signo : signals) check_signal(signo);
  for (;;) {
    Fiber* f = detail::enter_wait(kCall);
    Scheduler& s = *f->sched;
    SignalHub& h = hub;
    SignalWaiter w{.fiber = f, .set = signals};
    h.watch(s, w);
    h.link(w);
    // Deliveries that arrived before this fiber could park, or that an
    // earlier waiter left pending, are read now.
    h.drain();
    WakeReason r = WakeReason::ready;
    while (w.got == 0 && r == WakeReason::ready) {
      if (h.leader == nullptr) {
        h.leader = &w;
        r = detail::park_on_slot(f, *h.slot, false, detail::SlotName{"signal", signals[0]});
        h.leader = nullptr;
        SPINDLE_ASSERT(r != WakeReason::closed, "the signal slot was released while a fiber waited on it");
        if (r == WakeReason::ready) h.drain();
      } else {
        r = detail::park();
      }
    }
    // A delivery that raced with the Timeout or the cancellation wins.
    if (w.got == 0) h.drain();
    h.unlink(w);
    h.unwatch(w.set);
    h.promote();
    if (w.got != 0) return w.got;
    detail::leave_wait(r, detail::kNoDeadline, kCall);
    // Only a clock set back between the timer firing and this check gets
    // here: the wait is not over, so it starts again.
  }
}

int wait_signal(std::initializer_list<int> signals) {
  return wait_signal(std::span<const int>(signals.begin(), signals.size()));
}

namespace detail {

void child_signal_setup(sigset_t& mask, sigset_t& defaults) noexcept {
  const SignalHub& h = hub;
  for (int signo = 1; signo < NSIG; ++signo) {
    if (h.watchers[signo] == 0) continue;
    sigaddset(&defaults, signo);
    if (!h.blocked_before[signo]) sigdelset(&mask, signo);
  }
}

}  // namespace detail
}  // namespace spindle
