// The epoll backend: the shared conformance cases, plus what only epoll has
// (error naming, the user-data packing, the millisecond fallback).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iterator>
#include <optional>
#include <string>
#include <system_error>

#include "platform/poller_epoll.hpp"
#include "platform/syscall.hpp"
#include "poller_conformance.hpp"

using spindle::platform::EpollPoller;

TYPE_TO_STRING_AS("EpollPoller", EpollPoller);
TEST_CASE_TEMPLATE_INVOKE(poller_conformance, EpollPoller);

namespace {

using namespace std::chrono_literals;
using spindle::detail::IoSlot;
using spindle::detail::Nanos;
using spindle::detail::ReadyList;
using spindle::test::conformance::Clock;
using spindle::test::conformance::SocketPair;
using spindle::test::conformance::UniqueFd;

constexpr int kUnusedFd = 12345;

}  // namespace

TEST_CASE("epoll: name() is \"epoll\" at compile time") {
  static_assert(EpollPoller::name() == "epoll");
  CHECK(EpollPoller::name() == "epoll");
}

TEST_CASE("epoll: the epoll descriptor is close-on-exec") {
  EpollPoller poller;
  REQUIRE(poller.native_handle() >= 0);
  CHECK((::fcntl(poller.native_handle(), F_GETFD) & FD_CLOEXEC) != 0);
}

TEST_CASE(
    "epoll: add() of an invalid fd throws a system_error naming the call "
    "and the fd") {
  REQUIRE(::fcntl(kUnusedFd, F_GETFD) == -1);
  EpollPoller poller;
  IoSlot slot;
  try {
    poller.add(kUnusedFd, slot);
    FAIL("add() did not throw");
  } catch (const std::system_error& e) {
    const std::string what = e.what();
    CAPTURE(what);
    CHECK(what.find("epoll_ctl") != std::string::npos);
    CHECK(what.find("fd=12345") != std::string::npos);
    CHECK(e.code() == std::error_code(EBADF, std::system_category()));
  }
  // A failed add leaves the slot as it was.
  CHECK_FALSE(slot.registered);
  CHECK(slot.fd == -1);
}

