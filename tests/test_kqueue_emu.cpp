// The Linux kqueue emulation (tests/kqueue_emu) held to FreeBSD's kqueue(2).
//
// The kqueue backend is only as trustworthy on Linux as the emulation under
// it, so every behaviour the emulation claims to model is checked here
// against the manual page, quoted above each case, with the raw kqueue API
// and real kernel objects. A divergence then fails here, instead of making
// the backend look correct against a kernel that does not exist.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <kqueue_emu.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "poller_conformance.hpp"

namespace {

using namespace std::chrono_literals;
using spindle::test::conformance::BlockedProbe;
using spindle::test::conformance::ChildGuard;
using spindle::test::conformance::Clock;
using spindle::test::conformance::Pipe;
using spindle::test::conformance::reap;
using spindle::test::conformance::SocketPair;
using spindle::test::conformance::spawn_child;
using spindle::test::conformance::UniqueFd;
using spindle::test::conformance::wait_until_exited;
using spindle::test::conformance::write_byte;

constexpr timespec kPoll{0, 0};
// How long anything that should be immediate may take before a case fails.
constexpr timespec kPatience{10, 0};

// One kqueue, closed at the end of the scope.
struct Kq {
  UniqueFd fd{::kqueue()};
  Kq() { REQUIRE(fd.get() >= 0); }
  int get() const { return fd.get(); }
};

struct kevent make(std::uintptr_t ident, short filter, unsigned short flags, unsigned int fflags = 0,
                   std::int64_t data = 0, void* udata = nullptr) {
  struct kevent ev;
  EV_SET(&ev, ident, filter, flags, fflags, data, udata);
  return ev;
}

// Applies one change without an eventlist; returns 0 or the errno.
int change(int kq, const struct kevent& ev) {
  const int r = ::kevent(kq, &ev, 1, nullptr, 0, nullptr);
  return r < 0 ? errno : 0;
}

std::uintptr_t id(int fd) { return static_cast<std::uintptr_t>(fd); }

// Collects what one kevent() call returns.
std::vector<struct kevent> collect(int kq, const timespec* timeout = &kPoll, int max = 16) {
  std::vector<struct kevent> out(static_cast<std::size_t>(max));
  const int n = ::kevent(kq, nullptr, 0, out.data(), max, timeout);
  const int err = errno;
  CAPTURE(err);
  REQUIRE(n >= 0);
  out.resize(static_cast<std::size_t>(n));
  return out;
}

// The events of `filter` on `ident` among `evs`.
std::vector<struct kevent> of(const std::vector<struct kevent>& evs, std::uintptr_t ident, short filter) {
  std::vector<struct kevent> r;
  for (const struct kevent& ev : evs) {
    if (ev.ident == ident && ev.filter == filter) r.push_back(ev);
  }
  return r;
}

void write_bytes(int fd, std::size_t n) {
  const std::vector<char> buf(n, 'x');
  REQUIRE(::write(fd, buf.data(), n) == static_cast<ssize_t>(n));
}

// Sets a disposition for the scope, as the kqueue backend does for watched
// signals.
class ScopedDisposition {
 public:
  ScopedDisposition(int signo, void (*handler)(int)) : signo_(signo) {
    struct sigaction sa {};
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    REQUIRE(::sigaction(signo_, &sa, &old_) == 0);
  }
  ~ScopedDisposition() { ::sigaction(signo_, &old_, nullptr); }
  ScopedDisposition(const ScopedDisposition&) = delete;
  ScopedDisposition& operator=(const ScopedDisposition&) = delete;

 private:
  int signo_;
  struct sigaction old_ {};
};

bool blocked_in_this_thread(int signo) {
  sigset_t mask;
  REQUIRE(::pthread_sigmask(SIG_BLOCK, nullptr, &mask) == 0);
  return sigismember(&mask, signo) == 1;
}

std::atomic<int> handled{0};
std::atomic<int> trigger_kq{-1};
void count_signal(int) { handled.fetch_add(1); }
void trigger_from_handler(int) {
  handled.fetch_add(1);
  const struct kevent ev = make(7, EVFILT_USER, 0, NOTE_TRIGGER);
  ::kevent(trigger_kq.load(), &ev, 1, nullptr, 0, nullptr);
}

}  // namespace

// "The kqueue() system call creates a new kernel event queue and returns a
// descriptor." / "[EBADF] The specified descriptor is invalid."
TEST_CASE("kqueue: kqueue() returns a descriptor, and kevent() on anything else fails with EBADF") {
  Kq kq;
  CHECK(collect(kq.get()).empty());
  const Pipe p;
  struct kevent out[1];
  CHECK(::kevent(p.a.get(), nullptr, 0, out, 1, &kPoll) == -1);
  CHECK(errno == EBADF);
  CHECK(::kevent(-1, nullptr, 0, out, 1, &kPoll) == -1);
  CHECK(errno == EBADF);
}

