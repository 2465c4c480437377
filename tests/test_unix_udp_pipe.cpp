// spindle::net Unix stream sockets, UDP sockets and pipes: round trips over
// local endpoints, the errors they report, and what timeouts and
// cancellation leave behind.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;
using spindle::net::SocketAddress;

namespace {

template <class F>
std::system_error catch_system_error(F&& f) {
  try {
    f();
  } catch (const spindle::TimeoutError&) {
    FAIL("TimeoutError instead of an OS error");
  } catch (const std::system_error& e) {
    return e;
  }
  FAIL("no std::system_error was thrown");
  return std::system_error(std::error_code{});
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A private directory for socket files, removed with its contents.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/spindle-net-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    for (const auto& f : created_) ::unlink(f.c_str());
    ::rmdir(path_.c_str());
  }
  std::string file(const std::string& name) {
    created_.push_back(path_ + "/" + name);
    return created_.back();
  }

 private:
  std::string path_;
  std::vector<std::string> created_;
};

std::string elapsed_ms(spindle::TimePoint since) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(spindle::now() - since).count());
}

}  // namespace

// ================================================================= pipes

TEST_CASE("pipe: bytes written come out of the reader and closing the writer reads as 0") {
  spindle::run([] {
    auto [reader, writer] = spindle::net::Pipe::create();
    CHECK((::fcntl(reader.native_handle(), F_GETFL) & O_NONBLOCK) != 0);
    CHECK((::fcntl(writer.native_handle(), F_GETFD) & FD_CLOEXEC) != 0);
    auto consumer = spindle::spawn([&reader] {
      std::string all;
      char buf[4096];
      for (;;) {
        std::size_t n = reader.read_some(std::span(buf));
        if (n == 0) return all;
        all.append(buf, n);
      }
    });
    // More than the pipe's buffer (64 KiB), so the writer parks while full.
    std::string big(300 * 1024, 'x');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
    writer.write_all(big);
    writer.close();
    CHECK(consumer.join() == big);
    char buf[8];
    CHECK(reader.read_some(std::span(buf)) == 0);  // EOF stays a value
    CHECK(reader.read_some(std::span(buf, 0)) == 0);
  });
}

TEST_CASE("pipe: read_exact fills the buffer or throws UnexpectedEof") {
  spindle::run([] {
    auto p = spindle::net::Pipe::create();
    p.writer.write_all("0123456789");
    std::array<char, 4> four{};
    p.reader.read_exact(std::span(four));
    CHECK(std::string(four.data(), 4) == "0123");
    p.writer.close();
    std::array<char, 10> ten{};
    try {
      p.reader.read_exact(std::span(ten));
      FAIL("read_exact past EOF returned");
    } catch (const spindle::net::UnexpectedEof& e) {
      CHECK(e.bytes_read() == 6);
      CHECK(e.bytes_expected() == 10);
      CHECK(contains(e.what(), "EOF after 6 of 10"));
    }
  });
}

TEST_CASE("pipe: writing with no reader is EPIPE naming write and the fd, and raises no SIGPIPE") {
  // SIGPIPE's default action would kill the test; it stays the default here.
  struct sigaction old_action {};
  REQUIRE(::sigaction(SIGPIPE, nullptr, &old_action) == 0);
  REQUIRE((old_action.sa_handler == SIG_DFL));
  sigset_t before;
  REQUIRE(::pthread_sigmask(SIG_SETMASK, nullptr, &before) == 0);
  spindle::run([] {
    auto p = spindle::net::Pipe::create();
    int fd = p.writer.native_handle();
    p.reader.close();
    auto e = catch_system_error([&] { p.writer.write_all("doomed"); });
    CHECK(e.code() == std::errc::broken_pipe);
    CHECK(contains(e.what(), fmt::format("write(fd={})", fd)));
    // A second failure behaves the same (the first signal was consumed).
    CHECK(catch_system_error([&] { p.writer.write_all("again"); }).code() == std::errc::broken_pipe);
  });
  sigset_t after, pending;
  REQUIRE(::pthread_sigmask(SIG_SETMASK, nullptr, &after) == 0);
  CHECK(sigismember(&after, SIGPIPE) == sigismember(&before, SIGPIPE));
  REQUIRE(::sigpending(&pending) == 0);
  CHECK_FALSE(sigismember(&pending, SIGPIPE));
}

