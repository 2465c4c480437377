// How the pieces of EpollPoller fit; the reasons for the design are in the
// header.
//
// The wake protocol, and why no wake is lost:
//   wake():  if wake_pending_.exchange(true) was false, write 1 to the eventfd.
//   wait():  when the eventfd is reported, read it to zero, THEN
//            wake_pending_.exchange(false).
// Invariant: while wake_pending_ is true, either the eventfd counter is
// non-zero or the scheduler's thread is between that read and that exchange,
// that is, already awake and about to return from wait(). So
//   - a wake() before wait() starts left the counter non-zero, and the
//     level-triggered eventfd is reported at once;
//   - a wake() that races with the drain either precedes the clearing
//     exchange, and that wait() is returning anyway (the acq_rel exchange
//     reads its value, so whatever the waker published before waking is
//     visible after wait() returns), or follows it, sees false and writes
//     again, which ends the next wait().
// Clearing first and reading second would lose a wake written in between:
// the read would swallow its count while leaving the flag set, and every
// later wake() would skip its write.
#include "platform/poller_epoll.hpp"

#include <fmt/core.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <ctime>
#include <spindle/detail/assert.hpp>
#include <string>
#include <system_error>

#include "platform/syscall.hpp"

namespace spindle::platform {
namespace {

using detail::IoSlot;
using detail::Nanos;
using detail::ReadyEvent;

// User-space pointers fit in 48 bits on x86-64 and on AArch64 with the usual
// 48-bit address space; the top 16 bits of the user data carry the sequence.
constexpr std::uint64_t kPointerBits = 48;
constexpr std::uint64_t kPointerMask = (std::uint64_t{1} << kPointerBits) - 1;
constexpr std::uint32_t kSeqMask = 0xffffu;
// A slot pointer is never null, so zero user data marks the wake eventfd.
constexpr std::uint64_t kWakeToken = 0;

// Whether a syscall exists is a property of the process (kernel, seccomp
// profile, valgrind), not of one poller, so the first poller to meet ENOSYS
// settles it for all; relaxed, because a stale true costs one more ENOSYS.
std::atomic<bool> have_pwait2{true};

// Likewise for pidfd_open (Linux 5.3; valgrind 3.19 does not know it): once
// it said ENOSYS, add_process fails at once and callers use their fallback.
std::atomic<bool> have_pidfd{true};

static_assert(std::atomic<bool>::is_always_lock_free,
              "wake() must be async-signal-safe");

std::uint64_t pack(IoSlot* slot, std::uint32_t seq) noexcept {
  const auto bits =
      static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(slot));
  SPINDLE_ASSERT((bits & ~kPointerMask) == 0,
                 fmt::format("IoSlot at {} does not fit in {} bits",
                             static_cast<const void*>(slot), kPointerBits));
  return bits | (std::uint64_t{seq & kSeqMask} << kPointerBits);
}

IoSlot* unpack_slot(std::uint64_t data) noexcept {
  return reinterpret_cast<IoSlot*>(
      static_cast<std::uintptr_t>(data & kPointerMask));
}

std::uint32_t unpack_seq(std::uint64_t data) noexcept {
  return static_cast<std::uint32_t>(data >> kPointerBits);
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

// epoll_wait counts milliseconds; rounding down would return before the
// deadline, so round up, and clamp to what an int holds (the caller waits
// again if that clamp cut the wait short).
int ceil_millis(Nanos timeout) noexcept {
  const auto ns = timeout.count();
  const auto ms = ns / 1'000'000 + (ns % 1'000'000 != 0 ? 1 : 0);
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

std::string errno_text(int err) { return std::system_category().message(err); }

}  // namespace

EpollPoller::EpollPoller()
    : events_(std::make_unique<epoll_event[]>(kMaxEvents)) {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw_system_error(errno, "epoll_create1(EPOLL_CLOEXEC)");

  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    const int err = errno;
    ::close(epfd_);
    throw_system_error(err, "eventfd(EFD_NONBLOCK|EFD_CLOEXEC)");
  }

  // Level-triggered, unlike user fds: a counter left non-zero for any reason
  // keeps being reported, so a wake can never sit unseen in the eventfd.
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeToken;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, wake_fd_, &ev) < 0) {
    const int err = errno;
    ::close(wake_fd_);
    ::close(epfd_);
    throw_system_error(err, fmt::format("epoll_ctl(ADD, fd={})", wake_fd_));
  }
}

EpollPoller::~EpollPoller() {
  // Watches still open end here, so the thread's signal mask is restored
  // even if their owners never removed them.
  while (!signals_.empty()) remove_signal(signals_.back().signo);
  for (const auto& [pid, fd] : processes_) ::close(fd);
  // Not retried on EINTR: on Linux the descriptor is gone either way.
  ::close(wake_fd_);
  ::close(epfd_);
}

