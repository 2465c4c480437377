// libspindle_hooks: plain blocking libc calls made on fibers park the fiber,
// made anywhere else they behave as the kernel's.
//
// Everything here uses the ordinary libc names (read, poll, nanosleep,
// ...), which this binary's link resolves to the hooks. Blocking-mode
// checks look at the kernel's own flags with syscall(SYS_fcntl), which the
// hooks cannot intercept. Where a case proves that a call did not block the
// thread, another fiber counts ticks while it waits. The same source is
// also built as a statically linked executable (test_hooks_static).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool kernel_nonblock(int fd) { return (::syscall(SYS_fcntl, fd, F_GETFL) & O_NONBLOCK) != 0; }
bool user_nonblock(int fd) { return (::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

struct Pair {
  int a = -1, b = -1;
  explicit Pair(int type = SOCK_STREAM) {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, type, 0, sv) == 0);
    a = sv[0];
    b = sv[1];
  }
  ~Pair() {
    if (a >= 0) ::close(a);
    if (b >= 0) ::close(b);
  }
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;
};

struct PipeFds {
  int r = -1, w = -1;
  explicit PipeFds(int flags = 0) {
    int fds[2];
    REQUIRE(::pipe2(fds, flags) == 0);
    r = fds[0];
    w = fds[1];
  }
  ~PipeFds() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
  }
  PipeFds(const PipeFds&) = delete;
  PipeFds& operator=(const PipeFds&) = delete;
};

// A fiber that counts while the others are parked: if a hooked call
// blocked the thread, the count would stay put.
struct Ticker {
  std::atomic<int> ticks{0};
  bool stop = false;
  spindle::Task<void> task;
  Ticker()
      : task(spindle::spawn([this] {
          while (!stop) {
            spindle::this_fiber::sleep_for(2ms);
            ++ticks;
          }
        })) {}
  ~Ticker() {
    stop = true;
    task.join();
  }
};

// A regular file with some content, unlinked at once.
int temp_file() {
  char path[] = "/tmp/spindle-hooks-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::unlink(path);
  REQUIRE(::write(fd, "file", 4) == 4);
  REQUIRE(::lseek(fd, 0, SEEK_SET) == 0);
  return fd;
}

std::string read_n(int fd, std::size_t n) {
  std::string out(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, out.data() + got, n - got);
    REQUIRE(r > 0);
    got += static_cast<std::size_t>(r);
  }
  return out;
}

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 977) % 26);
  return s;
}

}  // namespace

// ---------------------------------------------------------------- I/O

TEST_CASE("hooks: a blocking read on a fiber parks until a peer fiber writes") {
  spindle::run([] {
    Pair p;
    CHECK(kernel_nonblock(p.a));      // created non-blocking in the kernel...
    CHECK_FALSE(user_nonblock(p.a));  // ...but the application sees blocking
    Ticker ticker;
    std::string got;
    auto reader = spindle::spawn([&] {
      char buf[64];
      const ssize_t n = ::read(p.a, buf, sizeof buf);
      REQUIRE(n > 0);
      got.assign(buf, static_cast<std::size_t>(n));
    });
    spindle::this_fiber::sleep_for(60ms);
    CHECK(got.empty());
    const int ticks = ticker.ticks;
    CHECK(ticks >= 2);  // the thread kept running fibers while read waited
    REQUIRE(::write(p.b, "ping", 4) == 4);
    reader.join();
    CHECK(got == "ping");
  });
}

