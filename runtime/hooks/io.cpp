// Hooks for fd creation, I/O and fd bookkeeping: socket, socketpair, pipe,
// accept, connect, the read and write families, close, dup, fcntl, ioctl,
// setsockopt. See hooks.hpp for the semantics.
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>

#include <spindle/io.hpp>
#include <spindle/this_fiber.hpp>

#include "runtime/hooks/fd_table.hpp"
#include "runtime/hooks/hooks.hpp"
#include "runtime/hooks/real.hpp"
#include "runtime/scheduler.hpp"

namespace spindle::hooks {

namespace {

constexpr std::int64_t kUnset = std::numeric_limits<std::int64_t>::min();

// The deadline of the call's SO_RCVTIMEO / SO_SNDTIMEO, on the fiber's
// scheduler clock or on CLOCK_MONOTONIC outside fibers.
std::int64_t call_deadline(int fd, Dir dir, bool on_fiber) noexcept {
  FdEntry* e = fd_entry_if_any(fd);
  const std::int64_t timeout =
      !e ? 0 : (dir == Dir::read ? e->recv_timeout_ns : e->send_timeout_ns).load(std::memory_order_relaxed);
  if (on_fiber) return fiber_deadline_after(timeout);
  if (timeout <= 0) return detail::kNoDeadline;
  return monotonic_ns() + timeout;
}

int wait_for(int fd, Dir dir, std::int64_t deadline, bool on_fiber) noexcept {
  if (on_fiber) return park_fd(fd, dir, deadline);
  return block_fd(fd, dir == Dir::read ? POLLIN : POLLOUT, deadline);
}

// Whether the fd must behave as blocking although the kernel has it
// non-blocking: on a fiber after prepare(), outside by the table alone.
[[gnu::always_inline]] inline bool managed(int fd, bool on_fiber) noexcept {
  return ((on_fiber ? prepare(fd) : fd_bits(fd)) & kForced) != 0;
}

// The calls that complete with whatever they get (read, recv, accept,
// sendfile) after their first attempt met EAGAIN on an fd the hooks
// manage: call() again after every wait until fd may be ready.
template <class Call>
[[gnu::noinline]] auto blocking_slow(int fd, Dir dir, bool on_fiber, Call call) noexcept -> decltype(call()) {
  const std::int64_t deadline = call_deadline(fd, dir, on_fiber);
  for (;;) {
    if (const int err = wait_for(fd, dir, deadline, on_fiber)) {
      errno = err == kTimedOut ? EAGAIN : err;
      return -1;
    }
    auto r = call();
    if (r >= 0 || errno != EAGAIN) return r;
  }
}

// The pass-through path outside fibers after EAGAIN: an fd the hooks made
// non-blocking must still block there (in ppoll).
template <class Call>
[[gnu::noinline]] auto blocking_outside(int fd, Dir dir, Call call, decltype(call()) r) noexcept
    -> decltype(call()) {
  if (!managed(fd, false)) return r;
  return blocking_slow(fd, dir, false, call);
}

// One call with the result of a blocking one. The fast path (the fd is
// ready, or not the hooks' business) is one kernel call; outside fibers
// the table is consulted only after EAGAIN. Calls capture their arguments
// by value and the slow paths get a copy, so the fast paths keep them in
// registers.
template <class Call>
[[gnu::always_inline]] inline auto blocking(int fd, Dir dir, Call&& call) noexcept -> decltype(call()) {
  const bool on_fiber = current_fiber() != nullptr;
  if (on_fiber && !managed(fd, true)) return call();
  auto r = call();
  if (r >= 0 || errno != EAGAIN) [[likely]]
    return r;
  if (!on_fiber) return blocking_outside(fd, dir, call, r);
  return blocking_slow(fd, dir, true, call);
}

// A transfer of `total` bytes that a blocking fd completes in full (the
// writes, recv with MSG_WAITALL on a stream socket) after the first call
// moved `r` (or failed with EAGAIN). call(done) moves the part after
// `done` bytes. Like the kernel, a failure or a timeout after some
// progress returns the count moved so far; a read that meets end of file
// returns what it has.
template <class Call>
[[gnu::noinline]] ssize_t transfer_slow(int fd, Dir dir, std::size_t total, bool on_fiber, ssize_t r,
                                        Call call) noexcept {
  std::size_t done = 0;
  std::int64_t deadline = kUnset;
  for (;;) {
    if (r > 0) {
      done += static_cast<std::size_t>(r);
      if (done >= total) return static_cast<ssize_t>(done);
    } else if (r == 0) {
      return static_cast<ssize_t>(done);
    } else if (errno != EAGAIN) {
      return done > 0 ? static_cast<ssize_t>(done) : -1;
    } else {
      if (deadline == kUnset) deadline = call_deadline(fd, dir, on_fiber);
      if (const int err = wait_for(fd, dir, deadline, on_fiber)) {
        if (done > 0) return static_cast<ssize_t>(done);
        errno = err == kTimedOut ? EAGAIN : err;
        return -1;
      }
    }
    r = call(done);
  }
}

template <class Call>
[[gnu::always_inline]] inline ssize_t transfer(int fd, Dir dir, std::size_t total, Call&& call) noexcept {
  const bool on_fiber = current_fiber() != nullptr;
  if (on_fiber && !managed(fd, true)) return call(0);
  const ssize_t r = call(0);
  if (r >= 0 ? (r == 0 || static_cast<std::size_t>(r) >= total) : errno != EAGAIN) [[likely]]
    return r;
  if (!on_fiber && !managed(fd, false)) return r;
  return transfer_slow(fd, dir, total, on_fiber, r, call);
}

// The iovec array of a vectored write, advanced past what is done. The
// first call uses the caller's array; a partial write copies it, once.
class IovCursor {
 public:
  IovCursor(const iovec* iov, int n) noexcept : orig_(iov), n_(n) {}
  ~IovCursor() { std::free(copy_); }
  IovCursor(const IovCursor&) = delete;
  IovCursor& operator=(const IovCursor&) = delete;