// "EVFILT_READ ... Returns when there is data to read; data contains the
// number of bytes of protocol data available to read."
TEST_CASE(
    "kqueue: EVFILT_READ returns once the peer writes, with the bytes available in data and udata as given") {
  Kq kq;
  SocketPair sp;
  int tag = 0;
  REQUIRE(change(kq.get(), make(id(sp.a.get()), EVFILT_READ, EV_ADD, 0, 0, &tag)) == 0);
  CHECK(collect(kq.get()).empty());
  write_bytes(sp.b.get(), 5);
  const auto evs = collect(kq.get(), &kPatience);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].ident == id(sp.a.get()));
  CHECK(evs[0].filter == EVFILT_READ);
  CHECK(evs[0].data == 5);
  CHECK(evs[0].udata == &tag);
  CHECK((evs[0].flags & (EV_EOF | EV_ERROR)) == 0);
}

// Without EV_CLEAR a knote is level-triggered: kqueue_scan puts it back on
// the queue after returning it, as long as the filter still holds.
TEST_CASE("kqueue: without EV_CLEAR a knote is returned on every call while its condition holds") {
  Kq kq;
  Pipe p;
  REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_ADD)) == 0);
  write_byte(p.b.get());
  for (int i = 0; i < 3; ++i)
    CHECK(of(collect(kq.get(), &kPatience), id(p.a.get()), EVFILT_READ).size() == 1);
  spindle::test::conformance::drain(p.a.get());
  CHECK(collect(kq.get()).empty());
}

// "EV_CLEAR After the event is retrieved by the user, its state is reset.
// This is useful for filters which report state transitions instead of the
// current state."
TEST_CASE("kqueue: with EV_CLEAR a knote is returned again only after new activity") {
  Kq kq;
  SocketPair sp;
  REQUIRE(change(kq.get(), make(id(sp.a.get()), EVFILT_READ, EV_ADD | EV_CLEAR)) == 0);
  write_byte(sp.b.get());
  REQUIRE(of(collect(kq.get(), &kPatience), id(sp.a.get()), EVFILT_READ).size() == 1);
  // The byte is still unread: a level knote would come back, this one not.
  CHECK(collect(kq.get()).empty());
  CHECK(collect(kq.get()).empty());
  write_byte(sp.b.get());
  const auto evs = of(collect(kq.get(), &kPatience), id(sp.a.get()), EVFILT_READ);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].data == 2);
}

// kqueue_scan calls the filter again before returning a knote, and drops it
// if the condition went away.
TEST_CASE("kqueue: readiness that went away before the call is not returned") {
  Kq kq;
  SocketPair sp;
  REQUIRE(change(kq.get(), make(id(sp.a.get()), EVFILT_READ, EV_ADD | EV_CLEAR)) == 0);
  write_byte(sp.b.get());
  spindle::test::conformance::drain(sp.a.get());
  CHECK(collect(kq.get()).empty());
}

// "EV_ADD ... Re-adding an existing event will modify the parameters of the
// original event, and not result in a duplicate entry."
TEST_CASE("kqueue: EV_ADD of an existing knote modifies its udata instead of adding another") {
  Kq kq;
  Pipe p;
  int first = 0;
  int second = 0;
  REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_ADD, 0, 0, &first)) == 0);
  REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_ADD, 0, 0, &second)) == 0);
  write_byte(p.b.get());
  const auto evs = collect(kq.get(), &kPatience);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].udata == &second);
}

// "EV_DISABLE Disable the event so kevent() will not return it. The filter
// itself is not disabled." / "EV_ENABLE Permit kevent() to return the event
// if it is triggered." / "Adding an event automatically enables it, unless
// overridden by the EV_DISABLE flag."
TEST_CASE("kqueue: a disabled knote is never returned, and enabling it returns it if its condition holds") {
  Kq kq;
  Pipe p;
  SUBCASE("disabled after it fired") {
    REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_ADD | EV_CLEAR)) == 0);
    write_byte(p.b.get());
    REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_DISABLE)) == 0);
  }
  SUBCASE("added disabled") {
    REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_ADD | EV_CLEAR | EV_DISABLE)) == 0);
    write_byte(p.b.get());
  }
  CHECK(collect(kq.get()).empty());
  std::this_thread::sleep_for(10ms);
  CHECK(collect(kq.get()).empty());
  REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_ENABLE)) == 0);
  const auto evs = collect(kq.get(), &kPatience);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].data == 1);
}

// "EV_ONESHOT Causes the event to return only the first occurrence of the
// filter being triggered. After the user retrieves the event from the
// kqueue, it is deleted."
TEST_CASE("kqueue: EV_ONESHOT returns the first occurrence, then deletes the knote") {
  Kq kq;
  Pipe p;
  REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_ADD | EV_ONESHOT)) == 0);
  write_byte(p.b.get());
  REQUIRE(collect(kq.get(), &kPatience).size() == 1);
  write_byte(p.b.get());
  CHECK(collect(kq.get()).empty());
  CHECK(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_DELETE)) == ENOENT);
}

// "EV_DISPATCH Disable the event source immediately after delivery of an
// event."
TEST_CASE("kqueue: EV_DISPATCH disables the knote once it is returned, until EV_ENABLE") {
  Kq kq;
  Pipe p;
  REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_ADD | EV_DISPATCH)) == 0);
  write_byte(p.b.get());
  REQUIRE(collect(kq.get(), &kPatience).size() == 1);
  write_byte(p.b.get());
  CHECK(collect(kq.get()).empty());
  REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_ENABLE)) == 0);
  const auto evs = collect(kq.get(), &kPatience);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].data == 2);
}

