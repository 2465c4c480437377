// How the pieces of KqueuePoller fit; the reasons for the design are in the
// header. This file is meant to build unchanged on FreeBSD and macOS: only
// POSIX and <sys/event.h>, nothing Linux-only (on Linux, <sys/event.h> is the
// emulation in tests/kqueue_emu).
//
// The wake protocol, and why no wake is lost (the epoll backend's, with the
// EVFILT_USER knote in the role of the eventfd):
//   wake():  if wake_pending_.exchange(true) was false, NOTE_TRIGGER the knote.
//   wait():  when the user event is returned (EV_CLEAR has reset the trigger
//            by then), THEN wake_pending_.exchange(false).
// While wake_pending_ is true, either the knote is triggered or the
// scheduler's thread has collected it and is about to return from wait(). A
// wake() before wait() starts leaves the knote triggered, so that wait
// returns at once; a wake() racing with the collection either precedes the
// clearing exchange (that wait() is returning anyway, and the acq_rel
// exchange makes what the waker published visible) or follows it, sees false
// and triggers again, which ends the next wait().
//
// kqueue behaviours the backend absorbs so that the scheduler sees what the
// epoll backend gives it:
//   - Read and write readiness of one fd come as two events.
//   - EV_EOF (peer closed or reset; fflags holds the socket error) and
//     EV_ERROR become `hangup`, which readies both directions like epoll's
//     EPOLLHUP/EPOLLERR: the fiber's retried syscall meets the real error.
//   - EV_ADD of a regular file or directory succeeds on kqueue (its vnode
//     filters report them always ready) but fails on epoll with EPERM; it is
//     refused here with EPERM too.
//   - FreeBSD refuses EVFILT_WRITE with EPIPE on a pipe whose other end is
//     closed; the fd is still watched (EVFILT_READ reports its EOF) and a
//     hangup is reported at the next wait, as epoll would report EPOLLERR.
//   - Re-adding an fd modifies the knotes instead of failing with EEXIST.
//   - EVFILT_SIGNAL counts only deliveries made after the knote exists: a
//     delivery already pending (the signal blocked) is found with
//     sigpending() and reported like one, as the epoll backend's signalfd
//     would read it. Conversely, a watched signal is ignored by the kernel,
//     so deliveries nobody took when the watch ends are raised again once
//     the old disposition is back, where epoll would leave them pending.
//   - EVFILT_PROC on a zombie: FreeBSD fires at once, macOS may fail with
//     ESRCH. An unreaped child is reported at the next wait either way.
#include "platform/poller_kqueue.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <signal.h>
#include <sys/event.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <ctime>
#include <spindle/detail/assert.hpp>
#include <string>
#include <system_error>
#include <utility>

#include "platform/syscall.hpp"

namespace spindle::platform {
namespace {

using detail::IoSlot;
using detail::Nanos;
using detail::ReadyEvent;

// udata is a pointer: the packing below needs 64 bits of it. 32-bit BSDs
// would need a side table instead.
static_assert(sizeof(void*) == sizeof(std::uint64_t), "udata packs a 48-bit pointer and a 16-bit sequence");

// As in the epoll backend: user-space pointers fit in 48 bits on amd64 and
// arm64 (FreeBSD and macOS alike); the top 16 bits carry the sequence.
constexpr std::uint64_t kPointerBits = 48;
constexpr std::uint64_t kPointerMask = (std::uint64_t{1} << kPointerBits) - 1;
constexpr std::uint32_t kSeqMask = 0xffffu;

// EVFILT_USER identifiers are ours to choose; the wake knote is the only one.
constexpr std::uintptr_t kWakeIdent = 0;

// Longer timeouts are waited out in slices of this: every kernel converts a
// day without overflow, and the loop in wait() waits for the rest.
constexpr Nanos kMaxSlice = std::chrono::hours(24);

void* pack(IoSlot* slot, std::uint32_t seq) noexcept {
  const auto bits = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(slot));
  SPINDLE_ASSERT((bits & ~kPointerMask) == 0, fmt::format("IoSlot at {} does not fit in {} bits",
                                                          static_cast<const void*>(slot), kPointerBits));
  return reinterpret_cast<void*>(
      static_cast<std::uintptr_t>(bits | (std::uint64_t{seq & kSeqMask} << kPointerBits)));
}

IoSlot* unpack_slot(void* udata) noexcept {
  const auto bits = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(udata));
  return reinterpret_cast<IoSlot*>(static_cast<std::uintptr_t>(bits & kPointerMask));
}