  std::size_t total() const noexcept {
    std::size_t sum = 0;
    for (int i = 0; i < n_; ++i) sum += orig_[i].iov_len;
    return sum;
  }

  // The array for the part after `done` bytes, and its length; nullptr
  // (errno ENOMEM) when the copy cannot be allocated.
  const iovec* at(std::size_t done, int* count) noexcept {
    if (done == 0) {
      *count = n_;
      return orig_;
    }
    if (!copy_) {
      copy_ = static_cast<iovec*>(std::malloc(sizeof(iovec) * static_cast<std::size_t>(n_)));
      if (!copy_) {
        errno = ENOMEM;
        return nullptr;
      }
      std::memcpy(copy_, orig_, sizeof(iovec) * static_cast<std::size_t>(n_));
    }
    std::size_t skip = done - consumed_;
    consumed_ = done;
    while (skip > 0 && first_ < n_) {
      iovec& v = copy_[first_];
      if (v.iov_len <= skip) {
        skip -= v.iov_len;
        ++first_;
      } else {
        v.iov_base = static_cast<char*>(v.iov_base) + skip;
        v.iov_len -= skip;
        skip = 0;
      }
    }
    *count = n_ - first_;
    return copy_ + first_;
  }

 private:
  const iovec* orig_;
  int n_;
  iovec* copy_ = nullptr;
  int first_ = 0;
  std::size_t consumed_ = 0;
};

bool is_stream_socket(int fd) noexcept {
  int type = 0;
  socklen_t len = sizeof type;
  return real::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
}

// The application switches fd's O_NONBLOCK (fcntl(F_SETFL), FIONBIO):
// apply(kernel_nonblock) makes the kernel call. A socket or pipe that the
// application switches to blocking mode stays non-blocking in the kernel
// if the hooks had forced it so, or if this is a fiber (which would force
// it at its next call); the table records what the application asked for.
template <class Apply>
int set_user_nonblock(int fd, bool on, Apply&& apply) noexcept {
  FdEntry* e = fd_entry_if_any(fd);
  std::uint32_t bits = e ? e->bits.load(std::memory_order_acquire) : 0;
  const FdKind kind = kind_of(bits);
  // Unknown fds are classified from the kernel's flags when first seen on
  // a fiber, so the kernel call alone records the application's choice.
  if (kind != FdKind::socket && kind != FdKind::fifo) return apply(on);
  const bool keep_forced = !on && ((bits & kForced) || current_fiber() != nullptr);
  const int r = apply(on || keep_forced);
  if (r < 0) return r;
  const std::uint32_t mode = on ? kUserNonblock : (keep_forced ? kForced : 0);
  while (!e->bits.compare_exchange_weak(bits, (bits & ~(kUserNonblock | kForced)) | mode,
                                        std::memory_order_acq_rel)) {
  }
  return r;
}

// Before fd stops meaning what it meant (close, dup2 over it): fibers of
// this thread waiting on it wake with EBADF instead of waiting forever.
void before_close(int fd) noexcept {
  if (!detail::Scheduler::current()) return;
  const int saved = errno;
  forget_fd(fd);
  TempEpoll::wake_waiters_on(fd);
  errno = saved;
}

}  // namespace

// ------------------------------------------------------------ creation

int hook_socket(int domain, int type, int protocol) noexcept {
  const bool force = current_fiber() != nullptr && !(type & SOCK_NONBLOCK);
  const int fd = real::socket(domain, force ? type | SOCK_NONBLOCK : type, protocol);
  if (fd >= 0) fd_created(fd, FdKind::socket, (type & SOCK_NONBLOCK) != 0, force);
  return fd;
}

int hook_socketpair(int domain, int type, int protocol, int sv[2]) noexcept {
  const bool force = current_fiber() != nullptr && !(type & SOCK_NONBLOCK);
  const int r = real::socketpair(domain, force ? type | SOCK_NONBLOCK : type, protocol, sv);
  if (r == 0)
    for (int i = 0; i < 2; ++i) fd_created(sv[i], FdKind::socket, (type & SOCK_NONBLOCK) != 0, force);
  return r;
}

int hook_pipe2(int fds[2], int flags) noexcept {
  const bool force = current_fiber() != nullptr && !(flags & O_NONBLOCK);
  const int r = real::pipe2(fds, force ? flags | O_NONBLOCK : flags);
  if (r == 0)
    for (int i = 0; i < 2; ++i) fd_created(fds[i], FdKind::fifo, (flags & O_NONBLOCK) != 0, force);
  return r;
}

int hook_accept4(int fd, sockaddr* addr, socklen_t* len, int flags) noexcept {
  // Linux accepted sockets do not inherit O_NONBLOCK from the listener.
  const bool force = current_fiber() != nullptr && !(flags & SOCK_NONBLOCK);
  const int kflags = force ? flags | SOCK_NONBLOCK : flags;
  const int r = blocking(fd, Dir::read, [=] { return real::accept4(fd, addr, len, kflags); });
  if (r >= 0) fd_created(r, FdKind::socket, (flags & SOCK_NONBLOCK) != 0, force);
  return r;
}

int hook_connect(int fd, const sockaddr* addr, socklen_t len) noexcept {
  const bool on_fiber = current_fiber() != nullptr;
  if (!managed(fd, on_fiber)) return real::connect(fd, addr, len);
  int r = real::connect(fd, addr, len);
  if (r == 0 || (errno != EINPROGRESS && errno != EAGAIN)) return r;
  const std::int64_t deadline = call_deadline(fd, Dir::write, on_fiber);
  // A Unix socket whose listener's backlog is full says EAGAIN and offers
  // nothing to wait for (it polls writable at once): retry after a pause,
  // as the kernel's own blocking connect would wait for room.
  while (r < 0 && errno == EAGAIN && addr && addr->sa_family == AF_UNIX) {
    int err;
    if (on_fiber) {
      err = run_wait(deadline, [] { this_fiber::sleep_for(std::chrono::milliseconds(1)); });
    } else {
      const timespec pause{0, 1'000'000};
      real::ppoll(nullptr, 0, &pause, nullptr);
      err = deadline != detail::kNoDeadline && monotonic_ns() >= deadline ? kTimedOut : 0;
    }
    if (err) {
      errno = err == kTimedOut ? EAGAIN : err;
      return -1;
    }
    r = real::connect(fd, addr, len);
  }
  if (r == 0 || errno != EINPROGRESS) return r;
  for (;;) {
    if (const int err = wait_for(fd, Dir::write, deadline, on_fiber)) {
      // Linux's blocking connect reports an expired SO_SNDTIMEO this way.
      errno = err == kTimedOut ? EINPROGRESS : err;
      return -1;
    }
    // A wake-up from an older edge: only a writable socket has finished.
    pollfd p{fd, POLLOUT, 0};
    const timespec zero{0, 0};
    if (real::ppoll(&p, 1, &zero, nullptr) == 0) continue;
    int so_error = 0;
    socklen_t so_len = sizeof so_error;
    if (real::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &so_len) < 0) return -1;
    if (so_error == 0) return 0;
    errno = so_error;
    return -1;
  }
}