// "EV_DELETE Removes the event from the kqueue." / "[ENOENT] The event could
// not be found to be modified or deleted."
TEST_CASE("kqueue: EV_DELETE removes a knote, and deleting or enabling a missing one fails with ENOENT") {
  Kq kq;
  Pipe p;
  REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_ADD)) == 0);
  REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_DELETE)) == 0);
  write_byte(p.b.get());
  CHECK(collect(kq.get()).empty());
  CHECK(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_DELETE)) == ENOENT);
  CHECK(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_ENABLE)) == ENOENT);
  CHECK(change(kq.get(), make(id(p.a.get()), EVFILT_WRITE, EV_DELETE)) == ENOENT);
}

// "Calling close() on a file descriptor will remove any kevents that
// reference the descriptor."
TEST_CASE("kqueue: close() removes an fd's knotes, even while a dup keeps its file open") {
  Kq kq;
  SocketPair sp;
  const int number = sp.a.get();
  REQUIRE(change(kq.get(), make(id(number), EVFILT_READ, EV_ADD | EV_CLEAR)) == 0);
  REQUIRE(change(kq.get(), make(id(number), EVFILT_WRITE, EV_ADD | EV_CLEAR)) == 0);
  REQUIRE(!collect(kq.get(), &kPatience).empty());  // the fresh writable edge
  const UniqueFd keep(::dup(number));
  REQUIRE(keep.get() >= 0);
  sp.a.reset();
  write_byte(sp.b.get());  // news for the file, which the dup keeps alive
  CHECK(collect(kq.get()).empty());
  CHECK(change(kq.get(), make(id(number), EVFILT_READ, EV_DELETE)) == EBADF);

  SocketPair fresh;
  REQUIRE(fresh.a.get() == number);
  CHECK(change(kq.get(), make(id(number), EVFILT_READ, EV_DELETE)) == ENOENT);
  // The new file at the old number registers afresh and reports its own news.
  REQUIRE(change(kq.get(), make(id(number), EVFILT_READ, EV_ADD | EV_CLEAR)) == 0);
  write_byte(sp.b.get());
  CHECK(collect(kq.get()).empty());
  write_byte(fresh.b.get());
  const auto evs = collect(kq.get(), &kPatience);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].data == 1);
}

// "EVFILT_WRITE Takes a descriptor as the identifier, and returns whenever
// it is possible to write to the descriptor. For sockets, pipes and fifos,
// data will contain the amount of space remaining in the write buffer."
TEST_CASE("kqueue: EVFILT_WRITE returns a fresh socket and pipe writable with the space left in data") {
  Kq kq;
  SocketPair sp;
  Pipe p;
  REQUIRE(change(kq.get(), make(id(sp.a.get()), EVFILT_WRITE, EV_ADD | EV_CLEAR)) == 0);
  REQUIRE(change(kq.get(), make(id(p.b.get()), EVFILT_WRITE, EV_ADD | EV_CLEAR)) == 0);
  const auto evs = collect(kq.get(), &kPatience);
  REQUIRE(evs.size() == 2);
  for (const struct kevent& ev : evs) {
    CHECK(ev.filter == EVFILT_WRITE);
    CHECK(ev.data > 0);
    CHECK((ev.flags & EV_EOF) == 0);
  }
  const auto pipe_ev = of(evs, id(p.b.get()), EVFILT_WRITE);
  REQUIRE(pipe_ev.size() == 1);
  // Filling the pipe is no new writability: EV_CLEAR returns nothing.
  const std::vector<char> chunk(4096, 'x');
  while (::write(p.b.get(), chunk.data(), chunk.size()) > 0) {
  }
  REQUIRE(errno == EAGAIN);
  CHECK(collect(kq.get()).empty());
  // Emptying a full pipe is. (Reading from a pipe that was not full gives
  // no new edge on Linux, unlike FreeBSD; see the emulation's header.)
  spindle::test::conformance::drain(p.a.get());
  const auto again = of(collect(kq.get(), &kPatience), id(p.b.get()), EVFILT_WRITE);
  REQUIRE(again.size() == 1);
  CHECK(again[0].data == pipe_ev[0].data);
}

