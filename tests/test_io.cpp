// spindle::wait_readable / wait_writable / forget_fd: fibers parked on
// non-blocking pipes and sockets, woken by peer fibers, by plain threads, by
// hangups, by forget_fd, and ended by Timeout scopes and cancellation.
//
// Every read and write follows the pattern io.hpp prescribes: try the
// syscall, wait only on EAGAIN, retry. Where a case checks that a fiber has
// NOT woken, it gives the scheduler real time (a short sleep, so the idle
// step polls the kernel) before looking.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <spindle/spindle.hpp>

#include "child.hpp"

using namespace std::chrono_literals;

namespace {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  // Forgets the fd in the running scheduler (if any), then closes it.
  void reset() {
    if (fd_ < 0) return;
    spindle::forget_fd(fd_);
    ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// `r` reads, `w` writes; both non-blocking.
struct Pipe {
  Fd r, w;
  Pipe() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    r = Fd(fds[0]);
    w = Fd(fds[1]);
  }
};

struct SocketPair {
  Fd a, b;
  SocketPair() {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    a = Fd(sv[0]);
    b = Fd(sv[1]);
  }
};

[[noreturn]] void throw_errno(const char* what) { throw std::system_error(errno, std::system_category(), what); }

// Reads at most n bytes; parks while nothing is there. 0 means end of file.
std::size_t read_some(int fd, void* buf, std::size_t n) {
  for (;;) {
    const ssize_t r = ::read(fd, buf, n);
    if (r >= 0) return static_cast<std::size_t>(r);
    if (errno != EAGAIN) throw_errno("read");
    spindle::wait_readable(fd);
  }
}

void read_exact(int fd, void* buf, std::size_t n) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    const std::size_t got = read_some(fd, p, n);
    REQUIRE(got > 0);
    p += got;
    n -= got;
  }
}

void write_all(int fd, const void* buf, std::size_t n) {
  auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    const ssize_t r = ::write(fd, p, n);
    if (r < 0) {
      if (errno != EAGAIN) throw_errno("write");
      spindle::wait_writable(fd);
      continue;
    }
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

void write_str(int fd, const std::string& s) { write_all(fd, s.data(), s.size()); }

// Fills a non-blocking fd until the kernel says EAGAIN; returns bytes written.
std::size_t fill(int fd) {
  static char chunk[65536];
  std::size_t total = 0;
  for (;;) {
    const ssize_t r = ::write(fd, chunk, sizeof chunk);
    if (r < 0) {
      REQUIRE(errno == EAGAIN);
      return total;
    }
    total += static_cast<std::size_t>(r);
  }
}

// Lets the scheduler's idle step poll the kernel a few times.
void settle() { spindle::this_fiber::sleep_for(20ms); }

template <class F>
std::system_error catch_system_error(F&& f) {
  try {
    f();
  } catch (const std::system_error& e) {
    return e;
  }
  FAIL("no std::system_error was thrown");
  return std::system_error(std::error_code{});
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Raises the soft fd limit toward `need`; returns what is available.
rlim_t ensure_fd_limit(rlim_t need) {
  rlimit rl{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &rl) == 0);
  if (rl.rlim_cur < need) {
    rl.rlim_cur = std::min(need, rl.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &rl);
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &rl) == 0);
  }
  return rl.rlim_cur;
}

}  // namespace

// ------------------------------------------------------------- basics

TEST_CASE("io: wait_readable parks until a peer fiber writes (pipe and socketpair)") {
  auto check = [](int rfd, int wfd) {
    bool got = false;
    std::string data;
    auto reader = spindle::spawn([&] {
      char buf[64];
      const std::size_t n = read_some(rfd, buf, sizeof buf);
      data.assign(buf, n);
      got = true;
    });
    for (int i = 0; i < 5; ++i) spindle::this_fiber::yield();
    settle();
    CHECK_FALSE(got);  // parked, not spinning, and not woken by anything else
    write_str(wfd, "ping");
    reader.join();
    CHECK(got);
    CHECK(data == "ping");
  };
  spindle::run([&] {
    SUBCASE("pipe") {
      Pipe p;
      check(p.r.get(), p.w.get());
    }
    SUBCASE("socketpair") {
      SocketPair s;
      check(s.a.get(), s.b.get());
      check(s.b.get(), s.a.get());  // and the other way, same fds again
    }
  });
}