// ------------------------------------------------------------ reading

ssize_t hook_read(int fd, void* buf, std::size_t n) noexcept {
  return blocking(fd, Dir::read, [=] { return real::read(fd, buf, n); });
}

ssize_t hook_readv(int fd, const iovec* iov, int n) noexcept {
  return blocking(fd, Dir::read, [=] { return real::readv(fd, iov, n); });
}

ssize_t hook_recvfrom(int fd, void* buf, std::size_t n, int flags, sockaddr* addr, socklen_t* len) noexcept {
  if (flags & MSG_DONTWAIT) return real::recvfrom(fd, buf, n, flags, addr, len);
  if ((flags & MSG_WAITALL) && n > 0 && is_stream_socket(fd)) {
    return transfer(fd, Dir::read, n, [=](std::size_t done) {
      return real::recvfrom(fd, static_cast<char*>(buf) + done, n - done, flags, addr, len);
    });
  }
  return blocking(fd, Dir::read, [=] { return real::recvfrom(fd, buf, n, flags, addr, len); });
}

ssize_t hook_recvmsg(int fd, msghdr* msg, int flags) noexcept {
  if (flags & MSG_DONTWAIT) return real::recvmsg(fd, msg, flags);
  return blocking(fd, Dir::read, [=] { return real::recvmsg(fd, msg, flags); });
}

