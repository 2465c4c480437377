// Backend conformance for the poller seam (platform/poller.hpp).
//
// Written once so that every backend is held to the same contract: a
// behaviour the scheduler relies on is tested here, not per backend, or the
// backends drift apart. A backend's test file includes its own header, then
// this one, and instantiates:
//
//   TEST_CASE_TEMPLATE_INVOKE(poller_conformance, spindle::platform::XPoller);
//
// The cases use real kernel objects (non-blocking socketpairs and pipes) and
// fake IoSlots whose reader and writer stay null: the poller only carries the
// slot pointer, it never dereferences it. Events are accumulated per slot over
// several waits, because a backend may report read and write readiness of one
// fd as separate kernel events (kqueue does). Anything that should happen
// "at once" gets kPatience before the case fails, so a broken backend fails
// in bounded time instead of hanging; real sleeps appear only where a timeout
// is being measured.
//
// The non-fd sources (signals, child exits) are checked the same way: a
// signal is raised at this thread with its default action (terminate) in
// place, so a backend that failed to suspend it would end the test binary;
// children are forked and only ever call async-signal-safe functions.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "platform/syscall.hpp"
#include "runtime/io_slot.hpp"

namespace spindle::test::conformance {

// Process watches on Linux (the epoll backend and the kqueue emulation)
// rest on pidfd_open, which Linux before 5.3 and valgrind 3.19 do not
// have; the runtime then polls for the exit instead (runtime/process.cpp),
// and these cases say they were skipped.
inline bool pidfd_unavailable() {
#if defined(__linux__) && defined(SYS_pidfd_open)
  const long fd = ::syscall(SYS_pidfd_open, ::getpid(), 0);
  if (fd >= 0) {
    ::close(static_cast<int>(fd));
    return false;
  }
  return errno == ENOSYS;
#else
  return false;
#endif
}

// Runs a process-watch case, or says why it was skipped.
template <class Case>
void unless_pidfd_unavailable(Case run_case) {
  if (pidfd_unavailable())
    MESSAGE("skipped: no pidfd_open here (Linux < 5.3 or valgrind)");
  else
    run_case();
}

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using detail::IoSlot;
using detail::Nanos;
using detail::ReadyEvent;
using detail::ReadyList;

// How long anything that should be immediate may take before the case fails.
// Only a failing case ever waits this long; valgrind fits well inside.
inline constexpr Nanos kPatience = 10s;
// "Not early" is exact; "not late" is generous because CI machines stall.
inline constexpr Nanos kLateness = 2s;

// Owns one descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// A connected AF_UNIX stream pair, both ends non-blocking. `a` is the end
// under test, `b` its peer.
struct SocketPair {
  UniqueFd a;
  UniqueFd b;

  SocketPair() {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                         sv) == 0);
    a = UniqueFd(sv[0]);
    b = UniqueFd(sv[1]);
  }
};

// A non-blocking pipe; `a` reads, `b` writes (same roles as SocketPair).
struct Pipe {
  UniqueFd a;
  UniqueFd b;

  Pipe() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    a = UniqueFd(fds[0]);
    b = UniqueFd(fds[1]);
  }
};

// A TCP connection over IPv4 loopback; `a` (the connecting end, made
// non-blocking) is under test, `b` is the accepted peer. Empty where the
// machine has no loopback interface.
struct TcpPair {
  UniqueFd a;
  UniqueFd b;

  static std::optional<TcpPair> make() {
    const UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(listener.get() >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return std::nullopt;
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    REQUIRE(::listen(listener.get(), 1) == 0);
    TcpPair pair;
    pair.a = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(pair.a.get() >= 0);
    // Blocking connect: loopback completes it against the backlog at once.
    REQUIRE(::connect(pair.a.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::fcntl(pair.a.get(), F_SETFL, ::fcntl(pair.a.get(), F_GETFL) | O_NONBLOCK) == 0);
    pair.b = UniqueFd(::accept(listener.get(), nullptr, nullptr));
    REQUIRE(pair.b.get() >= 0);
    return pair;
  }
};

inline void write_byte(int fd) { REQUIRE(::write(fd, "x", 1) == 1); }

// Reads until EAGAIN; returns the number of bytes read.
inline std::size_t drain(int fd) {
  std::size_t total = 0;
  char buf[4096];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r > 0) {
      total += static_cast<std::size_t>(r);
      continue;
    }
    const int err = errno;  // Before doctest's own output can change it.
    REQUIRE(r < 0);
    REQUIRE(err == EAGAIN);
    return total;
  }
}

// What a series of waits reported for one slot. The readiness flags count
// only events meant for the slot's current registration (event_is_current);
// stale ones are only counted, as the scheduler would drop them.
struct Seen {
  int events = 0;
  int stale = 0;
  bool readable = false;
  bool writable = false;
  bool hangup = false;

