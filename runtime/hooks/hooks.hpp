// libspindle_hooks: synchronous code runs concurrently on fibers, unchanged.
//
// Linking this library (whole, see below) replaces the libc functions a
// synchronous program or library blocks in. Called on a fiber, a blocking
// call parks the fiber and lets the others run; called anywhere else (a
// plain thread, before spindle::run, the thread's own context inside run)
// it goes straight to the kernel with unchanged semantics. The core
// libspindle never interposes anything; this library is opt-in.
//
//   meson:       dependencies : [spindle_hooks_dep]
//   pkg-config:  pkg-config --static --libs spindle_hooks
//                (-Wl,--whole-archive -lspindle_hooks -Wl,--no-whole-archive
//                 -lspindle ...: nothing references the hooks by name, so a
//                 plain -lspindle_hooks would link none of them)
//
// How: the archive defines read, write, poll, ... as ordinary strong
// symbols. In a dynamic executable they take precedence over libc's for
// the program and for every shared library it loads (libpq, hiredis,
// libcurl call them through the PLT); in a static one they replace libc.a's
// weak definitions. The hooks reach the kernel with system call
// instructions of their own (runtime/hooks/real.hpp) and libc's name
// resolvers with dlsym(RTLD_NEXT), resolved once (runtime/hooks/dns.cpp). Calls glibc makes internally
// (fread's read, getaddrinfo's own sockets) never reach the hooks.
//
// Interposed:
//   sockets    socket socketpair accept accept4 connect setsockopt
//              (SO_RCVTIMEO, SO_SNDTIMEO)
//   pipes      pipe pipe2
//   I/O        read readv recv recvfrom recvmsg write writev send sendto
//              sendmsg sendfile, and the _FORTIFY_SOURCE variants
//              __read_chk __recv_chk __recvfrom_chk __poll_chk __ppoll_chk
//   waiting    poll ppoll select pselect
//   sleeping   sleep usleep nanosleep clock_nanosleep (so
//              std::this_thread::sleep_for too)
//   fds        close dup dup2 dup3 fcntl fcntl64 ioctl(FIONBIO)
//   names      getaddrinfo freeaddrinfo gethostbyname
//
// Which fds park. Sockets and pipes created by the hooks on a fiber are
// created non-blocking in the kernel; sockets and pipes created elsewhere
// are switched to non-blocking the first time a fiber makes a blocking call
// on them. The per-fd table (fd_table.hpp) remembers what the application
// asked for, so:
//   - an fd the application made non-blocking (SOCK_NONBLOCK, O_NONBLOCK,
//     FIONBIO) keeps returning EAGAIN and never parks;
//   - fcntl(F_GETFL) reports O_NONBLOCK only if the application set it;
//   - a blocking call on such an fd outside a fiber still blocks: the hook
//     makes the non-blocking kernel call and, on EAGAIN, waits in ppoll;
//   - blocking writes (write, writev, send, sendto, sendmsg) write
//     everything, as a blocking socket does, and recv(MSG_WAITALL) on a
//     stream socket waits for everything; SO_RCVTIMEO / SO_SNDTIMEO bound
//     the whole call and end it with EAGAIN (or the count done so far);
//   - connect parks on EINPROGRESS and reports SO_ERROR; with SO_SNDTIMEO
//     expired it fails with EINPROGRESS, as Linux does.
// Everything else passes through: regular files, ttys, eventfds, epoll and
// timer fds, and stdin/stdout/stderr (fds 0-2 are shared with the parent
// process and with stdio's own buffered writes, so their mode is never
// changed), as do calls with MSG_DONTWAIT.
//
// poll, ppoll, select, pselect on a fiber with a non-zero timeout: one real
// zero-timeout call first; if nothing is ready, the fiber parks (one fd:
// on that fd's scheduler slot; several: on a temporary epoll instance
// holding them all) until something is, or the timeout passes, then a
// zero-timeout call fills in the results. Fds epoll refuses (regular files)
// are always ready, so the first call already returns. A signal mask given
// to ppoll or pselect cannot be applied to one fiber: those calls go to the
// kernel as they are and block the thread, as does select with nfds above
// FD_SETSIZE.
//
// Errors from a park become errno, never exceptions through C code:
//   EAGAIN      SO_RCVTIMEO / SO_SNDTIMEO expired (poll: returns 0)
//   ETIMEDOUT   a spindle::Timeout scope around the call expired (and
//               every later hooked call in the scope fails the same way)
//   ECANCELED   the fiber was cancelled. The cancellation is requested
//               again, so it is delivered as spindle::Cancelled at the next
//               spindle suspension point outside the C library; until then
//               every blocking hook fails with ECANCELED at once. Not EINTR:
//               C libraries retry EINTR, which would spin.
//   EBADF       another fiber of this thread closed (or dup2'd over) the fd
//               while this one waited: close() wakes the waiters first.
// Sleeps (nanosleep, clock_nanosleep, usleep) fail with ECANCELED or
// ETIMEDOUT the same way and report the time left; sleep() returns the
// seconds left. Outside fibers, a signal interrupting an emulated blocking
// wait gives EINTR, as a handler installed without SA_RESTART would.
//
// getaddrinfo / gethostbyname on a fiber are answered by spindle::net::
// resolve (c-ares, non-blocking); see dns.cpp for the hints handled and the
// fallback. Outside fibers they call libc's (dlsym(RTLD_NEXT)); in a static
// executable, where libc's own getaddrinfo is replaced, they resolve with
// spindle on a short-lived helper thread.
//
// Not hooked, and the fiber-aware alternative:
//   regular-file I/O (read/write on files, open, fsync, stat, stdio)
//         -> spindle::run_blocking(...) or <spindle/file.hpp>
//   pthread_mutex_*, std::mutex  -> spindle::Lock
//   pthread_cond_*, std::condition_variable  -> spindle::Condition
//   sem_wait  -> spindle::Semaphore
//   epoll_wait / epoll_pwait of a library's own event loop, io_uring
//         -> spindle::wait_readable(epoll fd) around a zero-timeout
//            epoll_wait, or run_blocking
//   recvmmsg, sendmmsg, splice, tee, copy_file_range, waitpid, wait,
//   flock/fcntl locks, gethostbyname_r, getnameinfo, res_query
//         -> spindle::run_blocking(...)
//   stdio (fread, fprintf) on sockets or pipes (fdopen): glibc calls the
//   kernel directly and would see EAGAIN on an fd the hooks made
//   non-blocking -> spindle::net streams, or the fd outside fibers.
//
// Other limits:
//   - An fd shared by fibers of two schedulers (threads) must be closed on
//     a thread after its waiters there are gone; a thread blocked in a
//     pass-through call is not woken by close() on another thread (as in
//     the kernel).
//   - Pipes and sockets given to child processes (fork, posix_spawn) keep
//     the O_NONBLOCK the hooks may have set; create them outside fibers,
//     or clear the flag in the child, for children that expect blocking
//     fds.
//   - A signal handler that interrupts a fiber runs "on" that fiber: its
//     hooked calls must not block (the usual non-blocking self-pipe, or
//     fds 0-2, are fine).
//   - The hooked calls are not pthread_cancel cancellation points.
//   - An fd closed behind the hooks' back (a raw syscall, fclose of an
//     fdopen'd socket) leaves its table entry and scheduler registration
//     stale until its number is created or closed through the hooks again
//     (fd_table.hpp).
//   - spindle's own code (the poller's eventfd, spindle::net, c-ares) goes
//     through the hooks too when they are linked; its fds are non-blocking
//     or not sockets, so those calls pass straight through.
#pragma once