// ------------------------------------------------------------ writing

ssize_t hook_write(int fd, const void* buf, std::size_t n) noexcept {
  return transfer(fd, Dir::write, n, [=](std::size_t done) {
    return real::write(fd, static_cast<const char*>(buf) + done, n - done);
  });
}

ssize_t hook_writev(int fd, const iovec* iov, int n) noexcept {
  if (n <= 0) return real::writev(fd, iov, n);
  IovCursor cursor(iov, n);
  return transfer(fd, Dir::write, cursor.total(), [fd, &cursor](std::size_t done) -> ssize_t {
    int count = 0;
    const iovec* at = cursor.at(done, &count);
    return at ? real::writev(fd, at, count) : -1;
  });
}

ssize_t hook_sendto(int fd, const void* buf, std::size_t n, int flags, const sockaddr* addr,
                    socklen_t len) noexcept {
  if (flags & MSG_DONTWAIT) return real::sendto(fd, buf, n, flags, addr, len);
  return transfer(fd, Dir::write, n, [=](std::size_t done) {
    return real::sendto(fd, static_cast<const char*>(buf) + done, n - done, flags, addr, len);
  });
}

ssize_t hook_sendmsg(int fd, const msghdr* msg, int flags) noexcept {
  if ((flags & MSG_DONTWAIT) || !msg || msg->msg_iovlen == 0) return real::sendmsg(fd, msg, flags);
  IovCursor cursor(msg->msg_iov, static_cast<int>(msg->msg_iovlen));
  return transfer(fd, Dir::write, cursor.total(), [fd, msg, flags, &cursor](std::size_t done) -> ssize_t {
    if (done == 0) return real::sendmsg(fd, msg, flags);
    // The rest of a partly sent message: ancillary data (SCM_RIGHTS, ...)
    // went with the first part.
    msghdr rest = *msg;
    int count = 0;
    rest.msg_iov = const_cast<iovec*>(cursor.at(done, &count));
    if (!rest.msg_iov) return -1;
    rest.msg_iovlen = static_cast<std::size_t>(count);
    rest.msg_control = nullptr;
    rest.msg_controllen = 0;
    return real::sendmsg(fd, &rest, flags);
  });
}

ssize_t hook_sendfile(int out, int in, off_t* offset, std::size_t n) noexcept {
  return blocking(out, Dir::write, [=] { return real::sendfile(out, in, offset, n); });
}

// ------------------------------------------------------------ fds

int hook_close(int fd) noexcept {
  before_close(fd);
  fd_clear(fd);
  return real::close(fd);
}