std::uint32_t unpack_seq(void* udata) noexcept {
  return static_cast<std::uint32_t>(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(udata)) >>
                                    kPointerBits);
}

Nanos monotonic_now() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::chrono::seconds(ts.tv_sec) + Nanos(ts.tv_nsec);
}

// now + timeout without overflow: a timeout of Nanos::max() means "a very
// long time", not a deadline in the past.
Nanos deadline_after(Nanos timeout) noexcept {
  const Nanos now = monotonic_now();
  return timeout > Nanos::max() - now ? Nanos::max() : now + timeout;
}

std::string errno_text(int err) { return std::system_category().message(err); }

// Two changes for one fd with EV_RECEIPT: every change is applied and comes
// back with its own errno in data (0 = done). Without EV_RECEIPT kevent()
// stops at the first failing change, and the second would silently not be
// applied. Returns {read errno, write errno}, or throws naming `call`.
struct Receipts {
  int read_err = 0;
  int write_err = 0;
};

Receipts apply_pair(int kq, int fd, unsigned short action, void* udata, const char* call) {
  // Every argument of EV_SET has its field's exact type: FreeBSD's EV_SET is
  // a compound literal, where C++ rejects narrowing conversions.
  const auto ident = static_cast<std::uintptr_t>(fd);
  const auto flags = static_cast<unsigned short>(action | EV_RECEIPT);
  struct kevent changes[2];
  struct kevent results[2];
  EV_SET(&changes[0], ident, EVFILT_READ, flags, 0, 0, udata);
  EV_SET(&changes[1], ident, EVFILT_WRITE, flags, 0, 0, udata);
  const int n = retry_eintr([&] { return ::kevent(kq, changes, 2, results, 2, nullptr); });
  if (n < 0) throw_system_error(errno, fmt::format("kevent({}, fd={})", call, fd));
  SPINDLE_ASSERT(n == 2, fmt::format("kevent({}, fd={}) returned {} receipts for 2 changes", call, fd, n));
  Receipts r;
  for (const struct kevent& ev : results) {
    SPINDLE_ASSERT((ev.flags & EV_ERROR) != 0,
                   fmt::format("kevent({}, fd={}): a receipt without EV_ERROR", call, fd));
    (ev.filter == EVFILT_READ ? r.read_err : r.write_err) = static_cast<int>(ev.data);
  }
  return r;
}

// waitid(WNOWAIT) tells without reaping whether pid is our child and has
// exited.
bool is_exited_child(pid_t pid) noexcept {
  siginfo_t info{};
  const int r = retry_eintr(
      [&] { return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT); });
  return r == 0 && info.si_pid == pid;
}

}  // namespace

KqueuePoller::KqueuePoller() : events_(std::make_unique<struct kevent[]>(kMaxEvents)) {
  kq_ = ::kqueue();
  if (kq_ < 0) throw_system_error(errno, "kqueue()");
  // kqueue() has no close-on-exec flag (FreeBSD 14's kqueuex() does). A
  // kqueue is not inherited across fork(2), but a vfork-based posix_spawn
  // child exec's with this process's descriptor table.
  if (::fcntl(kq_, F_SETFD, FD_CLOEXEC) < 0) {
    const int err = errno;
    ::close(kq_);
    throw_system_error(err, fmt::format("fcntl(kq={}, F_SETFD, FD_CLOEXEC)", kq_));
  }
  struct kevent ev;
  EV_SET(&ev, kWakeIdent, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, nullptr);
  if (retry_eintr([&] { return ::kevent(kq_, &ev, 1, nullptr, 0, nullptr); }) < 0) {
    const int err = errno;
    ::close(kq_);
    throw_system_error(err, fmt::format("kevent(EVFILT_USER, EV_ADD, kq={})", kq_));
  }
}