TEST_CASE("hooks: partial reads return what is there, blocking writes write everything") {
  spindle::run([] {
    SUBCASE("a read returns the bytes available, not the size asked for") {
      Pair p;
      REQUIRE(::write(p.b, "0123456789", 10) == 10);
      char buf[100];
      CHECK(::read(p.a, buf, sizeof buf) == 10);
      REQUIRE(::send(p.b, "abc", 3, 0) == 3);
      CHECK(::recv(p.a, buf, sizeof buf, 0) == 3);
    }
    SUBCASE("recv(MSG_WAITALL) waits for everything") {
      Pair p;
      auto writer = spindle::spawn([&] {
        for (int i = 0; i < 4; ++i) {
          spindle::this_fiber::sleep_for(5ms);
          REQUIRE(::write(p.b, "abcd", 4) == 4);
        }
      });
      char buf[16];
      CHECK(::recv(p.a, buf, sizeof buf, MSG_WAITALL) == 16);
      CHECK(std::string(buf, 16) == "abcdabcdabcdabcd");
      writer.join();
    }
    SUBCASE("write, writev, send and sendmsg of 4 MiB each return in full") {
      Pair p;
      const std::size_t n = 4u << 20;
      const std::string data = pattern(n);
      std::string received;
      auto reader = spindle::spawn([&] {
        std::vector<char> buf(1000);
        while (received.size() < 4 * n) {
          const ssize_t r = ::read(p.a, buf.data(), buf.size());
          REQUIRE(r > 0);
          received.append(buf.data(), static_cast<std::size_t>(r));
          if (received.size() % 97 == 0) spindle::this_fiber::yield();
        }
      });
      CHECK(::write(p.b, data.data(), n) == static_cast<ssize_t>(n));
      iovec iov[3] = {{const_cast<char*>(data.data()), 1000},
                      {const_cast<char*>(data.data()) + 1000, n - 3000},
                      {const_cast<char*>(data.data()) + n - 2000, 2000}};
      CHECK(::writev(p.b, iov, 3) == static_cast<ssize_t>(n));
      CHECK(::send(p.b, data.data(), n, 0) == static_cast<ssize_t>(n));
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = 3;
      CHECK(::sendmsg(p.b, &msg, 0) == static_cast<ssize_t>(n));
      reader.join();
      REQUIRE(received.size() == 4 * n);
      for (int i = 0; i < 4; ++i) CHECK(received.compare(i * n, n, data) == 0);
    }
  });
}