// "If the read direction of the socket has shutdown, then the filter also
// sets EV_EOF in flags, and returns the socket error (if any) in fflags. It
// is possible for EOF to be returned (indicating the connection is gone)
// while there is still data pending in the socket buffer." The same holds
// for pipes ("when the last writer disconnects").
TEST_CASE("kqueue: EV_EOF on EVFILT_READ when the peer is gone, with the pending byte count in data") {
  Kq kq;
  SUBCASE("socketpair peer closed") {
    SocketPair sp;
    REQUIRE(change(kq.get(), make(id(sp.a.get()), EVFILT_READ, EV_ADD | EV_CLEAR)) == 0);
    write_bytes(sp.b.get(), 3);
    sp.b.reset();
    const auto evs = collect(kq.get(), &kPatience);
    REQUIRE(evs.size() == 1);
    CHECK((evs[0].flags & EV_EOF) != 0);
    CHECK(evs[0].data == 3);
    CHECK(evs[0].fflags == 0);  // an orderly close: no socket error
  }
  SUBCASE("socketpair peer shut down for writing") {
    SocketPair sp;
    REQUIRE(change(kq.get(), make(id(sp.a.get()), EVFILT_READ, EV_ADD | EV_CLEAR)) == 0);
    write_bytes(sp.b.get(), 2);
    REQUIRE(::shutdown(sp.b.get(), SHUT_WR) == 0);
    const auto evs = collect(kq.get(), &kPatience);
    REQUIRE(evs.size() == 1);
    CHECK((evs[0].flags & EV_EOF) != 0);
    CHECK(evs[0].data == 2);
  }
  SUBCASE("pipe write end closed") {
    Pipe p;
    REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_ADD | EV_CLEAR)) == 0);
    write_bytes(p.b.get(), 4);
    p.b.reset();
    const auto evs = collect(kq.get(), &kPatience);
    REQUIRE(evs.size() == 1);
    CHECK((evs[0].flags & EV_EOF) != 0);
    CHECK(evs[0].data == 4);
    CHECK(evs[0].fflags == 0);
  }
}

// filt_pipewrite: "the reader disconnected" sets EV_EOF with data 0.
TEST_CASE("kqueue: EV_EOF on EVFILT_WRITE once the reading end of a pipe is closed") {
  Kq kq;
  Pipe p;
  REQUIRE(change(kq.get(), make(id(p.b.get()), EVFILT_WRITE, EV_ADD | EV_CLEAR)) == 0);
  REQUIRE(collect(kq.get(), &kPatience).size() == 1);
  p.a.reset();
  const auto evs = collect(kq.get(), &kPatience);
  REQUIRE(evs.size() == 1);
  CHECK((evs[0].flags & EV_EOF) != 0);
  CHECK(evs[0].data == 0);
}

// FreeBSD's pipe_kqfilter: EVFILT_WRITE on a pipe whose other end has been
// closed fails with EPIPE.
TEST_CASE("kqueue: EVFILT_WRITE on a pipe whose other end is closed fails with EPIPE") {
  Kq kq;
  Pipe p;
  p.a.reset();
  CHECK(change(kq.get(), make(id(p.b.get()), EVFILT_WRITE, EV_ADD | EV_CLEAR)) == EPIPE);
  Pipe q;
  q.b.reset();
  CHECK(change(kq.get(), make(id(q.a.get()), EVFILT_WRITE, EV_ADD | EV_CLEAR)) == EPIPE);
  // EVFILT_READ attaches and reports the end of file.
  REQUIRE(change(kq.get(), make(id(q.a.get()), EVFILT_READ, EV_ADD | EV_CLEAR)) == 0);
  const auto evs = collect(kq.get(), &kPatience);
  REQUIRE(evs.size() == 1);
  CHECK((evs[0].flags & EV_EOF) != 0);
}

// The documented divergence: EV_EOF arrives, but fflags stays 0, because
// reading the socket error on Linux would clear it. The error must stay for
// the caller's next recv, which is where the scheduler's fibers meet it.
TEST_CASE("kqueue: after a TCP reset EV_EOF is returned and the socket error is left for recv") {
  const UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(listener.get() >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    MESSAGE("skipped: no IPv4 loopback");
    return;
  }
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  REQUIRE(::listen(listener.get(), 1) == 0);
  const UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  UniqueFd server(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  REQUIRE(server.get() >= 0);

  Kq kq;
  REQUIRE(change(kq.get(), make(id(client.get()), EVFILT_READ, EV_ADD | EV_CLEAR)) == 0);
  const linger reset_on_close{1, 0};
  REQUIRE(::setsockopt(server.get(), SOL_SOCKET, SO_LINGER, &reset_on_close, sizeof reset_on_close) == 0);
  server.reset();  // RST
  const auto evs = collect(kq.get(), &kPatience);
  REQUIRE(evs.size() == 1);
  CHECK((evs[0].flags & EV_EOF) != 0);
  char c;
  CHECK(::recv(client.get(), &c, 1, MSG_DONTWAIT) == -1);
  CHECK(errno == ECONNRESET);
}

// "If an error occurs while processing an element of the changelist and
// there is enough room in the eventlist, then the event will be placed in the
// eventlist with EV_ERROR set in flags and the system error in data."
TEST_CASE(
    "kqueue: a failing change comes back as EV_ERROR with the errno in data, and kevent() returns at once") {
  Kq kq;
  Pipe p;
  int tag = 0;
  const struct kevent changes[] = {make(12345, EVFILT_READ, EV_ADD, 0, 0, &tag),
                                   make(id(p.a.get()), EVFILT_READ, EV_ADD)};
  write_byte(p.b.get());
  struct kevent out[4];
  // A NULL timeout would block forever if kevent() went on to wait.
  const int n = ::kevent(kq.get(), changes, 2, out, 4, nullptr);
  REQUIRE(n == 1);
  CHECK(out[0].flags == EV_ERROR);
  CHECK(out[0].data == EBADF);
  CHECK(out[0].ident == 12345);
  CHECK(out[0].udata == &tag);
  // The later change was applied all the same.
  const auto evs = collect(kq.get(), &kPatience);
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].ident == id(p.a.get()));
}