TEST_CASE("io: peer close wakes the reader and read then returns 0") {
  spindle::run([] {
    SUBCASE("pipe") {
      Pipe p;
      std::size_t n = 99;
      auto reader = spindle::spawn([&] {
        char buf[16];
        n = read_some(p.r.get(), buf, sizeof buf);
      });
      settle();
      CHECK(n == 99);
      p.w.reset();
      reader.join();
      CHECK(n == 0);
    }
    SUBCASE("socketpair, with data before the close") {
      SocketPair s;
      std::string got;
      auto reader = spindle::spawn([&] {
        char buf[16];
        for (;;) {
          const std::size_t n = read_some(s.a.get(), buf, sizeof buf);
          if (n == 0) return;
          got.append(buf, n);
        }
      });
      settle();
      write_str(s.b.get(), "last words");
      s.b.reset();
      reader.join();
      CHECK(got == "last words");
    }
    SUBCASE("shutdown(SHUT_WR) of the peer") {
      SocketPair s;
      std::size_t n = 99;
      auto reader = spindle::spawn([&] {
        char buf[16];
        n = read_some(s.a.get(), buf, sizeof buf);
      });
      settle();
      REQUIRE(::shutdown(s.b.get(), SHUT_WR) == 0);
      reader.join();
      CHECK(n == 0);
    }
  });
}

TEST_CASE("io: a fresh pipe and a fresh socket are writable") {
  spindle::run([] {
    Pipe p;
    spindle::wait_writable(p.w.get());
    CHECK(::write(p.w.get(), "x", 1) == 1);
    SocketPair s;
    spindle::wait_writable(s.a.get());
    spindle::wait_writable(s.b.get());
    CHECK(::write(s.a.get(), "y", 1) == 1);
  });
}

TEST_CASE("io: wait_writable parks while a pipe is full and wakes when the reader drains it") {
  spindle::run([] {
    Pipe p;
    const std::size_t capacity = fill(p.w.get());
    CHECK(capacity > 0);
    bool wrote = false;
    auto writer = spindle::spawn([&] {
      write_str(p.w.get(), "more");
      wrote = true;
    });
    settle();
    CHECK_FALSE(wrote);
    std::vector<char> buf(capacity);
    read_exact(p.r.get(), buf.data(), capacity);
    writer.join();
    CHECK(wrote);
    char tail[4];
    read_exact(p.r.get(), tail, 4);
    CHECK(std::string(tail, 4) == "more");
  });
}

TEST_CASE("io: one fiber may wait to read while another waits to write on the same socket") {
  spindle::run([] {
    SocketPair s;
    fill(s.a.get());
    bool read_done = false;
    bool write_done = false;
    auto reader = spindle::spawn([&] {
      char c;
      read_exact(s.a.get(), &c, 1);
      CHECK(c == 'r');
      read_done = true;
    });
    auto writer = spindle::spawn([&] {
      write_str(s.a.get(), "w");
      write_done = true;
    });
    settle();
    CHECK_FALSE(read_done);
    CHECK_FALSE(write_done);
    write_str(s.b.get(), "r");
    reader.join();
    CHECK(read_done);
    CHECK_FALSE(write_done);
    // Drain the peer's receive buffer so the writer can go on.
    std::vector<char> buf(1 << 16);  // not on the 64 KiB fiber stack
    for (;;) {
      const ssize_t n = ::read(s.b.get(), buf.data(), buf.size());
      if (n <= 0) break;
      if (write_done) break;
      spindle::this_fiber::yield();
    }
    writer.join();
    CHECK(write_done);
  });
}

TEST_CASE("io: an edge that arrives while nobody waits makes the next wait return at once") {
  spindle::run([] {
    Pipe p;
    // Register the fd with a first wait.
    auto first = spindle::spawn([&] {
      char c;
      read_exact(p.r.get(), &c, 1);
    });
    settle();
    write_str(p.w.get(), "1");
    first.join();
    // Data arrives with no waiter; the idle step records the edge.
    write_str(p.w.get(), "2");
    settle();
    // The wait does not park (nothing else would wake it): it returns and the
    // read succeeds.
    spindle::wait_readable(p.r.get());
    char c = 0;
    CHECK(::read(p.r.get(), &c, 1) == 1);
    CHECK(c == '2');
  });
}