void EpollPoller::add(int fd, detail::IoSlot& slot) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = pack(&slot, slot.seq);
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) < 0) {
    throw_system_error(errno, fmt::format("epoll_ctl(ADD, fd={})", fd));
  }
  slot.fd = fd;
  slot.registered = true;
}

void EpollPoller::remove(int fd) {
  // The event argument is ignored for DEL since Linux 2.6.9.
  if (::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr) == 0) return;
  const int err = errno;
  // EBADF: already closed. ENOENT: never added, or its file is gone. EPERM:
  // a file epoll cannot watch (regular files), so it was never added.
  if (err == EBADF || err == ENOENT || err == EPERM) return;
  throw_system_error(err, fmt::format("epoll_ctl(DEL, fd={})", fd));
}

// ------------------------------------------------------------ signals
//
// A signal can only be read from a signalfd while it is blocked: otherwise
// the kernel delivers it (default action or handler) before anyone reads.
// So the watch blocks it in this thread, and remembers whether it already
// was, to give the mask back exactly as it found it. A process-directed
// signal goes to some thread that does not block it, so the other threads of
// the process must block it too (spindle's own threads block everything).
// The signalfd is registered edge-triggered: the kernel wakes signalfd
// readers once per new pending signal, and take_signal drains to EAGAIN, so
// every delivery after a take produces a new edge.

void EpollPoller::add_signal(int signo, detail::IoSlot& slot) {
  for (const SignalWatch& w : signals_) {
    if (w.signo == signo)
      throw_system_error(EEXIST, fmt::format("add_signal(signal={}): already watched", signo));
  }
  sigset_t set;
  sigemptyset(&set);
  if (sigaddset(&set, signo) != 0) throw_system_error(errno, fmt::format("sigaddset(signal={})", signo));
  sigset_t old;
  // pthread_sigmask returns its error instead of setting errno.
  if (const int err = ::pthread_sigmask(SIG_BLOCK, &set, &old); err != 0)
    throw_system_error(err, fmt::format("pthread_sigmask(SIG_BLOCK, signal={})", signo));
  const bool was_blocked = sigismember(&old, signo) == 1;
  auto unblock = [&] {
    if (!was_blocked) ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  };

  const int fd = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    unblock();
    throw_system_error(err, fmt::format("signalfd(signal={})", signo));
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ev.data.u64 = pack(&slot, slot.seq);
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) < 0) {
    const int err = errno;
    ::close(fd);
    unblock();
    throw_system_error(err, fmt::format("epoll_ctl(ADD, signalfd={}, signal={})", fd, signo));
  }
  signals_.push_back(SignalWatch{.signo = signo, .fd = fd, .was_blocked = was_blocked});
}

int EpollPoller::take_signal(int signo) noexcept {
  auto it = std::find_if(signals_.begin(), signals_.end(), [&](const SignalWatch& w) { return w.signo == signo; });
  if (it == signals_.end()) return 0;
  int count = 0;
  // Several at once: real-time signals queue one record per delivery.
  signalfd_siginfo info[8];
  for (;;) {
    const ssize_t r = retry_eintr([&] { return ::read(it->fd, info, sizeof info); });
    if (r < 0) {
      SPINDLE_ASSERT(errno == EAGAIN,
                     fmt::format("read(signalfd={}, signal={}): {}", it->fd, signo, errno_text(errno)));
      return count;
    }
    count += static_cast<int>(static_cast<std::size_t>(r) / sizeof info[0]);
  }
}

void EpollPoller::remove_signal(int signo) noexcept {
  auto it = std::find_if(signals_.begin(), signals_.end(), [&](const SignalWatch& w) { return w.signo == signo; });
  if (it == signals_.end()) return;
  const SignalWatch w = *it;
  signals_.erase(it);
  // Closing the signalfd removes it from the epoll set as well; the explicit
  // DEL keeps the two steps in the same order as remove(fd) then close.
  ::epoll_ctl(epfd_, EPOLL_CTL_DEL, w.fd, nullptr);
  ::close(w.fd);
  if (!w.was_blocked) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signo);
    ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  }
}

// ------------------------------------------------------- child processes
//
// A pidfd (Linux 5.3) polls readable once its process has exited, zombie or
// not, and does not reap. The pidfd_open wrapper only arrived in glibc 2.36,
// hence the raw syscall.

void EpollPoller::add_process(pid_t pid, detail::IoSlot& slot) {
  if (processes_.count(pid) != 0)
    throw_system_error(EEXIST, fmt::format("add_process(pid={}): already watched", pid));
  int fd = -1;
  errno = ENOSYS;
#if defined(SYS_pidfd_open)
  if (have_pidfd.load(std::memory_order_relaxed)) fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#endif
  if (fd < 0) {
    const int err = errno;
    if (err == ENOSYS) have_pidfd.store(false, std::memory_order_relaxed);
    throw_system_error(err, fmt::format("pidfd_open(pid={})", pid));
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ev.data.u64 = pack(&slot, slot.seq);
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) < 0) {
    const int err = errno;
    ::close(fd);
    throw_system_error(err, fmt::format("epoll_ctl(ADD, pidfd={}, pid={})", fd, pid));
  }
  processes_.emplace(pid, fd);
}

