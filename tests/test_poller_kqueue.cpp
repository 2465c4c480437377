// The kqueue backend: the shared conformance cases, plus what only kqueue
// has (error naming, the udata packing, the behaviours the backend absorbs
// so that the scheduler sees what epoll gives it). On Linux this runs
// against the emulation in tests/kqueue_emu; the cases that need its test
// controls (events no Linux kernel produces, macOS's answer for zombies)
// compile only there.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <signal.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <system_error>

#include "platform/poller_kqueue.hpp"
#include "platform/syscall.hpp"
#include "poller_conformance.hpp"

#if __has_include(<kqueue_emu.h>)
#include <kqueue_emu.h>
#define SPINDLE_TEST_KQUEUE_EMU 1
#endif

using spindle::platform::KqueuePoller;

TYPE_TO_STRING_AS("KqueuePoller", KqueuePoller);
TEST_CASE_TEMPLATE_INVOKE(poller_conformance, KqueuePoller);

namespace {

using namespace std::chrono_literals;
using spindle::detail::IoSlot;
using spindle::detail::Nanos;
using spindle::detail::ReadyList;
using spindle::test::conformance::Pipe;
using spindle::test::conformance::Seen;
using spindle::test::conformance::SocketPair;
using spindle::test::conformance::UniqueFd;
using spindle::test::conformance::wait_until;

constexpr int kUnusedFd = 12345;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

void (*handler_of(int signo))(int) {
  struct sigaction sa {};
  REQUIRE(::sigaction(signo, nullptr, &sa) == 0);
  return sa.sa_handler;
}

}  // namespace

TEST_CASE("kqueue: name() is \"kqueue\" at compile time") {
  static_assert(KqueuePoller::name() == "kqueue");
  CHECK(KqueuePoller::name() == "kqueue");
}

TEST_CASE("kqueue: the kqueue descriptor is close-on-exec") {
  KqueuePoller poller;
  REQUIRE(poller.native_handle() >= 0);
  CHECK((::fcntl(poller.native_handle(), F_GETFD) & FD_CLOEXEC) != 0);
}

TEST_CASE("kqueue: add() of an invalid fd throws a system_error naming the call and the fd") {
  REQUIRE(::fcntl(kUnusedFd, F_GETFD) == -1);
  KqueuePoller poller;
  IoSlot slot;
  try {
    poller.add(kUnusedFd, slot);
    FAIL("add() did not throw");
  } catch (const std::system_error& e) {
    CAPTURE(e.what());
    CHECK(contains(e.what(), "kevent(EV_ADD, fd=12345)"));
    CHECK(e.code() == std::error_code(EBADF, std::system_category()));
  }
  // A failed add leaves the slot as it was.
  CHECK_FALSE(slot.registered);
  CHECK(slot.fd == -1);
}

// kqueue would watch a regular file (always ready); epoll refuses it, and so
// does this backend, so that programs behave the same on both.
TEST_CASE("kqueue: add() of a regular file throws EPERM like epoll, and leaves nothing registered") {
  char path[] = "/tmp/spindle_test_kqueue_XXXXXX";
  const UniqueFd file(::mkstemp(path));
  REQUIRE(file.get() >= 0);
  ::unlink(path);
  KqueuePoller poller;
  IoSlot slot;
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      poller.add(file.get(), slot);
      FAIL("add() did not throw");
    } catch (const std::system_error& e) {
      CAPTURE(e.what());
      CHECK(contains(e.what(), fmt::format("kevent(EV_ADD, fd={})", file.get())));
      CHECK(e.code() == std::error_code(EPERM, std::system_category()));
    }
  }
  CHECK_FALSE(slot.registered);
  CHECK_NOTHROW(poller.remove(file.get()));
}

// EV_ADD of an existing knote modifies it: where epoll says EEXIST, kqueue
// re-points the fd at the new slot.
TEST_CASE("kqueue: a second add() of an fd re-points it at the new slot instead of failing") {
  KqueuePoller poller;
  SocketPair sp;
  IoSlot first;
  IoSlot second;
  poller.add(sp.a.get(), first);
  CHECK_NOTHROW(poller.add(sp.a.get(), second));
  spindle::test::conformance::write_byte(sp.b.get());
  const Seen seen = wait_until(poller, second, [](const Seen& s) { return s.readable; });
  CHECK(seen.readable);
  Seen old;
  old.add(spindle::test::conformance::poll_once(poller), &first);
  CHECK(old.events == 0);
}