  void add(const ReadyList& out, const IoSlot* slot) {
    for (const ReadyEvent& ev : out) {
      if (ev.slot != slot) continue;
      ++events;
      if (!detail::event_is_current(ev)) {
        ++stale;
        continue;
      }
      readable = readable || ev.readable;
      writable = writable || ev.writable;
      hangup = hangup || ev.hangup;
    }
  }
};

// Waits, in short slices, until `done(seen)` holds or kPatience runs out.
template <class P>
Seen wait_until(P& poller, const IoSlot& slot,
                const std::function<bool(const Seen&)>& done) {
  Seen seen;
  ReadyList out;
  const auto give_up = Clock::now() + kPatience;
  while (!done(seen) && Clock::now() < give_up) {
    poller.wait(out, Nanos(100ms));
    seen.add(out, &slot);
  }
  return seen;
}

template <class P>
ReadyList poll_once(P& poller) {
  ReadyList out;
  poller.wait(out, Nanos::zero());
  return out;
}

// Bounds a wait(nullopt) that should end: after `limit` it makes a socket
// registered with the poller readable, so a lost wake fails the case instead
// of hanging it. Construct it before anything the case wants to wait for
// (it consumes the registration's own writable edge with a poll).
template <class P>
class Watchdog {
 public:
  Watchdog(P& poller, Nanos limit) : poller_(poller) {
    poller_.add(pair_.a.get(), slot_);
    const Seen seen =
        wait_until(poller_, slot_, [](const Seen& s) { return s.writable; });
    REQUIRE(seen.writable);
    thread_ = std::thread([this, limit] {
      std::unique_lock lock(mutex_);
      if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
        fired_ = true;
        (void)::write(pair_.b.get(), "!", 1);
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
    poller_.remove(pair_.a.get());
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  bool fired() {
    std::lock_guard lock(mutex_);
    return fired_;
  }

 private:
  P& poller_;
  SocketPair pair_;
  IoSlot slot_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;   // guarded by mutex_
  bool fired_ = false;  // guarded by mutex_
  std::thread thread_;
};

// Lets another thread see that this one is asleep in the kernel, so that a
// wake sent from there lands on a wait that is already blocked rather than
// before it. Linux reads the thread's state from /proc; elsewhere it gives up
// at once, which weakens such a case to "wake before wait" but keeps it valid.
class BlockedProbe {
 public:
#if defined(__linux__)
  BlockedProbe() : tid_(::gettid()) {}

  bool wait_until_blocked() const {
    const std::string path = fmt::format("/proc/self/task/{}/stat", tid_);
    const auto give_up = Clock::now() + kPatience;
    while (Clock::now() < give_up) {
      if (state(path) == 'S') return true;
      std::this_thread::yield();
    }
    return false;
  }

 private:
  // The state letter follows the parenthesised command name, which may itself
  // contain spaces and parentheses.
  static char state(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "re");
    if (f == nullptr) return '?';
    char buf[512];
    const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    const std::string_view text(buf, n);
    const std::size_t close = text.rfind(')');
    if (close == std::string_view::npos || close + 2 >= text.size()) return '?';
    return text[close + 2];
  }

  pid_t tid_;
#else
  bool wait_until_blocked() const { return false; }
#endif
};

// Signal plumbing for the EINTR and async-signal-safety cases.
inline std::atomic<int> signals_caught{0};
inline std::atomic<void*> poller_to_wake{nullptr};

template <class P>
void count_and_wake(int) {
  signals_caught.fetch_add(1, std::memory_order_relaxed);
  if (void* p = poller_to_wake.load(std::memory_order_acquire)) {
    static_cast<P*>(p)->wake();
  }
}

// Installs a handler for the scope, without SA_RESTART: an interrupted wait
// must come back with EINTR for the backend to retry (epoll_wait never
// restarts anyway, see signal(7)).
class ScopedSignal {
 public:
  ScopedSignal(int sig, void (*handler)(int)) : sig_(sig) {
    struct sigaction sa {};
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    REQUIRE(::sigaction(sig_, &sa, &old_) == 0);
    signals_caught = 0;
  }
  ~ScopedSignal() {
    ::sigaction(sig_, &old_, nullptr);
    poller_to_wake = nullptr;
  }
  ScopedSignal(const ScopedSignal&) = delete;
  ScopedSignal& operator=(const ScopedSignal&) = delete;

 private:
  int sig_;
  struct sigaction old_ {};
};

// Raises RLIMIT_NOFILE's soft limit to the hard one for the scope, if the
// soft limit is below `needed`.
class ScopedNofile {
 public:
  explicit ScopedNofile(rlim_t needed) {
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old_) == 0);
    if (old_.rlim_cur != RLIM_INFINITY && old_.rlim_cur < needed) {
      rlimit raised = old_;
      raised.rlim_cur = old_.rlim_max;
      changed_ = ::setrlimit(RLIMIT_NOFILE, &raised) == 0;
    }
    rlimit now{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &now) == 0);
    enough_ = now.rlim_cur == RLIM_INFINITY || now.rlim_cur >= needed;
    limit_ = now.rlim_cur;
  }
  ~ScopedNofile() {
    if (changed_) ::setrlimit(RLIMIT_NOFILE, &old_);
  }
  ScopedNofile(const ScopedNofile&) = delete;
  ScopedNofile& operator=(const ScopedNofile&) = delete;

  bool enough() const { return enough_; }
  rlim_t limit() const { return limit_; }

 private:
  rlimit old_{};
  bool changed_ = false;
  bool enough_ = false;
  rlim_t limit_ = 0;
};