TEST_CASE("io: a plain thread writing to the pipe wakes the parked fiber") {
  spindle::run([] {
    for (int round = 0; round < 200; ++round) {
      Pipe p;
      std::thread writer([&] {
        std::this_thread::sleep_for(std::chrono::microseconds(round % 5 * 50));
        REQUIRE(::write(p.w.get(), "z", 1) == 1);
      });
      char c = 0;
      {
        spindle::Timeout scope(20s);
        read_exact(p.r.get(), &c, 1);
      }
      CHECK(c == 'z');
      writer.join();
    }
  });
}

// ------------------------------------------------------------- errors

TEST_CASE("io: forget_fd while a fiber waits gives it EBADF naming the call and the fd") {
  spindle::run([] {
    Pipe p;
    const int fd = p.r.get();
    std::system_error err(std::error_code{});
    bool threw = false;
    auto reader = spindle::spawn([&] {
      try {
        spindle::wait_readable(fd);
      } catch (const std::system_error& e) {
        err = e;
        threw = true;
      }
    });
    settle();
    spindle::forget_fd(fd);
    reader.join();
    REQUIRE(threw);
    CHECK(err.code() == std::error_code(EBADF, std::system_category()));
    const std::string what = err.what();
    CAPTURE(what);
    CHECK(contains(what, "spindle::wait_readable"));
    CHECK(contains(what, fmt::format("fd={}", fd)));

    // Same for a writer.
    SocketPair s;
    fill(s.a.get());
    auto writer = spindle::spawn([&] {
      auto e = catch_system_error([&] { spindle::wait_writable(s.a.get()); });
      CHECK(e.code() == std::error_code(EBADF, std::system_category()));
      CHECK(contains(e.what(), "spindle::wait_writable"));
      CHECK(contains(e.what(), fmt::format("fd={}", s.a.get())));
    });
    settle();
    spindle::forget_fd(s.a.get());
    writer.join();

    // The still-open fd can be waited on again afterwards.
    auto again = spindle::spawn([&] {
      char c;
      read_exact(fd, &c, 1);
    });
    settle();
    write_str(p.w.get(), "x");
    again.join();
  });
}

TEST_CASE("io: waiting on fd -1, on a closed fd and on a regular file throws a system_error naming the fd") {
  spindle::run([] {
    SUBCASE("fd -1") {
      auto e = catch_system_error([] { spindle::wait_readable(-1); });
      CHECK(e.code() == std::error_code(EBADF, std::system_category()));
      CHECK(contains(e.what(), "spindle::wait_readable(fd=-1)"));
      auto w = catch_system_error([] { spindle::wait_writable(-1); });
      CHECK(w.code().value() == EBADF);
      CHECK(contains(w.what(), "spindle::wait_writable(fd=-1)"));
    }
    SUBCASE("a closed fd") {
      int fd;
      {
        Pipe p;
        fd = p.r.get();
      }
      auto e = catch_system_error([&] { spindle::wait_readable(fd); });
      CHECK(e.code() == std::error_code(EBADF, std::system_category()));
      CHECK(contains(e.what(), fmt::format("spindle::wait_readable(fd={})", fd)));
    }
    SUBCASE("a regular file (epoll refuses it with EPERM)") {
      char path[] = "/tmp/spindle_test_io_XXXXXX";
      Fd file(::mkstemp(path));
      REQUIRE(file.get() >= 0);
      ::unlink(path);
      const std::string fdtext = fmt::format("fd={}", file.get());
      auto e = catch_system_error([&] { spindle::wait_readable(file.get()); });
      CHECK(e.code() == std::error_code(EPERM, std::system_category()));
      CHECK(contains(e.what(), "spindle::wait_readable(" + fdtext + ")"));
      CHECK((contains(e.what(), "epoll_ctl") || contains(e.what(), "kevent(EV_ADD")));
      // The error text once, at the end, not after each call named.
      const std::string text = std::error_code(EPERM, std::system_category()).message();
      CHECK(std::string(e.what()).find(text) == std::string(e.what()).size() - text.size());
      // Nothing was left registered: the next attempt fails the same way.
      auto e2 = catch_system_error([&] { spindle::wait_writable(file.get()); });
      CHECK(e2.code() == std::error_code(EPERM, std::system_category()));
    }
    // Failed waits leave the scheduler fully usable.
    Pipe p;
    write_str(p.w.get(), "ok");
    char buf[2];
    read_exact(p.r.get(), buf, 2);
    CHECK(std::string(buf, 2) == "ok");
  });
}

