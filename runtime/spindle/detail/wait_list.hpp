// WaitList: an intrusive FIFO of parked fibers.
//
// Every primitive that parks fibers keeps one: the waiting fiber puts a
// WaitNode that lives on its own stack into the list, parks, and on waking
// takes it out again if nobody else did. A node is "linked" while it is in a
// list; whoever readies a fiber for a normal wake-up unlinks its node first,
// so a woken fiber can tell a hand-off (node unlinked) from a timeout or a
// cancellation (node still linked) and pass on what it was handed.
#pragma once

#include <cstdint>

namespace spindle::detail {

struct Fiber;
class Scheduler;

struct WaitNode {
  Fiber* fiber = nullptr;
  // For waits that another OS thread may end: the waiter's scheduler and its
  // park sequence, so a cross-thread wake can be routed and checked.
  Scheduler* sched = nullptr;
  std::uint32_t seq = 0;
  // Free for the primitive: e.g. how many permits or which item was handed.
  std::uintptr_t value = 0;
  WaitNode* prev = nullptr;
  WaitNode* next = nullptr;
  bool linked = false;
};

class WaitList {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  WaitNode* front() const noexcept { return head_; }
  std::size_t size() const noexcept { return size_; }

  void push_back(WaitNode& n) noexcept {
    n.prev = tail_;
    n.next = nullptr;
    if (tail_)
      tail_->next = &n;
    else
      head_ = &n;
    tail_ = &n;
    n.linked = true;
    ++size_;
  }

  void remove(WaitNode& n) noexcept {
    if (!n.linked) return;
    if (n.prev)
      n.prev->next = n.next;
    else
      head_ = n.next;
    if (n.next)
      n.next->prev = n.prev;
    else
      tail_ = n.prev;
    n.prev = n.next = nullptr;
    n.linked = false;
    --size_;
  }

  WaitNode* pop_front() noexcept {
    WaitNode* n = head_;
    if (n) remove(*n);
    return n;
  }

 private:
  WaitNode* head_ = nullptr;
  WaitNode* tail_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace spindle::detail
