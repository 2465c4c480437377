// The Linux poller: the one place the scheduler's thread blocks on Linux.
//
// Why epoll is used the way it is:
//   - Edge-triggered, read and write at once, registered once per fd. A fiber
//     only parks after its syscall said EAGAIN, so an edge is exactly the
//     news it waits for; one registration for the fd's lifetime means no
//     epoll_ctl per park, and level-triggered reports would repeat for every
//     fd nobody is waiting on.
//   - The kernel's 64-bit user data carries the slot pointer and 16 bits of
//     its sequence number, so an event needs no lookup table and an event for
//     a forgotten or reused fd number is recognisably stale (IoSlot::seq).
//     epoll keys registrations by open file, not by fd number: a file still
//     open through a dup keeps reporting after close(fd), which is one more
//     reason the sequence number, not the fd, decides whom an event is for.
//   - epoll_pwait2 because timers are kept in nanoseconds and a millisecond
//     timeout would have to round up, firing timers late by up to 1 ms.
//   - An eventfd wakes the thread because it is a single counter that any
//     thread, or a signal handler, can bump with one write(2).
//
// The contract for every member is in platform/poller.hpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <sys/types.h>

#include "runtime/io_slot.hpp"

// Declared, not included: the scheduler reaches this header through
// platform/poller.hpp, and <sys/epoll.h> must stay out of runtime/.
struct epoll_event;

namespace spindle::platform {

class EpollPoller {
 public:
  EpollPoller();
  ~EpollPoller();
  // Not copyable, and deliberately not movable either: other threads hold a
  // reference to call wake().
  EpollPoller(const EpollPoller&) = delete;
  EpollPoller& operator=(const EpollPoller&) = delete;

  void add(int fd, detail::IoSlot& slot);
  void remove(int fd);

  // Signals and child exits (contract in platform/poller.hpp). Each watch
  // owns one fd registered like a user fd: a signalfd per signal, a pidfd
  // per child.
  void add_signal(int signo, detail::IoSlot& slot);
  int take_signal(int signo) noexcept;
  void remove_signal(int signo) noexcept;
  void add_process(pid_t pid, detail::IoSlot& slot);
  void remove_process(pid_t pid) noexcept;
  std::size_t wait(detail::ReadyList& out,
                   std::optional<detail::Nanos> timeout) noexcept;
  void wake() noexcept;

  static constexpr std::string_view name() { return "epoll"; }
  int native_handle() const noexcept { return epfd_; }

 private:
  // Enough to drain a busy server in a few calls; epoll hands out the rest
  // on the next wait, round-robin, so a small buffer starves nobody.
  static constexpr int kMaxEvents = 256;

  int wait_once(const detail::Nanos* timeout) noexcept;
  void drain_wake() noexcept;

  struct SignalWatch {
    int signo;
    int fd;            // the signalfd
    bool was_blocked;  // in this thread's mask before add_signal
  };

  int epfd_ = -1;
  int wake_fd_ = -1;
  // Scheduler thread only. A handful of entries at most, so a flat list.
  std::vector<SignalWatch> signals_;
  std::unordered_map<pid_t, int> processes_;  // pid -> pidfd
  // Shared with every waking thread; atomic, no lock. True from the first
  // wake() after a drain until wait() has drained the eventfd again: while it
  // is true, an eventfd write is already on its way and wake() skips its own.
  std::atomic<bool> wake_pending_{false};
  // Scheduler thread only; kMaxEvents entries, allocated once.
  std::unique_ptr<epoll_event[]> events_;
};

}  // namespace spindle::platform
