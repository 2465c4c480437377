// Hooks for waiting on several fds: poll, ppoll, select, pselect.
//
// On a fiber with a non-zero timeout: a real zero-timeout call first (most
// calls end here); if nothing is ready, the fiber parks on the fd's slot
// (poll of one fd in one direction) or on a temporary epoll instance with
// every fd of the call, then a zero-timeout call again fills in the result.
// The zero-timeout call is the only judge of readiness, so a wake-up that
// turns out stale (an older edge, an event the caller did not ask for)
// only parks again.
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <limits>

#include <spindle/this_fiber.hpp>

#include "runtime/hooks/hooks.hpp"
#include "runtime/hooks/real.hpp"

namespace spindle::hooks {

namespace {

constexpr timespec kZero{0, 0};
constexpr std::int64_t kForever = -1;

// What epoll can wait for among poll's event bits (same values in both).
constexpr std::uint32_t kPollToEpoll =
    EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDNORM | EPOLLRDBAND | EPOLLWRNORM | EPOLLWRBAND | EPOLLRDHUP;

int poll_now(pollfd* fds, nfds_t n) noexcept { return real::ppoll(fds, n, &kZero, nullptr); }

// A timespec as ns; -2 when malformed (EINVAL), kForever for none.
std::int64_t timespec_ns(const timespec* ts) noexcept {
  if (!ts) return kForever;
  if (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1'000'000'000) return -2;
  if (ts->tv_sec >= std::numeric_limits<std::int64_t>::max() / 1'000'000'000 - 1) return kForever;
  return static_cast<std::int64_t>(ts->tv_sec) * 1'000'000'000 + ts->tv_nsec;
}

std::int64_t deadline_for(std::int64_t timeout_ns) noexcept {
  return timeout_ns < 0 ? detail::kNoDeadline : fiber_deadline_after(timeout_ns);
}

// Parks until the deadline with nothing to wait for (poll of no fds).
int park_until(std::int64_t deadline) noexcept {
  return run_wait(deadline, [] {
    for (;;) this_fiber::sleep_for(std::chrono::hours(24));
  });
}

// Ends a fiber poll whose wait returned `err` and whose zero-timeout call
// found nothing ready.
int nothing_ready(int err) noexcept {
  if (err == kTimedOut) return 0;
  errno = err;
  return -1;
}

int fiber_poll(pollfd* fds, nfds_t n, std::int64_t timeout_ns) noexcept {
  int r = poll_now(fds, n);
  if (r != 0) return r;
  const std::int64_t deadline = deadline_for(timeout_ns);
  if (n == 0) return nothing_ready(park_until(deadline));

  // One fd in one direction, the way libpq and hiredis wait: its slot.
  const auto ev = static_cast<std::uint32_t>(static_cast<std::uint16_t>(fds[0].events));
  const bool reads = ev != 0 && (ev & ~std::uint32_t{POLLIN | POLLRDNORM}) == 0;
  const bool writes = ev != 0 && (ev & ~std::uint32_t{POLLOUT | POLLWRNORM}) == 0;
  if (n == 1 && fds[0].fd >= 0 && (reads || writes)) {
    for (;;) {
      const int err = park_fd(fds[0].fd, reads ? Dir::read : Dir::write, deadline);
      r = poll_now(fds, n);
      if (r != 0 || err == 0) {
        if (r != 0) return r;
        continue;
      }
      return nothing_ready(err);
    }
  }

  TempEpoll ep;
  if (!ep.ok()) return -1;
  ep.watch(fds, n);
  for (nfds_t i = 0; i < n; ++i) {
    if (fds[i].fd < 0) continue;
    const int err = ep.add(fds[i].fd, static_cast<std::uint16_t>(fds[i].events) & kPollToEpoll);
    // EPERM: a regular file or directory, always ready for what it can
    // report, so either the first call saw it or it can never be ready.
    if (err == 0 || err == EPERM) continue;
    // Closed meanwhile (POLLNVAL now), or epoll is out of memory.
    r = poll_now(fds, n);
    if (r != 0) return r;
    errno = err;
    return -1;
  }
  for (;;) {
    const int err = ep.wait(deadline);
    r = poll_now(fds, n);
    if (r != 0) return r;
    if (err != 0) return nothing_ready(err);
  }
}

// ------------------------------------------------------------ select

struct SelectSets {
  fd_set* user[3];
  fd_set saved[3];

  void save() noexcept {
    for (int i = 0; i < 3; ++i)
      if (user[i]) saved[i] = *user[i];
  }
  void restore() noexcept {
    for (int i = 0; i < 3; ++i)
      if (user[i]) *user[i] = saved[i];
  }
};

int select_now(int nfds, SelectSets& s) noexcept {
  s.restore();
  timespec zero = kZero;
  return real::pselect6(nfds, s.user[0], s.user[1], s.user[2], &zero, nullptr);
}

int fiber_select(int nfds, SelectSets& s, std::int64_t deadline) noexcept {
  s.save();
  int r = select_now(nfds, s);
  if (r != 0) return r;
  TempEpoll ep;
  if (!ep.ok()) return -1;
  const fd_set* watched[3];
  for (int i = 0; i < 3; ++i) watched[i] = s.user[i] ? &s.saved[i] : nullptr;
  ep.watch(watched, nfds);
  for (int fd = 0; fd < nfds; ++fd) {
    std::uint32_t ev = 0;
    if (s.user[0] && FD_ISSET(fd, &s.saved[0])) ev |= EPOLLIN;
    if (s.user[1] && FD_ISSET(fd, &s.saved[1])) ev |= EPOLLOUT;
    if (s.user[2] && FD_ISSET(fd, &s.saved[2])) ev |= EPOLLPRI;
    if (ev == 0) continue;
    const int err = ep.add(fd, ev);
    if (err == 0 || err == EPERM) continue;
    r = select_now(nfds, s);
    if (r != 0) return r;
    errno = err;
    return -1;
  }
  for (;;) {
    const int err = ep.wait(deadline);
    r = select_now(nfds, s);
    if (r != 0) return r;
    if (err != 0) return nothing_ready(err);
  }
}

}  // namespace

int hook_poll(pollfd* fds, nfds_t n, std::int64_t timeout_ns, const sigset_t* mask) noexcept {
  if (timeout_ns == -2) {
    errno = EINVAL;
    return -1;
  }
  if (mask || timeout_ns == 0 || !current_fiber()) {
    timespec ts;
    if (timeout_ns >= 0)
      ts = {static_cast<time_t>(timeout_ns / 1'000'000'000), static_cast<long>(timeout_ns % 1'000'000'000)};
    return real::ppoll(fds, n, timeout_ns >= 0 ? &ts : nullptr, mask);
  }
  return fiber_poll(fds, n, timeout_ns);
}

// select and pselect. `tv` (select) receives the time left, as Linux's
// select does; pselect's timeout is const.
int hook_select(int nfds, fd_set* r, fd_set* w, fd_set* e, const timespec* timeout, timeval* tv,
                const sigset_t* mask) noexcept {
  const std::int64_t timeout_ns = timespec_ns(timeout);
  if (timeout_ns == -2 || nfds < 0) {
    errno = EINVAL;
    return -1;
  }
  if (mask || timeout_ns == 0 || nfds > FD_SETSIZE || !current_fiber()) {
    timespec left;
    if (timeout) left = *timeout;
    const int res = real::pselect6(nfds, r, w, e, timeout ? &left : nullptr, mask);
    if (tv && timeout) *tv = {left.tv_sec, static_cast<suseconds_t>(left.tv_nsec / 1000)};
    return res;
  }
  SelectSets sets{{r, w, e}, {}};
  const std::int64_t deadline = deadline_for(timeout_ns);
  const int res = fiber_select(nfds, sets, deadline);
  if (tv && deadline != detail::kNoDeadline) {
    const int saved = errno;
    const std::int64_t left = std::max<std::int64_t>(0, deadline - detail::now_ns());
    *tv = {static_cast<time_t>(left / 1'000'000'000), static_cast<suseconds_t>(left % 1'000'000'000 / 1000)};
    errno = saved;
  }
  return res;
}

}  // namespace spindle::hooks

using namespace spindle::hooks;

extern "C" {

int poll(pollfd* fds, nfds_t n, int timeout_ms) {
  return hook_poll(fds, n, timeout_ms < 0 ? kForever : std::int64_t{timeout_ms} * 1'000'000, nullptr);
}
int ppoll(pollfd* fds, nfds_t n, const timespec* timeout, const sigset_t* mask) {
  return hook_poll(fds, n, timespec_ns(timeout), mask);
}
int __poll_chk(pollfd* fds, nfds_t n, int timeout_ms, size_t fdslen) {
  if (fdslen / sizeof(*fds) < n) __chk_fail();
  return poll(fds, n, timeout_ms);
}
int __ppoll_chk(pollfd* fds, nfds_t n, const timespec* timeout, const sigset_t* mask, size_t fdslen) {
  if (fdslen / sizeof(*fds) < n) __chk_fail();
  return ppoll(fds, n, timeout, mask);
}

int select(int nfds, fd_set* r, fd_set* w, fd_set* e, timeval* tv) {
  if (!tv) return hook_select(nfds, r, w, e, nullptr, nullptr, nullptr);
  if (tv->tv_sec < 0 || tv->tv_usec < 0 || tv->tv_usec >= 1'000'000) {
    errno = EINVAL;
    return -1;
  }
  const timespec ts{tv->tv_sec, static_cast<long>(tv->tv_usec) * 1000};
  return hook_select(nfds, r, w, e, &ts, tv, nullptr);
}
int pselect(int nfds, fd_set* r, fd_set* w, fd_set* e, const timespec* timeout, const sigset_t* mask) {
  return hook_select(nfds, r, w, e, timeout, nullptr, mask);
}

}  // extern "C"
