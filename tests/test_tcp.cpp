// spindle::net TCP: TcpListener and TcpStream over loopback. Round trips on
// both families (10,000 connections at once are test_scale's), the
// listen options (reuse_port, reuse_address, v6_only), the read helpers'
// edge cases, the errors a peer or a taken port can cause, and what
// timeouts, cancellation and descriptor exhaustion leave behind.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

#include <spindle/spindle.hpp>

#if defined(SPINDLE_HAVE_VALGRIND)
#include <valgrind/valgrind.h>
#endif

using namespace std::chrono_literals;
using spindle::net::SocketAddress;
using spindle::net::TcpListener;
using spindle::net::TcpStream;

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

TcpListener loopback_listener(const spindle::net::ListenOptions& options = {}) {
  return TcpListener::bind(SocketAddress::parse("127.0.0.1", 0), options);
}

// Echoes every byte back until the peer's EOF.
void echo(TcpStream& conn) {
  std::array<char, 4096> buf{};
  for (;;) {
    std::size_t n = conn.read_some(std::span(buf));
    if (n == 0) return;
    conn.write_all(std::string_view(buf.data(), n));
  }
}

// Serves `count` connections, each echoed on its own fiber.
spindle::Task<void> serve_echo(TcpListener& listener, int count) {
  return spindle::spawn([&listener, count] {
    std::vector<spindle::Task<void>> conns;
    for (int i = 0; i < count; ++i) {
      auto accepted = listener.accept();
      conns.push_back(spindle::spawn([conn = std::move(accepted.stream)]() mutable { echo(conn); }));
    }
    for (auto& t : conns) t.join();
  });
}

int count_open_fds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  REQUIRE(d != nullptr);
  while (auto* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n - 1;  // the directory's own fd
}

// Sets the soft RLIMIT_NOFILE for the scope of the object.
class FdLimit {
 public:
  explicit FdLimit(rlim_t soft) {
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved_) == 0);
    rlimit rl = saved_;
    rl.rlim_cur = std::min(soft, saved_.rlim_max);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &rl) == 0);
  }
  ~FdLimit() { ::setrlimit(RLIMIT_NOFILE, &saved_); }
  static rlim_t hard() {
    rlimit rl{};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    return rl.rlim_max;
  }

 private:
  rlimit saved_{};
};

// Redirects stderr into a temporary file for the scope; text() reads it.
class CaptureStderr {
 public:
  CaptureStderr() {
    std::fflush(stderr);
    file_ = std::tmpfile();
    REQUIRE(file_ != nullptr);
    saved_ = ::dup(STDERR_FILENO);
    REQUIRE(saved_ >= 0);
    REQUIRE(::dup2(::fileno(file_), STDERR_FILENO) >= 0);
  }
  ~CaptureStderr() {
    restore();
    std::fclose(file_);
  }
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    saved_ = -1;
  }
  std::string text() {
    std::fflush(stderr);
    std::string out;
    std::rewind(file_);
    char buf[512];
    while (std::size_t n = std::fread(buf, 1, sizeof(buf), file_)) out.append(buf, n);
    return out;
  }

 private:
  std::FILE* file_ = nullptr;
  int saved_ = -1;
};

// How many TCP sockets /proc/net/tcp lists with local port `port` in state
// `state` (the kernel's hex code: 06 is TIME_WAIT).
int tcp_sockets_in_state(std::uint16_t port, unsigned state) {
  std::FILE* f = std::fopen("/proc/net/tcp", "r");
  REQUIRE(f != nullptr);
  char line[512];
  int n = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    unsigned local_port = 0, st = 0;
    if (std::sscanf(line, " %*d: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x", &local_port, &st) == 2 &&
        local_port == port && st == state)
      ++n;
  }
  std::fclose(f);
  return n;
}

int int_option(int fd, int level, int option) {
  int value = -1;
  socklen_t len = sizeof(value);
  REQUIRE(::getsockopt(fd, level, option, &value, &len) == 0);
  return value;
}

// A loopback connection whose send path fills after a few KiB: a small
// SO_SNDBUF on the client and a small SO_RCVBUF on the server side (set on
// the listener, so the window offered in the handshake is small already).
struct SmallBufferPair {
  TcpListener listener;
  TcpStream client;
  TcpStream server;
};

