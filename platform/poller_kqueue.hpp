// The BSD and macOS poller: the one place the scheduler's thread blocks
// there. On Linux it is built only against the test-only emulation in
// tests/kqueue_emu (meson setup -Dpoller=kqueue), which is how CI runs it.
//
// Why kqueue is used the way it is:
//   - EVFILT_READ and EVFILT_WRITE are added once per fd, with EV_CLEAR, in
//     one kevent() call: the edge-triggered equivalent of the epoll backend's
//     single EPOLLET registration. A fiber only parks after its syscall said
//     EAGAIN, so an edge is exactly the news it waits for. kqueue reports
//     the two filters as separate events; the scheduler takes each on its own.
//   - udata carries the slot pointer and 16 bits of its sequence number,
//     packed exactly as the epoll backend packs its 64-bit user data (pointer
//     in the low 48 bits, sequence above), so a late event for a forgotten or
//     reused fd is recognisably stale. kqueue drops an fd's knotes at
//     close(2), unlike epoll, which keeps a file's registration while a dup
//     holds it open; the sequence number covers both.
//   - EVFILT_USER with NOTE_TRIGGER wakes the thread: one kevent() call from
//     any thread, async-signal-safe, and EV_CLEAR resets it on delivery the
//     way reading the epoll backend's eventfd does.
//   - EVFILT_SIGNAL watches signals with their disposition set to SIG_IGN (it
//     counts deliveries even then), EVFILT_PROC/NOTE_EXIT watches children.
//   - Timeouts are struct timespec, nanoseconds, so timers are not rounded.
//
// The contract for every member is in platform/poller.hpp.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "runtime/io_slot.hpp"

// Declared, not included: the scheduler reaches this header through
// platform/poller.hpp, and <sys/event.h> must stay out of runtime/.
struct kevent;

namespace spindle::platform {

class KqueuePoller {
 public:
  KqueuePoller();
  ~KqueuePoller();
  // Not copyable, and deliberately not movable either: other threads hold a
  // reference to call wake().
  KqueuePoller(const KqueuePoller&) = delete;
  KqueuePoller& operator=(const KqueuePoller&) = delete;

  void add(int fd, detail::IoSlot& slot);
  void remove(int fd);

  // Signals and child exits (contract in platform/poller.hpp).
  void add_signal(int signo, detail::IoSlot& slot);
  int take_signal(int signo) noexcept;
  void remove_signal(int signo) noexcept;
  void add_process(pid_t pid, detail::IoSlot& slot);
  void remove_process(pid_t pid) noexcept;

  std::size_t wait(detail::ReadyList& out, std::optional<detail::Nanos> timeout) noexcept;
  void wake() noexcept;

  static constexpr std::string_view name() { return "kqueue"; }
  int native_handle() const noexcept { return kq_; }

 private:
  // Enough to drain a busy server in a few calls; knotes left over are
  // returned first by the next call, so a small buffer starves nobody.
  static constexpr int kMaxEvents = 256;

  struct SignalWatch {
    int signo;
    int count;                  // deliveries summed from event data, not yet taken
    struct sigaction previous;  // the disposition add_signal replaced
  };
  struct ProcessWatch {
    pid_t pid;
    bool pending;  // exited before the knote could attach: reported by wait()
  };
  // An event wait() reports without the kernel: a source that was already
  // ready when it was added (a pending signal, an exited child, a pipe whose
  // other end was gone).
  struct Pending {
    detail::ReadyEvent event;
    int signo;  // 0 unless a signal watch's
    pid_t pid;  // 0 unless a process watch's
  };

  int wait_once(const detail::Nanos* timeout) noexcept;
  void collect_ready() noexcept;
  void report(const struct kevent& ev, detail::ReadyList& out) noexcept;
  void drop_pending(int signo, pid_t pid) noexcept;
  SignalWatch* find_signal(int signo) noexcept;

  int kq_ = -1;
  // Shared with every waking thread; atomic, no lock. True from the first
  // wake() after a delivery of the user event until wait() has seen it
  // again: while it is true, a trigger is already on its way and wake()
  // skips its own.
  std::atomic<bool> wake_pending_{false};
  // Scheduler thread only. kMaxEvents entries, allocated once.
  std::unique_ptr<struct kevent[]> events_;
  // Scheduler thread only. A handful of entries at most, so flat lists.
  std::vector<SignalWatch> signals_;
  std::vector<ProcessWatch> processes_;
  std::vector<Pending> pending_;
  // Scheduler thread only: collect_ready() consumed a wake, so the next
  // wait() must not block.
  bool woken_ = false;
};

}  // namespace spindle::platform