int hook_dup(int fd) noexcept {
  const int r = real::dup(fd);
  if (r >= 0) fd_copy(fd, r);
  return r;
}

int hook_dup3(int from, int to, int flags) noexcept {
  if (from == to) {
    // dup3 refuses equal fds (EINVAL), like the kernel; dup2 (flags -1
    // here) returns `to` if it is open.
    if (flags >= 0) {
      errno = EINVAL;
      return -1;
    }
    return real::fcntl(from, F_GETFD, 0) < 0 ? -1 : to;
  }
  before_close(to);
  const int r = real::dup3(from, to, flags < 0 ? 0 : flags);
  if (r >= 0) fd_copy(from, to);
  return r;
}

int hook_fcntl(int fd, int cmd, unsigned long arg) noexcept {
  switch (cmd) {
    case F_GETFL: {
      int r = real::fcntl(fd, cmd, arg);
      if (r >= 0 && (fd_bits(fd) & kForced)) r &= ~O_NONBLOCK;
      return r;
    }
    case F_SETFL:
      return set_user_nonblock(fd, (arg & O_NONBLOCK) != 0, [&](bool nonblock) {
        return real::fcntl(fd, F_SETFL,
                           nonblock ? arg | O_NONBLOCK : arg & ~static_cast<unsigned long>(O_NONBLOCK));
      });
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
      const int r = real::fcntl(fd, cmd, arg);
      if (r >= 0) fd_copy(fd, r);
      return r;
    }
    default:
      return real::fcntl(fd, cmd, arg);
  }
}

int hook_ioctl(int fd, unsigned long request, void* arg) noexcept {
  if (request != FIONBIO || !arg) return real::ioctl(fd, request, arg);
  return set_user_nonblock(fd, *static_cast<const int*>(arg) != 0, [&](bool nonblock) {
    int value = nonblock ? 1 : 0;
    return real::ioctl(fd, FIONBIO, &value);
  });
}

int hook_setsockopt(int fd, int level, int name, const void* value, socklen_t len) noexcept {
  const int r = real::setsockopt(fd, level, name, value, len);
  if (r != 0 || level != SOL_SOCKET || !value) return r;
  bool recv = false, send = false;
  std::int64_t ns = 0;
  // The kernel accepted the value, so it is well formed. SO_*TIMEO_NEW
  // (64-bit time on 32-bit systems) is __kernel_sock_timeval: two int64s.
  if ((name == SO_RCVTIMEO || name == SO_SNDTIMEO) && len >= sizeof(timeval)) {
    const auto* tv = static_cast<const timeval*>(value);
    ns =
        static_cast<std::int64_t>(tv->tv_sec) * 1'000'000'000 + static_cast<std::int64_t>(tv->tv_usec) * 1000;
    recv = name == SO_RCVTIMEO;
    send = name == SO_SNDTIMEO;
  }
#if defined(SO_RCVTIMEO_NEW) && defined(SO_SNDTIMEO_NEW)
  if ((name == SO_RCVTIMEO_NEW || name == SO_SNDTIMEO_NEW) && name != SO_RCVTIMEO && name != SO_SNDTIMEO &&
      len >= 2 * sizeof(std::int64_t)) {
    std::int64_t v[2];
    std::memcpy(v, value, sizeof v);
    ns = v[0] * 1'000'000'000 + v[1] * 1000;
    recv = name == SO_RCVTIMEO_NEW;
    send = name == SO_SNDTIMEO_NEW;
  }
#endif
  if (!recv && !send) return r;
  if (FdEntry* e = fd_entry(fd))
    (recv ? e->recv_timeout_ns : e->send_timeout_ns).store(ns, std::memory_order_relaxed);
  return r;
}

}  // namespace spindle::hooks

// ====================================================== the C symbols
//
// Thin shims with libc's exact prototypes; the hooks themselves are
// noexcept, so no C++ exception can leave through C code.

using namespace spindle::hooks;

extern "C" {

int socket(int domain, int type, int protocol) noexcept { return hook_socket(domain, type, protocol); }
int socketpair(int domain, int type, int protocol, int sv[2]) noexcept {
  return hook_socketpair(domain, type, protocol, sv);
}
int pipe(int fds[2]) noexcept { return hook_pipe2(fds, 0); }
int pipe2(int fds[2], int flags) noexcept { return hook_pipe2(fds, flags); }
int accept(int fd, sockaddr* addr, socklen_t* len) { return hook_accept4(fd, addr, len, 0); }
int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) { return hook_accept4(fd, addr, len, flags); }
int connect(int fd, const sockaddr* addr, socklen_t len) { return hook_connect(fd, addr, len); }

