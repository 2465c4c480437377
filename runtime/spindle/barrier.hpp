// Barrier: a meeting point for a fixed number of fibers, like asyncio.Barrier.
//
//   spindle::Barrier barrier(3);
//   std::size_t index = barrier.wait();   // parks until 3 fibers have arrived
//
// Each wait() parks until `parties` fibers are waiting; then all of them
// return, each with a different arrival index 0..parties-1 (0 for the first
// to arrive, parties-1 for the last, which does not park). The barrier is
// then at once ready for the next cycle: asyncio's "draining" phase is not
// needed, because the released fibers were handed their indices and no
// longer count as waiting.
//
// abort() puts the barrier in the broken state: fibers waiting in it and
// every later wait() throw BrokenBarrierError until reset(). reset() returns
// the barrier to the empty, unbroken state; fibers waiting in it at that
// moment throw BrokenBarrierError (asyncio's rules).
//
// Cancellation and Timeout scopes: a fiber interrupted while it waits leaves
// the barrier (n_waiting() drops; the barrier is not broken, as in asyncio),
// and the indices of the cycle are given out when it completes, in arrival
// order among the fibers still there, so they stay 0..parties-1 and
// distinct. A fiber interrupted at the moment the cycle completed (handed
// its index, then resumed cancelled or timed out) throws Cancelled /
// TimeoutError, but the cycle it completed stands: the other parties are
// released with their indices, and nothing is handed back.
//
// Threads: a Barrier serves the fibers of one scheduler thread; wait()
// outside a fiber throws std::logic_error, and so do abort()/reset() from
// another thread while fibers wait. The object must outlive its waiters.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <spindle/detail/fiber.hpp>

namespace spindle {

// Thrown by Barrier::wait on a broken barrier (asyncio.BrokenBarrierError).
class BrokenBarrierError : public std::runtime_error {
 public:
  explicit BrokenBarrierError(const std::string& what) : std::runtime_error(what) {}
};

class Barrier {
 public:
  // parties >= 1, else std::invalid_argument.
  explicit Barrier(std::size_t parties);
  Barrier(const Barrier&) = delete;
  Barrier& operator=(const Barrier&) = delete;
  ~Barrier();

  // Parks until `parties` fibers wait; returns this fiber's arrival index.
  std::size_t wait();
  // Breaks the barrier: waiters and later callers get BrokenBarrierError.
  void abort();
  // Back to empty and unbroken; current waiters get BrokenBarrierError.
  void reset();

  bool broken() const noexcept { return broken_; }
  // Fibers parked in wait() now (asyncio's n_waiting).
  std::size_t n_waiting() const noexcept { return waiters_.size(); }
  std::size_t parties() const noexcept { return parties_; }

 private:
  // Readies every waiter, FIFO: with its arrival index when the cycle is
  // complete, or with the broken mark for abort() and reset().
  void release_all(bool broken, const char* call);  // checks the thread first
  void wake_all(bool broken) noexcept;

  std::size_t parties_;
  bool broken_ = false;
  detail::Scheduler* sched_ = nullptr;  // the waiters' scheduler, while there are any
  detail::WaitList waiters_;            // parked fibers in arrival order; value = outcome
};

}  // namespace spindle
