// spindle::net::resolve against a loopback DNS responder (dns_responder.hpp):
// answers, NXDOMAIN, no data, silence under Timeout scopes and c-ares's own
// timeout, cancellation leaving no registration behind, /etc/hosts and
// numeric hosts answered without a query.
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <spindle/net/dns.hpp>
#include <spindle/spindle.hpp>

#include "dns_responder.hpp"

using namespace std::chrono_literals;
using spindle::net::DnsErrc;
using spindle::net::DnsError;
using spindle::net::ResolveOptions;
using spindle::net::SocketAddress;

namespace {

using Ms = std::chrono::duration<double, std::milli>;

double ms_since(std::chrono::steady_clock::time_point t0) {
  return Ms(std::chrono::steady_clock::now() - t0).count();
}

std::set<std::string> strings(const std::vector<SocketAddress>& addrs) {
  std::set<std::string> out;
  for (const auto& a : addrs) out.insert(a.to_string());
  return out;
}

ResolveOptions via(const test::DnsResponder& dns) { return ResolveOptions{.servers = {dns.server()}}; }

template <class F>
DnsError catch_dns_error(F&& f) {
  try {
    f();
  } catch (const DnsError& e) {
    return e;
  }
  FAIL("no DnsError was thrown");
  return DnsError(DnsErrc::no_data, "");
}

std::size_t open_fds() {
  std::size_t n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  REQUIRE(d);
  while (::readdir(d)) ++n;
  ::closedir(d);
  return n;
}

// The lowest free fd number, which the next socket() or pipe() will get.
int lowest_free_fd() {
  const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  ::close(fd);
  return fd;
}

// A loopback UDP port with nobody listening.
std::uint16_t closed_udp_port() {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Proves the scheduler's fd bookkeeping is clean: a fresh pipe gets
// `expected_fd` (the number a closed resolver socket had) and waiting on it
// works. A registration left behind for that number would make the wait
// hang (the scheduler would believe the new fd already watched), which the
// Timeout scope turns into a failure.
void check_fd_reusable(int expected_fd) {
  int p[2];
  REQUIRE(::pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
  CHECK(p[0] == expected_fd);
  auto writer = spindle::spawn([&] {
    spindle::this_fiber::sleep_for(10ms);
    REQUIRE(::write(p[1], "x", 1) == 1);
  });
  char c = 0;
  {
    spindle::Timeout scope(5s);
    for (;;) {
      if (::read(p[0], &c, 1) == 1) break;
      REQUIRE(errno == EAGAIN);
      spindle::wait_readable(p[0]);
    }
  }
  writer.join();
  CHECK(c == 'x');
  spindle::forget_fd(p[0]);
  spindle::forget_fd(p[1]);
  ::close(p[0]);
  ::close(p[1]);
}

}  // namespace

TEST_CASE("dns: a name with A and AAAA records resolves to all addresses, with the port") {
  test::DnsResponder dns;
  spindle::run([&] {
    CHECK(strings(spindle::net::resolve("good.test", "80", via(dns))) ==
          std::set<std::string>{"192.0.2.1:80", "192.0.2.2:80", "[2001:db8::1]:80"});
    auto v4 = via(dns);
    v4.family = AF_INET;
    CHECK(strings(spindle::net::resolve("good.test", "443", v4)) ==
          std::set<std::string>{"192.0.2.1:443", "192.0.2.2:443"});
    auto v6 = via(dns);
    v6.family = AF_INET6;
    CHECK(strings(spindle::net::resolve("GOOD.test", "", v6)) == std::set<std::string>{"[2001:db8::1]:0"});
    // A named service is looked up in the services database.
    const auto http = spindle::net::resolve("good.test", "http", v4);
    REQUIRE(!http.empty());
    CHECK(http.front().port() == 80);
  });
  CHECK(dns.queries() >= 4);
}

TEST_CASE("dns: NXDOMAIN is a DnsError naming the host") {
  test::DnsResponder dns;
  spindle::run([&] {
    auto e = catch_dns_error([&] { spindle::net::resolve("nosuch.test", "", via(dns)); });
    CHECK(e.errc() == DnsErrc::not_found);
    CHECK(e.code() == DnsErrc::not_found);
    CHECK(std::string(e.what()) == "resolve(\"nosuch.test\"): Domain name not found");
    auto with_service = catch_dns_error([&] { spindle::net::resolve("nosuch.test", "8080", via(dns)); });
    CHECK(std::string(with_service.what()) == "resolve(\"nosuch.test\", \"8080\"): Domain name not found");
  });
}

TEST_CASE("dns: a name without records of the asked family is DnsError no_data") {
  test::DnsResponder dns;
  spindle::run([&] {
    auto v6 = via(dns);
    v6.family = AF_INET6;
    auto e = catch_dns_error([&] { spindle::net::resolve("v4only.test", "", v6); });
    CHECK(e.errc() == DnsErrc::no_data);
    CHECK(std::string(e.what()).find("v4only.test") != std::string::npos);
    // AF_UNSPEC still finds the A record.
    CHECK(strings(spindle::net::resolve("v4only.test", "1", via(dns))) == std::set<std::string>{"192.0.2.7:1"});
  });
}

TEST_CASE("dns: a silent server under a Timeout scope gives TimeoutError, not early, and leaves nothing behind") {
  test::DnsResponder dns;
  spindle::run([&] {
    const std::size_t fds_before = open_fds();
    auto options = via(dns);
    options.timeout = 5s;  // c-ares alone would wait much longer than the scope
    const auto t0 = std::chrono::steady_clock::now();
    bool timed_out = false;
    {
      spindle::Timeout scope(200ms);
      try {
        spindle::net::resolve("silent.test", "", options);
      } catch (const spindle::TimeoutError& e) {
        timed_out = true;
        CHECK(std::string(e.what()).find("spindle::net::resolve(\"silent.test\"): Timeout expired") !=
              std::string::npos);
      }
      CHECK(scope.expired());
    }
    const double elapsed = ms_since(t0);
    CHECK(timed_out);
    CHECK(elapsed >= 200.0);
    CHECK(elapsed < 3000.0);
    CHECK(dns.queries() >= 1);
    CHECK(open_fds() == fds_before);
  });
}

TEST_CASE("dns: with small tries and timeout c-ares gives up with DnsError timeout") {
  test::DnsResponder dns;
  spindle::run([&] {
    auto options = via(dns);
    options.family = AF_INET;
    options.timeout = 100ms;
    options.tries = 2;
    const auto t0 = std::chrono::steady_clock::now();
    auto e = catch_dns_error([&] { spindle::net::resolve("silent.test", "", options); });
    const double elapsed = ms_since(t0);
    CHECK(e.errc() == DnsErrc::timeout);
    CHECK(e.code() == std::errc::timed_out);
    CHECK(std::string(e.what()) == "resolve(\"silent.test\"): Timeout while contacting DNS servers");
    // Two tries: 100 ms, then (c-ares doubles per round) 200 ms.
    CHECK(elapsed >= 300.0);
    CHECK(elapsed < 3000.0);
    // One query per try.
    CHECK(dns.queries() == 2);
  });
}

TEST_CASE("dns: cancelling a resolve in flight closes its socket and leaves no registration") {
  test::DnsResponder dns;
  spindle::run([&] {
    const std::size_t fds_before = open_fds();
    const int next_fd = lowest_free_fd();
    auto options = via(dns);
    options.family = AF_INET;
    options.timeout = 5s;
    bool returned = false;
    auto task = spindle::spawn([&] {
      spindle::net::resolve("silent.test", "", options);
      returned = true;
    });
    // Wait until the query is on the wire: the socket is open and watched.
    const auto t0 = std::chrono::steady_clock::now();
    while (dns.queries() == 0 && ms_since(t0) < 5000) spindle::this_fiber::sleep_for(5ms);
    REQUIRE(dns.queries() == 1);
    CHECK(open_fds() == fds_before + 1);
    task.cancel();
    task.wait();
    CHECK(task.cancelled());
    CHECK_FALSE(returned);
    CHECK(open_fds() == fds_before);
    // The resolver's UDP socket had the lowest free number; it is free again.
    check_fd_reusable(next_fd);
    // And resolving still works afterwards.
    CHECK(strings(spindle::net::resolve("good.test", "1", options)) ==
          std::set<std::string>{"192.0.2.1:1", "192.0.2.2:1"});
  });
}

TEST_CASE("dns: a truncated UDP answer is retried over TCP") {
  test::DnsResponder dns;
  spindle::run([&] {
    const std::size_t fds_before = open_fds();
    CHECK(strings(spindle::net::resolve("tcp.test", "25", via(dns))) == std::set<std::string>{"192.0.2.9:25"});
    // The responder (a thread of this process) closes its end of the TCP
    // connection when it reads the resolver's close: give it time to.
    for (int i = 0; i < 200 && open_fds() != fds_before; ++i) spindle::this_fiber::sleep_for(10ms);
    CHECK(open_fds() == fds_before);
  });
  CHECK(dns.tcp_queries() >= 1);
}

TEST_CASE("dns: a server that refuses (ICMP port unreachable) is DnsError connection_refused, quickly") {
  const std::uint16_t port = closed_udp_port();
  spindle::run([&] {
    ResolveOptions options{.family = AF_INET, .servers = {fmt::format("127.0.0.1:{}", port)},
                           .timeout = 2s, .tries = 1};
    const auto t0 = std::chrono::steady_clock::now();
    auto e = catch_dns_error([&] { spindle::net::resolve("good.test", "", options); });
    CHECK(e.errc() == DnsErrc::connection_refused);
    CHECK(ms_since(t0) < 1500.0);
  });
}

TEST_CASE("dns: localhost comes from /etc/hosts without a query") {
  test::DnsResponder dns;
  spindle::run([&] {
    const auto addrs = spindle::net::resolve("localhost", "8080", via(dns));
    REQUIRE_FALSE(addrs.empty());
    for (const auto& a : addrs) {
      CAPTURE(a.to_string());
      CHECK((a.to_string() == "127.0.0.1:8080" || a.to_string() == "[::1]:8080"));
    }
  });
  CHECK(dns.queries() == 0);
}

TEST_CASE("dns: numeric hosts are answered without a query or a server") {
  test::DnsResponder dns;
  spindle::run([&] {
    CHECK(strings(spindle::net::resolve("127.0.0.1", "8080", via(dns))) == std::set<std::string>{"127.0.0.1:8080"});
    CHECK(strings(spindle::net::resolve("::1", "53", via(dns))) == std::set<std::string>{"[::1]:53"});
    // With no usable server at all.
    ResolveOptions nowhere{.servers = {"127.0.0.1:1"}};
    CHECK(strings(spindle::net::resolve("10.1.2.3", "", nowhere)) == std::set<std::string>{"10.1.2.3:0"});
    CHECK(spindle::net::resolve("127.0.0.1", "http", nowhere).at(0).port() == 80);
    // The other family than asked for.
    ResolveOptions v6{.family = AF_INET6};
    auto e = catch_dns_error([&] { spindle::net::resolve("127.0.0.1", "", v6); });
    CHECK(e.errc() == DnsErrc::bad_family);
    CHECK(std::string(e.what()) == "resolve(\"127.0.0.1\"): Unsupported address family");
  });
  CHECK(dns.queries() == 0);
}

TEST_CASE("dns: bad arguments are reported") {
  spindle::run([] {
    CHECK_THROWS_AS(spindle::net::resolve("good.test", "", ResolveOptions{.family = AF_UNIX}), std::invalid_argument);
    CHECK_THROWS_AS(spindle::net::resolve("good.test", "", ResolveOptions{.servers = {"not an address"}}),
                    std::invalid_argument);
    auto e = catch_dns_error([] { spindle::net::resolve("127.0.0.1", "no-such-service-name"); });
    CHECK(e.errc() == DnsErrc::bad_service);
    CHECK(std::string(e.what()) == "resolve(\"127.0.0.1\", \"no-such-service-name\"): Unknown service name");
    CHECK(catch_dns_error([] { spindle::net::resolve("127.0.0.1", "70000"); }).errc() == DnsErrc::bad_service);
    CHECK(catch_dns_error([] { spindle::net::resolve(""); }).errc() == DnsErrc::bad_name);
  });
  CHECK_THROWS_AS(spindle::net::resolve("127.0.0.1"), std::logic_error);
}

TEST_CASE("dns: many resolves run at once on fibers of several schedulers") {
  test::DnsResponder dns;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      spindle::run([&] {
        std::vector<spindle::Task<void>> tasks;
        for (int i = 0; i < 8; ++i) {
          tasks.push_back(spindle::spawn([&, i] {
            auto options = via(dns);
            options.family = AF_INET;
            if (i % 2 == 0) {
              if (strings(spindle::net::resolve("good.test", "7", options)) ==
                  std::set<std::string>{"192.0.2.1:7", "192.0.2.2:7"})
                ++ok;
            } else {
              try {
                spindle::net::resolve("nosuch.test", "", options);
              } catch (const DnsError& e) {
                if (e.errc() == DnsErrc::not_found) ++ok;
              }
            }
          }));
        }
        for (auto& task : tasks) task.join();
      });
    });
  }
  for (auto& th : threads) th.join();
  CHECK(ok.load() == 24);
}