TEST_CASE("epoll: add() of the same fd twice throws EEXIST") {
  EpollPoller poller;
  SocketPair sp;
  IoSlot slot;
  poller.add(sp.a.get(), slot);
  IoSlot other;
  try {
    poller.add(sp.a.get(), other);
    FAIL("second add() did not throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::error_code(EEXIST, std::system_category()));
  }
}

TEST_CASE("epoll: remove() ignores fds the kernel already forgot") {
  EpollPoller poller;
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
  SUBCASE("a regular file epoll cannot watch (EPERM)") {
    const UniqueFd file(::memfd_create("spindle-test", MFD_CLOEXEC));
    REQUIRE(file.get() >= 0);
    CHECK_NOTHROW(poller.remove(file.get()));
  }
}

TEST_CASE(
    "epoll: remove() of the poller's own fd throws a system_error naming "
    "the call") {
  EpollPoller poller;
  const int self = poller.native_handle();
  try {
    poller.remove(self);
    FAIL("remove() did not throw");
  } catch (const std::system_error& e) {
    const std::string what = e.what();
    CAPTURE(what);
    CHECK(what.find(fmt::format("epoll_ctl(DEL, fd={})", self)) !=
          std::string::npos);
    CHECK(e.code() == std::error_code(EINVAL, std::system_category()));
  }
}

TEST_CASE(
    "epoll: the slot pointer and the low 16 bits of seq survive the "
    "kernel's user data") {
  EpollPoller poller;
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

TEST_CASE("platform: retry_eintr() retries only EINTR and returns the result") {
  int calls = 0;
  const int r = spindle::platform::retry_eintr([&] {
    ++calls;
    errno = calls < 3 ? EINTR : EAGAIN;
    return -1;
  });
  const int err = errno;  // Before doctest's own output can change it.
  CHECK(r == -1);
  CHECK(calls == 3);
  CHECK(err == EAGAIN);
  CHECK(spindle::platform::retry_eintr([] { return 7L; }) == 7L);
}

TEST_CASE("platform: throw_system_error() keeps the code and the call text") {
  try {
    spindle::platform::throw_system_error(ENOENT, "open(path=/nope)");
    FAIL("did not throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::error_code(ENOENT, std::system_category()));
    CHECK(std::string(e.what()).find("open(path=/nope)") != std::string::npos);
  }
}

// The fallback to epoll_wait is otherwise dead code on a current kernel.
// A forked child denies itself epoll_pwait2 with a seccomp filter (ENOSYS,
// like a kernel before 5.11) and runs the timing-sensitive checks there.
namespace {

#if defined(__x86_64__)
constexpr std::uint32_t kAuditArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr std::uint32_t kAuditArch = AUDIT_ARCH_AARCH64;
#else
constexpr std::uint32_t kAuditArch = 0;
#endif

enum ChildExit : int {
  kChildPassed = 0,
  kChildCannotFilter = 77,
  kChildFilterIneffective = 10,
  kChildTimeoutEarly,
  kChildTimeoutLate,
  kChildWakeLost,
  kChildNoReadable,
  kChildThrew,
};

bool deny_epoll_pwait2() {
#if defined(SYS_epoll_pwait2)
  if (kAuditArch == 0) return false;
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kAuditArch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_epoll_pwait2, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog program{static_cast<unsigned short>(std::size(filter)), filter};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) == 0;
#else
  return false;
#endif
}

ChildExit run_without_epoll_pwait2() {
  if (!deny_epoll_pwait2()) return kChildCannotFilter;
#if defined(SYS_epoll_pwait2)
  errno = 0;
  if (::syscall(SYS_epoll_pwait2, -1, nullptr, 0, nullptr, nullptr, 0) != -1 ||
      errno != ENOSYS) {
    return kChildFilterIneffective;
  }
#endif
  try {
    EpollPoller poller;
    ReadyList out;
    // Sub-millisecond parts must round up, never down.
    for (const Nanos timeout : {Nanos(2500us), Nanos(20ms), Nanos(1ns)}) {
      const auto start = Clock::now();
      poller.wait(out, timeout);
      const auto elapsed = Clock::now() - start;
      if (elapsed < timeout) return kChildTimeoutEarly;
      if (elapsed > timeout + 2s) return kChildTimeoutLate;
    }
    poller.wake();
    const auto start = Clock::now();
    poller.wait(out, Nanos(5s));
    if (Clock::now() - start >= 5s) return kChildWakeLost;

    // Raw calls, not the doctest helpers: a failed REQUIRE would unwind
    // into the child's copy of the test runner.
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) {
      return kChildThrew;
    }
    const UniqueFd a(sv[0]);
    const UniqueFd b(sv[1]);
    IoSlot slot;
    poller.add(a.get(), slot);
    if (::write(b.get(), "x", 1) != 1) return kChildThrew;
    poller.wait(out, Nanos(5s));
    if (out.size() != 1 || out[0].slot != &slot || !out[0].readable) {
      return kChildNoReadable;
    }
  } catch (const std::exception&) {
    return kChildThrew;
  }
  return kChildPassed;
}

}  // namespace

TEST_CASE(
    "epoll: without epoll_pwait2 the millisecond fallback still never "
    "returns early") {
  std::fflush(nullptr);  // Or the child's exit may print our buffer twice.
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) ::_exit(run_without_epoll_pwait2());

  int status = 0;
  REQUIRE(spindle::platform::retry_eintr(
              [&] { return ::waitpid(pid, &status, 0); }) == pid);
  REQUIRE(WIFEXITED(status));
  const int code = WEXITSTATUS(status);
  if (code == kChildCannotFilter) {
    MESSAGE("skipped: this process cannot install a seccomp filter");
    return;
  }
  CAPTURE(code);
  CHECK(code == kChildPassed);
}