TEST_CASE("pipe: from_fd takes ownership and makes the fd non-blocking") {
  spindle::run([] {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);  // blocking ends
    auto reader = spindle::net::PipeReader::from_fd(fds[0]);
    auto writer = spindle::net::PipeWriter::from_fd(fds[1]);
    CHECK((::fcntl(fds[0], F_GETFL) & O_NONBLOCK) != 0);
    CHECK((::fcntl(fds[1], F_GETFL) & O_NONBLOCK) != 0);
    writer.write_all("hi");
    char buf[8];
    CHECK(reader.read_some(std::span(buf)) == 2);
    int raw = writer.release();
    CHECK(raw == fds[1]);
    CHECK_FALSE(writer.is_open());
    CHECK(::fcntl(raw, F_GETFD) >= 0);  // still open: released, not closed
    ::close(raw);
    CHECK_THROWS_AS(spindle::net::PipeReader::from_fd(-1), std::system_error);
  });
}

TEST_CASE("pipe: a timed-out read leaves the reader usable and a cancelled read too") {
  spindle::run([] {
    auto p = spindle::net::Pipe::create();
    char buf[16];
    auto start = spindle::now();
    {
      spindle::Timeout limit(30ms);
      CHECK_THROWS_AS(p.reader.read_some(std::span(buf)), spindle::TimeoutError);
    }
    CHECK(spindle::now() - start >= 30ms);
    auto blocked = spindle::spawn([&] { return p.reader.read_some(std::span(buf)); });
    spindle::this_fiber::sleep_for(10ms);
    blocked.cancel();
    CHECK_THROWS_AS(blocked.join(), spindle::Cancelled);
    p.writer.write_all("after");
    CHECK(p.reader.read_some(std::span(buf)) == 5);
    CHECK(std::string(buf, 5) == "after");
  });
}

TEST_CASE("pipe: closing the reader wakes a fiber parked on it with EBADF") {
  spindle::run([] {
    auto p = spindle::net::Pipe::create();
    auto blocked = spindle::spawn([&] {
      char buf[4];
      return p.reader.read_some(std::span(buf));
    });
    spindle::this_fiber::sleep_for(10ms);
    p.reader.close();
    auto e = catch_system_error([&] { blocked.join(); });
    CHECK(e.code() == std::errc::bad_file_descriptor);
  });
}

// ======================================================== Unix streams

TEST_CASE("unix: a stream round trip through a listener on a socket file") {
  TempDir dir;
  auto path = dir.file("echo.sock");
  spindle::run([&] {
    auto listener = spindle::net::UnixListener::bind(SocketAddress::unix_path(path));
    CHECK(listener.local_address() == SocketAddress::unix_path(path));
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    auto server = spindle::spawn([&] {
      auto [conn, peer] = listener.accept();
      CHECK(peer.family() == AF_UNIX);
      CHECK(peer.path().empty());  // the client is unnamed
      for (;;) {
        std::string line = conn.read_line();
        if (line.empty()) break;
        conn.write_all("echo: " + line);
      }
    });
    auto client = spindle::net::UnixStream::connect(SocketAddress::unix_path(path));
    CHECK(client.peer_address().path() == path);
    client.write_all("one\ntwo\n");
    CHECK(client.read_line() == "echo: one\n");
    CHECK(client.read_line() == "echo: two\n");
    client.shutdown_write();
    server.join();
    char buf[4];
    CHECK(client.read_some(std::span(buf)) == 0);
    listener.close();
    CHECK(::access(path.c_str(), F_OK) != 0);  // close removed the socket file
  });
}

