// The kernel calls behind every hook, made directly.
//
// The hooks define read, write, poll, close, ... themselves, so calling the
// libc function of the same name from a hook would call the hook again.
// A system call instruction reaches the kernel without depending on glibc
// internals (__read, __libc_read, versioned aliases) and works the same in
// a dynamically and a statically linked program. On x86-64 and AArch64 it
// is inline assembly, so a hooked call costs a few instructions more than
// glibc's wrapper rather than a variadic syscall(2) call more; elsewhere it
// is syscall(2). Only the system call numbers that exist on every Linux
// architecture are used (ppoll, not poll; pselect6, not select; dup3, not
// dup2; accept4, not accept).
//
// Every function returns what the kernel returned, -1 with errno set on
// failure, exactly like the libc wrapper it replaces; none of them retries
// EINTR.
#pragma once

#if !defined(__linux__)
#error "the spindle hooks library is Linux-only"
#endif

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <type_traits>

namespace spindle::hooks::real {

// One system call with up to six word arguments; -errno on failure, as
// the kernel returns it.
inline long raw(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) noexcept {
#if defined(__x86_64__)
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  long ret;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
#elif defined(__aarch64__)
  register long x8 __asm__("x8") = n;
  register long x0 __asm__("x0") = a;
  register long x1 __asm__("x1") = b;
  register long x2 __asm__("x2") = c;
  register long x3 __asm__("x3") = d;
  register long x4 __asm__("x4") = e;
  register long x5 __asm__("x5") = f;
  __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
  return x0;
#else
  const long r = ::syscall(n, a, b, c, d, e, f);
  return r == -1 ? -errno : r;
#endif
}

// The libc convention: -1 with errno set.
inline long checked(long r) noexcept {
  if (r < 0 && r > -4096) [[unlikely]] {
    errno = static_cast<int>(-r);
    return -1;
  }
  return r;
}

template <class T>
inline long arg(T v) noexcept {
  if constexpr (std::is_pointer_v<T>)
    return reinterpret_cast<long>(v);
  else
    return static_cast<long>(v);
}

template <class... Args>
inline long call(long n, Args... args) noexcept {
  return checked(raw(n, arg(args)...));
}

inline ssize_t read(int fd, void* buf, std::size_t n) noexcept { return call(SYS_read, fd, buf, n); }
inline ssize_t write(int fd, const void* buf, std::size_t n) noexcept { return call(SYS_write, fd, buf, n); }
inline ssize_t readv(int fd, const iovec* iov, int n) noexcept { return call(SYS_readv, fd, iov, n); }
inline ssize_t writev(int fd, const iovec* iov, int n) noexcept { return call(SYS_writev, fd, iov, n); }
inline ssize_t recvfrom(int fd, void* buf, std::size_t n, int flags, sockaddr* addr,
                        socklen_t* len) noexcept {
  return call(SYS_recvfrom, fd, buf, n, flags, addr, len);
}
inline ssize_t sendto(int fd, const void* buf, std::size_t n, int flags, const sockaddr* addr,
                      socklen_t len) noexcept {
  return call(SYS_sendto, fd, buf, n, flags, addr, len);
}
inline ssize_t recvmsg(int fd, msghdr* msg, int flags) noexcept { return call(SYS_recvmsg, fd, msg, flags); }
inline ssize_t sendmsg(int fd, const msghdr* msg, int flags) noexcept {
  return call(SYS_sendmsg, fd, msg, flags);
}
inline ssize_t sendfile(int out, int in, off_t* offset, std::size_t n) noexcept {
  return call(SYS_sendfile, out, in, offset, n);
}

inline int socket(int domain, int type, int protocol) noexcept {
  return static_cast<int>(call(SYS_socket, domain, type, protocol));
}
inline int socketpair(int domain, int type, int protocol, int sv[2]) noexcept {
  return static_cast<int>(call(SYS_socketpair, domain, type, protocol, sv));
}
inline int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) noexcept {
  return static_cast<int>(call(SYS_accept4, fd, addr, len, flags));
}
inline int connect(int fd, const sockaddr* addr, socklen_t len) noexcept {
  return static_cast<int>(call(SYS_connect, fd, addr, len));
}
inline int getsockopt(int fd, int level, int name, void* value, socklen_t* len) noexcept {
  return static_cast<int>(call(SYS_getsockopt, fd, level, name, value, len));
}
inline int setsockopt(int fd, int level, int name, const void* value, socklen_t len) noexcept {
  return static_cast<int>(call(SYS_setsockopt, fd, level, name, value, len));
}
inline int pipe2(int fds[2], int flags) noexcept { return static_cast<int>(call(SYS_pipe2, fds, flags)); }

inline int close(int fd) noexcept { return static_cast<int>(call(SYS_close, fd)); }
inline int dup(int fd) noexcept { return static_cast<int>(call(SYS_dup, fd)); }
inline int dup3(int from, int to, int flags) noexcept {
  return static_cast<int>(call(SYS_dup3, from, to, flags));
}
inline int fcntl(int fd, int cmd, unsigned long arg) noexcept {
  return static_cast<int>(call(SYS_fcntl, fd, cmd, arg));
}
inline int ioctl(int fd, unsigned long request, void* arg) noexcept {
  return static_cast<int>(call(SYS_ioctl, fd, request, arg));
}
inline int fstat(int fd, struct stat* st) noexcept { return static_cast<int>(call(SYS_fstat, fd, st)); }

// A null timeout waits forever; a null mask leaves the signal mask alone.
inline int ppoll(pollfd* fds, nfds_t n, const timespec* timeout, const sigset_t* mask) noexcept {
  return static_cast<int>(call(SYS_ppoll, fds, n, timeout, mask, _NSIG / 8));
}
// The kernel's pselect6 takes the mask as {pointer, size}; it updates
// *timeout with the time left, as Linux's select does.
inline int pselect6(int n, fd_set* r, fd_set* w, fd_set* e, timespec* timeout,
                    const sigset_t* mask) noexcept {
  struct {
    const sigset_t* set;
    std::size_t size;
  } data{mask, _NSIG / 8};
  return static_cast<int>(call(SYS_pselect6, n, r, w, e, timeout, mask ? &data : nullptr));
}
// Returns an error number like the libc function (0 on success), not -1.
inline int clock_nanosleep(clockid_t clock, int flags, const timespec* req, timespec* rem) noexcept {
  return static_cast<int>(-raw(SYS_clock_nanosleep, clock, flags, arg(req), arg(rem)));
}

inline int epoll_create1(int flags) noexcept { return static_cast<int>(call(SYS_epoll_create1, flags)); }
inline int epoll_ctl(int ep, int op, int fd, epoll_event* ev) noexcept {
  return static_cast<int>(call(SYS_epoll_ctl, ep, op, fd, ev));
}

}  // namespace spindle::hooks::real