ssize_t read(int fd, void* buf, size_t n) { return hook_read(fd, buf, n); }
ssize_t readv(int fd, const iovec* iov, int n) { return hook_readv(fd, iov, n); }
ssize_t recv(int fd, void* buf, size_t n, int flags) {
  return hook_recvfrom(fd, buf, n, flags, nullptr, nullptr);
}
ssize_t recvfrom(int fd, void* buf, size_t n, int flags, sockaddr* addr, socklen_t* len) {
  return hook_recvfrom(fd, buf, n, flags, addr, len);
}
ssize_t recvmsg(int fd, msghdr* msg, int flags) { return hook_recvmsg(fd, msg, flags); }

ssize_t write(int fd, const void* buf, size_t n) { return hook_write(fd, buf, n); }
ssize_t writev(int fd, const iovec* iov, int n) { return hook_writev(fd, iov, n); }
ssize_t send(int fd, const void* buf, size_t n, int flags) {
  return hook_sendto(fd, buf, n, flags, nullptr, 0);
}
ssize_t sendto(int fd, const void* buf, size_t n, int flags, const sockaddr* addr, socklen_t len) {
  return hook_sendto(fd, buf, n, flags, addr, len);
}
ssize_t sendmsg(int fd, const msghdr* msg, int flags) { return hook_sendmsg(fd, msg, flags); }
ssize_t spindle_hooks_sendfile(int out, int in, off_t* offset, size_t n) __asm__("sendfile");
ssize_t spindle_hooks_sendfile64(int out, int in, off_t* offset, size_t n) __asm__("sendfile64");
ssize_t spindle_hooks_sendfile(int out, int in, off_t* offset, size_t n) {
  return hook_sendfile(out, in, offset, n);
}
ssize_t spindle_hooks_sendfile64(int out, int in, off_t* offset, size_t n) {
  return hook_sendfile(out, in, offset, n);
}

// _FORTIFY_SOURCE callers reach these when the buffer size is known.
ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen) {
  if (n > buflen) __chk_fail();
  return hook_read(fd, buf, n);
}
ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags) {
  if (n > buflen) __chk_fail();
  return hook_recvfrom(fd, buf, n, flags, nullptr, nullptr);
}
ssize_t __recvfrom_chk(int fd, void* buf, size_t n, size_t buflen, int flags, sockaddr* addr,
                       socklen_t* len) {
  if (n > buflen) __chk_fail();
  return hook_recvfrom(fd, buf, n, flags, addr, len);
}

int close(int fd) { return hook_close(fd); }
int dup(int fd) noexcept { return hook_dup(fd); }
int dup2(int from, int to) noexcept { return hook_dup3(from, to, -1); }
int dup3(int from, int to, int flags) noexcept { return hook_dup3(from, to, flags); }

// fcntl's third argument is an int, a pointer or absent; like glibc, read
// it as a word (absent: an unused, harmless value). With
// _FILE_OFFSET_BITS=64 glibc's headers rename fcntl to fcntl64 (and
// sendfile to sendfile64), so both names are defined through asm labels,
// whatever the build's own flags.
int spindle_hooks_fcntl(int fd, int cmd, ...) __asm__("fcntl");
int spindle_hooks_fcntl64(int fd, int cmd, ...) __asm__("fcntl64");
int spindle_hooks_fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  const unsigned long arg = va_arg(ap, unsigned long);
  va_end(ap);
  return hook_fcntl(fd, cmd, arg);
}
int spindle_hooks_fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  const unsigned long arg = va_arg(ap, unsigned long);
  va_end(ap);
  return hook_fcntl(fd, cmd, arg);
}
int ioctl(int fd, unsigned long request, ...) noexcept {
  va_list ap;
  va_start(ap, request);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return hook_ioctl(fd, request, arg);
}

int setsockopt(int fd, int level, int name, const void* value, socklen_t len) noexcept {
  return hook_setsockopt(fd, level, name, value, len);
}

}  // extern "C"