// A forked child that exits with `code` once the parent writes to or closes
// `go.b`. Only async-signal-safe calls run in the child.
inline pid_t spawn_child(const Pipe& go, int code) {
  std::fflush(nullptr);  // Or the child's exit may print our buffer twice.
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(go.b.get());  // Its own copy would keep the pipe open.
    // The pipe is non-blocking: wait for data or end of file with poll.
    pollfd p{go.a.get(), POLLIN, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    ::_exit(code);
  }
  return pid;
}

// Waits, without reaping, until child pid has exited.
inline void wait_until_exited(pid_t pid) {
  const auto give_up = Clock::now() + kPatience;
  for (;;) {
    siginfo_t info{};
    REQUIRE(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0);
    if (info.si_pid == pid) return;
    REQUIRE(Clock::now() < give_up);
    std::this_thread::sleep_for(1ms);
  }
}

inline int reap(pid_t pid) {
  int status = 0;
  REQUIRE(platform::retry_eintr([&] { return ::waitpid(pid, &status, 0); }) == pid);
  return status;
}

// Reaps the child at the end of the scope, whatever the case did, so a
// failing case leaves no zombie and no orphan.
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid) : pid_(pid) {}
  ~ChildGuard() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    platform::retry_eintr([&] { return ::waitpid(pid_, &status, 0); });
  }
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  // The case reaped the child itself.
  void release() { pid_ = -1; }

 private:
  pid_t pid_;
};

// What a signal looks like to this thread: its disposition and whether it is
// blocked here. A watch must leave both as it found them.
struct SignalState {
  void (*handler)(int);
  bool blocked;

  static SignalState of(int signo) {
    struct sigaction sa {};
    REQUIRE(::sigaction(signo, nullptr, &sa) == 0);
    sigset_t mask;
    REQUIRE(::pthread_sigmask(SIG_BLOCK, nullptr, &mask) == 0);
    return SignalState{sa.sa_handler, sigismember(&mask, signo) == 1};
  }
  bool operator==(const SignalState&) const = default;
};

// Blocks a signal in this thread for the scope. On the way out it discards a
// delivery still pending, so that unblocking cannot run the default action
// and end the test binary.
class ScopedBlock {
 public:
  explicit ScopedBlock(int signo) : signo_(signo) {
    sigemptyset(&set_);
    sigaddset(&set_, signo_);
    REQUIRE(::pthread_sigmask(SIG_BLOCK, &set_, nullptr) == 0);
  }
  ~ScopedBlock() {
    const timespec zero{0, 0};
    while (::sigtimedwait(&set_, nullptr, &zero) == signo_) {
    }
    ::pthread_sigmask(SIG_UNBLOCK, &set_, nullptr);
  }
  ScopedBlock(const ScopedBlock&) = delete;
  ScopedBlock& operator=(const ScopedBlock&) = delete;

 private:
  int signo_;
  sigset_t set_;
};

inline bool pending_here(int signo) {
  sigset_t pending;
  sigemptyset(&pending);
  REQUIRE(::sigpending(&pending) == 0);
  return sigismember(&pending, signo) == 1;
}

// ---------------------------------------------------------------------------
// The cases. Each is a function so the SUBCASE list below reads as the
// contract; the SUBCASE names are the sentences a failure report shows.

template <class P>
void readable_after_peer_write() {
  P poller;
  SocketPair sp;
  IoSlot slot;
  poller.add(sp.a.get(), slot);
  CHECK(slot.registered);
  CHECK(slot.fd == sp.a.get());

  write_byte(sp.b.get());
  const Seen seen =
      wait_until(poller, slot, [](const Seen& s) { return s.readable; });
  CHECK(seen.readable);
  CHECK_FALSE(seen.hangup);
  CHECK(seen.stale == 0);
}

template <class P>
void writable_when_fresh() {
  P poller;
  SocketPair sp;
  IoSlot slot;
  poller.add(sp.a.get(), slot);
  const Seen seen =
      wait_until(poller, slot, [](const Seen& s) { return s.writable; });
  CHECK(seen.writable);
  CHECK_FALSE(seen.readable);
  CHECK_FALSE(seen.hangup);
}