void EpollPoller::remove_process(pid_t pid) noexcept {
  auto it = processes_.find(pid);
  if (it == processes_.end()) return;
  ::epoll_ctl(epfd_, EPOLL_CTL_DEL, it->second, nullptr);
  ::close(it->second);
  processes_.erase(it);
}

// --------------------------------------------------------------- waiting

std::size_t EpollPoller::wait(detail::ReadyList& out,
                              std::optional<Nanos> timeout) noexcept {
  out.clear();
  // Allocates once per list; a full buffer then never reallocates mid-copy.
  out.reserve(kMaxEvents);

  const bool forever = !timeout.has_value();
  Nanos remaining = forever ? Nanos::zero() : std::max(*timeout, Nanos::zero());
  const Nanos deadline =
      remaining > Nanos::zero() ? deadline_after(remaining) : Nanos::zero();

  int n = 0;
  for (;;) {
    n = wait_once(forever ? nullptr : &remaining);
    if (n > 0) break;
    if (n < 0) {
      const int err = errno;
      SPINDLE_ASSERT(err == EINTR, fmt::format("epoll wait(epfd={}): {}", epfd_,
                                               errno_text(err)));
    } else if (!forever && remaining == Nanos::zero()) {
      return 0;  // A poll that found nothing.
    }
    // Interrupted by a signal, or the kernel returned before our deadline (a
    // millisecond timeout clamped to INT_MAX): wait out the rest. A signal
    // after the deadline still gets one last poll.
    if (forever) continue;
    const Nanos now = monotonic_now();
    if (n == 0 && now >= deadline) return 0;
    remaining = now >= deadline ? Nanos::zero() : deadline - now;
  }

  for (int i = 0; i < n; ++i) {
    const epoll_event& ev = events_[i];
    if (ev.data.u64 == kWakeToken) {
      drain_wake();
      continue;
    }
    const bool hangup = (ev.events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) != 0;
    out.push_back(ReadyEvent{
        .slot = unpack_slot(ev.data.u64),
        .seq = unpack_seq(ev.data.u64),
        .readable = hangup || (ev.events & EPOLLIN) != 0,
        .writable = hangup || (ev.events & EPOLLOUT) != 0,
        .hangup = hangup,
    });
  }
  return out.size();
}

int EpollPoller::wait_once(const Nanos* timeout) noexcept {
  if (have_pwait2.load(std::memory_order_relaxed)) {
    timespec ts{};
    if (timeout != nullptr) {
      ts.tv_sec = static_cast<time_t>(timeout->count() / 1'000'000'000);
      ts.tv_nsec = static_cast<long>(timeout->count() % 1'000'000'000);
    }
    const int n = ::epoll_pwait2(epfd_, events_.get(), kMaxEvents,
                                 timeout != nullptr ? &ts : nullptr, nullptr);
    // ENOSYS: kernel before 5.11, or valgrind 3.19. EPERM: seccomp profiles
    // that predate the call (older Docker) deny it that way; epoll_pwait2
    // has no EPERM of its own.
    if (n >= 0 || (errno != ENOSYS && errno != EPERM)) return n;
    have_pwait2.store(false, std::memory_order_relaxed);
  }
  return ::epoll_wait(epfd_, events_.get(), kMaxEvents,
                      timeout != nullptr ? ceil_millis(*timeout) : -1);
}

void EpollPoller::drain_wake() noexcept {
  std::uint64_t count = 0;
  const ssize_t r =
      retry_eintr([&] { return ::read(wake_fd_, &count, sizeof count); });
  // EAGAIN: already zero, which the level-triggered report makes unlikely
  // but harmless.
  SPINDLE_ASSERT(
      r == sizeof count || (r < 0 && errno == EAGAIN),
      fmt::format("read(wake eventfd={}): {}", wake_fd_, errno_text(errno)));
  // Only after the read, and as an exchange: see the protocol at the top.
  wake_pending_.exchange(false, std::memory_order_acq_rel);
}

void EpollPoller::wake() noexcept {
  if (wake_pending_.exchange(true, std::memory_order_acq_rel)) return;
  // A signal handler may call this: leave errno as the interrupted code had
  // it.
  const int saved_errno = errno;
  const std::uint64_t one = 1;
  const ssize_t r =
      retry_eintr([&] { return ::write(wake_fd_, &one, sizeof one); });
  // EAGAIN would mean the counter is about to overflow, so it is non-zero and
  // the wake is already visible. Anything else (EBADF: a wake after the
  // poller died) is a bug, and would silently disable every later wake.
  SPINDLE_ASSERT(
      r == sizeof one || (r < 0 && errno == EAGAIN),
      fmt::format("write(wake eventfd={}): {}", wake_fd_, errno_text(errno)));
  errno = saved_errno;
}

}  // namespace spindle::platform