KqueuePoller::~KqueuePoller() {
  // Dispositions that watches still open replaced are restored here, even if
  // their owners never removed them. Every knote ends with the descriptor.
  while (!signals_.empty()) remove_signal(signals_.back().signo);
  ::close(kq_);
}

void KqueuePoller::add(int fd, detail::IoSlot& slot) {
  struct stat st {};
  if (::fstat(fd, &st) < 0) throw_system_error(errno, fmt::format("kevent(EV_ADD, fd={})", fd));
  // A fiber waiting on a file that is always ready would never park; epoll
  // refuses such fds with EPERM, and so does this backend, so that a program
  // behaves the same everywhere.
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
    throw_system_error(
        EPERM, fmt::format("kevent(EV_ADD, fd={}): regular files and directories are always ready", fd));
  }
  Receipts r = apply_pair(kq_, fd, EV_ADD | EV_CLEAR, pack(&slot, slot.seq), "EV_ADD");
  bool hangup_now = false;
  if (r.write_err == EPIPE && r.read_err == 0) {
    // FreeBSD's pipe_kqfilter: the other end of the pipe is already closed.
    r.write_err = 0;
    hangup_now = true;
  }
  if (r.read_err != 0 || r.write_err != 0) {
    // All or nothing: a half-registered fd would report one direction only.
    if (r.read_err == 0 || r.write_err == 0) {
      struct kevent undo;
      const auto filter = static_cast<short>(r.read_err == 0 ? EVFILT_READ : EVFILT_WRITE);
      EV_SET(&undo, static_cast<std::uintptr_t>(fd), filter, EV_DELETE, 0, 0, nullptr);
      retry_eintr([&] { return ::kevent(kq_, &undo, 1, nullptr, 0, nullptr); });
    }
    throw_system_error(r.read_err != 0 ? r.read_err : r.write_err, fmt::format("kevent(EV_ADD, fd={})", fd));
  }
  if (hangup_now) {
    pending_.push_back(Pending{.event = ReadyEvent{.slot = &slot,
                                                   .seq = slot.seq & kSeqMask,
                                                   .readable = true,
                                                   .writable = true,
                                                   .hangup = true},
                               .signo = 0,
                               .pid = 0});
  }
  slot.fd = fd;
  slot.registered = true;
}

void KqueuePoller::remove(int fd) {
  const Receipts r = apply_pair(kq_, fd, EV_DELETE, nullptr, "EV_DELETE");
  // EBADF: already closed (which dropped the knotes). ENOENT: never added,
  // or added without its write filter (see add()).
  for (const int err : {r.read_err, r.write_err}) {
    if (err != 0 && err != EBADF && err != ENOENT)
      throw_system_error(err, fmt::format("kevent(EV_DELETE, fd={})", fd));
  }
}

// ------------------------------------------------------------ signals
//
// EVFILT_SIGNAL records a delivery even when the signal is ignored, and
// "coexists with signal() and sigaction(), and has a lower precedence"
// (kqueue(2)): the handler or default action still runs. So the watch sets
// SIG_IGN, and remove_signal puts back what it found.

KqueuePoller::SignalWatch* KqueuePoller::find_signal(int signo) noexcept {
  auto it =
      std::find_if(signals_.begin(), signals_.end(), [&](const SignalWatch& w) { return w.signo == signo; });
  return it == signals_.end() ? nullptr : &*it;
}

