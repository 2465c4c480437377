// The non-template halves of the synchronization primitives: Lock,
// Condition, Event, Semaphore/BoundedSemaphore, Barrier and the queues.
//
// Every wait here is the one wait of detail/fiber.hpp: enter_wait, a
// WaitNode on the waiter's stack in the primitive's list, park, withdraw the
// node, leave_wait. A waker unlinks the node before it readies the fiber, so
// a waiter that resumes with its node unlinked knows it was handed
// something (the lock, a permit, an item, a place, an index) and, if it was
// resumed for another reason as well, passes that on before it throws.
//
// Cross-thread primitives (Event, Semaphore, the queues) wake through
// detail::ready_node with their mutex held, and every waiter takes the
// mutex again after it resumes, even when it was simply readied: a waker on
// another thread may still be inside ready_node (waking our poller) after
// the wake reached us, and taking the mutex waits for it to finish, so the
// waiter's scheduler cannot end under it. A waiter that finds itself handed
// after an interrupted park calls settle_remote_wake, so no wake for its
// fiber is left queued after the wait returns.
//
// The one-thread primitives (Lock, Condition, Barrier) have no mutex: a
// fiber resumed with WakeReason::ready was readied by the primitive's waker
// on its own thread and by nothing else (timers and cancellation ready with
// other reasons), so its node is already unlinked.
//
// enter_wait may run with a primitive's mutex held: it takes no lock of
// ours, and if it throws, the lock guard releases the mutex on the way out.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <system_error>
#include <thread>

#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <spindle/barrier.hpp>
#include <spindle/condition.hpp>
#include <spindle/detail/assert.hpp>
#include <spindle/detail/sync_mutex.hpp>
#include <spindle/event.hpp>
#include <spindle/lock.hpp>
#include <spindle/queue.hpp>
#include <spindle/semaphore.hpp>
#include <spindle/timeout.hpp>