// `Pair` is SocketPair or Pipe; `end_peer` ends the peer's side.
template <class P, class Pair>
void hangup_when_peer_ends(void (*end_peer)(Pair&)) {
  P poller;
  Pair pair;
  IoSlot slot;
  poller.add(pair.a.get(), slot);
  end_peer(pair);
  const Seen seen =
      wait_until(poller, slot, [](const Seen& s) { return s.hangup; });
  CHECK(seen.hangup);
  CHECK(seen.readable);
  // Reading now meets end of file rather than EAGAIN: the fiber's retry
  // finds out what happened.
  char c;
  CHECK(::read(pair.a.get(), &c, 1) == 0);
}

// A reset is a peer close with an error: reported as hangup, and the error
// is left for the fiber's retried syscall, not consumed by the backend.
template <class P>
void hangup_and_error_on_peer_reset() {
  std::optional<TcpPair> tcp = TcpPair::make();
  if (!tcp) {
    MESSAGE("skipped: no IPv4 loopback");
    return;
  }
  P poller;
  IoSlot slot;
  poller.add(tcp->a.get(), slot);
  const linger reset_on_close{1, 0};
  REQUIRE(::setsockopt(tcp->b.get(), SOL_SOCKET, SO_LINGER, &reset_on_close, sizeof reset_on_close) == 0);
  tcp->b.reset();
  const Seen seen = wait_until(poller, slot, [](const Seen& s) { return s.hangup; });
  CHECK(seen.hangup);
  CHECK(seen.readable);
  CHECK(seen.writable);
  char c;
  const ssize_t r = ::read(tcp->a.get(), &c, 1);
  const int err = errno;
  CHECK(r == -1);
  CHECK(err == ECONNRESET);
  poller.remove(tcp->a.get());
}

template <class P>
void no_repeat_without_new_data() {
  P poller;
  SocketPair sp;
  IoSlot slot;
  poller.add(sp.a.get(), slot);
  write_byte(sp.b.get());
  Seen seen = wait_until(
      poller, slot, [](const Seen& s) { return s.readable && s.writable; });
  REQUIRE(seen.readable);
  REQUIRE(seen.writable);
  CHECK(drain(sp.a.get()) == 1);

  Seen again;
  again.add(poll_once(poller), &slot);
  CHECK(again.events == 0);
  again.add(poll_once(poller), &slot);
  CHECK(again.events == 0);

  write_byte(sp.b.get());
  seen = wait_until(poller, slot, [](const Seen& s) { return s.readable; });
  CHECK(seen.readable);
}

template <class P>
void timeout_never_early() {
  P poller;
  ReadyList out;
  for (const Nanos timeout : {Nanos(20ms), Nanos(2500us), Nanos(1ns)}) {
    CAPTURE(timeout.count());
    const auto start = Clock::now();
    const std::size_t n = poller.wait(out, timeout);
    const auto elapsed = Clock::now() - start;
    CAPTURE(std::chrono::duration_cast<Nanos>(elapsed).count());
    CHECK(n == 0);
    CHECK(out.empty());
    CHECK(elapsed >= timeout);
    CHECK(elapsed < timeout + kLateness);
  }
  const auto start = Clock::now();
  CHECK(poller.wait(out, Nanos::zero()) == 0);
  CHECK(Clock::now() - start < kLateness);
}

template <class P>
void signal_does_not_end_timed_wait_early() {
  P poller;
  ScopedSignal handler(SIGUSR1, &count_and_wake<P>);
  const BlockedProbe probe;
  const pthread_t waiter = ::pthread_self();
  std::atomic<bool> done{false};
  std::thread interrupter([&] {
    probe.wait_until_blocked();
    // Paced, not a storm: each signal should find the wait blocked again.
    while (!done.load()) {
      ::pthread_kill(waiter, SIGUSR1);
      std::this_thread::sleep_for(5ms);
    }
  });

  constexpr Nanos kTimeout = 100ms;
  ReadyList out;
  const auto start = Clock::now();
  const std::size_t n = poller.wait(out, kTimeout);
  const auto elapsed = Clock::now() - start;
  done = true;
  interrupter.join();

  CAPTURE(std::chrono::duration_cast<Nanos>(elapsed).count());
  CHECK(signals_caught.load() > 0);
  CHECK(n == 0);
  CHECK(elapsed >= kTimeout);
  CHECK(elapsed < kTimeout + kLateness);
}

template <class P>
void wake_from_another_thread() {
  P poller;
  Watchdog<P> watchdog(poller, kPatience);
  const BlockedProbe probe;
  bool saw_blocked = false;
  std::thread waker([&] {
    saw_blocked = probe.wait_until_blocked();
    poller.wake();
  });
  ReadyList out;
  const std::size_t n = poller.wait(out, std::nullopt);
  waker.join();
  CHECK(n == 0);
  CHECK(out.empty());
  CHECK_FALSE(watchdog.fired());
  if (!saw_blocked) MESSAGE("the wait was not seen blocked before the wake");
}