TEST_CASE("io: waits outside a fiber throw std::logic_error naming the call; forget_fd is harmless") {
  Pipe p;
  try {
    spindle::wait_readable(p.r.get());
    FAIL("no throw");
  } catch (const std::logic_error& e) {
    CHECK(contains(e.what(), "spindle::wait_readable"));
  }
  CHECK_THROWS_AS(spindle::wait_writable(p.w.get()), std::logic_error);
  spindle::forget_fd(p.r.get());
  spindle::run([&] {
    spindle::forget_fd(p.r.get());  // never waited on
    spindle::forget_fd(-1);
    spindle::forget_fd(1'000'000);
    spindle::forget_fd(p.r.get());
  });
}

// ------------------------------------------------------- end of a wait

TEST_CASE("io: a second fiber waiting on the same fd and direction aborts naming the fd and file:line") {
  // An fd slot holds one waiter per direction: a second one is a program
  // error (two fibers would race for one edge), not a state to recover from.
  auto r = spindle_test::run_in_child([] {
    spindle::run([] {
      Pipe p;
      auto first = spindle::spawn([&] { spindle::wait_readable(p.r.get()); });
      spindle::this_fiber::yield();  // the first one parks
      spindle::wait_readable(p.r.get());
    });
  });
  CHECK(WIFSIGNALED(r.status));
  if (WIFSIGNALED(r.status)) CHECK(WTERMSIG(r.status) == SIGABRT);
  CHECK(r.err.find("two fibers wait on fd=") != std::string::npos);
  CHECK(r.err.find("in one direction") != std::string::npos);
  CHECK(r.err.find("scheduler.cpp:") != std::string::npos);
}

TEST_CASE("io: a Timeout scope ends an I/O wait with TimeoutError and leaves no registration behind") {
  spindle::run([] {
    Pipe p;
    const auto t0 = std::chrono::steady_clock::now();
    {
      spindle::Timeout scope(20ms);
      CHECK_THROWS_AS(spindle::wait_readable(p.r.get()), spindle::TimeoutError);
      CHECK(scope.expired());
    }
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took >= 20ms);
    CHECK(took < 20ms + 5s);
    // The error names the call and the fd, both when the deadline passes
    // during the wait and when it has passed before the wait starts.
    const std::string fd_name = "(fd=" + std::to_string(p.r.get()) + ")";
    for (auto before : {false, true}) {
      spindle::Timeout scope(before ? 0ms : 5ms);
      try {
        spindle::wait_readable(p.r.get());
        FAIL("wait_readable returned");
      } catch (const spindle::TimeoutError& e) {
        CHECK(std::string(e.what()).find("spindle::wait_readable" + fd_name + ": Timeout expired") !=
              std::string::npos);
      }
    }
    // Another fiber may now wait on the same fd and direction (a leftover
    // waiter would trip the "two fibers wait" assertion), and is woken.
    std::string got;
    auto other = spindle::spawn([&] {
      char buf[8];
      got.assign(buf, read_some(p.r.get(), buf, sizeof buf));
    });
    settle();
    CHECK(got.empty());
    write_str(p.w.get(), "after");
    other.join();
    CHECK(got == "after");

    // The same for a write wait, in a fiber of its own, on a manual-clock-free
    // path: a full pipe, a Timeout, then a second writer.
    fill(p.w.get());
    auto w1 = spindle::spawn([&] {
      spindle::Timeout scope(5ms);
      CHECK_THROWS_AS(spindle::wait_writable(p.w.get()), spindle::TimeoutError);
    });
    w1.join();
    bool w2_done = false;
    auto w2 = spindle::spawn([&] {
      write_str(p.w.get(), "!");
      w2_done = true;
    });
    settle();
    CHECK_FALSE(w2_done);
    std::vector<char> buf(1 << 16);
    while (!w2_done) {
      const ssize_t n = ::read(p.r.get(), buf.data(), buf.size());
      if (n < 0) spindle::this_fiber::yield();
    }
    w2.join();
  });
}

