// IoSlot: the per-fd record shared by the scheduler and the poller.
//
// One slot exists per fd the scheduler watches. Slots live in a chunked table
// owned by the scheduler and are never freed while it runs, so a stale kernel
// event that still names a slot can be dereferenced safely; its sequence
// number tells whether it is meant for the fd the slot describes now.
//
// Per direction (read, write) the slot is in one of three states:
//   idle     waiter == nullptr, ready == false
//   waiting  waiter == a parked fiber (at most one; a second is a bug)
//   ready    waiter == nullptr, ready == true: an edge arrived while nobody
//            waited; the next wait returns at once and the caller retries its
//            syscall (which may still say EAGAIN, and then it parks for real).
// The poller never touches waiters; it only reports events.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

namespace spindle::detail {

struct Fiber;

struct IoSlot {
  Fiber* reader = nullptr;
  Fiber* writer = nullptr;
  // Bumped every time the fd is forgotten (closed or reused). The poller
  // stores the low 16 bits beside the slot pointer in the kernel's user data.
  std::uint32_t seq = 0;
  int fd = -1;
  bool read_ready = false;
  bool write_ready = false;
  bool registered = false;
  // Sticky: the poller reported a hangup (peer closed, error) since the fd
  // was registered. Edges are not repeated, so a reader that must wait for
  // one first (see wait_readable_unless_closed) checks this instead.
  bool hangup = false;
};

// What the poller reports for one kernel event. `hangup` covers peer close
// and errors; the scheduler treats it as both directions ready.
struct ReadyEvent {
  IoSlot* slot;
  std::uint32_t seq;  // low 16 bits of slot->seq at registration time
  bool readable;
  bool writable;
  bool hangup;
};

using ReadyList = std::vector<ReadyEvent>;
using Nanos = std::chrono::nanoseconds;

// True when the event was produced for the slot's current registration.
inline bool event_is_current(const ReadyEvent& ev) noexcept {
  return (ev.slot->seq & 0xffffu) == (ev.seq & 0xffffu);
}

}  // namespace spindle::detail