template <class P>
void wake_before_wait_and_bursts_coalesce() {
  P poller;
  Watchdog<P> watchdog(poller, kPatience);
  for (int i = 0; i < 1000; ++i) poller.wake();

  ReadyList out;
  CHECK(poller.wait(out, std::nullopt) == 0);
  CHECK(out.empty());
  CHECK_FALSE(watchdog.fired());

  // The burst was consumed whole: nothing is left to end the next waits.
  CHECK(poller.wait(out, Nanos::zero()) == 0);
  CHECK(out.empty());
  constexpr Nanos kTimeout = 20ms;
  const auto start = Clock::now();
  CHECK(poller.wait(out, kTimeout) == 0);
  CHECK(Clock::now() - start >= kTimeout);
}

template <class P>
void wake_from_signal_handler() {
  P poller;
  Watchdog<P> watchdog(poller, kPatience);
  ScopedSignal handler(SIGUSR2, &count_and_wake<P>);
  poller_to_wake = &poller;
  const BlockedProbe probe;
  const pthread_t waiter = ::pthread_self();
  std::thread signaller([&] {
    probe.wait_until_blocked();
    ::pthread_kill(waiter, SIGUSR2);
  });
  ReadyList out;
  const std::size_t n = poller.wait(out, std::nullopt);
  signaller.join();
  CHECK(n == 0);
  CHECK(signals_caught.load() == 1);
  CHECK_FALSE(watchdog.fired());
}

// A free-running waker against a waiter: every wake() that races with a
// drain must still end some wait. A lost one leaves the waiter blocked with
// work published and unseen, which shows up as a wait running to its timeout.
template <class P>
void racing_wakes_are_never_lost() {
  constexpr int kWakes = 100'000;
  constexpr Nanos kTimeout = 5s;
  P poller;
  std::atomic<int> sent{0};
  std::thread waker([&] {
    for (int i = 1; i <= kWakes; ++i) {
      sent.store(i, std::memory_order_release);
      poller.wake();
    }
  });
  ReadyList out;
  int seen = 0;
  int timed_out = 0;
  while (seen < kWakes) {
    const auto start = Clock::now();
    poller.wait(out, kTimeout);
    if (Clock::now() - start >= kTimeout) ++timed_out;
    seen = sent.load(std::memory_order_acquire);
  }
  waker.join();
  CHECK(timed_out == 0);
}

template <class P>
void remove_then_close_leaves_no_stale_event() {
  P poller;
  IoSlot slot;
  {
    SocketPair sp;
    poller.add(sp.a.get(), slot);
    write_byte(sp.b.get());  // Readiness now pending, never collected.
    poller.remove(sp.a.get());
    sp.b.reset();  // Would be a hangup, were the fd still registered.
    sp.a.reset();
  }
  ReadyList out;
  CHECK(poller.wait(out, Nanos::zero()) == 0);
  CHECK(out.empty());
}

// The scheduler collected events for an fd, then (before acting on them) the
// fd was removed and closed, its slot forgotten, and the number reused.
template <class P>
void reused_fd_number_after_collected_events() {
  P poller;
  IoSlot slot;
  slot.seq = 7;
  auto old = std::make_unique<SocketPair>();
  const int number = old->a.get();
  poller.add(number, slot);
  write_byte(old->b.get());

  std::vector<ReadyEvent> held;
  ReadyList out;
  const auto give_up = Clock::now() + kPatience;
  while (held.empty() && Clock::now() < give_up) {
    poller.wait(out, Nanos(100ms));
    for (const ReadyEvent& ev : out) {
      if (ev.slot == &slot) held.push_back(ev);
    }
  }
  REQUIRE_FALSE(held.empty());
  for (const ReadyEvent& ev : held) CHECK(detail::event_is_current(ev));

  poller.remove(number);
  ++slot.seq;
  old.reset();
  SocketPair fresh;
  REQUIRE(fresh.a.get() == number);
  poller.add(fresh.a.get(), slot);

  for (const ReadyEvent& ev : held) CHECK_FALSE(detail::event_is_current(ev));
  const Seen seen =
      wait_until(poller, slot, [](const Seen& s) { return s.writable; });
  CHECK(seen.writable);
  CHECK(seen.stale == 0);
}