// "Otherwise, -1 will be returned, and errno will be set to indicate the
// error condition." kern_kevent returns at the first such change.
TEST_CASE(
    "kqueue: without room in the eventlist a failing change fails kevent() and later changes are not "
    "applied") {
  Kq kq;
  Pipe p;
  const struct kevent changes[] = {make(12345, EVFILT_READ, EV_ADD),
                                   make(id(p.a.get()), EVFILT_READ, EV_ADD)};
  CHECK(::kevent(kq.get(), changes, 2, nullptr, 0, nullptr) == -1);
  CHECK(errno == EBADF);
  CHECK(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_DELETE)) == ENOENT);
}

// "EV_RECEIPT This flag is useful for making bulk changes to a kqueue
// without draining any pending events. When passed as input, it forces
// EV_ERROR to always be returned. When a filter is successfully added the
// data field will be zero."
TEST_CASE(
    "kqueue: EV_RECEIPT returns every change as EV_ERROR, with data 0 for success, and drains nothing") {
  Kq kq;
  Pipe p;
  REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_ADD)) == 0);
  write_byte(p.b.get());  // pending, must stay pending
  const struct kevent changes[] = {make(id(p.b.get()), EVFILT_WRITE, EV_ADD | EV_RECEIPT),
                                   make(id(p.b.get()), EVFILT_READ, EV_DELETE | EV_RECEIPT)};
  struct kevent out[4];
  REQUIRE(::kevent(kq.get(), changes, 2, out, 4, nullptr) == 2);
  CHECK(out[0].flags == EV_ERROR);
  CHECK(out[0].filter == EVFILT_WRITE);
  CHECK(out[0].data == 0);
  CHECK(out[1].flags == EV_ERROR);
  CHECK(out[1].data == ENOENT);
  const auto evs = collect(kq.get(), &kPatience);
  CHECK(of(evs, id(p.a.get()), EVFILT_READ).size() == 1);
  CHECK(of(evs, id(p.b.get()), EVFILT_WRITE).size() == 1);
}

// "[EINVAL] The specified time limit or filter is invalid."
TEST_CASE("kqueue: an unknown filter and an invalid timeout fail with EINVAL") {
  Kq kq;
  CHECK(change(kq.get(), make(1, -99, EV_ADD)) == EINVAL);
  struct kevent out[1];
  for (const timespec bad : {timespec{-1, 0}, timespec{0, -1}, timespec{0, 1'000'000'000}}) {
    CHECK(::kevent(kq.get(), nullptr, 0, out, 1, &bad) == -1);
    CHECK(errno == EINVAL);
  }
}

// "EVFILT_USER Establishes a user event identified by ident which is not
// associated with any kernel mechanism but is triggered by user level code."
// "NOTE_TRIGGER Cause the event to be triggered." EV_CLEAR resets it.
// A trigger is a modification like any other: kqueue_register replaces the
// knote's udata with the change's (FreeBSD 12 added EV_KEEPUDATA to avoid
// that).
TEST_CASE(
    "kqueue: EVFILT_USER returns after NOTE_TRIGGER, and with EV_CLEAR the trigger is reset when returned") {
  Kq kq;
  int tag = 0;
  int trigger_tag = 0;
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, &tag)) == 0);
  CHECK(collect(kq.get()).empty());
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, 0, NOTE_TRIGGER, 0, &trigger_tag)) == 0);
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, 0, NOTE_TRIGGER, 0, &trigger_tag)) == 0);  // coalesces
  const auto evs = collect(kq.get());
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].ident == 7);
  CHECK(evs[0].filter == EVFILT_USER);
  CHECK(evs[0].udata == &trigger_tag);
  CHECK(collect(kq.get()).empty());
}

TEST_CASE("kqueue: EVFILT_USER without EV_CLEAR stays triggered until deleted") {
  Kq kq;
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, EV_ADD)) == 0);
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, 0, NOTE_TRIGGER)) == 0);
  CHECK(collect(kq.get()).size() == 1);
  CHECK(collect(kq.get()).size() == 1);
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, EV_DELETE)) == 0);
  CHECK(collect(kq.get()).empty());
}

// "NOTE_FFAND Logically AND fflags with the event's flags. NOTE_FFOR
// Logically OR fflags with the event's flags. NOTE_FFCOPY Copy fflags to the
// event's flags." The 24 user flags come back in fflags.
TEST_CASE("kqueue: EVFILT_USER applies NOTE_FFOR, NOTE_FFAND and NOTE_FFCOPY to the user flags it returns") {
  Kq kq;
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, EV_ADD | EV_CLEAR)) == 0);
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, 0, NOTE_FFOR | 0x6)) == 0);
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, 0, NOTE_FFAND | 0x3)) == 0);
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, 0, NOTE_TRIGGER | NOTE_FFOR | 0x10)) == 0);
  auto evs = collect(kq.get());
  REQUIRE(evs.size() == 1);
  CHECK((evs[0].fflags & NOTE_FFLAGSMASK) == 0x12);
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, 0, NOTE_TRIGGER | NOTE_FFCOPY | 0x5)) == 0);
  evs = collect(kq.get());
  REQUIRE(evs.size() == 1);
  CHECK((evs[0].fflags & NOTE_FFLAGSMASK) == 0x5);
}