TEST_CASE("io: a Timeout scope with a manual clock ends an I/O wait at its deadline") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    Pipe p;
    const auto t0 = spindle::now();
    {
      spindle::Timeout scope(3s);
      CHECK_THROWS_AS(spindle::wait_readable(p.r.get()), spindle::TimeoutError);
    }
    CHECK(spindle::now() - t0 == 3s);
    // Data that is already there is read without waiting, Timeout or not.
    write_str(p.w.get(), "x");
    {
      spindle::Timeout scope(1s);
      char c;
      read_exact(p.r.get(), &c, 1);
    }
    CHECK(spindle::now() - t0 == 3s);
  });
}

TEST_CASE("io: cancelling a fiber parked on an fd leaves no registration behind") {
  spindle::run([] {
    SocketPair s;
    for (int round = 0; round < 3; ++round) {
      auto waiter = spindle::spawn([&] { spindle::wait_readable(s.a.get()); });
      settle();
      waiter.cancel();
      waiter.wait();
      CHECK(waiter.cancelled());
    }
    auto reader = spindle::spawn([&] {
      char c;
      read_exact(s.a.get(), &c, 1);
      CHECK(c == 'k');
    });
    settle();
    write_str(s.b.get(), "k");
    reader.join();
  });
}

TEST_CASE("io: a fiber may take over an fd whose waiter was cancelled but has not run yet") {
  spindle::run([] {
    Pipe p;
    auto reader = spindle::spawn([&] { spindle::wait_readable(p.r.get()); });
    spindle::this_fiber::yield();  // the reader parks on the fd
    char c = 0;
    bool got = false;
    // Queued before the cancelled reader, so it runs first and parks on the
    // fd while the reader, readied, is still listed in the fd's slot.
    auto taker = spindle::spawn([&] {
      read_exact(p.r.get(), &c, 1);
      got = true;
    });
    reader.cancel();
    reader.wait();
    CHECK(reader.cancelled());
    settle();
    CHECK_FALSE(got);
    write_str(p.w.get(), "y");
    taker.join();
    CHECK(c == 'y');

    // The plain form: cancel the reader, then wait on its fd at once.
    auto reader2 = spindle::spawn([&] { spindle::wait_readable(p.r.get()); });
    spindle::this_fiber::yield();
    reader2.cancel();
    write_str(p.w.get(), "z");
    spindle::wait_readable(p.r.get());
    CHECK(::read(p.r.get(), &c, 1) == 1);
    CHECK(c == 'z');
    reader2.wait();
    CHECK(reader2.cancelled());
  });
}

TEST_CASE("io: a fiber readied first at the same instant may wait on the fd of a timed-out waiter (manual clock)") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    Pipe p;
    const auto deadline = spindle::now() + 1s;
    char c = 0;
    // Sleeps first, so its timer fires first at `deadline`, before the
    // reader's Timeout; it then waits on the reader's fd while the timed-out
    // reader is readied but has not run.
    auto taker = spindle::spawn([&] {
      spindle::this_fiber::sleep_until(deadline);
      read_exact(p.r.get(), &c, 1);
    });
    bool timed_out = false;
    auto reader = spindle::spawn([&] {
      spindle::Timeout scope(deadline);
      try {
        spindle::wait_readable(p.r.get());
      } catch (const spindle::TimeoutError&) {
        timed_out = true;
      }
    });
    reader.join();
    CHECK(timed_out);
    write_str(p.w.get(), "t");
    taker.join();
    CHECK(c == 't');
  });
}

// ---------------------------------------------------------------- volume