// The fd was closed without remove() while a duplicate kept its file open,
// and the number was reused. epoll keys registrations by open file, so the
// old file's registration lives on and still reports, with the old sequence;
// kqueue drops the registration at close and reports nothing.
template <class P>
void reused_fd_number_while_old_file_lives() {
  P poller;
  IoSlot slot;
  slot.seq = 7;
  SocketPair old;
  const int number = old.a.get();
  poller.add(number, slot);
  Seen seen =
      wait_until(poller, slot, [](const Seen& s) { return s.writable; });
  REQUIRE(seen.writable);

  const UniqueFd keep(::dup(number));
  REQUIRE(keep.get() >= 0);
  old.a.reset();
  ++slot.seq;
  SocketPair fresh;
  REQUIRE(fresh.a.get() == number);
  poller.add(fresh.a.get(), slot);
  seen = wait_until(poller, slot, [](const Seen& s) { return s.writable; });
  REQUIRE(seen.writable);

  write_byte(old.b.get());  // News for the old file only.
  Seen late;
  late.add(poll_once(poller), &slot);
  CHECK(late.events == late.stale);
  if (P::name() == "epoll") CHECK(late.stale > 0);

  write_byte(fresh.b.get());
  seen = wait_until(poller, slot, [](const Seen& s) { return s.readable; });
  CHECK(seen.readable);
}

template <class P>
void thousands_of_fds() {
  constexpr int kPairs = 5'000;
  constexpr int kFds = 2 * kPairs;
  // Room for the process's own descriptors and the poller's beside them.
  const ScopedNofile nofile(kFds + 64);
  if (!nofile.enough()) {
    MESSAGE(fmt::format("skipped: RLIMIT_NOFILE hard limit {} is below {}",
                        nofile.limit(), kFds + 64));
    return;
  }

  P poller;
  std::vector<SocketPair> pairs;
  pairs.reserve(kPairs);
  std::vector<IoSlot> slots(kFds);
  for (int i = 0; i < kPairs; ++i) {
    pairs.emplace_back();
    poller.add(pairs.back().a.get(), slots[2 * i]);
    poller.add(pairs.back().b.get(), slots[2 * i + 1]);
  }

  // How many distinct slots reported `flag` before kPatience ran out.
  const auto count_reporting = [&](bool ReadyEvent::*flag) {
    std::vector<bool> got(kFds);
    int count = 0;
    int foreign = 0;
    ReadyList out;
    const auto give_up = Clock::now() + kPatience;
    while (count < kFds && Clock::now() < give_up) {
      poller.wait(out, Nanos(100ms));
      for (const ReadyEvent& ev : out) {
        const std::less<const IoSlot*> before;
        if (before(ev.slot, slots.data()) ||
            !before(ev.slot, slots.data() + kFds) ||
            !detail::event_is_current(ev)) {
          ++foreign;
          continue;
        }
        const auto index = static_cast<std::size_t>(ev.slot - slots.data());
        if (ev.*flag && !got[index]) {
          got[index] = true;
          ++count;
        }
      }
    }
    CHECK(foreign == 0);
    return count;
  };

  CHECK(count_reporting(&ReadyEvent::writable) == kFds);
  for (const SocketPair& pair : pairs) {
    write_byte(pair.a.get());
    write_byte(pair.b.get());
  }
  CHECK(count_reporting(&ReadyEvent::readable) == kFds);
}

// SIGUSR1's default action terminates: the watch must suspend it, report
// each delivery as a readable edge on the slot, count it for take_signal,
// and leave the disposition and the mask as it found them.
template <class P>
void signal_delivery_is_reported_and_counted() {
  constexpr int kSignal = SIGUSR1;
  const SignalState before = SignalState::of(kSignal);
  {
    P poller;
    IoSlot slot;
    poller.add_signal(kSignal, slot);
    CHECK(poller.take_signal(kSignal) == 0);
    Seen seen;
    seen.add(poll_once(poller), &slot);
    CHECK(seen.events == 0);

    REQUIRE(::raise(kSignal) == 0);
    seen = wait_until(poller, slot, [](const Seen& s) { return s.readable; });
    CHECK(seen.readable);
    CHECK(seen.stale == 0);
    CHECK(poller.take_signal(kSignal) >= 1);
    CHECK(poller.take_signal(kSignal) == 0);

    // Deliveries close together may coalesce: once or more, never zero.
    REQUIRE(::raise(kSignal) == 0);
    REQUIRE(::raise(kSignal) == 0);
    seen = wait_until(poller, slot, [](const Seen& s) { return s.readable; });
    CHECK(seen.readable);
    const int count = poller.take_signal(kSignal);
    CHECK(count >= 1);
    CHECK(count <= 2);
    Seen again;
    again.add(poll_once(poller), &slot);
    CHECK(again.events == 0);

    // At most one watch per signal.
    IoSlot other;
    try {
      poller.add_signal(kSignal, other);
      FAIL("a second add_signal() did not throw");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::error_code(EEXIST, std::system_category()));
      CHECK(std::string(e.what()).find(fmt::format("signal={}", kSignal)) != std::string::npos);
    }

    poller.remove_signal(kSignal);
    CHECK(SignalState::of(kSignal) == before);
    poller.remove_signal(kSignal);  // harmless when not watched
    CHECK(poller.take_signal(kSignal) == 0);
  }
  CHECK(SignalState::of(kSignal) == before);
}