TEST_CASE("kqueue: remove() ignores fds the kernel already forgot") {
  KqueuePoller poller;
  SUBCASE("an fd that is not open (EBADF)") {
    REQUIRE(::fcntl(kUnusedFd, F_GETFD) == -1);
    CHECK_NOTHROW(poller.remove(kUnusedFd));
  }
  SUBCASE("an open fd that was never added (ENOENT)") {
    SocketPair sp;
    CHECK_NOTHROW(poller.remove(sp.a.get()));
  }
  SUBCASE("an fd removed twice (ENOENT)") {
    SocketPair sp;
    IoSlot slot;
    poller.add(sp.a.get(), slot);
    CHECK_NOTHROW(poller.remove(sp.a.get()));
    CHECK_NOTHROW(poller.remove(sp.a.get()));
  }
  SUBCASE("an fd closed without remove() (its knotes went with it)") {
    IoSlot slot;
    int number;
    {
      SocketPair sp;
      number = sp.a.get();
      poller.add(number, slot);
    }
    CHECK_NOTHROW(poller.remove(number));
  }
}

TEST_CASE("kqueue: the slot pointer and the low 16 bits of seq survive the kernel's udata") {
  KqueuePoller poller;
  SocketPair sp;
  IoSlot slot;
  slot.seq = 0xabcdefu;
  poller.add(sp.a.get(), slot);
  ReadyList out;
  REQUIRE(poller.wait(out, Nanos(5s)) == 1);
  CHECK(out[0].slot == &slot);
  CHECK(out[0].seq == 0xcdefu);
  CHECK(spindle::detail::event_is_current(out[0]));
  CHECK(out[0].writable);
  CHECK_FALSE(out[0].readable);
  CHECK_FALSE(out[0].hangup);
}

// FreeBSD refuses EVFILT_WRITE on such a pipe with EPIPE; epoll accepts the
// fd and reports EPOLLERR. The backend watches it and reports the hangup.
TEST_CASE("kqueue: a pipe whose other end is already closed is watched and reported as hangup") {
  KqueuePoller poller;
  Pipe p;
  p.a.reset();
  IoSlot slot;
  poller.add(p.b.get(), slot);
  CHECK(slot.registered);
  ReadyList out;
  // The report is due at once, so even a wait without a timeout returns.
  REQUIRE(poller.wait(out, std::nullopt) >= 1);
  Seen seen;
  seen.add(out, &slot);
  CHECK(seen.hangup);
  CHECK(seen.readable);
  CHECK(seen.writable);
  CHECK_NOTHROW(poller.remove(p.b.get()));
}

// SIGCHLD is the exception to SIG_IGN: an ignored SIGCHLD makes the kernel
// reap children itself and is not recorded by EVFILT_SIGNAL.
TEST_CASE("kqueue: a signal watch sets SIG_IGN, SIGCHLD keeps SIG_DFL, and both are restored") {
  KqueuePoller poller;
  SUBCASE("SIGUSR1") {
    const auto before = handler_of(SIGUSR1);
    IoSlot slot;
    poller.add_signal(SIGUSR1, slot);
    CHECK((handler_of(SIGUSR1) == SIG_IGN));
    poller.remove_signal(SIGUSR1);
    CHECK((handler_of(SIGUSR1) == before));
  }
  SUBCASE("SIGCHLD: a child's exit is reported and its status is still there to reap") {
    const auto before = handler_of(SIGCHLD);
    IoSlot slot;
    poller.add_signal(SIGCHLD, slot);
    CHECK((handler_of(SIGCHLD) == SIG_DFL));
    Pipe go;
    const pid_t pid = spindle::test::conformance::spawn_child(go, 4);
    spindle::test::conformance::ChildGuard guard(pid);
    go.b.reset();
    const Seen seen = wait_until(poller, slot, [](const Seen& s) { return s.readable; });
    CHECK(seen.readable);
    CHECK(poller.take_signal(SIGCHLD) >= 1);
    guard.release();
    CHECK(WEXITSTATUS(spindle::test::conformance::reap(pid)) == 4);
    poller.remove_signal(SIGCHLD);
    CHECK((handler_of(SIGCHLD) == before));
  }
}