SmallBufferPair small_buffer_pair() {
  SmallBufferPair p;
  p.listener = loopback_listener();
  int small = 4096;
  REQUIRE(::setsockopt(p.listener.native_handle(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) == 0);
  p.client = TcpStream::connect(p.listener.local_address());
  REQUIRE(::setsockopt(p.client.native_handle(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) == 0);
  p.server = std::move(p.listener.accept().stream);
  return p;
}

// Reads until EOF and returns how many bytes came.
std::size_t drain(TcpStream& s) {
  std::vector<char> buf(65536);  // off the fiber's stack
  std::size_t total = 0;
  while (std::size_t n = s.read_some(std::span(buf))) total += n;
  return total;
}

}  // namespace

// ============================================================ round trips

TEST_CASE("tcp: echo round trip over IPv4 with addresses on both sides") {
  spindle::run([] {
    auto listener = loopback_listener();
    auto addr = listener.local_address();
    CHECK(addr.ip() == "127.0.0.1");
    CHECK(addr.port() != 0);
    SocketAddress server_peer;
    auto server = spindle::spawn([&] {
      auto [conn, peer] = listener.accept();
      server_peer = peer;
      CHECK(conn.peer_address() == peer);
      CHECK((::fcntl(conn.native_handle(), F_GETFL) & O_NONBLOCK) != 0);
      CHECK((::fcntl(conn.native_handle(), F_GETFD) & FD_CLOEXEC) != 0);
      echo(conn);
    });
    auto client = TcpStream::connect(addr);
    client.set_nodelay(true);
    int nodelay = 0;
    socklen_t len = sizeof(nodelay);
    REQUIRE(::getsockopt(client.native_handle(), IPPROTO_TCP, TCP_NODELAY, &nodelay, &len) == 0);
    CHECK(nodelay != 0);
    CHECK(client.peer_address() == addr);
    client.write_all("hello, spindle\n");
    CHECK(client.read_line() == "hello, spindle\n");
    client.shutdown_write();
    server.join();
    CHECK(server_peer == client.local_address());
    char c;
    CHECK(client.read_some(std::span(&c, 1)) == 0);
  });
}

TEST_CASE("tcp: echo round trip over IPv6 loopback") {
  spindle::run([] {
    TcpListener listener;
    try {
      listener = TcpListener::bind(SocketAddress::parse("::1", 0));
    } catch (const std::system_error& e) {
      MESSAGE("skipped: cannot bind [::1]: " << e.what());
      return;
    }
    auto addr = listener.local_address();
    CHECK(addr.family() == AF_INET6);
    auto server = serve_echo(listener, 1);
    auto client = TcpStream::connect(addr);
    CHECK(client.local_address().ip() == "::1");
    std::string big(200 * 1024, 'v');  // several socket buffers: both sides park
    auto writer = spindle::spawn([&] {
      client.write_all(big);
      client.shutdown_write();
    });
    std::string back;
    std::array<char, 8192> buf{};
    while (std::size_t n = client.read_some(std::span(buf))) back.append(buf.data(), n);
    writer.join();
    server.join();
    CHECK(back == big);
  });
}

TEST_CASE("tcp: connect by name and by numeric host text") {
  spindle::run([] {
    auto listener = loopback_listener();
    auto port = listener.local_address().port();
    auto server = serve_echo(listener, 2);
    auto numeric = TcpStream::connect("127.0.0.1", port);
    CHECK(numeric.peer_address() == listener.local_address());
    // "localhost" goes through the resolver (/etc/hosts); only its IPv4
    // answer reaches this listener, so an IPv6 answer tried first must fail
    // over to the next address.
    auto named = TcpStream::connect("localhost", port);
    CHECK(named.peer_address().port() == port);
    for (auto* s : {&numeric, &named}) {
      s->write_all("x");
      char c = 0;
      s->read_exact(std::span(&c, 1));
      CHECK(c == 'x');
      s->shutdown_write();
    }
    server.join();
  });
}

// ========================================================= listen options

TEST_CASE("tcp: reuse_port lets two listeners share a port and both accept; a third without it gets EADDRINUSE") {
  spindle::run([] {
    auto a = loopback_listener({.reuse_port = true});
    auto addr = a.local_address();
    auto b = TcpListener::bind(addr, {.reuse_port = true});
    CHECK(b.local_address() == addr);
    CHECK(int_option(a.native_handle(), SOL_SOCKET, SO_REUSEPORT) != 0);
    CHECK(int_option(b.native_handle(), SOL_SOCKET, SO_REUSEPORT) != 0);
    auto e = catch_system_error([&] { TcpListener::bind(addr); });
    CHECK(e.code() == std::errc::address_in_use);

    // The kernel spreads connections over the group by a hash of the
    // four-tuple: 32 connections all landing on one listener has a chance of
    // 2^-31.
    constexpr int kConns = 32;
    int accepted[2] = {0, 0};
    std::vector<TcpStream> server_side;
    spindle::Event all_accepted;
    auto acceptor = [&](TcpListener* l, int* count) {
      return spindle::spawn([&server_side, &accepted, &all_accepted, l, count] {
        for (;;) {
          auto [conn, peer] = l->accept();
          server_side.push_back(std::move(conn));
          ++*count;
          if (accepted[0] + accepted[1] == kConns) all_accepted.set();
        }
      });
    };
    auto ta = acceptor(&a, &accepted[0]);
    auto tb = acceptor(&b, &accepted[1]);
    std::vector<TcpStream> clients;
    for (int i = 0; i < kConns; ++i) clients.push_back(TcpStream::connect(addr));
    {
      spindle::Timeout limit(10s);
      all_accepted.wait();
    }
    INFO("accepted by a: " << accepted[0] << ", by b: " << accepted[1]);
    CHECK(accepted[0] + accepted[1] == kConns);
    CHECK(accepted[0] > 0);
    CHECK(accepted[1] > 0);
    for (auto* t : {&ta, &tb}) {
      t->cancel();
      CHECK_THROWS_AS(t->join(), spindle::Cancelled);
    }
  });
}

TEST_CASE("tcp: reuse_address rebinds a port whose last connection sits in TIME_WAIT; without it bind is EADDRINUSE") {
  spindle::run([] {
    SocketAddress addr;
    {
      auto listener = loopback_listener();
      addr = listener.local_address();
      auto client = TcpStream::connect(addr);
      auto [conn, peer] = listener.accept();
      conn.write_all("bye");
      conn.close();  // the server side closes first, so it is the one left in TIME_WAIT
      spindle::Timeout guard(10s);
      CHECK(drain(client) == 3);
    }  // the client closes, then the listener
    int time_wait = 0;
    for (int i = 0; i < 200 && time_wait == 0; ++i) {
      time_wait = tcp_sockets_in_state(addr.port(), 0x06);
      if (time_wait == 0) spindle::this_fiber::sleep_for(10ms);
    }
    REQUIRE(time_wait == 1);

    auto e = catch_system_error([&] { TcpListener::bind(addr, {.reuse_address = false}); });
    CHECK(e.code() == std::errc::address_in_use);
    CHECK(contains(e.what(), "bind(fd="));
    CHECK(contains(e.what(), addr.to_string()));

    auto again = TcpListener::bind(addr);  // reuse_address is the default
    CHECK(int_option(again.native_handle(), SOL_SOCKET, SO_REUSEADDR) != 0);
    CHECK(again.local_address() == addr);
    CHECK(tcp_sockets_in_state(addr.port(), 0x06) == 1);  // still there: we reused, not waited
    auto client = TcpStream::connect(addr);
    auto [conn, peer] = again.accept();
    CHECK(peer == client.local_address());
  });
}

TEST_CASE("tcp: a v6_only listener on [::] refuses IPv4 connections; a dual-stack one on the same port accepts them") {
  spindle::run([] {
    TcpListener v6;
    try {
      v6 = TcpListener::bind(SocketAddress::parse("::", 0), {.v6_only = true});
    } catch (const std::system_error& e) {
      MESSAGE("skipped: cannot bind [::]: " << e.what());
      return;
    }
    CHECK(int_option(v6.native_handle(), IPPROTO_IPV6, IPV6_V6ONLY) == 1);
    const std::uint16_t port = v6.local_address().port();
    const auto v4 = SocketAddress::parse("127.0.0.1", port);
    auto refused = catch_system_error([&] { TcpStream::connect(v4); });
    CHECK(refused.code() == std::errc::connection_refused);
    CHECK(contains(refused.what(), "connect(fd="));
    CHECK(contains(refused.what(), v4.to_string()));
    {
      // IPv6 does reach it.
      auto c6 = TcpStream::connect(SocketAddress::parse("::1", port));
      auto [conn, peer] = v6.accept();
      CHECK(peer.family() == AF_INET6);
      CHECK(peer.ip() == "::1");
    }
    v6.close();

    auto dual = TcpListener::bind(SocketAddress::parse("::", port));  // v6_only = false
    CHECK(int_option(dual.native_handle(), IPPROTO_IPV6, IPV6_V6ONLY) == 0);
    auto c4 = TcpStream::connect(v4);
    CHECK(c4.peer_address() == v4);
    auto [conn, peer] = dual.accept();
    CHECK(peer.family() == AF_INET6);
    CHECK(peer.ip() == "::ffff:127.0.0.1");  // IPv4-mapped
    CHECK(peer.port() == c4.local_address().port());
    c4.write_all("v4\n");
    CHECK(conn.read_line() == "v4\n");
  });
}

// ========================================================== read helpers

TEST_CASE("tcp: after a short read the next read waits for new data, and sees a FIN that came with the data") {
  // A short read means the receive queue was empty, so the next read waits
  // for the poller first (no read(2) spent on EAGAIN). The FIN's edge may
  // have been reported together with the data already read: the wait must
  // not sit out an edge that will never come again.
  spindle::run([] {
    auto listener = loopback_listener();
    auto addr = listener.local_address();
    auto client = spindle::spawn([&] {
      auto c = TcpStream::connect(addr);
      c.write_all("first");
      spindle::this_fiber::sleep_for(20ms);
      c.write_all("second");
      spindle::this_fiber::sleep_for(20ms);
      c.write_all("last");
      c.close();  // data and FIN arrive together
    });
    auto [conn, peer] = listener.accept();
    spindle::Timeout guard(10s);
    std::array<char, 64> buf{};
    std::string got;
    std::size_t n = conn.read_some(std::span(buf));
    got.append(buf.data(), n);
    CHECK(got == "first");
    n = conn.read_some(std::span(buf));  // waits for the edge of "second"
    CHECK(std::string(buf.data(), n) == "second");
    spindle::this_fiber::sleep_for(60ms);  // "last" and the FIN are both queued now
    n = conn.read_some(std::span(buf));
    CHECK(std::string(buf.data(), n) == "last");
    CHECK(conn.read_some(std::span(buf)) == 0);  // EOF, without waiting
    client.join();
  });
}

TEST_CASE("tcp: read_some returns what has arrived and read_exact waits for the rest") {
  spindle::run([] {
    auto listener = loopback_listener();
    auto server = spindle::spawn([&] {
      auto [conn, peer] = listener.accept();
      for (std::string_view piece : {"abc", "defg", "hij"}) {
        conn.write_all(piece);
        spindle::this_fiber::sleep_for(15ms);
      }
    });
    auto client = TcpStream::connect(listener.local_address());
    std::array<char, 64> buf{};
    std::size_t first = client.read_some(std::span(buf));
    CHECK(std::string(buf.data(), first) == "abc");  // a partial read, not 10 bytes
    std::array<char, 7> rest{};
    client.read_exact(std::span(rest));
    CHECK(std::string(rest.data(), rest.size()) == "defghij");
    server.join();
    try {
      client.read_exact(std::span(rest));
      FAIL("read_exact after EOF returned");
    } catch (const spindle::net::UnexpectedEof& e) {
      CHECK(e.bytes_read() == 0);
      CHECK(contains(e.what(), listener.local_address().to_string()));
    }
  });
}

TEST_CASE("tcp: read_line and read_some can be mixed without losing bytes") {
  spindle::run([] {
    auto listener = loopback_listener();
    auto server = spindle::spawn([&] {
      auto [conn, peer] = listener.accept();
      conn.write_all("line one\nline two\nRAW!tail-without-newline");
    });
    auto client = TcpStream::connect(listener.local_address());
    server.join();  // everything is in flight before the first read
    CHECK(client.read_line() == "line one\n");
    std::string out;
    CHECK(client.read_until(out, "\n") == 9);
    CHECK(out == "line two\n");
    std::array<char, 4> raw{};
    client.read_exact(std::span(raw));
    CHECK(std::string(raw.data(), 4) == "RAW!");
    out.clear();
    CHECK(client.read_until(out, "--") == 20);  // EOF: the undelimited rest
    CHECK(out == "tail-without-newline");
    CHECK(client.read_line().empty());
  });
}

TEST_CASE("tcp: read_until finds a delimiter split across reads") {
  spindle::run([] {
    auto listener = loopback_listener();
    auto server = spindle::spawn([&] {
      auto [conn, peer] = listener.accept();
      conn.set_nodelay(true);
      conn.write_all("HEADERS\r");
      spindle::this_fiber::sleep_for(15ms);
      conn.write_all("\n\r");
      spindle::this_fiber::sleep_for(15ms);
      conn.write_all("\nbody");
    });
    auto client = TcpStream::connect(listener.local_address());
    std::string out;
    CHECK(client.read_until(out, "\r\n\r\n") == 11);
    CHECK(out == "HEADERS\r\n\r\n");
    server.join();
    std::array<char, 8> buf{};
    CHECK(std::string(buf.data(), client.read_some(std::span(buf))) == "body");
  });
}

TEST_CASE("tcp: read_until past its limit throws LimitExceeded and consumes nothing") {
  spindle::run([] {
    auto listener = loopback_listener();
    auto server = spindle::spawn([&] {
      auto [conn, peer] = listener.accept();
      conn.write_all(std::string(100, 'a') + "\nshort\n");
    });
    auto client = TcpStream::connect(listener.local_address());
    server.join();
    std::string out;
    try {
      client.read_until(out, "\n", 50);
      FAIL("no LimitExceeded");
    } catch (const spindle::net::LimitExceeded& e) {
      CHECK(e.limit() == 50);
      CHECK(contains(e.what(), "50 bytes"));
    }
    CHECK(out.empty());
    // The delimiter exactly at the limit is fine; one byte short is not.
    CHECK_THROWS_AS(client.read_line(100), spindle::net::LimitExceeded);
    CHECK(client.read_line(101) == std::string(100, 'a') + "\n");
    CHECK(client.read_line(6) == "short\n");
  });
}

TEST_CASE("tcp: EOF after the peer's half-close is the value 0 and the other direction still works") {
  spindle::run([] {
    auto listener = loopback_listener();
    auto server = spindle::spawn([&] {
      auto [conn, peer] = listener.accept();
      std::string got;
      std::array<char, 64> buf{};
      while (std::size_t n = conn.read_some(std::span(buf))) got.append(buf.data(), n);
      conn.write_all("got " + got);  // after our EOF, we can still answer
    });
    auto client = TcpStream::connect(listener.local_address());
    client.write_all("request");
    client.shutdown_write();
    std::string answer;
    std::array<char, 64> buf{};
    while (std::size_t n = client.read_some(std::span(buf))) answer.append(buf.data(), n);
    CHECK(answer == "got request");
    CHECK(client.read_some(std::span(buf)) == 0);  // and again: still a value
    server.join();
  });
}

TEST_CASE("tcp: writev_all sends every part in order across partial sends") {
  spindle::run([] {
    auto listener = loopback_listener();
    std::string received;
    auto server = spindle::spawn([&] {
      auto [conn, peer] = listener.accept();
      std::vector<char> buf(65536);  // off the fiber's stack
      while (std::size_t n = conn.read_some(std::span(buf))) received.append(buf.data(), n);
    });
    auto client = TcpStream::connect(listener.local_address());
    // 200 parts (more than one sendmsg window), some empty, 4 MiB in all:
    // the socket buffer fills many times, so sends stop mid-part.
    std::vector<std::string> parts;
    std::vector<iovec> iov;
    std::string expected;
    for (int i = 0; i < 200; ++i) {
      std::size_t size = i % 7 == 0 ? 0 : static_cast<std::size_t>(i) * 200;
      parts.push_back(std::string(size, static_cast<char>('A' + i % 26)));
      expected += parts.back();
    }
    parts.push_back(std::string(1 << 21, 'z'));
    expected += parts.back();
    for (auto& p : parts) iov.push_back({p.data(), p.size()});
    client.writev_all(iov);
    client.shutdown_write();
    server.join();
    CHECK(received.size() == expected.size());
    CHECK(received == expected);
    CHECK(iov[1].iov_len == parts[1].size());  // the caller's iovecs are untouched
  });
}

// ================================================================= errors

TEST_CASE("tcp: connection refused names connect and the address") {
  spindle::run([] {
    SocketAddress addr;
    {
      auto probe = loopback_listener();
      addr = probe.local_address();
    }  // closed: nothing listens on that port now
    auto e = catch_system_error([&] { TcpStream::connect(addr); });
    CHECK(e.code() == std::errc::connection_refused);
    CHECK(contains(e.what(), "connect("));
    CHECK(contains(e.what(), addr.to_string()));
    // By host text: the message names host:port and the address tried.
    auto named = catch_system_error([&] { TcpStream::connect("127.0.0.1", addr.port()); });
    CHECK(named.code() == std::errc::connection_refused);
    CHECK(contains(named.what(), addr.to_string()));
  });
}

TEST_CASE("tcp: writing to a peer that reset the connection is a system_error, not SIGPIPE") {
  struct sigaction old_action {};
  REQUIRE(::sigaction(SIGPIPE, nullptr, &old_action) == 0);
  REQUIRE((old_action.sa_handler == SIG_DFL));  // SIGPIPE would kill the test
  spindle::run([] {
    auto listener = loopback_listener();
    auto client = TcpStream::connect(listener.local_address());
    {
      auto [conn, peer] = listener.accept();
      linger hard_close{1, 0};  // close sends RST instead of FIN
      REQUIRE(::setsockopt(conn.native_handle(), SOL_SOCKET, SO_LINGER, &hard_close, sizeof(hard_close)) == 0);
    }
    spindle::this_fiber::sleep_for(20ms);  // let the RST arrive
    auto e = catch_system_error([&] {
      for (int i = 0; i < 100; ++i) client.write_all(std::string(4096, 'x'));
    });
    CHECK((e.code() == std::errc::connection_reset || e.code() == std::errc::broken_pipe));
    CHECK(contains(e.what(), fmt::format("send(fd={}, {})", client.native_handle(),
                                         listener.local_address().to_string())));
    // Reading a reset connection: an error too (ECONNRESET once, then EOF).
    auto client2 = TcpStream::connect(listener.local_address());
    {
      auto [conn, peer] = listener.accept();
      linger hard_close{1, 0};
      REQUIRE(::setsockopt(conn.native_handle(), SOL_SOCKET, SO_LINGER, &hard_close, sizeof(hard_close)) == 0);
    }
    std::array<char, 8> buf{};
    auto r = catch_system_error([&] { client2.read_some(std::span(buf)); });
    CHECK(r.code() == std::errc::connection_reset);
    CHECK(contains(r.what(), "read(fd="));
  });
}

TEST_CASE("tcp: binding an address that is already bound is EADDRINUSE naming bind and the address, and leaks no socket") {
  spindle::run([] {
    auto first = loopback_listener();
    auto addr = first.local_address();
    const int fds_before = count_open_fds();
    auto e = catch_system_error([&] { TcpListener::bind(addr); });
    CHECK(e.code() == std::errc::address_in_use);
    CHECK(contains(e.what(), "bind(fd="));
    CHECK(contains(e.what(), ", " + addr.to_string() + ")"));
    CHECK(count_open_fds() == fds_before);
    // SO_REUSEPORT on the newcomer alone does not let it share the port.
    auto e2 = catch_system_error([&] { TcpListener::bind(addr, {.reuse_port = true}); });
    CHECK(e2.code() == std::errc::address_in_use);
    CHECK(contains(e2.what(), "bind(fd="));
    CHECK(count_open_fds() == fds_before);
    // The listener that holds the port is unharmed.
    auto client = TcpStream::connect(addr);
    auto [conn, peer] = first.accept();
    CHECK(peer == client.local_address());
  });
}

TEST_CASE("tcp: connect by name when every resolved address refuses names host:port, the count and the last address") {
  spindle::run([] {
    SocketAddress probe_addr;
    {
      auto probe = loopback_listener();
      probe_addr = probe.local_address();
    }  // closed: nothing listens on that port now
    const std::uint16_t port = probe_addr.port();
    const auto addrs = spindle::net::resolve("localhost", std::to_string(port));
    REQUIRE_FALSE(addrs.empty());
    const int fds_before = count_open_fds();
    auto e = catch_system_error([&] { TcpStream::connect("localhost", port); });
    const std::string what = e.what();
    INFO("what(): " << what);
    CHECK(e.code() == std::errc::connection_refused);
    CHECK(contains(what, fmt::format("connect(localhost:{}): {} address(es) failed, last tried {}", port,
                                     addrs.size(), addrs.back().to_string())));
    CHECK(count_open_fds() == fds_before);  // every attempt's socket was closed
  });
}

TEST_CASE("tcp: writev_all to a peer that reset the connection is a system_error naming sendmsg, not SIGPIPE") {
  struct sigaction old_action {};
  REQUIRE(::sigaction(SIGPIPE, nullptr, &old_action) == 0);
  REQUIRE((old_action.sa_handler == SIG_DFL));  // SIGPIPE would kill the test
  spindle::run([] {
    auto listener = loopback_listener();
    std::string part(64 * 1024, 'w');
    const std::vector<iovec> iov(16, iovec{part.data(), part.size()});  // 1 MiB a call
    auto reset = [](TcpStream& conn) {
      linger hard_close{1, 0};  // close sends RST instead of FIN
      REQUIRE(::setsockopt(conn.native_handle(), SOL_SOCKET, SO_LINGER, &hard_close, sizeof(hard_close)) == 0);
      conn.close();
    };
    auto check_error = [&](const std::system_error& e, const TcpStream& client) {
      INFO("what(): " << std::string(e.what()));
      CHECK((e.code() == std::errc::connection_reset || e.code() == std::errc::broken_pipe));
      CHECK(contains(e.what(), fmt::format("sendmsg(fd={}, {})", client.native_handle(),
                                           listener.local_address().to_string())));
    };
    SUBCASE("reset before the call") {
      auto client = TcpStream::connect(listener.local_address());
      auto accepted = listener.accept();
      reset(accepted.stream);
      spindle::this_fiber::sleep_for(20ms);  // let the RST arrive
      auto e = catch_system_error([&] {
        for (int i = 0; i < 100; ++i) client.writev_all(iov);
      });
      check_error(e, client);
    }
    SUBCASE("reset while writev_all is parked on a full socket") {
      auto client = TcpStream::connect(listener.local_address());
      auto accepted = listener.accept();
      auto writer = spindle::spawn([&] {
        for (int i = 0; i < 100; ++i) client.writev_all(iov);  // 100 MiB: far beyond the buffers
      });
      spindle::this_fiber::sleep_for(50ms);
      REQUIRE_FALSE(writer.done());  // parked: the peer reads nothing
      reset(accepted.stream);
      spindle::Timeout guard(10s);
      auto e = catch_system_error([&] { writer.join(); });
      check_error(e, client);
    }
  });
}

TEST_CASE("tcp: a connect that cannot complete times out under a Timeout and leaves no socket behind") {
  spindle::run([] {
    // A backlog-1 listener that never accepts: once its queue is full the
    // kernel drops further SYNs, so the next connect hangs in SYN_SENT.
    auto listener = loopback_listener({.backlog = 1});
    std::vector<TcpStream> queued;
    bool timed_out = false;
    for (int i = 0; i < 16 && !timed_out; ++i) {
      int fds_before = count_open_fds();
      auto start = spindle::now();
      try {
        spindle::Timeout limit(150ms);
        queued.push_back(TcpStream::connect(listener.local_address()));
      } catch (const spindle::TimeoutError& e) {
        timed_out = true;
        // The message names the call, the fd and the peer, like any other
        // connect failure: "connect(fd=N, 127.0.0.1:P): Timeout expired".
        INFO("what(): " << std::string(e.what()));
        CHECK(e.code() == std::errc::timed_out);
        CHECK(contains(e.what(), "connect(fd="));
        CHECK(contains(e.what(), listener.local_address().to_string() + "): Timeout expired"));
        CHECK(spindle::now() - start >= 150ms);
        CHECK(spindle::now() - start < 5s);
        CHECK(count_open_fds() == fds_before);  // the half-open socket was closed
      }
    }
    CHECK(timed_out);
    CHECK(queued.size() < 16);
  });
}

TEST_CASE("tcp: cancelling a fiber blocked in connect closes its socket") {
  spindle::run([] {
    auto listener = loopback_listener({.backlog = 1});
    std::vector<TcpStream> queued;
    // Fill the queue (each connect succeeds quickly until it is full).
    for (int i = 0; i < 16; ++i) {
      auto t = spindle::spawn([&] { return TcpStream::connect(listener.local_address()); });
      spindle::this_fiber::sleep_for(50ms);
      if (!t.done()) {
        int fds_during = count_open_fds();
        t.cancel();
        CHECK_THROWS_AS(t.join(), spindle::Cancelled);
        CHECK(count_open_fds() == fds_during - 1);
        return;
      }
      queued.push_back(t.join());
    }
    FAIL("the backlog never filled");
  });
}

// ====================================================== cancel, timeouts

TEST_CASE("tcp: a cancelled or timed-out read leaves the stream usable") {
  spindle::run([] {
    auto listener = loopback_listener();
    auto client = TcpStream::connect(listener.local_address());
    auto [conn, peer] = listener.accept();
    std::array<char, 16> buf{};
    auto blocked = spindle::spawn([&] { return client.read_some(std::span(buf)); });
    spindle::this_fiber::sleep_for(10ms);
    CHECK_FALSE(blocked.done());
    blocked.cancel();
    CHECK_THROWS_AS(blocked.join(), spindle::Cancelled);
    auto start = spindle::now();
    {
      spindle::Timeout limit(30ms);
      std::string out;
      CHECK_THROWS_AS(client.read_until(out, "\n"), spindle::TimeoutError);
    }
    CHECK(spindle::now() - start >= 30ms);
    conn.write_all("partial");
    {
      // read_until keeps what it buffered when the Timeout fires...
      spindle::Timeout limit(30ms);
      std::string out;
      CHECK_THROWS_AS(client.read_until(out, "\n"), spindle::TimeoutError);
    }
    conn.write_all(" line\n");
    CHECK(client.read_line() == "partial line\n");  // ...so nothing is lost
    // A new waiter (another fiber) can take over the fd.
    auto reader = spindle::spawn([&] { return client.read_some(std::span(buf)); });
    spindle::this_fiber::sleep_for(5ms);
    conn.write_all("ok");
    CHECK(reader.join() == 2);
  });
}

TEST_CASE("tcp: a cancelled accept loses no connection and the listener keeps accepting") {
  spindle::run([] {
    auto listener = loopback_listener();
    auto blocked = spindle::spawn([&] { return listener.accept(); });
    spindle::this_fiber::sleep_for(10ms);
    blocked.cancel();
    CHECK_THROWS_AS(blocked.join(), spindle::Cancelled);
    {
      spindle::Timeout limit(20ms);
      CHECK_THROWS_AS(listener.accept(), spindle::TimeoutError);
    }
    auto client = TcpStream::connect(listener.local_address());
    auto [conn, peer] = listener.accept();
    CHECK(peer == client.local_address());
  });
}

TEST_CASE("tcp: a Timeout ends a write_all blocked on a peer that does not read; the fiber and the socket stay usable") {
  spindle::run([] {
    auto p = small_buffer_pair();
    const std::string big(16 << 20, 'b');
    const int fds_before = count_open_fds();
    const int fd = p.client.native_handle();
    const auto start = spindle::now();
    {
      spindle::Timeout limit(100ms);
      try {
        p.client.write_all(big);
        FAIL("write_all of 16 MiB to a peer that reads nothing returned");
      } catch (const spindle::TimeoutError& e) {
        INFO("what(): " << std::string(e.what()));
        CHECK(e.code() == std::errc::timed_out);
        CHECK(contains(e.what(), fmt::format("(fd={})", fd)));
        CHECK(contains(e.what(), "Timeout expired"));
      }
      CHECK(limit.expired());
    }
    const auto elapsed = spindle::now() - start;
    CHECK(elapsed >= 100ms);
    CHECK(elapsed < 5s);
    // The same fiber goes on with other sockets.
    {
      auto other = loopback_listener();
      auto c = TcpStream::connect(other.local_address());
      auto [s, peer] = other.accept();
      c.write_all("still here\n");
      CHECK(s.read_line() == "still here\n");
    }
    CHECK(count_open_fds() == fds_before);
    // The interrupted stream closes cleanly: its fd is gone, and the peer
    // reads the part that was sent, then EOF (a FIN, not a reset).
    p.client.close();
    CHECK_FALSE(p.client.is_open());
    CHECK(count_open_fds() == fds_before - 1);
    spindle::Timeout guard(10s);
    const std::size_t got = drain(p.server);
    CHECK(got > 0);
    CHECK(got < big.size());
  });
}

TEST_CASE("tcp: cancelling a fiber blocked in write_all leaves no waiter behind and the socket closes cleanly") {
  spindle::run([] {
    auto p = small_buffer_pair();
    const std::string big(16 << 20, 'c');
    const int fds_before = count_open_fds();
    auto writer = spindle::spawn([&] { p.client.write_all(big); });
    spindle::this_fiber::sleep_for(50ms);
    REQUIRE_FALSE(writer.done());  // parked on the full socket
    writer.cancel();
    CHECK_THROWS_AS(writer.join(), spindle::Cancelled);
    // Another fiber may now wait to write on the same fd (a waiter left in
    // the slot would make that abort), and a Timeout ends it as usual.
    auto second = spindle::spawn([&] {
      spindle::Timeout limit(50ms);
      p.client.write_all(big);
    });
    CHECK_THROWS_AS(second.join(), spindle::TimeoutError);
    // Other sockets still work.
    {
      auto other = loopback_listener();
      auto c = TcpStream::connect(other.local_address());
      auto [s, peer] = other.accept();
      s.write_all("ping\n");
      CHECK(c.read_line() == "ping\n");
    }
    p.client.close();
    CHECK(count_open_fds() == fds_before - 1);
    spindle::Timeout guard(10s);
    const std::size_t got = drain(p.server);
    CHECK(got > 0);
    CHECK(got < 2 * big.size());
  });
}

TEST_CASE("tcp: closing a stream wakes a fiber parked on it with EBADF") {
  spindle::run([] {
    auto listener = loopback_listener();
    auto client = TcpStream::connect(listener.local_address());
    auto accepted = listener.accept();
    auto blocked = spindle::spawn([&] {
      std::array<char, 4> buf{};
      return client.read_some(std::span(buf));
    });
    spindle::this_fiber::sleep_for(10ms);
    client.close();
    CHECK_FALSE(client.is_open());
    CHECK(catch_system_error([&] { blocked.join(); }).code() == std::errc::bad_file_descriptor);
    std::array<char, 4> buf{};
    CHECK(catch_system_error([&] { client.read_some(std::span(buf)); }).code() == std::errc::bad_file_descriptor);
  });
}

TEST_CASE("tcp: accept rides out EMFILE, keeps serving open connections, logs once and recovers") {
#if defined(SPINDLE_HAVE_VALGRIND)
  if (RUNNING_ON_VALGRIND) {
    // valgrind keeps descriptors of its own and emulates RLIMIT_NOFILE, so
    // the limit below does not leave accept() without a descriptor.
    MESSAGE("skipped under valgrind");
    return;
  }
#endif
  CaptureStderr captured;
  spindle::run([] {
    auto listener = loopback_listener();
    auto addr = listener.local_address();
    auto server = serve_echo(listener, 2);
    auto first = TcpStream::connect(addr);
    first.write_all("a");
    char c = 0;
    first.read_exact(std::span(&c, 1));  // served: its server side exists

    std::vector<int> fillers;
    {
      // Leave exactly one free descriptor, for the second client's socket;
      // the server's accept then has none.
      FdLimit limit(static_cast<rlim_t>(count_open_fds() + 8));
      for (;;) {
        int fd = ::dup(STDIN_FILENO);
        if (fd < 0) {
          REQUIRE(errno == EMFILE);
          break;
        }
        fillers.push_back(fd);
      }
      REQUIRE(!fillers.empty());
      ::close(fillers.back());
      fillers.pop_back();
      auto second = TcpStream::connect(addr);  // completes in the kernel's queue

      spindle::this_fiber::sleep_for(150ms);  // the server is backing off now
      // The open connection is still served while accept cannot proceed.
      first.write_all("b");
      first.read_exact(std::span(&c, 1));
      CHECK(c == 'b');
      auto start = spindle::now();
      auto pending = spindle::spawn([&] {
        second.write_all("c");
        char r = 0;
        second.read_exact(std::span(&r, 1));
        return r;
      });
      spindle::this_fiber::sleep_for(50ms);
      CHECK_FALSE(pending.done());  // not accepted yet

      for (int fd : fillers) ::close(fd);
      fillers.clear();
      CHECK(pending.join() == 'c');
      CHECK(spindle::now() - start < 5s);  // a back-off step or so, on a loaded machine
      second.shutdown_write();
    }
    first.shutdown_write();
    server.join();
  });
  captured.restore();
  std::string log = captured.text();
  INFO("stderr: " << log);
  CHECK(contains(log, "accept4(fd="));
  CHECK(contains(log, "Too many open files"));
  CHECK(std::count(log.begin(), log.end(), '\n') == 1);
}