TEST_CASE("unix: bind replaces a stale socket file but not a live one or a regular file") {
  TempDir dir;
  auto path = dir.file("stale.sock");
  auto file = dir.file("regular");
  spindle::run([&] {
    auto addr = SocketAddress::unix_path(path);
    {
      // A crashed server: its socket file stays, nobody listens.
      int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
      REQUIRE(::bind(fd, addr.native(), addr.native_size()) == 0);
      ::close(fd);
    }
    auto live = spindle::net::UnixListener::bind(addr);  // stale file replaced
    auto e = catch_system_error([&] { spindle::net::UnixListener::bind(addr); });
    CHECK(e.code() == std::errc::address_in_use);
    CHECK(contains(e.what(), "bind("));
    CHECK(contains(e.what(), path));
    // The live listener still works: nobody removed its path. It first
    // sees the probe bind made to tell it from a stale file: a connection
    // closed without data.
    auto client = spindle::net::UnixStream::connect(addr);
    client.write_all("x");
    char c = 0;
    auto probe = live.accept();
    CHECK(probe.stream.read_some(std::span(&c, 1)) == 0);
    auto accepted = live.accept();
    accepted.stream.read_exact(std::span(&c, 1));
    CHECK(c == 'x');

    int f = ::open(file.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    REQUIRE(f >= 0);
    ::close(f);
    CHECK(catch_system_error([&] { spindle::net::UnixListener::bind(SocketAddress::unix_path(file)); }).code() ==
          std::errc::address_in_use);
    CHECK(::access(file.c_str(), F_OK) == 0);
  });
}

TEST_CASE("unix: close leaves a successor's socket file alone") {
  TempDir dir;
  auto path = dir.file("moved.sock");
  spindle::run([&] {
    auto addr = SocketAddress::unix_path(path);
    auto first = spindle::net::UnixListener::bind(addr);
    REQUIRE(::unlink(path.c_str()) == 0);  // an operator removed it...
    auto second = spindle::net::UnixListener::bind(addr);  // ...and a new server took the path
    first.close();
    CHECK(::access(path.c_str(), F_OK) == 0);
    auto client = spindle::net::UnixStream::connect(addr);
    CHECK(second.accept().stream.is_open());
  });
}

TEST_CASE("unix: abstract names, socketpair, and connect errors naming the path") {
  TempDir dir;
  auto missing = dir.file("missing.sock");
  spindle::run([&] {
    using namespace std::string_view_literals;
    std::string name = fmt::format("spindle-test-{}", ::getpid());
    auto addr = SocketAddress::unix_path(std::string(1, '\0') + name);
    auto listener = spindle::net::UnixListener::bind(addr);
    auto client = spindle::net::UnixStream::connect(addr);
    auto [conn, peer] = listener.accept();
    conn.write_all("abstract");
    char buf[16];
    client.read_exact(std::span(buf, 8));
    CHECK(std::string(buf, 8) == "abstract");

    auto [a, b] = spindle::net::UnixStream::pair();
    a.write_all("pair");
    CHECK(b.read_some(std::span(buf)) == 4);

    auto e = catch_system_error([&] { spindle::net::UnixStream::connect(SocketAddress::unix_path(missing)); });
    CHECK(e.code() == std::errc::no_such_file_or_directory);
    CHECK(contains(e.what(), "connect("));
    CHECK(contains(e.what(), missing));
  });
}

TEST_CASE("unix: connect to a full backlog waits and gets in once the listener accepts") {
  TempDir dir;
  auto path = dir.file("full.sock");
  spindle::run([&] {
    auto addr = SocketAddress::unix_path(path);
    auto listener = spindle::net::UnixListener::bind(addr, {.backlog = 1});
    // Fill the backlog: Linux then answers EAGAIN to non-blocking connects.
    std::vector<spindle::net::UnixStream> queued;
    for (int i = 0; i < 8; ++i) {
      spindle::Timeout limit(50ms);
      try {
        queued.push_back(spindle::net::UnixStream::connect(addr));
      } catch (const spindle::TimeoutError&) {
        break;
      }
    }
    REQUIRE(queued.size() < 8);  // the backlog did fill
    auto late = spindle::spawn([&] { return spindle::net::UnixStream::connect(addr); });
    spindle::this_fiber::sleep_for(30ms);
    CHECK_FALSE(late.done());
    for (std::size_t i = 0; i <= queued.size(); ++i) listener.accept();
    auto stream = late.join();
    CHECK(stream.is_open());
  });
}

// ================================================================= UDP

TEST_CASE("udp: send_to and recv_from carry datagrams and the sender's address") {
  spindle::run([] {
    auto server = spindle::net::UdpSocket::bind(SocketAddress::parse("127.0.0.1", 0));
    auto client = spindle::net::UdpSocket::bind(SocketAddress::parse("127.0.0.1", 0));
    auto server_addr = server.local_address();
    CHECK(server_addr.port() != 0);
    auto echo = spindle::spawn([&] {
      std::array<char, 64> buf{};
      for (int i = 0; i < 3; ++i) {
        auto [n, from, truncated] = server.recv_from(std::span(buf));
        CHECK_FALSE(truncated);
        server.send_to(std::string_view(buf.data(), n), from);
      }
    });
    std::array<char, 64> buf{};
    for (std::string msg : {"alpha", "", "gamma"}) {
      CHECK(client.send_to(msg, server_addr) == msg.size());
      auto got = client.recv_from(std::span(buf));
      CHECK(std::string(buf.data(), got.size) == msg);
      CHECK(got.peer == server_addr);
    }
    echo.join();
  });
}

TEST_CASE("udp: a datagram longer than the buffer is cut and reported as truncated") {
  spindle::run([] {
    auto a = spindle::net::UdpSocket::bind(SocketAddress::parse("127.0.0.1", 0));
    auto b = spindle::net::UdpSocket::bind(SocketAddress::parse("127.0.0.1", 0));
    a.send_to("0123456789", b.local_address());
    a.send_to("next", b.local_address());
    std::array<char, 4> small{};
    auto got = b.recv_from(std::span(small));
    CHECK(got.size == 4);
    CHECK(got.truncated);
    CHECK(std::string(small.data(), 4) == "0123");
    got = b.recv_from(std::span(small));  // the rest of the first is gone
    CHECK(std::string(small.data(), got.size) == "next");
    CHECK_FALSE(got.truncated);
  });
}

TEST_CASE("udp: connected sockets use send and recv, and a closed port is ECONNREFUSED") {
  spindle::run([] {
    auto a = spindle::net::UdpSocket::bind(SocketAddress::parse("127.0.0.1", 0));
    auto b = spindle::net::UdpSocket::bind(SocketAddress::parse("127.0.0.1", 0));
    a.connect(b.local_address());
    b.connect(a.local_address());
    CHECK(a.peer_address() == b.local_address());
    a.send("ping");
    char buf[16];
    CHECK(b.recv(std::span(buf)) == 4);
    b.send("pong");
    CHECK(a.recv(std::span(buf)) == 4);
    CHECK(std::string(buf, 4) == "pong");

    // The port of a socket that is gone: the ICMP error comes back to the
    // connected socket as ECONNREFUSED on a later call.
    auto gone_addr = b.local_address();
    b.close();
    a.send("anyone?");
    auto e = catch_system_error([&] {
      spindle::Timeout limit(2s);
      a.recv(std::span(buf));
    });
    CHECK(e.code() == std::errc::connection_refused);
    CHECK(contains(e.what(), gone_addr.to_string()));
  });
}

TEST_CASE("udp: a timed-out recv loses nothing and the socket stays usable") {
  spindle::run([] {
    auto a = spindle::net::UdpSocket::bind(SocketAddress::parse("127.0.0.1", 0));
    auto b = spindle::net::UdpSocket::bind(SocketAddress::parse("127.0.0.1", 0));
    char buf[16];
    auto start = spindle::now();
    {
      spindle::Timeout limit(30ms);
      CHECK_THROWS_AS(b.recv_from(std::span(buf)), spindle::TimeoutError);
    }
    INFO("elapsed ms: " << elapsed_ms(start));
    CHECK(spindle::now() - start >= 30ms);
    a.send_to("late", b.local_address());
    auto got = b.recv_from(std::span(buf));
    CHECK(std::string(buf, got.size) == "late");
  });
}

TEST_CASE("udp: IPv6 loopback datagrams, when ::1 is available") {
  spindle::run([] {
    spindle::net::UdpSocket a;
    try {
      a = spindle::net::UdpSocket::bind(SocketAddress::parse("::1", 0));
    } catch (const std::system_error& e) {
      MESSAGE("skipped: cannot bind ::1: " << e.what());
      return;
    }
    auto b = spindle::net::UdpSocket::bind(SocketAddress::parse("::1", 0));
    a.send_to("six", b.local_address());
    char buf[8];
    auto got = b.recv_from(std::span(buf));
    CHECK(std::string(buf, got.size) == "six");
    CHECK(got.peer == a.local_address());
    CHECK(got.peer.to_string().rfind("[::1]:", 0) == 0);
  });
}