TEST_CASE("kqueue: add_process() of a reaped pid names kevent and the pid") {
  Pipe go;
  const pid_t pid = spindle::test::conformance::spawn_child(go, 0);
  go.b.reset();
  spindle::test::conformance::reap(pid);
  KqueuePoller poller;
  IoSlot slot;
  try {
    poller.add_process(pid, slot);
    FAIL("add_process() did not throw");
  } catch (const std::system_error& e) {
    CAPTURE(e.what());
    CHECK(contains(e.what(), fmt::format("kevent(EVFILT_PROC, EV_ADD, pid={})", pid)));
    CHECK(e.code() == std::error_code(ESRCH, std::system_category()));
  }
}

#if defined(SPINDLE_TEST_KQUEUE_EMU)

// The emulation cannot produce these itself (see its header), so it hands
// them over verbatim: what a BSD kernel returns after a reset, and an error
// the backend never provokes but must not misread.
TEST_CASE("kqueue: EV_EOF with a socket error in fflags, and EV_ERROR, are reported as hangup") {
  KqueuePoller poller;
  IoSlot slot;
  slot.seq = 3;
  SocketPair sp;
  poller.add(sp.a.get(), slot);
  ReadyList out;
  REQUIRE(poller.wait(out, Nanos(5s)) == 1);  // the fresh writable edge

  // The udata the backend registered, as the kernel would hand it back.
  const auto udata =
      reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(&slot) | (std::uintptr_t{3} << 48));
  struct kevent ev {};
  SUBCASE("EV_EOF on EVFILT_WRITE with ECONNRESET") {
    EV_SET(&ev, static_cast<std::uintptr_t>(sp.a.get()), EVFILT_WRITE, EV_CLEAR | EV_EOF, ECONNRESET, 0,
           udata);
  }
  SUBCASE("EV_EOF on EVFILT_READ with bytes still pending") {
    EV_SET(&ev, static_cast<std::uintptr_t>(sp.a.get()), EVFILT_READ, EV_CLEAR | EV_EOF, 0, 12, udata);
  }
  SUBCASE("EV_ERROR with EBADF in data") {
    EV_SET(&ev, static_cast<std::uintptr_t>(sp.a.get()), EVFILT_READ, EV_ERROR, 0, EBADF, udata);
  }
  REQUIRE(kqueue_emu_inject(poller.native_handle(), &ev) == 0);
  REQUIRE(poller.wait(out, Nanos(5s)) == 1);
  CHECK(out[0].slot == &slot);
  CHECK(out[0].seq == 3);
  CHECK(out[0].hangup);
  CHECK(out[0].readable);
  CHECK(out[0].writable);
}

TEST_CASE("kqueue: an event whose udata names no slot is skipped") {
  KqueuePoller poller;
  struct kevent ev;
  EV_SET(&ev, 99, EVFILT_READ, EV_CLEAR, 0, 1, nullptr);
  REQUIRE(kqueue_emu_inject(poller.native_handle(), &ev) == 0);
  ReadyList out;
  CHECK(poller.wait(out, Nanos(5s)) == 0);
  CHECK(out.empty());
}

// macOS may refuse EVFILT_PROC on a zombie with ESRCH where FreeBSD attaches
// and fires at once; the backend reports the exit at the next wait either way.
TEST_CASE("kqueue: a zombie refused with ESRCH (macOS) is still reported at the next wait") {
  struct MacosZombies {
    MacosZombies() { kqueue_emu_set_zombie_esrch(1); }
    ~MacosZombies() { kqueue_emu_set_zombie_esrch(0); }
  } macos;
  Pipe go;
  const pid_t pid = spindle::test::conformance::spawn_child(go, 9);
  spindle::test::conformance::ChildGuard guard(pid);
  go.b.reset();
  spindle::test::conformance::wait_until_exited(pid);
  KqueuePoller poller;
  IoSlot slot;
  poller.add_process(pid, slot);
  ReadyList out;
  // Due at once: a wait without a timeout returns.
  REQUIRE(poller.wait(out, std::nullopt) == 1);
  CHECK(out[0].slot == &slot);
  CHECK(out[0].readable);
  CHECK(poller.wait(out, Nanos::zero()) == 0);

  // Removed before its report was collected: nothing comes.
  IoSlot again;
  poller.remove_process(pid);
  poller.add_process(pid, again);
  poller.remove_process(pid);
  CHECK(poller.wait(out, Nanos::zero()) == 0);
  guard.release();
  CHECK(WEXITSTATUS(spindle::test::conformance::reap(pid)) == 9);
}

#endif  // SPINDLE_TEST_KQUEUE_EMU