TEST_CASE("hooks: fds the application made non-blocking keep returning EAGAIN") {
  spindle::run([] {
    char c;
    SUBCASE("SOCK_NONBLOCK") {
      Pair p(SOCK_STREAM | SOCK_NONBLOCK);
      CHECK(user_nonblock(p.a));
      errno = 0;
      CHECK(::read(p.a, &c, 1) == -1);
      CHECK(errno == EAGAIN);
      CHECK(::recv(p.a, &c, 1, 0) == -1);
      CHECK(errno == EAGAIN);
    }
    SUBCASE("fcntl(F_SETFL, O_NONBLOCK) on a pipe, and back") {
      PipeFds p;
      REQUIRE(::fcntl(p.r, F_SETFL, ::fcntl(p.r, F_GETFL) | O_NONBLOCK) == 0);
      CHECK(user_nonblock(p.r));
      CHECK(::read(p.r, &c, 1) == -1);
      CHECK(errno == EAGAIN);
      // Blocking again: the read parks until the writer fiber writes.
      REQUIRE(::fcntl(p.r, F_SETFL, ::fcntl(p.r, F_GETFL) & ~O_NONBLOCK) == 0);
      CHECK_FALSE(user_nonblock(p.r));
      CHECK(kernel_nonblock(p.r));
      auto writer = spindle::spawn([&] {
        spindle::this_fiber::sleep_for(20ms);
        REQUIRE(::write(p.w, "x", 1) == 1);
      });
      CHECK(::read(p.r, &c, 1) == 1);
      writer.join();
    }
    SUBCASE("ioctl(FIONBIO)") {
      Pair p;
      int on = 1;
      REQUIRE(::ioctl(p.a, FIONBIO, &on) == 0);
      CHECK(user_nonblock(p.a));
      CHECK(::read(p.a, &c, 1) == -1);
      CHECK(errno == EAGAIN);
      on = 0;
      REQUIRE(::ioctl(p.a, FIONBIO, &on) == 0);
      CHECK_FALSE(user_nonblock(p.a));
      auto writer = spindle::spawn([&] {
        spindle::this_fiber::sleep_for(20ms);
        REQUIRE(::write(p.b, "y", 1) == 1);
      });
      CHECK(::read(p.a, &c, 1) == 1);
      CHECK(c == 'y');
      writer.join();
    }
    SUBCASE("MSG_DONTWAIT on a blocking socket") {
      Pair p;
      CHECK(::recv(p.a, &c, 1, MSG_DONTWAIT) == -1);
      CHECK(errno == EAGAIN);
    }
    SUBCASE("a socket made non-blocking behind the hooks' back") {
      Pair p;
      int sv[2];
      REQUIRE(::syscall(SYS_socketpair, AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
      CHECK(::read(sv[0], &c, 1) == -1);
      CHECK(errno == EAGAIN);
      ::close(sv[0]);
      ::close(sv[1]);
    }
  });
}

TEST_CASE("hooks: accept and connect park; errors come back as errno") {
  spindle::run([] {
    const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(listener >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    REQUIRE(::listen(listener, 16) == 0);

    Ticker ticker;
    std::vector<std::string> served;
    auto server = spindle::spawn([&] {
      for (int i = 0; i < 3; ++i) {
        const int conn = ::accept(listener, nullptr, nullptr);
        REQUIRE(conn >= 0);
        CHECK_FALSE(user_nonblock(conn));
        char buf[16];
        const ssize_t n = ::read(conn, buf, sizeof buf);
        REQUIRE(n > 0);
        served.emplace_back(buf, static_cast<std::size_t>(n));
        REQUIRE(::write(conn, buf, static_cast<std::size_t>(n)) == n);
        ::close(conn);
      }
    });
    std::vector<spindle::Task<void>> clients;
    for (int i = 0; i < 3; ++i) {
      clients.push_back(spindle::spawn([&, i] {
        spindle::this_fiber::sleep_for(std::chrono::milliseconds(10 * i));
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        REQUIRE(fd >= 0);
        REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        const std::string msg = "hello" + std::to_string(i);
        REQUIRE(::write(fd, msg.data(), msg.size()) == static_cast<ssize_t>(msg.size()));
        CHECK(read_n(fd, msg.size()) == msg);
        ::close(fd);
      }));
    }
    spindle::gather(clients);
    server.join();
    CHECK(served.size() == 3);
    CHECK(ticker.ticks > 0);

    // Nothing listens here any more: connect reports ECONNREFUSED.
    ::close(listener);
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    errno = 0;
    CHECK(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == -1);
    CHECK(errno == ECONNREFUSED);
    ::close(fd);
  });
}

TEST_CASE("hooks: two fibers blocked reading one socket both get their data") {
  spindle::run([] {
    Pair p;
    std::atomic<int> got{0};
    auto reader = [&] {
      char c;
      REQUIRE(::read(p.a, &c, 1) == 1);
      ++got;
    };
    auto r1 = spindle::spawn(reader);
    auto r2 = spindle::spawn(reader);
    spindle::this_fiber::sleep_for(20ms);
    CHECK(got == 0);
    REQUIRE(::write(p.b, "a", 1) == 1);
    spindle::this_fiber::sleep_for(20ms);
    REQUIRE(::write(p.b, "b", 1) == 1);
    r1.join();
    r2.join();
    CHECK(got == 2);
  });
}

// ---------------------------------------------------------------- poll

TEST_CASE("hooks: poll and select over mixed fds (socket, regular file, pipe) with timeouts") {
  spindle::run([] {
    Pair sock;
    PipeFds pipe;
    const int file = temp_file();
    Ticker ticker;

    SUBCASE("a regular file is always ready: poll returns at once") {
      pollfd fds[3] = {{sock.a, POLLIN, 0}, {file, POLLIN, 0}, {pipe.r, POLLIN, 0}};
      const auto start = Clock::now();
      CHECK(::poll(fds, 3, 5000) == 1);
      CHECK(seconds_since(start) < 1.0);
      CHECK(fds[0].revents == 0);
      CHECK((fds[1].revents & POLLIN) != 0);
      CHECK(fds[2].revents == 0);
    }
    SUBCASE("nothing ready: poll parks for its timeout, then returns 0") {
      // POLLPRI on a regular file can never be reported: epoll refuses the
      // file and the poll must still time out properly.
      pollfd fds[3] = {{sock.a, POLLIN, 0}, {file, POLLPRI, 0}, {pipe.r, POLLIN, 0}};
      const int before = ticker.ticks;
      const auto start = Clock::now();
      CHECK(::poll(fds, 3, 100) == 0);
      const double took = seconds_since(start);
      CHECK(took >= 0.095);
      CHECK(took < 2.0);
      CHECK(ticker.ticks - before >= 2);
    }
    SUBCASE("the pipe becomes readable while poll waits") {
      auto writer = spindle::spawn([&] {
        spindle::this_fiber::sleep_for(30ms);
        REQUIRE(::write(pipe.w, "p", 1) == 1);
      });
      pollfd fds[3] = {{sock.a, POLLIN, 0}, {file, POLLPRI, 0}, {pipe.r, POLLIN, 0}};
      const auto start = Clock::now();
      CHECK(::poll(fds, 3, 5000) == 1);
      CHECK(seconds_since(start) < 2.0);
      CHECK(fds[0].revents == 0);
      CHECK(fds[2].revents == POLLIN);
      writer.join();
    }
    SUBCASE("one fd, one direction: poll waits on the fd's own slot") {
      auto writer = spindle::spawn([&] {
        spindle::this_fiber::sleep_for(30ms);
        REQUIRE(::write(sock.b, "s", 1) == 1);
      });
      pollfd fd{sock.a, POLLIN, 0};
      CHECK(::poll(&fd, 1, -1) == 1);
      CHECK(fd.revents == POLLIN);
      writer.join();
      fd.revents = 0;
      char c;
      REQUIRE(::read(sock.a, &c, 1) == 1);
      const auto start = Clock::now();
      CHECK(::poll(&fd, 1, 50) == 0);
      CHECK(seconds_since(start) >= 0.045);
    }
    SUBCASE("ppoll with a timespec, and poll of no fds as a sleep") {
      pollfd fd{pipe.r, POLLIN, 0};
      const timespec ts{0, 50'000'000};
      auto start = Clock::now();
      CHECK(::ppoll(&fd, 1, &ts, nullptr) == 0);
      CHECK(seconds_since(start) >= 0.045);
      start = Clock::now();
      const int before = ticker.ticks;
      CHECK(::poll(nullptr, 0, 50) == 0);
      CHECK(seconds_since(start) >= 0.045);
      CHECK(ticker.ticks > before);
    }
    SUBCASE("select: the pipe's read end and the socket's write side") {
      fd_set r, w;
      FD_ZERO(&r);
      FD_ZERO(&w);
      FD_SET(pipe.r, &r);
      FD_SET(sock.a, &r);
      FD_SET(file, &r);
      timeval tv{5, 0};
      // The file makes it ready at once.
      CHECK(::select(FD_SETSIZE, &r, nullptr, nullptr, &tv) == 1);
      CHECK(FD_ISSET(file, &r));
      // Without the file: times out after 50 ms, and tv says no time is left.
      FD_ZERO(&r);
      FD_SET(pipe.r, &r);
      FD_SET(sock.a, &r);
      tv = {0, 50'000};
      const auto start = Clock::now();
      CHECK(::select(FD_SETSIZE, &r, nullptr, nullptr, &tv) == 0);
      CHECK(seconds_since(start) >= 0.045);
      CHECK(tv.tv_sec == 0);
      CHECK(tv.tv_usec == 0);
      // A writer fiber makes the pipe readable.
      auto writer = spindle::spawn([&] {
        spindle::this_fiber::sleep_for(20ms);
        REQUIRE(::write(pipe.w, "q", 1) == 1);
      });
      FD_ZERO(&r);
      FD_SET(pipe.r, &r);
      FD_SET(sock.a, &r);
      FD_SET(sock.a, &w);
      // sock.a is writable at once: ask only for reads first.
      tv = {5, 0};
      CHECK(::select(FD_SETSIZE, &r, nullptr, nullptr, &tv) == 1);
      CHECK(FD_ISSET(pipe.r, &r));
      CHECK_FALSE(FD_ISSET(sock.a, &r));
      CHECK(tv.tv_sec <= 5);
      CHECK(::select(FD_SETSIZE, nullptr, &w, nullptr, nullptr) == 1);
      CHECK(FD_ISSET(sock.a, &w));
      writer.join();
    }
    ::close(file);
  });
}

// ------------------------------------------------------- close, dup2

TEST_CASE("hooks: close of an fd another fiber waits on wakes it with an error, not a hang") {
  spindle::run([] {
    SUBCASE("a blocked read gets EBADF") {
      Pair p;
      int err = 0;
      auto reader = spindle::spawn([&] {
        char c;
        CHECK(::read(p.a, &c, 1) == -1);
        err = errno;
      });
      spindle::this_fiber::sleep_for(20ms);
      ::close(p.a);
      p.a = -1;
      reader.join();
      CHECK(err == EBADF);
    }
    SUBCASE("two readers of one fd (the second on its own epoll) both get EBADF") {
      Pair p;
      int errs[2] = {0, 0};
      auto r1 = spindle::spawn([&] {
        char c;
        CHECK(::read(p.a, &c, 1) == -1);
        errs[0] = errno;
      });
      auto r2 = spindle::spawn([&] {
        char c;
        CHECK(::read(p.a, &c, 1) == -1);
        errs[1] = errno;
      });
      spindle::this_fiber::sleep_for(20ms);
      ::close(p.a);
      p.a = -1;
      r1.join();
      r2.join();
      CHECK(errs[0] == EBADF);
      CHECK(errs[1] == EBADF);
    }
    SUBCASE("a poll over several fds reports POLLNVAL for the closed one") {
      Pair p;
      PipeFds pipe;
      pollfd fds[2] = {{p.a, POLLIN, 0}, {pipe.r, POLLIN, 0}};
      auto poller = spindle::spawn([&] { CHECK(::poll(fds, 2, 5000) == 1); });
      spindle::this_fiber::sleep_for(20ms);
      const auto start = Clock::now();
      ::close(p.a);
      p.a = -1;
      poller.join();
      CHECK(seconds_since(start) < 1.0);
      CHECK(fds[0].revents == POLLNVAL);
    }
  });
}

TEST_CASE("hooks: dup2 over a registered fd wakes its waiter and takes the new file's mode") {
  spindle::run([] {
    Pair first;
    Pair second(SOCK_STREAM | SOCK_NONBLOCK);
    int err = 0;
    auto reader = spindle::spawn([&] {
      char c;
      CHECK(::read(first.a, &c, 1) == -1);
      err = errno;
    });
    spindle::this_fiber::sleep_for(20ms);
    REQUIRE(::dup2(second.a, first.a) == first.a);
    reader.join();
    CHECK(err == EBADF);
    // first.a is now second.a's socket, non-blocking as the application set it.
    CHECK(user_nonblock(first.a));
    char c;
    CHECK(::read(first.a, &c, 1) == -1);
    CHECK(errno == EAGAIN);
    REQUIRE(::write(second.b, "d", 1) == 1);
    CHECK(::read(first.a, &c, 1) == 1);
    CHECK(c == 'd');
    // And dup of a blocking socket is blocking: the read parks.
    Pair third;
    const int copy = ::dup(third.a);
    REQUIRE(copy >= 0);
    CHECK_FALSE(user_nonblock(copy));
    auto writer = spindle::spawn([&] {
      spindle::this_fiber::sleep_for(20ms);
      REQUIRE(::write(third.b, "e", 1) == 1);
    });
    CHECK(::read(copy, &c, 1) == 1);
    CHECK(c == 'e');
    writer.join();
    ::close(copy);
    // dup2 of an fd onto itself changes nothing.
    CHECK(::dup2(third.a, third.a) == third.a);
  });
}

// -------------------------------------------------------- outside fibers

TEST_CASE("hooks: outside fibers calls go straight to the kernel, and still block") {
  SUBCASE("before spindle::run: a blocking read blocks until a thread writes") {
    Pair p;
    CHECK_FALSE(kernel_nonblock(p.a));
    std::thread writer([&] {
      std::this_thread::sleep_for(50ms);
      REQUIRE(::write(p.b, "t", 1) == 1);
    });
    const auto start = Clock::now();
    char c;
    CHECK(::read(p.a, &c, 1) == 1);
    CHECK(seconds_since(start) >= 0.04);
    writer.join();
  }
  SUBCASE("a plain thread's read on a socket the hooks made non-blocking still blocks") {
    spindle::run([] {
      Pair p;
      REQUIRE(kernel_nonblock(p.a));
      std::atomic<int> result{-2};
      std::atomic<int> err{0};
      std::thread reader([&] {
        CHECK_FALSE(user_nonblock(p.a));
        char c;
        result = static_cast<int>(::read(p.a, &c, 1));
        err = errno;
      });
      spindle::this_fiber::sleep_for(60ms);
      CHECK(result == -2);  // still blocked, not EAGAIN
      REQUIRE(::write(p.b, "u", 1) == 1);
      while (result == -2) spindle::this_fiber::sleep_for(1ms);
      reader.join();
      CHECK(result == 1);
    });
  }
  SUBCASE("after run: an fd forced non-blocking on a fiber blocks for the plain caller") {
    Pair p;
    spindle::run([&] {
      char c;
      auto writer = spindle::spawn([&] { REQUIRE(::write(p.b, "v", 1) == 1); });
      CHECK(::read(p.a, &c, 1) == 1);  // forced non-blocking here
      writer.join();
    });
    REQUIRE(kernel_nonblock(p.a));
    CHECK_FALSE(user_nonblock(p.a));
    std::thread writer([&] {
      std::this_thread::sleep_for(50ms);
      REQUIRE(::write(p.b, "w", 1) == 1);
    });
    const auto start = Clock::now();
    char c;
    CHECK(::read(p.a, &c, 1) == 1);
    CHECK(c == 'w');
    CHECK(seconds_since(start) >= 0.04);
    writer.join();
    // A big write from outside a fiber writes everything too.
    const std::string data = pattern(1 << 20);
    std::string got;
    std::thread drain([&] { got = read_n(p.a, data.size()); });
    CHECK(::write(p.b, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
    drain.join();
    CHECK(got == data);
  }
  SUBCASE("sleep outside fibers takes real time") {
    const auto start = Clock::now();
    CHECK(::usleep(30'000) == 0);
    CHECK(seconds_since(start) >= 0.029);
  }
}

// ----------------------------------------------------------- timeouts

TEST_CASE("hooks: SO_RCVTIMEO and SO_SNDTIMEO bound blocking calls") {
  SUBCASE("on a fiber: read gives EAGAIN after the timeout, other fibers run meanwhile") {
    spindle::run([] {
      Pair p;
      const timeval tv{0, 80'000};
      REQUIRE(::setsockopt(p.a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
      Ticker ticker;
      const auto start = Clock::now();
      char c;
      errno = 0;
      CHECK(::read(p.a, &c, 1) == -1);
      CHECK(errno == EAGAIN);
      const double took = seconds_since(start);
      CHECK(took >= 0.075);
      CHECK(took < 2.0);
      CHECK(ticker.ticks >= 2);
    });
  }
  SUBCASE("outside fibers, on an fd the hooks made non-blocking") {
    Pair p;
    spindle::run([&] {
      char c;
      REQUIRE(::write(p.b, "x", 1) == 1);
      REQUIRE(::read(p.a, &c, 1) == 1);
    });
    REQUIRE(kernel_nonblock(p.a));
    const timeval tv{0, 80'000};
    REQUIRE(::setsockopt(p.a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    const auto start = Clock::now();
    char c;
    CHECK(::read(p.a, &c, 1) == -1);
    CHECK(errno == EAGAIN);
    CHECK(seconds_since(start) >= 0.075);
  }
  SUBCASE("a write into a full socket stops at SO_SNDTIMEO with what it wrote") {
    spindle::run([] {
      Pair p;
      const timeval tv{0, 50'000};
      REQUIRE(::setsockopt(p.b, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
      const std::string data = pattern(8 << 20);
      const auto start = Clock::now();
      const ssize_t n = ::write(p.b, data.data(), data.size());
      CHECK(n > 0);
      CHECK(n < static_cast<ssize_t>(data.size()));
      CHECK(seconds_since(start) >= 0.045);
      // Full and nothing more fits: EAGAIN after the timeout.
      CHECK(::write(p.b, data.data(), data.size()) == -1);
      CHECK(errno == EAGAIN);
    });
  }
  SUBCASE("a Timeout scope around a hooked call gives ETIMEDOUT") {
    spindle::run([] {
      Pair p;
      spindle::Timeout scope(40ms);
      char c;
      CHECK(::read(p.a, &c, 1) == -1);
      CHECK(errno == ETIMEDOUT);
      CHECK(scope.expired());
      // Every later blocking hook in the expired scope fails the same way.
      pollfd fd{p.a, POLLIN, 0};
      CHECK(::poll(&fd, 1, 1000) == -1);
      CHECK(errno == ETIMEDOUT);
    });
  }
}

// ------------------------------------------------------------ sleeping

TEST_CASE("hooks: sleeps on fibers overlap") {
  spindle::run([] {
    const auto start = Clock::now();
    std::vector<spindle::Task<void>> tasks;
    tasks.push_back(spindle::spawn([] {
      const timespec ts{0, 100'000'000};
      CHECK(::nanosleep(&ts, nullptr) == 0);
    }));
    tasks.push_back(spindle::spawn([] { CHECK(::usleep(100'000) == 0); }));
    tasks.push_back(spindle::spawn([] { std::this_thread::sleep_for(100ms); }));
    tasks.push_back(spindle::spawn([] {
      const timespec ts{0, 100'000'000};
      CHECK(::clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, nullptr) == 0);
    }));
    tasks.push_back(spindle::spawn([] {
      timespec at;
      ::clock_gettime(CLOCK_MONOTONIC, &at);
      at.tv_nsec += 100'000'000;
      if (at.tv_nsec >= 1'000'000'000) {
        at.tv_nsec -= 1'000'000'000;
        ++at.tv_sec;
      }
      CHECK(::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, nullptr) == 0);
    }));
    spindle::gather(tasks);
    const double took = seconds_since(start);
    CHECK(took >= 0.095);
    CHECK(took < 0.45);  // five 100 ms sleeps, together (one after another: 0.5 s)
  });
}

TEST_CASE("hooks: a cancelled fiber's hooked call fails with ECANCELED, then Cancelled is delivered") {
  spindle::run([] {
    int sleep_err = 0, read_err = 0;
    timespec rem{0, 0};
    bool reached_after = false;
    Pair p;
    auto sleeper = spindle::spawn([&] {
      const timespec ts{10, 0};
      CHECK(::nanosleep(&ts, &rem) == -1);
      sleep_err = errno;
      spindle::this_fiber::yield();  // the cancellation is delivered here
      reached_after = true;
    });
    auto reader = spindle::spawn([&] {
      char c;
      CHECK(::read(p.a, &c, 1) == -1);
      read_err = errno;
      // A C library would now return to its caller; the next hooked call
      // fails at once too.
      CHECK(::usleep(1000) == -1);
      CHECK(errno == ECANCELED);
      spindle::this_fiber::yield();
    });
    spindle::this_fiber::sleep_for(20ms);
    sleeper.cancel();
    reader.cancel();
    sleeper.wait();
    reader.wait();
    CHECK(sleeper.cancelled());
    CHECK(reader.cancelled());
    CHECK_FALSE(reached_after);
    CHECK(sleep_err == ECANCELED);
    CHECK(read_err == ECANCELED);
    CHECK(rem.tv_sec >= 9);
  });
}

// -------------------------------------------------------------- names

TEST_CASE("hooks: getaddrinfo and gethostbyname on a fiber") {
  auto first_ipv4 = [](const addrinfo* ai) -> std::string {
    for (; ai; ai = ai->ai_next) {
      if (ai->ai_family != AF_INET) continue;
      char text[INET_ADDRSTRLEN];
      const auto* sin = reinterpret_cast<const sockaddr_in*>(ai->ai_addr);
      ::inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
      return std::string(text) + ":" + std::to_string(ntohs(sin->sin_port));
    }
    return "none";
  };
  spindle::run([&] {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    SUBCASE("a name from /etc/hosts, with a port") {
      REQUIRE(::getaddrinfo("localhost", "8080", &hints, &res) == 0);
      CHECK(first_ipv4(res) == "127.0.0.1:8080");
      CHECK(res->ai_socktype == SOCK_STREAM);
      CHECK(res->ai_protocol == IPPROTO_TCP);
      ::freeaddrinfo(res);
    }
    SUBCASE("numeric, with the canonical name and every socket type") {
      hints.ai_socktype = 0;
      hints.ai_flags = AI_CANONNAME | AI_NUMERICHOST;
      REQUIRE(::getaddrinfo("127.0.0.1", "53", &hints, &res) == 0);
      REQUIRE(res->ai_canonname != nullptr);
      CHECK(std::string(res->ai_canonname) == "127.0.0.1");
      int n = 0;
      for (addrinfo* ai = res; ai; ai = ai->ai_next) ++n;
      CHECK(n == 3);  // stream, datagram, raw
      ::freeaddrinfo(res);
    }
    SUBCASE("no node: wildcard for AI_PASSIVE, else loopback") {
      hints.ai_family = AF_INET;
      hints.ai_flags = AI_PASSIVE;
      REQUIRE(::getaddrinfo(nullptr, "9000", &hints, &res) == 0);
      CHECK(first_ipv4(res) == "0.0.0.0:9000");
      ::freeaddrinfo(res);
      hints.ai_flags = 0;
      REQUIRE(::getaddrinfo(nullptr, "9000", &hints, &res) == 0);
      CHECK(first_ipv4(res) == "127.0.0.1:9000");
      ::freeaddrinfo(res);
    }
    SUBCASE("errors") {
      hints.ai_flags = AI_NUMERICHOST;
      CHECK(::getaddrinfo("localhost", "80", &hints, &res) == EAI_NONAME);
      hints.ai_flags = AI_NUMERICSERV;
      CHECK(::getaddrinfo("localhost", "http", &hints, &res) == EAI_NONAME);
      hints.ai_flags = 0;
      CHECK(::getaddrinfo(nullptr, nullptr, &hints, &res) == EAI_NONAME);
      hints.ai_family = AF_APPLETALK;
      CHECK(::getaddrinfo("localhost", "80", &hints, &res) == EAI_FAMILY);
    }
    SUBCASE("gethostbyname") {
      hostent* h = ::gethostbyname("localhost");
      REQUIRE(h != nullptr);
      CHECK(h->h_addrtype == AF_INET);
      REQUIRE(h->h_addr_list[0] != nullptr);
      CHECK(std::memcmp(h->h_addr_list[0], "\x7f\x00\x00\x01", 4) == 0);
    }
  });
  SUBCASE("outside fibers: the same answers") {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    REQUIRE(::getaddrinfo("localhost", "8080", &hints, &res) == 0);
    CHECK(first_ipv4(res) == "127.0.0.1:8080");
    ::freeaddrinfo(res);
    hostent* h = ::gethostbyname("localhost");
    REQUIRE(h != nullptr);
    CHECK(std::memcmp(h->h_addr_list[0], "\x7f\x00\x00\x01", 4) == 0);
  }
}