#include <poll.h>
#include <sys/select.h>

#include <cerrno>
#include <cstdint>
#include <new>
#include <optional>
#include <system_error>

#include <spindle/clock.hpp>
#include <spindle/detail/fiber.hpp>
#include <spindle/error.hpp>
#include <spindle/timeout.hpp>

#include "runtime/hooks/fd_table.hpp"
#include "runtime/scheduler.hpp"

namespace spindle::hooks {

// The fiber a hook may park: nullptr outside spindle::run and on the
// thread's own context (the caller of run, which parks only to wait for
// the fibers), where calls go straight to the kernel.
inline detail::Fiber* current_fiber() noexcept {
  detail::Scheduler* s = detail::Scheduler::current();
  if (!s) return nullptr;
  detail::Fiber* f = s->running();
  return f == s->main_fiber() ? nullptr : f;
}

enum class Dir { read, write };

// On a fiber: the fd's entry bits after classifying an unknown fd (fstat)
// and forcing O_NONBLOCK on a socket or pipe the application uses as
// blocking. 0 when the fd has no entry (bad fd: the real call reports it).
// Inline for fds already settled, the case of every call after the first.
std::uint32_t prepare_slow(int fd) noexcept;
inline std::uint32_t prepare(int fd) noexcept {
  if (FdEntry* e = fd_entry_if_any(fd)) {
    const std::uint32_t bits = e->bits.load(std::memory_order_acquire);
    const FdKind kind = kind_of(bits);
    if (kind == FdKind::other) return bits;
    if ((kind == FdKind::socket || kind == FdKind::fifo) && (bits & (kUserNonblock | kForced))) return bits;
  }
  return prepare_slow(fd);
}

// A hook's wait ends with 0 (ready: retry the call), kTimedOut (the call's
// own deadline passed) or an errno value (see the header comment).
inline constexpr int kTimedOut = -1;

// Deadlines on the scheduler's clock (ns), from a relative timeout in ns;
// a timeout of 0 or less means none (detail::kNoDeadline).
std::int64_t fiber_deadline_after(std::int64_t timeout_ns) noexcept;
// Deadlines outside fibers, on CLOCK_MONOTONIC.
std::int64_t monotonic_ns() noexcept;

// Runs `wait` (which parks through spindle's API) under a Timeout scope for
// the call's own deadline and turns what it throws into an outcome.
template <class Wait>
int run_wait(std::int64_t deadline_ns, Wait&& wait) noexcept {
  detail::Fiber* self = current_fiber();
  try {
    std::optional<Timeout> own;
    if (deadline_ns != detail::kNoDeadline) own.emplace(TimePoint(std::chrono::nanoseconds(deadline_ns)));
    try {
      wait();
      return 0;
    } catch (const TimeoutError&) {
      if (own && own->expired()) return kTimedOut;
      throw;
    }
  } catch (const TimeoutError&) {
    return ETIMEDOUT;
  } catch (const Cancelled&) {
    // Delivered again at the next suspension point outside the C library.
    detail::request_cancel(self);
    return ECANCELED;
  } catch (const std::system_error& e) {
    return e.code().category() == std::system_category() && e.code().value() > 0 ? e.code().value() : EIO;
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  } catch (const std::exception&) {
    return EIO;
  }
}

// Parks the running fiber until fd may be ready in `dir` (then the caller
// retries its call) or deadline_ns passes. Uses the fd's scheduler slot,
// or a temporary epoll instance when another fiber already waits on the
// slot in that direction.
int park_fd(int fd, Dir dir, std::int64_t deadline_ns) noexcept;

// Outside fibers: blocks in ppoll until fd may be ready for `events` or the
// CLOCK_MONOTONIC deadline passes (kNoDeadline: never). 0, kTimedOut at
// the deadline, or ppoll's errno (EINTR).
int block_fd(int fd, short events, std::int64_t deadline_ns) noexcept;

// A temporary epoll instance that a fiber parks on to wait for several fds
// at once. While it exists it is listed per thread with the fds it stands
// for, so that close(fd) and dup2 over fd on this thread wake its fiber.
class TempEpoll {
 public:
  TempEpoll() noexcept;  // check ok(); errno says why not
  ~TempEpoll();
  TempEpoll(const TempEpoll&) = delete;
  TempEpoll& operator=(const TempEpoll&) = delete;