TEST_CASE("kqueue: NOTE_TRIGGER from another thread ends a kevent() blocked forever") {
  Kq kq;
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, EV_ADD | EV_CLEAR)) == 0);
  const BlockedProbe probe;
  std::thread trigger([&] {
    probe.wait_until_blocked();
    ::kevent(kq.get(), std::vector{make(7, EVFILT_USER, 0, NOTE_TRIGGER)}.data(), 1, nullptr, 0, nullptr);
  });
  const auto evs = collect(kq.get(), nullptr);
  trigger.join();
  REQUIRE(evs.size() == 1);
  CHECK(evs[0].filter == EVFILT_USER);
}

// kevent() is a system call, so async-signal-safe: a signal handler may
// trigger a user event, and the blocked kevent() it interrupted ends with
// EINTR ("[EINTR] A signal was delivered before the timeout expired and
// before any events were placed on the kqueue for return.").
TEST_CASE(
    "kqueue: NOTE_TRIGGER from a signal handler is seen, and the interrupted kevent() fails with EINTR") {
  Kq kq;
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, EV_ADD | EV_CLEAR)) == 0);
  handled = 0;
  trigger_kq = kq.get();
  spindle::test::conformance::ScopedSignal handler(SIGUSR2, &trigger_from_handler);
  const BlockedProbe probe;
  const pthread_t waiter = ::pthread_self();
  std::thread signaller([&] {
    probe.wait_until_blocked();
    ::pthread_kill(waiter, SIGUSR2);
  });
  struct kevent out[2];
  const int n = ::kevent(kq.get(), nullptr, 0, out, 2, &kPatience);
  const int err = errno;
  signaller.join();
  CHECK(handled.load() == 1);
  if (n == -1) {
    CHECK(err == EINTR);
    CHECK(collect(kq.get()).size() == 1);
  } else {
    // The handler ran before the wait blocked (no /proc to tell).
    CHECK(n == 1);
  }
}

// "EVFILT_SIGNAL Takes the signal number to monitor as the identifier and
// returns when the given signal is delivered to the process. ... The filter
// will record all attempts to deliver a signal to a process, even if the
// signal has been marked as SIG_IGN ... data returns the number of times the
// signal has occurred since the last call to kevent(). This filter
// automatically sets the EV_CLEAR flag internally."
TEST_CASE(
    "kqueue: EVFILT_SIGNAL counts deliveries of an ignored signal in data, and resets after returning them") {
  Kq kq;
  SUBCASE("a real-time signal counts every delivery") {
    const int signo = SIGRTMIN + 3;
    const ScopedDisposition ignore(signo, SIG_IGN);
    REQUIRE(change(kq.get(), make(id(signo), EVFILT_SIGNAL, EV_ADD)) == 0);
    for (int i = 0; i < 3; ++i) REQUIRE(::raise(signo) == 0);
    auto evs = collect(kq.get(), &kPatience);
    REQUIRE(evs.size() == 1);
    CHECK(evs[0].ident == id(signo));
    CHECK(evs[0].data == 3);
    CHECK((evs[0].flags & EV_CLEAR) != 0);
    CHECK(collect(kq.get()).empty());
    REQUIRE(::raise(signo) == 0);
    evs = collect(kq.get(), &kPatience);
    REQUIRE(evs.size() == 1);
    CHECK(evs[0].data == 1);
    REQUIRE(change(kq.get(), make(id(signo), EVFILT_SIGNAL, EV_DELETE)) == 0);
  }
  SUBCASE("a standard signal counts at least once (Linux merges pending ones)") {
    const ScopedDisposition ignore(SIGUSR2, SIG_IGN);
    REQUIRE(change(kq.get(), make(SIGUSR2, EVFILT_SIGNAL, EV_ADD)) == 0);
    for (int i = 0; i < 3; ++i) REQUIRE(::raise(SIGUSR2) == 0);
    const auto evs = collect(kq.get(), &kPatience);
    REQUIRE(evs.size() == 1);
    CHECK(evs[0].data >= 1);
    CHECK(evs[0].data <= 3);
    REQUIRE(change(kq.get(), make(SIGUSR2, EVFILT_SIGNAL, EV_DELETE)) == 0);
  }
}

TEST_CASE("kqueue: EVFILT_SIGNAL on signal 0 or beyond the last signal fails with EINVAL") {
  Kq kq;
  CHECK(change(kq.get(), make(0, EVFILT_SIGNAL, EV_ADD)) == EINVAL);
  CHECK(change(kq.get(), make(1000, EVFILT_SIGNAL, EV_ADD)) == EINVAL);
}