void KqueuePoller::add_signal(int signo, detail::IoSlot& slot) {
  if (find_signal(signo) != nullptr) {
    throw_system_error(EEXIST, fmt::format("add_signal(signal={}): already watched", signo));
  }
  // The knote first, then the disposition: a delivery in between is counted
  // (and, if the signal is not blocked, still takes its old action, as one
  // just before add_signal would have). The other order would lose it.
  struct kevent ev;
  EV_SET(&ev, static_cast<std::uintptr_t>(signo), EVFILT_SIGNAL, EV_ADD | EV_CLEAR, 0, 0,
         pack(&slot, slot.seq));
  if (retry_eintr([&] { return ::kevent(kq_, &ev, 1, nullptr, 0, nullptr); }) < 0) {
    throw_system_error(errno, fmt::format("kevent(EVFILT_SIGNAL, EV_ADD, signal={})", signo));
  }
  // A delivery already pending (blocked) was made before the knote existed,
  // so the filter will never count it; SIG_IGN below discards it (POSIX).
  sigset_t pending;
  sigemptyset(&pending);
  const bool was_pending = ::sigpending(&pending) == 0 && sigismember(&pending, signo) == 1;
  // SIGCHLD gets SIG_DFL, which ignores it as well: SIG_IGN would make the
  // kernel reap children itself (breaking waitpid) and FreeBSD's filter does
  // not record an ignored SIGCHLD.
  struct sigaction quiet {};
  quiet.sa_handler = signo == SIGCHLD ? SIG_DFL : SIG_IGN;
  sigemptyset(&quiet.sa_mask);
  struct sigaction previous {};
  if (::sigaction(signo, &quiet, &previous) < 0) {
    const int err = errno;
    EV_SET(&ev, static_cast<std::uintptr_t>(signo), EVFILT_SIGNAL, EV_DELETE, 0, 0, nullptr);
    retry_eintr([&] { return ::kevent(kq_, &ev, 1, nullptr, 0, nullptr); });
    throw_system_error(err, fmt::format("sigaction(signal={}, SIG_IGN)", signo));
  }
  signals_.push_back(SignalWatch{.signo = signo, .count = was_pending ? 1 : 0, .previous = previous});
  if (was_pending) {
    pending_.push_back(Pending{.event = ReadyEvent{.slot = &slot,
                                                   .seq = slot.seq & kSeqMask,
                                                   .readable = true,
                                                   .writable = false,
                                                   .hangup = false},
                               .signo = signo,
                               .pid = 0});
  }
}

int KqueuePoller::take_signal(int signo) noexcept {
  if (find_signal(signo) == nullptr) return 0;
  // Deliveries since the last wait() are still in the knote: collect them,
  // so that a delivery is seen as soon as it happened, as the epoll
  // backend's read of its signalfd sees it.
  collect_ready();
  return std::exchange(find_signal(signo)->count, 0);
}

void KqueuePoller::remove_signal(int signo) noexcept {
  if (find_signal(signo) == nullptr) return;
  // The knote's count of deliveries since the last wait() would go with it.
  collect_ready();
  auto it =
      std::find_if(signals_.begin(), signals_.end(), [&](const SignalWatch& w) { return w.signo == signo; });
  const SignalWatch w = *it;
  signals_.erase(it);
  drop_pending(signo, 0);
  // The knote goes while SIG_IGN is still in place, so a delivery in between
  // is ignored rather than acted on. ENOENT cannot happen, and nothing else
  // could be done about a failure here.
  struct kevent ev;
  EV_SET(&ev, static_cast<std::uintptr_t>(signo), EVFILT_SIGNAL, EV_DELETE, 0, 0, nullptr);
  retry_eintr([&] { return ::kevent(kq_, &ev, 1, nullptr, 0, nullptr); });
  ::sigaction(signo, &w.previous, nullptr);
  if (w.count == 0) return;
  // Deliveries nobody took. The epoll backend leaves them pending in the
  // kernel, where they take the signal's normal action once the watch ends
  // (or stay pending while the program blocks the signal); here the kernel
  // saw them ignored. So they are raised again, at this thread, now that the
  // old disposition is back. A standard signal is pending at most once;
  // real-time signals queue one per delivery.
  int copies = 1;
#if defined(SIGRTMIN) && defined(SIGRTMAX)
  if (signo >= SIGRTMIN && signo <= SIGRTMAX) copies = w.count;
#endif
  for (int i = 0; i < copies; ++i) ::raise(signo);
}

// ------------------------------------------------------- child processes
//
// NOTE_EXIT fires once (the knote is EV_ONESHOT from then on) and does not
// reap; the caller reaps with waitpid after the event.

