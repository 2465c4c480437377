#include "runtime/timer.hpp"

#include <spindle/detail/assert.hpp>

namespace spindle::detail {

namespace {
constexpr std::size_t kArity = 4;
}

void TimerHeap::add(Fiber* f, std::int64_t deadline_ns) {
  SPINDLE_ASSERT(f->timer_index == kNotInHeap, "a fiber armed a second timer");
  heap_.push_back({});
  sift_up(heap_.size() - 1, Entry{deadline_ns, seq_++, f});
}

void TimerHeap::remove(Fiber* f) noexcept {
  SPINDLE_ASSERT(f->timer_index < heap_.size() && heap_[f->timer_index].fiber == f,
                 "timer index does not match the heap");
  remove_at(f->timer_index);
}

void TimerHeap::remove_at(std::size_t i) noexcept {
  heap_[i].fiber->timer_index = kNotInHeap;
  Entry last = heap_.back();
  heap_.pop_back();
  if (i == heap_.size()) return;
  // The moved entry may belong above or below the hole.
  if (i > 0 && before(last, heap_[(i - 1) / kArity]))
    sift_up(i, last);
  else
    sift_down(i, last);
}

void TimerHeap::sift_up(std::size_t i, Entry e) noexcept {
  while (i > 0) {
    std::size_t parent = (i - 1) / kArity;
    if (!before(e, heap_[parent])) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, e);
}

void TimerHeap::sift_down(std::size_t i, Entry e) noexcept {
  const std::size_t n = heap_.size();
  for (;;) {
    std::size_t first = i * kArity + 1;
    if (first >= n) break;
    std::size_t best = first;
    std::size_t end = first + kArity < n ? first + kArity : n;
    for (std::size_t c = first + 1; c < end; ++c)
      if (before(heap_[c], heap_[best])) best = c;
    if (!before(heap_[best], e)) break;
    place(i, heap_[best]);
    i = best;
  }
  place(i, e);
}

}  // namespace spindle::detail
