// What every hook shares: telling a fiber from the rest, classifying fds,
// and the three ways a hook waits (a scheduler slot, a temporary epoll
// instance, or ppoll outside fibers).
#include <sys/stat.h>

#include <algorithm>
#include <climits>

#include <spindle/io.hpp>

#include "runtime/hooks/fd_table.hpp"
#include "runtime/hooks/hooks.hpp"
#include "runtime/hooks/real.hpp"
#include "runtime/scheduler.hpp"

namespace spindle::hooks {

namespace {

// First sight of an fd on a fiber: what it is, and whether the application
// made it non-blocking. stdin, stdout and stderr always pass through.
std::uint32_t classify(int fd, FdEntry* e) noexcept {
  FdKind kind = FdKind::other;
  bool user_nonblock = false;
  if (fd > 2) {
    struct stat st;
    if (real::fstat(fd, &st) < 0) return 0;
    if (S_ISSOCK(st.st_mode) || S_ISFIFO(st.st_mode)) {
      const int flags = real::fcntl(fd, F_GETFL, 0);
      if (flags < 0) return 0;
      kind = S_ISSOCK(st.st_mode) ? FdKind::socket : FdKind::fifo;
      user_nonblock = (flags & O_NONBLOCK) != 0;
    }
  }
  std::uint32_t expected = 0;
  const std::uint32_t bits = bits_for(kind, user_nonblock, false);
  // A thread that classified it meanwhile knows as much as we do.
  if (e->bits.compare_exchange_strong(expected, bits, std::memory_order_acq_rel)) return bits;
  return expected;
}

// A socket or pipe the application uses as blocking, met on a fiber: set
// O_NONBLOCK in the kernel and remember that the application did not.
std::uint32_t force_nonblock(int fd, FdEntry* e, std::uint32_t bits) noexcept {
  const int flags = real::fcntl(fd, F_GETFL, 0);
  if (flags < 0) return bits;
  if (flags & O_NONBLOCK) {
    // Set behind the hooks' back (an fd they have not seen created, or a
    // raw fcntl): the application's own choice.
    return e->bits.fetch_or(kUserNonblock, std::memory_order_acq_rel) | kUserNonblock;
  }
  if (real::fcntl(fd, F_SETFL, static_cast<unsigned long>(flags | O_NONBLOCK)) < 0) return bits;
  return e->bits.fetch_or(kForced, std::memory_order_acq_rel) | kForced;
}

}  // namespace

std::uint32_t prepare_slow(int fd) noexcept {
  const int saved = errno;
  FdEntry* e = fd_entry(fd);
  if (!e) return 0;
  std::uint32_t bits = e->bits.load(std::memory_order_acquire);
  if (kind_of(bits) == FdKind::unknown) bits = classify(fd, e);
  const FdKind kind = kind_of(bits);
  if ((kind == FdKind::socket || kind == FdKind::fifo) && !(bits & (kUserNonblock | kForced)))
    bits = force_nonblock(fd, e, bits);
  errno = saved;
  return bits;
}

std::int64_t fiber_deadline_after(std::int64_t timeout_ns) noexcept {
  if (timeout_ns <= 0) return detail::kNoDeadline;
  const std::int64_t now = detail::now_ns();
  return timeout_ns >= detail::kNoDeadline - now ? detail::kNoDeadline : now + timeout_ns;
}

std::int64_t monotonic_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// ------------------------------------------------------------ fiber waits

int park_fd(int fd, Dir dir, std::int64_t deadline_ns) noexcept {
  detail::Scheduler* s = detail::Scheduler::current();
  bool shared = false;
  const int err = run_wait(deadline_ns, [&] {
    // Another fiber parked on this fd in the same direction (two fibers
    // reading one socket, several accepting on one listener) owns the
    // slot; this one waits on an epoll instance of its own instead.
    detail::IoSlot& slot = s->slot_for(fd, dir == Dir::read ? "spindle::wait_readable" : "spindle::wait_writable");
    detail::Fiber* other = dir == Dir::read ? slot.reader : slot.writer;
    if (other && other->state == detail::FiberState::parked) {
      shared = true;
      return;
    }
    if (dir == Dir::read)
      wait_readable(fd);
    else
      wait_writable(fd);
  });
  if (!shared) return err;
  TempEpoll ep;
  if (!ep.ok()) return errno;
  if (const int add_err = ep.add(fd, dir == Dir::read ? EPOLLIN | EPOLLRDHUP : EPOLLOUT)) return add_err;
  ep.watch(fd);
  return ep.wait(deadline_ns);
}

// --------------------------------------------------------- outside fibers

int block_fd(int fd, short events, std::int64_t deadline_ns) noexcept {
  pollfd p{fd, events, 0};
  timespec ts;
  timespec* timeout = nullptr;
  if (deadline_ns != detail::kNoDeadline) {
    const std::int64_t left = std::max<std::int64_t>(0, deadline_ns - monotonic_ns());
    ts.tv_sec = static_cast<time_t>(left / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(left % 1'000'000'000);
    timeout = &ts;
  }
  const int r = real::ppoll(&p, 1, timeout, nullptr);
  if (r < 0) return errno;
  return r == 0 ? kTimedOut : 0;
}

// ------------------------------------------------------------ TempEpoll

namespace {
// The temporary epoll instances parked on by fibers of this thread.
thread_local TempEpoll* tls_waits = nullptr;
}  // namespace

TempEpoll::TempEpoll() noexcept {
  fd_ = real::epoll_create1(EPOLL_CLOEXEC);
  if (fd_ < 0) return;
  next_ = tls_waits;
  if (next_) next_->prev_ = this;
  tls_waits = this;
}

TempEpoll::~TempEpoll() {
  if (fd_ < 0) return;
  if (prev_)
    prev_->next_ = next_;
  else
    tls_waits = next_;
  if (next_) next_->prev_ = prev_;
  const int saved = errno;
  forget_fd(fd_);
  real::close(fd_);
  errno = saved;
}

int TempEpoll::add(int fd, std::uint32_t events) noexcept {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (real::epoll_ctl(fd_, EPOLL_CTL_ADD, fd, &ev) == 0) return 0;
  if (errno != EEXIST) return errno;
  // The same fd twice in a poll array: wait for what either entry wants.
  if (fds_)
    for (nfds_t i = 0; i < nfds_; ++i)
      if (fds_[i].fd == fd) ev.events |= static_cast<std::uint16_t>(fds_[i].events);
  return real::epoll_ctl(fd_, EPOLL_CTL_MOD, fd, &ev) == 0 ? 0 : errno;
}

void TempEpoll::watch(const fd_set* sets[3], int nfds) noexcept {
  std::copy(sets, sets + 3, sets_);
  set_nfds_ = nfds;
}

bool TempEpoll::watches(int fd) const noexcept {
  if (fd == single_) return true;
  for (nfds_t i = 0; i < nfds_; ++i)
    if (fds_[i].fd == fd) return true;
  if (fd < set_nfds_)
    for (const fd_set* s : sets_)
      if (s && FD_ISSET(fd, s)) return true;
  return false;
}

int TempEpoll::wait(std::int64_t deadline_ns) noexcept {
  return run_wait(deadline_ns, [this] { wait_readable(fd_); });
}

void TempEpoll::wake_waiters_on(int fd) noexcept {
  // forget_fd readies the fiber parked on the instance with EBADF; its
  // hook then finds out what happened with a zero-timeout call.
  for (TempEpoll* w = tls_waits; w; w = w->next_)
    if (w->watches(fd)) forget_fd(w->fd_);
}

}  // namespace spindle::hooks