// The emulation's own mechanism (documented in its header): the signal is
// blocked in the thread that adds the knote and unblocked when it is deleted,
// so the thread's mask is as it was before.
TEST_CASE("kqueue: deleting an EVFILT_SIGNAL knote gives the thread its signal mask back") {
  Kq kq;
  const ScopedDisposition ignore(SIGUSR2, SIG_IGN);
  REQUIRE_FALSE(blocked_in_this_thread(SIGUSR2));
  REQUIRE(change(kq.get(), make(SIGUSR2, EVFILT_SIGNAL, EV_ADD)) == 0);
  CHECK(blocked_in_this_thread(SIGUSR2));
  REQUIRE(change(kq.get(), make(SIGUSR2, EVFILT_SIGNAL, EV_DELETE)) == 0);
  CHECK_FALSE(blocked_in_this_thread(SIGUSR2));
}

// "EVFILT_PROC Takes the process ID to monitor as the identifier ...
// NOTE_EXIT The process has exited. If the process has exited, the data
// field contains the exit status as from wait(2)." filt_proc sets EV_EOF and
// EV_ONESHOT. kqueue does not reap: the parent's waitpid still finds it.
TEST_CASE(
    "kqueue: EVFILT_PROC NOTE_EXIT returns the exit once, with EV_EOF and the wait status, without reaping") {
  if (spindle::test::conformance::pidfd_unavailable()) {
    MESSAGE("skipped: the emulation's EVFILT_PROC needs pidfd_open (Linux < 5.3 or valgrind)");
    return;
  }
  Kq kq;
  Pipe go;
  SUBCASE("the child exits with a code") {
    const pid_t pid = spawn_child(go, 7);
    ChildGuard guard(pid);
    int tag = 0;
    REQUIRE(change(kq.get(), make(id(pid), EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, &tag)) == 0);
    CHECK(collect(kq.get()).empty());
    go.b.reset();
    const auto evs = collect(kq.get(), &kPatience);
    REQUIRE(evs.size() == 1);
    CHECK(evs[0].ident == id(pid));
    CHECK(evs[0].udata == &tag);
    CHECK((evs[0].fflags & NOTE_EXIT) != 0);
    CHECK((evs[0].flags & EV_EOF) != 0);
    CHECK(WIFEXITED(static_cast<int>(evs[0].data)));
    CHECK(WEXITSTATUS(static_cast<int>(evs[0].data)) == 7);
    CHECK(collect(kq.get()).empty());
    CHECK(change(kq.get(), make(id(pid), EVFILT_PROC, EV_DELETE)) == ENOENT);
    guard.release();
    const int status = reap(pid);
    CHECK(WEXITSTATUS(status) == 7);
  }
  SUBCASE("the child is killed by a signal") {
    const pid_t pid = spawn_child(go, 0);
    ChildGuard guard(pid);
    REQUIRE(change(kq.get(), make(id(pid), EVFILT_PROC, EV_ADD, NOTE_EXIT)) == 0);
    REQUIRE(::kill(pid, SIGKILL) == 0);
    const auto evs = collect(kq.get(), &kPatience);
    REQUIRE(evs.size() == 1);
    CHECK(WIFSIGNALED(static_cast<int>(evs[0].data)));
    CHECK(WTERMSIG(static_cast<int>(evs[0].data)) == SIGKILL);
    guard.release();
    reap(pid);
  }
}

// filt_procattach: "Process may be exiting or a zombie": a zombie attaches
// and fires at once. A reaped pid is gone: "[ESRCH] The specified process to
// attach to does not exist."
TEST_CASE("kqueue: EVFILT_PROC on a zombie fires at once, and on a reaped pid fails with ESRCH") {
  if (spindle::test::conformance::pidfd_unavailable()) {
    MESSAGE("skipped: the emulation's EVFILT_PROC needs pidfd_open (Linux < 5.3 or valgrind)");
    return;
  }
  Kq kq;
  Pipe go;
  const pid_t pid = spawn_child(go, 3);
  ChildGuard guard(pid);
  go.b.reset();
  wait_until_exited(pid);
  SUBCASE("FreeBSD: the zombie attaches") {
    REQUIRE(change(kq.get(), make(id(pid), EVFILT_PROC, EV_ADD, NOTE_EXIT)) == 0);
    const auto evs = collect(kq.get());
    REQUIRE(evs.size() == 1);
    CHECK(WEXITSTATUS(static_cast<int>(evs[0].data)) == 3);
  }
  SUBCASE("macOS, by the emulation's setting: the zombie is refused") {
    REQUIRE(kqueue_emu_set_zombie_esrch(1) == 0);
    CHECK(change(kq.get(), make(id(pid), EVFILT_PROC, EV_ADD, NOTE_EXIT)) == ESRCH);
    CHECK(kqueue_emu_set_zombie_esrch(0) == 1);
  }
  guard.release();
  reap(pid);
  CHECK(change(kq.get(), make(id(pid), EVFILT_PROC, EV_ADD, NOTE_EXIT)) == ESRCH);
}