namespace spindle {

using detail::Fiber;
using detail::WaitNode;
using detail::WakeReason;

namespace {

[[noreturn]] void throw_outside_fiber(const char* call) {
  throw std::logic_error(fmt::format("{} called outside a fiber (no spindle::run on this thread)", call));
}

// Lock, Condition and Barrier ready their waiters with detail::ready, which
// only the waiters' own scheduler thread may call.
void check_same_scheduler(const Fiber* waiter, const char* call) {
  const Fiber* self = detail::current_fiber();
  if (self == nullptr || self->sched != waiter->sched)
    throw std::logic_error(
        fmt::format("{}: the primitive's waiting fibers belong to another thread's scheduler (it serves the "
                    "fibers of one "
                    "thread)",
                    call));
}

// enter_wait for the running fiber `f`, already known: the call (and its
// thread-local lookup) only when a cancellation or a Timeout scope could be
// due, which is all enter_wait checks besides being on a fiber. Hot in the
// one-thread primitives, where a wait is little more than a switch.
inline void enter_wait_of(Fiber* f, const char* call) {
  if (f->attention) [[unlikely]]
    detail::enter_wait(call);
}

}  // namespace

// ============================================================= SyncMutex

namespace detail {

namespace {

// The bias word of a SyncMutex that no thread may (any longer) take alone.
const char kSharedMark = 0;
const void* const kShared = &kSharedMark;

// True when membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) works in this
// process; registering for it is required once before its first use and
// must precede any bias that might need revoking.
bool biasing_available() noexcept {
#if defined(__linux__) && defined(SYS_membarrier) && !defined(SPINDLE_TSAN)
  static const bool available =
      ::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  return available;
#else
  return false;
#endif
}

// A full memory barrier on every running thread of the process.
void process_barrier() noexcept {
#if defined(__linux__) && defined(SYS_membarrier) && !defined(SPINDLE_TSAN)
  if (biasing_available()) {
    const long rc = ::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    SPINDLE_ASSERT(rc == 0, "membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed after registering");
  }
#endif
}

}  // namespace

void SyncMutex::lock_slow(const void* me) {
  const void* b = bias_.load(std::memory_order_acquire);
  if (b == nullptr) {
    // The first thread to lock takes the bias, if it can ever be revoked.
    const void* claim = biasing_available() ? me : kShared;
    if (bias_.compare_exchange_strong(b, claim, std::memory_order_acq_rel) && claim == me) {
      lock();
      return;
    }
  }
  if (!revoked_.load(std::memory_order_acquire)) {
    // Another thread holds the bias (or is giving it up): withdraw it, make
    // its announcement visible, and wait until it has left.
    bias_.store(kShared, std::memory_order_seq_cst);
    process_barrier();
    for (int spins = 0; owner_inside_.load(std::memory_order_acquire); ++spins) {
      if (spins > 64) std::this_thread::yield();  // the owner may be descheduled
    }
    revoked_.store(true, std::memory_order_release);
  }
  mu_.lock();
}

}  // namespace detail

// ================================================================== Lock

Lock::~Lock() { SPINDLE_ASSERT(waiters_.empty(), "spindle::Lock destroyed while fibers wait for it"); }

bool Lock::try_lock() {
  Fiber* f = detail::current_fiber();
  if (f == nullptr) throw_outside_fiber("spindle::Lock::try_lock");
  if (owner_ != nullptr) return false;
  owner_ = f;
  return true;
}

bool Lock::lock_until(Fiber* f, std::int64_t deadline_ns, const char* call) {
  if (f == nullptr) throw_outside_fiber(call);
  if (owner_ == nullptr) {
    owner_ = f;
    return true;
  }
  if (owner_ == f)
    throw std::system_error(std::make_error_code(std::errc::resource_deadlock_would_occur),
                            fmt::format("{}: the calling fiber already holds the lock", call));
  if (owner_->sched != f->sched) check_same_scheduler(owner_, call);
  enter_wait_of(f, call);
  WaitNode node{.fiber = f};
  waiters_.push_back(node);
  const WakeReason r = detail::park(deadline_ns);
  if (r == WakeReason::ready) {
    SPINDLE_ASSERT(owner_ == f && !node.linked, "spindle::Lock: a waiter resumed without the lock");
    return true;
  }
  const bool handed = !node.linked;
  waiters_.remove(node);
  // Chosen by unlock() but resumed cancelled or timed out: the lock is ours
  // and goes on to the next waiter, as if we had left a moment earlier.
  if (handed) hand_off();
  detail::leave_wait(r, deadline_ns, call);
  return false;
}

void Lock::unlock_slow(Fiber* f) {
  if (f == nullptr) throw_outside_fiber("spindle::Lock::unlock");
  if (owner_ != f)
    throw std::system_error(std::make_error_code(std::errc::operation_not_permitted),
                            owner_ == nullptr
                                ? "spindle::Lock::unlock: the lock is not locked"
                                : "spindle::Lock::unlock: the calling fiber does not hold the lock");
  hand_off();
}

void Lock::hand_off() noexcept {
  if (WaitNode* n = waiters_.pop_front()) {
    owner_ = n->fiber;
    detail::ready(n->fiber);
  } else {
    owner_ = nullptr;
  }
}

// ============================================================= Condition

Condition::~Condition() {
  SPINDLE_ASSERT(waiters_.empty(), "spindle::Condition destroyed while fibers wait on it");
}

std::cv_status Condition::wait_until_ns(std::unique_lock<Lock>& lk, std::int64_t deadline_ns,
                                        const char* call) {
  Fiber* f = detail::current_fiber();
  if (f == nullptr) throw_outside_fiber(call);
  Lock* m = lk.mutex();
  if (m == nullptr || !lk.owns_lock() || m->owner_ != f)
    throw std::system_error(std::make_error_code(std::errc::operation_not_permitted),
                            fmt::format("{}: the calling fiber must hold the lock", call));
  if (!waiters_.empty() && waiters_.front()->fiber->sched != f->sched)
    check_same_scheduler(waiters_.front()->fiber, call);
  enter_wait_of(f, call);
  WaitNode node{.fiber = f};
  waiters_.push_back(node);
  m->hand_off();  // the unique_lock still says "owns": it will own again on return
  const WakeReason r = detail::park(deadline_ns);
  const bool notified = r == WakeReason::ready || !node.linked;
  waiters_.remove(node);
  // Chosen by notify_one() but resumed cancelled or timed out: the next
  // waiter gets the notification, so that it is not lost.
  if (notified && r != WakeReason::ready) wake_first();
  {
    // The lock must be held again however the wait ended; a Shield keeps
    // cancellation and Timeout scopes from interrupting the reacquiring.
    Shield shield;
    m->lock();
  }
  detail::leave_wait(r, deadline_ns, call);
  // Notified or not, a wait that ran out of time passed any notification on.
  return r == WakeReason::ready ? std::cv_status::no_timeout : std::cv_status::timeout;
}

void Condition::check_thread(const char* call) const {
  if (!waiters_.empty()) check_same_scheduler(waiters_.front()->fiber, call);
}

void Condition::wake_first() noexcept {
  if (WaitNode* n = waiters_.pop_front()) detail::ready(n->fiber);
}

void Condition::notify_one() {
  check_thread("spindle::Condition::notify_one");
  wake_first();
}

void Condition::notify_all() {
  check_thread("spindle::Condition::notify_all");
  while (!waiters_.empty()) wake_first();
}

// ================================================================= Event

Event::~Event() { SPINDLE_ASSERT(waiters_.empty(), "spindle::Event destroyed while fibers wait on it"); }

void Event::set() {
  // Already set: nobody can be waiting (a waiter parks only after reading
  // the flag clear under mu_, and setting it empties the list under mu_).
  if (set_.load(std::memory_order_acquire)) return;
  std::lock_guard lock(mu_);
  set_.store(true, std::memory_order_release);
  while (WaitNode* n = waiters_.pop_front()) detail::ready_node(*n);
}

bool Event::wait_until_ns(std::int64_t deadline_ns, const char* call) {
  if (set_.load(std::memory_order_acquire)) return true;
  WaitNode node;
  {
    std::lock_guard lock(mu_);
    if (set_.load(std::memory_order_relaxed)) return true;
    Fiber* f = detail::enter_wait(call);
    node = WaitNode{.fiber = f, .sched = f->sched, .seq = f->park_seq};
    waiters_.push_back(node);
  }
  const WakeReason r = detail::park(deadline_ns);
  bool handed;
  {
    std::lock_guard lock(mu_);
    handed = !node.linked;
    waiters_.remove(node);
  }
  if (r == WakeReason::ready) return true;
  if (handed) detail::settle_remote_wake(node);
  // Set in the same instant as the own deadline passed: the event was set
  // before we gave up, so that is the answer. Cancellation and Timeout
  // scopes still throw.
  if (detail::leave_wait(r, deadline_ns, call) == WakeReason::timed_out && !handed) return false;
  return true;
}

// ============================================================= Semaphore

namespace detail {

SemaphoreCore::SemaphoreCore(std::ptrdiff_t value, std::ptrdiff_t bound, const char* type)
    : value_(value), bound_(bound) {
  if (value < 0)
    throw std::invalid_argument(
        fmt::format("{}: the initial value must not be negative (got {})", type, value));
}

SemaphoreCore::~SemaphoreCore() {
  SPINDLE_ASSERT(waiters_.empty(), "spindle semaphore destroyed while fibers wait on it");
}

bool SemaphoreCore::try_acquire() noexcept {
  std::lock_guard lock(mu_);
  if (value_ == 0) return false;
  --value_;
  return true;
}

bool SemaphoreCore::acquire_until(std::int64_t deadline_ns, const char* call) {
  WaitNode node;
  {
    std::lock_guard lock(mu_);
    if (value_ > 0) {
      --value_;
      return true;
    }
    Fiber* f = enter_wait(call);
    node = WaitNode{.fiber = f, .sched = f->sched, .seq = f->park_seq};
    waiters_.push_back(node);
  }
  const WakeReason r = park(deadline_ns);
  bool handed;
  {
    std::lock_guard lock(mu_);
    handed = !node.linked;
    waiters_.remove(node);
    if (r == WakeReason::ready) return true;  // release() handed us a permit
    // Handed a permit but resumed cancelled or timed out: give it back, to
    // the next waiter or to the count.
    if (handed) give_locked(1);
  }
  if (handed) settle_remote_wake(node);
  leave_wait(r, deadline_ns, call);
  return false;
}

void SemaphoreCore::release(std::ptrdiff_t n, const char* call) {
  if (n < 0)
    throw std::invalid_argument(fmt::format("{}: cannot release a negative number of permits ({})", call, n));
  std::lock_guard lock(mu_);
  if (n > bound_ - value_) {
    if (bound_ == std::numeric_limits<std::ptrdiff_t>::max())
      throw std::invalid_argument(fmt::format("{}: the count would overflow", call));
    throw std::invalid_argument(fmt::format(
        "{}: released too many times (value {} + {} would exceed the bound {})", call, value_, n, bound_));
  }
  give_locked(n);
}

void SemaphoreCore::give_locked(std::ptrdiff_t n) noexcept {
  for (; n > 0; --n) {
    WaitNode* w = waiters_.pop_front();
    if (w == nullptr) break;
    ready_node(*w);
  }
  value_ += n;
}

std::ptrdiff_t SemaphoreCore::value() const noexcept {
  std::lock_guard lock(mu_);
  return value_;
}

}  // namespace detail

Semaphore::Semaphore(std::ptrdiff_t value)
    : SemaphoreCore(value, std::numeric_limits<std::ptrdiff_t>::max(), "spindle::Semaphore") {}

BoundedSemaphore::BoundedSemaphore(std::ptrdiff_t value)
    : SemaphoreCore(value, value, "spindle::BoundedSemaphore") {}

// =============================================================== Barrier

namespace {
// WaitNode::value of a Barrier waiter released by abort() or reset().
constexpr std::uintptr_t kBrokenMark = std::numeric_limits<std::uintptr_t>::max();
}  // namespace

Barrier::Barrier(std::size_t parties) : parties_(parties) {
  if (parties == 0) throw std::invalid_argument("spindle::Barrier: parties must be at least 1");
}

Barrier::~Barrier() {
  SPINDLE_ASSERT(waiters_.empty(), "spindle::Barrier destroyed while fibers wait on it");
}

std::size_t Barrier::wait() {
  const char* call = "spindle::Barrier::wait";
  Fiber* f = detail::current_fiber();
  if (f == nullptr) throw_outside_fiber(call);
  for (;;) {
    if (broken_) throw BrokenBarrierError(fmt::format("{}: the barrier is broken", call));
    // sched_ rather than the first waiter's fiber: no reading of another
    // fiber's stack and record on every arrival.
    if (!waiters_.empty() && sched_ != f->sched) check_same_scheduler(waiters_.front()->fiber, call);
    if (waiters_.size() + 1 == parties_) {
      wake_all(false);
      return parties_ - 1;
    }
    enter_wait_of(f, call);
    WaitNode node{.fiber = f};
    if (waiters_.empty()) sched_ = f->sched;
    waiters_.push_back(node);
    const WakeReason r = detail::park();
    // Interrupted: leave the barrier if still waiting. If the cycle had just
    // completed, it stands (the others have their indices); nothing is
    // handed back.
    const bool released = r == WakeReason::ready || !node.linked;
    waiters_.remove(node);
    if (r != WakeReason::ready) detail::leave_wait(r, detail::kNoDeadline, call);
    // leave_wait returns only for a timeout that is no longer due (a manual
    // clock set back): then this fiber either was released or waits again.
    if (released) {
      if (node.value == kBrokenMark)
        throw BrokenBarrierError(fmt::format("{}: the barrier was broken", call));
      return node.value;
    }
  }
}

void Barrier::release_all(bool broken, const char* call) {
  if (waiters_.empty()) return;
  check_same_scheduler(waiters_.front()->fiber, call);
  wake_all(broken);
}

void Barrier::wake_all(bool broken) noexcept {
  std::uintptr_t index = 0;
  while (WaitNode* n = waiters_.pop_front()) {
    n->value = broken ? kBrokenMark : index++;
    detail::ready(n->fiber);
  }
}

void Barrier::abort() {
  release_all(true, "spindle::Barrier::abort");
  broken_ = true;
}

void Barrier::reset() {
  release_all(true, "spindle::Barrier::reset");
  broken_ = false;
}

// ================================================================ queues

namespace detail {

QueueCore::~QueueCore() {
  SPINDLE_ASSERT(getters_.empty() && putters_.empty() && joiners_.empty(),
                 "a spindle queue was destroyed while fibers or threads wait on it");
}

std::size_t QueueCore::size() const {
  std::lock_guard lock(mu_);
  return count_;
}

bool QueueCore::full() const {
  std::lock_guard lock(mu_);
  return !may_put_now_locked();
}

bool QueueCore::is_shut_down() const {
  std::lock_guard lock(mu_);
  return shut_down_;
}

void QueueCore::wake_locked(QueueWaiter& w) noexcept {
  // With mu_ held: a waiting thread returns from its wait (and its condition
  // variable goes away) only after we release mu_.
  if (w.thread_cv != nullptr)
    w.thread_cv->notify_one();
  else
    ready_node(w);
}

void QueueCore::grant_room_slow() noexcept {
  while (!putters_.empty() && room_locked()) {
    auto& w = static_cast<QueueWaiter&>(*putters_.pop_front());
    ++reserved_;
    wake_locked(w);
  }
}

bool QueueCore::wait_room(std::unique_lock<SyncMutex>& lk, std::int64_t deadline_ns, const char* call) {
  QueueWaiter node;
  Fiber* f = current_fiber();
  if (f == nullptr) {
    // A plain OS thread (a producer feeding fibers): it blocks on a
    // condition variable of its own, woken under mu_ like a fiber.
    std::condition_variable_any cv;
    node.thread_cv = &cv;
    putters_.push_back(node);
    auto handed = [&] { return !node.linked; };
    if (deadline_ns == kNoDeadline) {
      cv.wait(lk, handed);
    } else {
      const TimePoint deadline(std::chrono::duration_cast<Duration>(std::chrono::nanoseconds(deadline_ns)));
      if (!cv.wait_until(lk, deadline, handed)) {
        putters_.remove(node);
        return false;
      }
    }
    if (node.shut_down) throw_shut_down(call);
    --reserved_;
    if (shut_down_) throw_shut_down(call);
    return true;
  }

  f = enter_wait(call);
  node.fiber = f;
  node.sched = f->sched;
  node.seq = f->park_seq;
  putters_.push_back(node);
  lk.unlock();
  const WakeReason r = park(deadline_ns);
  lk.lock();
  const bool handed = !node.linked;
  putters_.remove(node);
  if (handed && !node.shut_down) {
    --reserved_;
    if (r == WakeReason::ready && !shut_down_) return true;
    // Resumed cancelled or timed out just as a place was reserved for us:
    // it goes to the next putter, or stays free. (After shutdown() there is
    // no putter left to take it.)
    if (r != WakeReason::ready) grant_room_locked();
  }
  if (r == WakeReason::ready) throw_shut_down(call);
  lk.unlock();
  if (handed) settle_remote_wake(node);
  leave_wait(r, deadline_ns, call);
  lk.lock();
  // The own deadline passed; a queue shut down meanwhile says so instead.
  if (shut_down_) throw_shut_down(call);
  return false;
}

bool QueueCore::wait_item(std::unique_lock<SyncMutex>& lk, QueueWaiter& node, std::int64_t deadline_ns,
                          const char* call, GiveBack give_back) {
  Fiber* f = enter_wait(call);
  node.fiber = f;
  node.sched = f->sched;
  node.seq = f->park_seq;
  getters_.push_back(node);
  lk.unlock();
  const WakeReason r = park(deadline_ns);
  lk.lock();
  const bool handed = !node.linked;
  getters_.remove(node);
  if (handed && !node.shut_down) {
    --in_flight_;
    if (r == WakeReason::ready) {
      grant_room_locked();  // the item has left the queue: its place is free
      return true;
    }
    // Resumed cancelled or timed out just as an item was handed to us: it
    // goes back, to the next getter or the head of the queue, so that it
    // is neither lost nor delivered twice. After shutdown(true) it is
    // discarded like the items that were still queued.
    if (immediate_)
      finish_tasks_locked(1);
    else
      give_back(this, node.slot);
  }
  if (r == WakeReason::ready) throw_shut_down(call);
  lk.unlock();
  if (handed) settle_remote_wake(node);
  leave_wait(r, deadline_ns, call);
  lk.lock();
  if (node.shut_down || (shut_down_ && count_ == 0)) throw_shut_down(call);
  return false;
}

void QueueCore::finish_tasks_locked(std::size_t n) noexcept {
  unfinished_ -= std::min(n, unfinished_);
  if (unfinished_ == 0) {
    while (WaitNode* w = joiners_.pop_front()) wake_locked(static_cast<QueueWaiter&>(*w));
  }
}

void QueueCore::shutdown_locked(bool immediate, std::size_t discarded) noexcept {
  shut_down_ = true;
  if (immediate) {
    immediate_ = true;
    finish_tasks_locked(discarded);
  }
  for (WaitList* list : {&getters_, &putters_}) {
    while (WaitNode* w = list->pop_front()) {
      auto& qw = static_cast<QueueWaiter&>(*w);
      qw.shut_down = true;
      wake_locked(qw);
    }
  }
}

void QueueCore::task_done() {
  std::lock_guard lock(mu_);
  if (unfinished_ == 0)
    throw std::invalid_argument(fmt::format("{}: called more times than items were put", calls_->task_done));
  finish_tasks_locked(1);
}

void QueueCore::join() {
  const char* call = calls_->join;
  for (;;) {
    QueueWaiter node;
    {
      std::lock_guard lock(mu_);
      if (unfinished_ == 0) return;
      Fiber* f = enter_wait(call);
      node.fiber = f;
      node.sched = f->sched;
      node.seq = f->park_seq;
      joiners_.push_back(node);
    }
    const WakeReason r = park();
    bool handed;
    {
      std::lock_guard lock(mu_);
      handed = !node.linked;
      joiners_.remove(node);
    }
    if (r == WakeReason::ready) return;
    // Every joiner is woken together; there is nothing to pass on.
    if (handed) settle_remote_wake(node);
    leave_wait(r, kNoDeadline, call);
    // Only a timeout that is no longer due gets here (a manual clock set
    // back): done if all tasks were, else wait again.
    if (handed) return;
  }
}

void QueueCore::throw_shut_down(const char* call) {
  throw QueueShutDown(fmt::format("{}: the queue is shut down", call));
}

void QueueCore::throw_full(const char* call) { throw QueueFull(fmt::format("{}: the queue is full", call)); }

void QueueCore::throw_empty(const char* call) {
  throw QueueEmpty(fmt::format("{}: the queue is empty", call));
}

}  // namespace detail

}  // namespace spindle