void KqueuePoller::add_process(pid_t pid, detail::IoSlot& slot) {
  const auto watched = [&](const ProcessWatch& w) { return w.pid == pid; };
  if (std::any_of(processes_.begin(), processes_.end(), watched)) {
    throw_system_error(EEXIST, fmt::format("add_process(pid={}): already watched", pid));
  }
  struct kevent ev;
  EV_SET(&ev, static_cast<std::uintptr_t>(pid), EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, pack(&slot, slot.seq));
  if (retry_eintr([&] { return ::kevent(kq_, &ev, 1, nullptr, 0, nullptr); }) == 0) {
    processes_.push_back(ProcessWatch{.pid = pid, .pending = false});
    return;
  }
  const int err = errno;
  // A zombie has exited but is still there to be reaped: FreeBSD attaches
  // and fires at once, macOS may answer ESRCH. Either way it is ready.
  if (err != ESRCH || !is_exited_child(pid)) {
    throw_system_error(err, fmt::format("kevent(EVFILT_PROC, EV_ADD, pid={})", pid));
  }
  processes_.push_back(ProcessWatch{.pid = pid, .pending = true});
  pending_.push_back(Pending{.event = ReadyEvent{.slot = &slot,
                                                 .seq = slot.seq & kSeqMask,
                                                 .readable = true,
                                                 .writable = false,
                                                 .hangup = false},
                             .signo = 0,
                             .pid = pid});
}

void KqueuePoller::remove_process(pid_t pid) noexcept {
  auto it =
      std::find_if(processes_.begin(), processes_.end(), [&](const ProcessWatch& w) { return w.pid == pid; });
  if (it == processes_.end()) return;
  const bool attached = !it->pending;
  processes_.erase(it);
  drop_pending(0, pid);
  if (!attached) return;
  // ENOENT when the exit was already returned (the knote was one-shot).
  struct kevent ev;
  EV_SET(&ev, static_cast<std::uintptr_t>(pid), EVFILT_PROC, EV_DELETE, 0, 0, nullptr);
  retry_eintr([&] { return ::kevent(kq_, &ev, 1, nullptr, 0, nullptr); });
}

void KqueuePoller::drop_pending(int signo, pid_t pid) noexcept {
  std::erase_if(pending_, [&](const Pending& p) {
    return (signo != 0 && p.signo == signo) || (pid != 0 && p.pid == pid);
  });
}

// --------------------------------------------------------------- waiting

std::size_t KqueuePoller::wait(detail::ReadyList& out, std::optional<Nanos> timeout) noexcept {
  out.clear();
  // Allocates once per list; a full buffer then never reallocates mid-copy.
  out.reserve(kMaxEvents + pending_.size());
  // Sources that were ready when they were added make this wait a poll.
  for (const Pending& p : pending_) out.push_back(p.event);
  pending_.clear();
  if (!out.empty() || woken_) timeout = Nanos::zero();
  woken_ = false;

  const bool forever = !timeout.has_value();
  Nanos remaining = forever ? Nanos::zero() : std::max(*timeout, Nanos::zero());
  const Nanos deadline = remaining > Nanos::zero() ? deadline_after(remaining) : Nanos::zero();

  int n = 0;
  for (;;) {
    n = wait_once(forever ? nullptr : &remaining);
    if (n > 0) break;
    if (n < 0) {
      const int err = errno;
      SPINDLE_ASSERT(err == EINTR, fmt::format("kevent(kq={}): {}", kq_, errno_text(err)));
    } else if (!forever && remaining == Nanos::zero()) {
      break;  // A poll that found nothing.
    }
    // Interrupted by a signal (kevent is never restarted), or a slice of a
    // long timeout ended, or the kernel's timer fired a little early: wait
    // out the rest. A signal after the deadline still gets one last poll.
    if (forever) continue;
    const Nanos now = monotonic_now();
    if (n == 0 && now >= deadline) break;
    remaining = now >= deadline ? Nanos::zero() : deadline - now;
  }
  for (int i = 0; i < n; ++i) report(events_[static_cast<std::size_t>(i)], out);
  return out.size();
}