// A program that blocks a signal itself keeps deliveries pending between
// watches; the next watch reports them at its first wait.
template <class P>
void signal_pending_before_the_watch_is_reported() {
  constexpr int kSignal = SIGUSR2;
  const ScopedBlock block(kSignal);
  const SignalState before = SignalState::of(kSignal);
  REQUIRE(::raise(kSignal) == 0);
  REQUIRE(pending_here(kSignal));
  P poller;
  IoSlot slot;
  poller.add_signal(kSignal, slot);
  const Seen seen = wait_until(poller, slot, [](const Seen& s) { return s.readable; });
  CHECK(seen.readable);
  CHECK(poller.take_signal(kSignal) >= 1);
  poller.remove_signal(kSignal);
  CHECK(SignalState::of(kSignal) == before);
  // Consumed, not left to act when the program unblocks it.
  CHECK_FALSE(pending_here(kSignal));
}

// A delivery nobody took when the watch ends is not lost: it takes the
// signal's normal action again, which for a signal the program blocks means
// it stays pending, for the next watch or for the program itself.
template <class P>
void untaken_signal_stays_pending_after_the_watch() {
  constexpr int kSignal = SIGUSR2;
  const ScopedBlock block(kSignal);
  P poller;
  IoSlot slot;
  SUBCASE("reported by a wait, then not taken") {
    poller.add_signal(kSignal, slot);
    REQUIRE(::raise(kSignal) == 0);
    const Seen seen = wait_until(poller, slot, [](const Seen& s) { return s.readable; });
    REQUIRE(seen.readable);
  }
  SUBCASE("delivered after the last wait") {
    poller.add_signal(kSignal, slot);
    REQUIRE(::raise(kSignal) == 0);
  }
  poller.remove_signal(kSignal);
  CHECK(pending_here(kSignal));
  // The next watch reads it.
  poller.add_signal(kSignal, slot);
  const Seen seen = wait_until(poller, slot, [](const Seen& s) { return s.readable; });
  CHECK(seen.readable);
  CHECK(poller.take_signal(kSignal) >= 1);
  poller.remove_signal(kSignal);
  CHECK_FALSE(pending_here(kSignal));
}

// A watch ended (or a poller destroyed) while the watch was open leaves the
// disposition as it was.
template <class P>
void signal_watches_end_with_the_poller() {
  const SignalState before = SignalState::of(SIGUSR1);
  {
    P poller;
    IoSlot slot;
    poller.add_signal(SIGUSR1, slot);
  }
  CHECK(SignalState::of(SIGUSR1) == before);
}

template <class P>
void process_exit_is_reported_without_reaping() {
  Pipe go;
  const pid_t pid = spawn_child(go, 5);
  ChildGuard guard(pid);
  P poller;
  IoSlot slot;
  poller.add_process(pid, slot);
  Seen seen;
  seen.add(poll_once(poller), &slot);
  CHECK(seen.events == 0);

  go.b.reset();
  seen = wait_until(poller, slot, [](const Seen& s) { return s.readable; });
  CHECK(seen.readable);
  CHECK(seen.stale == 0);
  // The backend never reaps: the status is still there for the caller.
  int status = 0;
  CHECK(platform::retry_eintr([&] { return ::waitpid(pid, &status, WNOHANG); }) == pid);
  guard.release();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 5);
  poller.remove_process(pid);
  poller.remove_process(pid);  // harmless when not watched
}

// A zombie counts as exited: the watch reports it at the next wait.
template <class P>
void exited_child_is_reported_at_the_next_wait() {
  Pipe go;
  const pid_t pid = spawn_child(go, 6);
  ChildGuard guard(pid);
  go.b.reset();
  wait_until_exited(pid);
  P poller;
  IoSlot slot;
  poller.add_process(pid, slot);
  const Seen seen = wait_until(poller, slot, [](const Seen& s) { return s.readable; });
  CHECK(seen.readable);
  poller.remove_process(pid);
  guard.release();
  CHECK(WEXITSTATUS(reap(pid)) == 6);
}

template <class P>
void removed_process_watch_reports_nothing() {
  Pipe go;
  const pid_t pid = spawn_child(go, 0);
  ChildGuard guard(pid);
  P poller;
  IoSlot slot;
  poller.add_process(pid, slot);
  poller.remove_process(pid);
  go.b.reset();
  wait_until_exited(pid);
  Seen seen;
  seen.add(poll_once(poller), &slot);
  CHECK(seen.events == 0);
}