TEST_CASE("io: two fibers ping-pong 10,000 messages over a socketpair") {
  constexpr std::uint32_t kMessages = 10'000;
  spindle::run([] {
    SocketPair s;
    auto pong = spindle::spawn([&] {
      for (std::uint32_t i = 0; i < kMessages; ++i) {
        std::uint32_t v = 0;
        read_exact(s.b.get(), &v, sizeof v);
        REQUIRE(v == i);
        ++v;
        write_all(s.b.get(), &v, sizeof v);
      }
    });
    for (std::uint32_t i = 0; i < kMessages; ++i) {
      write_all(s.a.get(), &i, sizeof i);
      std::uint32_t v = 0;
      read_exact(s.a.get(), &v, sizeof v);
      REQUIRE(v == i + 1);
    }
    pong.join();
  });
}

TEST_CASE("io: 1,000 fibers each waiting on its own pipe are all woken") {
  int fibers = 1000;
  const rlim_t have = ensure_fd_limit(2 * 1000 + 64);
  if (have < 2 * 1000 + 64) {
    fibers = static_cast<int>((have - 64) / 2);
    MESSAGE("RLIMIT_NOFILE is " << have << ": using " << fibers << " pipes");
  }
  spindle::run([&] {
    std::vector<Pipe> pipes(static_cast<std::size_t>(fibers));
    std::vector<int> got(static_cast<std::size_t>(fibers), -1);
    std::vector<spindle::Task<void>> tasks;
    tasks.reserve(pipes.size());
    for (int i = 0; i < fibers; ++i)
      tasks.push_back(spindle::spawn([&, i] {
        int v;
        read_exact(pipes[i].r.get(), &v, sizeof v);
        got[i] = v;
      }));
    settle();
    for (int v : got) REQUIRE(v == -1);
    // Wake them in a scrambled order, half from this fiber, half from a thread.
    std::thread helper([&] {
      for (int i = 1; i < fibers; i += 2) REQUIRE(::write(pipes[i].w.get(), &i, sizeof i) == sizeof i);
    });
    for (int i = fibers - (fibers % 2 == 0 ? 2 : 1); i >= 0; i -= 2) write_all(pipes[i].w.get(), &i, sizeof i);
    helper.join();
    for (auto& t : tasks) t.join();
    for (int i = 0; i < fibers; ++i) CHECK(got[i] == i);
  });
}

TEST_CASE("io: a forgotten, closed and reused fd number sees no stale readiness") {
  spindle::run([] {
    Pipe old_pipe;
    const int num = old_pipe.r.get();
    // Register the old fd and leave an unconsumed edge on it.
    auto first = spindle::spawn([&] {
      char c;
      read_exact(num, &c, 1);
    });
    settle();
    write_str(old_pipe.w.get(), "a");
    first.join();
    write_str(old_pipe.w.get(), "b");
    settle();  // the edge is recorded on the slot: nobody waits
    // Keep the old pipe's read side open through a dup, so the old file can
    // still become readable after its fd number is gone.
    Fd old_dup(::fcntl(num, F_DUPFD_CLOEXEC, 0));
    REQUIRE(old_dup.get() >= 0);
    spindle::forget_fd(num);
    REQUIRE(::close(old_pipe.r.release()) == 0);
    // A new pipe whose read side takes over the old number.
    Pipe fresh;
    if (fresh.r.get() != num) {  // usually the kernel reuses the lowest number anyway
      REQUIRE(::dup3(fresh.r.get(), num, O_CLOEXEC) == num);
      fresh.r = Fd(num);
    }
    // Wait directly (no read first): neither the old edge recorded on the
    // slot nor events of the old file may end this wait.
    int returns = 0;
    auto waiter = spindle::spawn([&] {
      spindle::wait_readable(num);
      ++returns;
    });
    settle();
    CHECK(returns == 0);
    write_str(old_pipe.w.get(), "c");  // the old file, still open via old_dup
    settle();
    CHECK(returns == 0);
    write_str(fresh.w.get(), "n");
    waiter.join();
    CHECK(returns == 1);
    char c = 0;
    CHECK(::read(num, &c, 1) == 1);
    CHECK(c == 'n');
    // The old file kept its data; it was just not reported to the new fd.
    char old[4];
    CHECK(::read(old_dup.get(), old, sizeof old) == 2);
    CHECK(std::string(old, 2) == "bc");
  });
}