// "If timeout is a non-NULL pointer, it specifies a maximum interval to wait
// for an event ... If timeout is a NULL pointer, kevent() waits
// indefinitely. To effect a poll, the timeout argument should be non-NULL,
// pointing to a zero-valued timespec structure."
TEST_CASE("kqueue: a zero timeout polls, and a timed wait never returns early") {
  Kq kq;
  struct kevent out[1];
  auto start = Clock::now();
  CHECK(::kevent(kq.get(), nullptr, 0, out, 1, &kPoll) == 0);
  CHECK(Clock::now() - start < 2s);
  for (const auto wait : {20ms, 3ms}) {
    const timespec ts{0, std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count()};
    start = Clock::now();
    CHECK(::kevent(kq.get(), nullptr, 0, out, 1, &ts) == 0);
    const auto elapsed = Clock::now() - start;
    CHECK(elapsed >= wait);
    CHECK(elapsed < wait + 2s);
  }
  // nevents == 0 applies the changes and never waits, whatever the timeout.
  start = Clock::now();
  CHECK(::kevent(kq.get(), nullptr, 0, nullptr, 0, nullptr) == 0);
  CHECK(Clock::now() - start < 2s);
}

TEST_CASE("kqueue: a signal ends a kevent() blocked forever with EINTR") {
  Kq kq;
  handled = 0;
  spindle::test::conformance::ScopedSignal handler(SIGUSR1, &count_signal);
  const BlockedProbe probe;
  const pthread_t waiter = ::pthread_self();
  std::atomic<bool> done{false};
  std::thread signaller([&] {
    probe.wait_until_blocked();
    // Until the wait ends: a signal that lands before kevent() blocks (no
    // /proc) must not leave it blocked forever.
    while (!done.load()) {
      ::pthread_kill(waiter, SIGUSR1);
      std::this_thread::sleep_for(5ms);
    }
  });
  struct kevent out[1];
  const int n = ::kevent(kq.get(), nullptr, 0, out, 1, nullptr);
  const int err = errno;
  done = true;
  signaller.join();
  CHECK(n == -1);
  CHECK(err == EINTR);
  CHECK(handled.load() >= 1);
}

// kqueue_scan stops at a marker placed at the end of the queue: each knote
// at most once per call, and what does not fit stays for the next call.
TEST_CASE("kqueue: knotes left over when the eventlist is full come in the next call, each once per call") {
  Kq kq;
  std::vector<Pipe> pipes(5);
  for (Pipe& p : pipes) {
    REQUIRE(change(kq.get(), make(id(p.a.get()), EVFILT_READ, EV_ADD)) == 0);  // level
    write_byte(p.b.get());
  }
  const auto first = collect(kq.get(), &kPatience, 3);
  CHECK(first.size() == 3);
  const auto second = collect(kq.get(), &kPatience, 16);
  CHECK(second.size() == 5);  // the two left over, then the three level ones again
  for (std::size_t i = 0; i < second.size(); ++i) {
    for (std::size_t j = i + 1; j < second.size(); ++j) CHECK(second[i].ident != second[j].ident);
  }
  std::vector<std::uintptr_t> leftover;
  for (const Pipe& p : pipes) {
    if (of(first, id(p.a.get()), EVFILT_READ).empty()) leftover.push_back(id(p.a.get()));
  }
  REQUIRE(leftover.size() == 2);
  CHECK(((second[0].ident == leftover[0] && second[1].ident == leftover[1]) ||
         (second[0].ident == leftover[1] && second[1].ident == leftover[0])));
}

// "The queue is not inherited by a child created with fork(2)."
TEST_CASE("kqueue: a child created with fork() does not inherit the kqueue") {
  Kq kq;
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, EV_ADD)) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    struct kevent out[1];
    const bool refused = ::kevent(kq.get(), nullptr, 0, out, 1, &kPoll) == -1 && errno == EBADF;
    const bool closed = ::fcntl(kq.get(), F_GETFD) == -1 && errno == EBADF;
    ::_exit(refused && closed ? 0 : 1);
  }
  const int status = reap(pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  // The parent's kqueue is untouched.
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, 0, NOTE_TRIGGER)) == 0);
  CHECK(collect(kq.get()).size() == 1);
}

// The emulation's side of the same rule: what it closes in the child is
// only what is still its own. A kqueue closed in the parent may have left
// its number to another file, which the child must keep.
TEST_CASE("kqueue: a fork child keeps a file that reuses the number of a kqueue closed before") {
  int number;
  {
    Kq kq;
    number = kq.get();
  }
  Pipe p;
  REQUIRE(p.a.get() == number);
  write_byte(p.b.get());
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    char c = 0;
    ::_exit(::read(number, &c, 1) == 1 && c == 'x' ? 0 : 1);
  }
  const int status = reap(pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("kqueue: kqueue_emu_inject hands the next collecting kevent() the event verbatim, first") {
  Kq kq;
  REQUIRE(change(kq.get(), make(7, EVFILT_USER, EV_ADD, NOTE_TRIGGER)) == 0);
  int tag = 0;
  const struct kevent fake = make(99, EVFILT_READ, EV_EOF, ECONNRESET, 4, &tag);
  REQUIRE(kqueue_emu_inject(kq.get(), &fake) == 0);
  const auto evs = collect(kq.get());
  REQUIRE(evs.size() == 2);
  CHECK(evs[0].ident == 99);
  CHECK(evs[0].flags == EV_EOF);
  CHECK(evs[0].fflags == ECONNRESET);
  CHECK(evs[0].data == 4);
  CHECK(evs[0].udata == &tag);
  CHECK(evs[1].filter == EVFILT_USER);
  CHECK(kqueue_emu_inject(-1, &fake) == -1);
}