template <class P>
void process_watch_errors_name_the_pid() {
  Pipe go;
  const pid_t pid = spawn_child(go, 0);
  ChildGuard guard(pid);
  P poller;
  IoSlot slot;
  poller.add_process(pid, slot);
  IoSlot other;
  try {
    poller.add_process(pid, other);
    FAIL("a second add_process() did not throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::error_code(EEXIST, std::system_category()));
    CHECK(std::string(e.what()).find(fmt::format("pid={}", pid)) != std::string::npos);
  }
  poller.remove_process(pid);
  go.b.reset();
  guard.release();
  reap(pid);
  // Reaped: there is no process left to watch.
  try {
    poller.add_process(pid, slot);
    FAIL("add_process() of a reaped pid did not throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::error_code(ESRCH, std::system_category()));
    CHECK(std::string(e.what()).find(fmt::format("pid={}", pid)) != std::string::npos);
  }
}

}  // namespace spindle::test::conformance

TEST_CASE_TEMPLATE_DEFINE(
    "poller: conforms to the contract in platform/poller.hpp", P,
    poller_conformance) {
  namespace c = spindle::test::conformance;
  SUBCASE("an fd becomes readable after its peer writes") {
    c::readable_after_peer_write<P>();
  }
  SUBCASE("a fresh socket is reported writable") {
    c::writable_when_fresh<P>();
  }
  SUBCASE("peer close is reported as hangup, and readable") {
    SUBCASE("socketpair peer closed") {
      c::hangup_when_peer_ends<P, c::SocketPair>(
          [](c::SocketPair& sp) { sp.b.reset(); });
    }
    SUBCASE("socketpair peer shut down for writing") {
      c::hangup_when_peer_ends<P, c::SocketPair>([](c::SocketPair& sp) {
        REQUIRE(::shutdown(sp.b.get(), SHUT_WR) == 0);
      });
    }
    SUBCASE("pipe write end closed") {
      c::hangup_when_peer_ends<P, c::Pipe>([](c::Pipe& p) { p.b.reset(); });
    }
  }
  SUBCASE("peer reset is reported as hangup, and read meets the error") {
    c::hangup_and_error_on_peer_reset<P>();
  }
  SUBCASE("an edge is not reported again without new data") {
    c::no_repeat_without_new_data<P>();
  }
  SUBCASE("a timed wait with nothing ready never returns early") {
    c::timeout_never_early<P>();
  }
  SUBCASE("a signal interrupting a timed wait does not end it early") {
    c::signal_does_not_end_timed_wait_early<P>();
  }
  SUBCASE("wake() from another thread ends a wait blocked forever") {
    c::wake_from_another_thread<P>();
  }
  SUBCASE("a wake() sent before wait starts is not lost, and bursts coalesce") {
    c::wake_before_wait_and_bursts_coalesce<P>();
  }
  SUBCASE("wake() from a signal handler ends a wait blocked forever") {
    c::wake_from_signal_handler<P>();
  }
  SUBCASE("wakes racing with the drain are never lost") {
    c::racing_wakes_are_never_lost<P>();
  }
  SUBCASE("wait() clears the list it is given") {
    P poller;
    spindle::detail::IoSlot slot;
    spindle::detail::ReadyList out{{&slot, 0, true, true, true}};
    CHECK(poller.wait(out, spindle::detail::Nanos::zero()) == 0);
    CHECK(out.empty());
  }
  SUBCASE("remove then close leaves no stale event") {
    c::remove_then_close_leaves_no_stale_event<P>();
  }
  SUBCASE("a reused fd number gets no event meant for the old fd") {
    SUBCASE("events collected before the number was reused") {
      c::reused_fd_number_after_collected_events<P>();
    }
    SUBCASE("the old file still open through a dup") {
      c::reused_fd_number_while_old_file_lives<P>();
    }
  }
  SUBCASE("ten thousand fds are all reported writable, then readable") {
    c::thousands_of_fds<P>();
  }
  SUBCASE("signals: each delivery is reported and counted, the default action suspended") {
    c::signal_delivery_is_reported_and_counted<P>();
  }
  SUBCASE("signals: a delivery pending before the watch is reported") {
    c::signal_pending_before_the_watch_is_reported<P>();
  }
  SUBCASE("signals: a delivery nobody took stays pending when the watch ends") {
    c::untaken_signal_stays_pending_after_the_watch<P>();
  }
  SUBCASE("signals: destroying the poller ends its watches") {
    c::signal_watches_end_with_the_poller<P>();
  }
  SUBCASE("processes: an exit is reported, and the child is left to reap") {
    c::unless_pidfd_unavailable(c::process_exit_is_reported_without_reaping<P>);
  }
  SUBCASE("processes: a child that already exited is reported at the next wait") {
    c::unless_pidfd_unavailable(c::exited_child_is_reported_at_the_next_wait<P>);
  }
  SUBCASE("processes: a removed watch reports nothing") {
    c::unless_pidfd_unavailable(c::removed_process_watch_reports_nothing<P>);
  }
  SUBCASE("processes: a second watch and a reaped pid throw, naming the pid") {
    c::unless_pidfd_unavailable(c::process_watch_errors_name_the_pid<P>);
  }
}