  bool ok() const noexcept { return fd_ >= 0; }
  // epoll_ctl(ADD) (MOD with the union of events for a repeated fd);
  // returns 0 or the errno.
  int add(int fd, std::uint32_t events) noexcept;
  // What close(fd) looks for: the pollfd array, the select sets, one fd.
  void watch(const pollfd* fds, nfds_t n) noexcept { fds_ = fds, nfds_ = n; }
  void watch(const fd_set* sets[3], int nfds) noexcept;
  void watch(int fd) noexcept { single_ = fd; }
  // Parks until an added fd may be ready, the deadline passes, or a
  // watched fd is closed (EBADF).
  int wait(std::int64_t deadline_ns) noexcept;

  // close() and dup2() of `fd` on this thread: wakes every fiber waiting
  // on a temporary epoll that watches fd.
  static void wake_waiters_on(int fd) noexcept;

 private:
  bool watches(int fd) const noexcept;

  int fd_ = -1;
  TempEpoll* prev_ = nullptr;
  TempEpoll* next_ = nullptr;
  const pollfd* fds_ = nullptr;
  nfds_t nfds_ = 0;
  const fd_set* sets_[3] = {};
  int set_nfds_ = 0;
  int single_ = -1;
};

}  // namespace spindle::hooks

// glibc's report of a _FORTIFY_SOURCE overflow (exported, not declared in
// its public headers); the __*_chk hooks call it like glibc's own do.
extern "C" [[noreturn]] void __chk_fail(void);
