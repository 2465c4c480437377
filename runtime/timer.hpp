// TimerHeap: the scheduler's pending deadlines.
//
// A 4-ary min-heap of (deadline, seq, fiber) ordered by deadline, then by
// insertion order, so timers due at the same instant fire FIFO. Each fiber
// holds at most one timer and knows its slot (Fiber::timer_index), which
// makes cancel O(log n) without searching. Bookkeeping: 24 bytes of heap
// entry per pending timer plus 4 bytes in the fiber.
#pragma once

#include <cstdint>
#include <vector>

#include <spindle/detail/fiber.hpp>

namespace spindle::detail {

class TimerHeap {
 public:
  void add(Fiber* f, std::int64_t deadline_ns);
  void remove(Fiber* f) noexcept;
  bool empty() const noexcept { return heap_.empty(); }
  std::size_t size() const noexcept { return heap_.size(); }
  std::int64_t next_deadline() const noexcept { return heap_.empty() ? kNoDeadline : heap_.front().deadline; }

  // Removes every timer due at `now_ns` in order and hands its fiber to
  // on_due. on_due may add or remove other timers.
  template <class OnDue>
  void expire(std::int64_t now_ns, OnDue&& on_due) {
    while (!heap_.empty() && heap_.front().deadline <= now_ns) {
      Fiber* f = heap_.front().fiber;
      remove_at(0);
      on_due(f);
    }
  }

 private:
  struct Entry {
    std::int64_t deadline;
    std::uint64_t seq;
    Fiber* fiber;
  };
  static bool before(const Entry& a, const Entry& b) noexcept {
    return a.deadline < b.deadline || (a.deadline == b.deadline && a.seq < b.seq);
  }
  void place(std::size_t i, const Entry& e) noexcept {
    heap_[i] = e;
    e.fiber->timer_index = static_cast<std::uint32_t>(i);
  }
  void sift_up(std::size_t i, Entry e) noexcept;
  void sift_down(std::size_t i, Entry e) noexcept;
  void remove_at(std::size_t i) noexcept;

  std::vector<Entry> heap_;
  std::uint64_t seq_ = 0;
};

}  // namespace spindle::detail