// Moves what the kernel has ready now into pending_ (and signal counts into
// their watches), so that the next wait() reports it: for take_signal, which
// must see deliveries made since the last wait(), and remove_signal, which
// must not lose the last count of a knote it deletes.
void KqueuePoller::collect_ready() noexcept {
  detail::ReadyList got;
  for (;;) {
    const timespec zero{};
    const int n = retry_eintr([&] { return ::kevent(kq_, nullptr, 0, events_.get(), kMaxEvents, &zero); });
    SPINDLE_ASSERT(n >= 0, fmt::format("kevent(kq={}): {}", kq_, errno_text(errno)));
    for (int i = 0; i < n; ++i) {
      const struct kevent& ev = events_[static_cast<std::size_t>(i)];
      if (ev.filter == EVFILT_USER) {
        wake_pending_.exchange(false, std::memory_order_acq_rel);
        woken_ = true;
        continue;
      }
      got.clear();
      report(ev, got);
      for (const ReadyEvent& e : got) {
        pending_.push_back(Pending{.event = e,
                                   .signo = ev.filter == EVFILT_SIGNAL ? static_cast<int>(ev.ident) : 0,
                                   .pid = ev.filter == EVFILT_PROC ? static_cast<pid_t>(ev.ident) : 0});
      }
    }
    if (n < kMaxEvents) return;
  }
}

int KqueuePoller::wait_once(const Nanos* timeout) noexcept {
  timespec ts{};
  if (timeout != nullptr) {
    const Nanos slice = std::min(*timeout, kMaxSlice);
    ts.tv_sec = static_cast<time_t>(slice.count() / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(slice.count() % 1'000'000'000);
  }
  return ::kevent(kq_, nullptr, 0, events_.get(), kMaxEvents, timeout != nullptr ? &ts : nullptr);
}

void KqueuePoller::report(const struct kevent& ev, detail::ReadyList& out) noexcept {
  if (ev.filter == EVFILT_USER) {
    // Only after the collection, and as an exchange: see the protocol above.
    wake_pending_.exchange(false, std::memory_order_acq_rel);
    return;
  }
  IoSlot* slot = unpack_slot(ev.udata);
  if (slot == nullptr) return;  // Not ours: every knote added here names a slot.
  const std::uint32_t seq = unpack_seq(ev.udata);
  if (ev.filter == EVFILT_SIGNAL || ev.filter == EVFILT_PROC) {
    if (ev.filter == EVFILT_SIGNAL) {
      if (SignalWatch* w = find_signal(static_cast<int>(ev.ident))) {
        const std::int64_t sum = std::int64_t{w->count} + std::max<std::int64_t>(ev.data, 1);
        w->count = static_cast<int>(std::min<std::int64_t>(sum, INT_MAX));
      }
    }
    out.push_back(ReadyEvent{.slot = slot, .seq = seq, .readable = true, .writable = false, .hangup = false});
    return;
  }
  // EV_EOF: the peer closed or reset (fflags holds the socket error). EV_ERROR:
  // the kernel could not watch the fd (it is only ever returned for changes,
  // and wait() makes none, but it would mean this fd is unusable). Both ready
  // both directions, as epoll's EPOLLHUP/EPOLLERR do.
  const bool hangup = (ev.flags & (EV_EOF | EV_ERROR)) != 0;
  out.push_back(ReadyEvent{.slot = slot,
                           .seq = seq,
                           .readable = hangup || ev.filter == EVFILT_READ,
                           .writable = hangup || ev.filter == EVFILT_WRITE,
                           .hangup = hangup});
}

void KqueuePoller::wake() noexcept {
  if (wake_pending_.exchange(true, std::memory_order_acq_rel)) return;
  // A signal handler may call this: leave errno as the interrupted code had
  // it.
  const int saved_errno = errno;
  struct kevent ev;
  EV_SET(&ev, kWakeIdent, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
  const int r = retry_eintr([&] { return ::kevent(kq_, &ev, 1, nullptr, 0, nullptr); });
  // Anything but success (EBADF: a wake after the poller died) is a bug, and
  // would silently disable every later wake.
  SPINDLE_ASSERT(r == 0, fmt::format("kevent(kq={}, EVFILT_USER, NOTE_TRIGGER): {}", kq_, errno_text(errno)));
  errno = saved_errno;
}

}  // namespace spindle::platform
