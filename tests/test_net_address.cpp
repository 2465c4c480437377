// spindle::net::SocketAddress: numeric parsing, Unix paths, formatting,
// equality, and the round trip through the kernel's sockaddr forms.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include <spindle/net/address.hpp>

using spindle::net::SocketAddress;

namespace {

std::string invalid_message(auto&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  FAIL("no std::invalid_argument thrown");
  return {};
}

}  // namespace

TEST_CASE("address: a default address is unspecified and empty") {
  SocketAddress a;
  CHECK(a.family() == AF_UNSPEC);
  CHECK(a.native_size() == 0);
  CHECK(a.port() == 0);
  CHECK(a.ip().empty());
  CHECK(a.path().empty());
  CHECK(a.to_string() == "unspecified");
  CHECK(a == SocketAddress());
}

TEST_CASE("address: IPv4 parses with a port and prints back") {
  auto a = SocketAddress::parse("127.0.0.1", 8080);
  CHECK(a.family() == AF_INET);
  CHECK(a.port() == 8080);
  CHECK(a.ip() == "127.0.0.1");
  CHECK(a.to_string() == "127.0.0.1:8080");
  CHECK(a.native_size() == sizeof(sockaddr_in));
  auto* sin = reinterpret_cast<const sockaddr_in*>(a.native());
  CHECK(sin->sin_port == htons(8080));
  CHECK(sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK));
}

TEST_CASE("address: IPv6 parses with and without brackets and prints in brackets") {
  auto a = SocketAddress::parse("::1", 443);
  CHECK(a.family() == AF_INET6);
  CHECK(a.port() == 443);
  CHECK(a.ip() == "::1");
  CHECK(a.to_string() == "[::1]:443");
  CHECK(a.native_size() == sizeof(sockaddr_in6));
  CHECK(SocketAddress::parse("[::1]", 443) == a);
  CHECK(SocketAddress::parse("2001:db8::1", 1).to_string() == "[2001:db8::1]:1");
  // A numeric scope id is kept and compared.
  auto scoped = SocketAddress::parse("fe80::1%1", 80);
  CHECK(reinterpret_cast<const sockaddr_in6*>(scoped.native())->sin6_scope_id == 1);
  CHECK_FALSE(scoped == SocketAddress::parse("fe80::1", 80));
}

TEST_CASE("address: host:port text parses for both families") {
  CHECK(SocketAddress::parse("10.1.2.3:65535") == SocketAddress::parse("10.1.2.3", 65535));
  CHECK(SocketAddress::parse("[::1]:0") == SocketAddress::parse("::1", 0));
  CHECK(SocketAddress::parse("[::ffff:1.2.3.4]:9").to_string() == "[::ffff:1.2.3.4]:9");
}

TEST_CASE("address: bad text throws invalid_argument naming the text") {
  CHECK(invalid_message([] { SocketAddress::parse("localhost", 80); }).find("'localhost'") != std::string::npos);
  CHECK(invalid_message([] { SocketAddress::parse("256.1.1.1", 80); }).find("256.1.1.1") != std::string::npos);
  CHECK(invalid_message([] { SocketAddress::parse("", 80); }).find("''") != std::string::npos);
  CHECK(invalid_message([] { SocketAddress::parse("1.2.3.4"); }).find("1.2.3.4") != std::string::npos);
  CHECK(invalid_message([] { SocketAddress::parse("1.2.3.4:"); }).find("1.2.3.4:") != std::string::npos);
  CHECK(invalid_message([] { SocketAddress::parse("1.2.3.4:65536"); }).find("65536") != std::string::npos);
  CHECK(invalid_message([] { SocketAddress::parse("1.2.3.4:8x"); }).find("8x") != std::string::npos);
  CHECK(invalid_message([] { SocketAddress::parse("::1:80"); }).find("::1:80") != std::string::npos);
  CHECK(invalid_message([] { SocketAddress::parse("[::1]80"); }).find("[::1]80") != std::string::npos);
  CHECK(invalid_message([] { SocketAddress::parse("[1.2.3.4]:80"); }).find("[1.2.3.4]:80") != std::string::npos);
  CHECK(invalid_message([] { SocketAddress::parse("example.com:80"); }).find("example.com:80") != std::string::npos);
  CHECK_THROWS_AS(SocketAddress::parse("fe80::1%", 80), std::invalid_argument);
  CHECK_THROWS_AS(SocketAddress::parse("fe80::1%no-such-interface0", 80), std::invalid_argument);
}

TEST_CASE("address: Unix paths, abstract names and their limits") {
  auto a = SocketAddress::unix_path("/tmp/spindle.sock");
  CHECK(a.family() == AF_UNIX);
  CHECK(a.path() == "/tmp/spindle.sock");
  CHECK(a.to_string() == "unix:/tmp/spindle.sock");
  CHECK(a.port() == 0);
  CHECK(a.ip().empty());
  CHECK(a == SocketAddress::unix_path("/tmp/spindle.sock"));
  CHECK_FALSE(a == SocketAddress::unix_path("/tmp/spindle.sock2"));

  using namespace std::string_view_literals;
  auto abstract = SocketAddress::unix_path("\0spindle-test"sv);
  CHECK(abstract.path() == "\0spindle-test"sv);
  CHECK(abstract.to_string() == "unix:@spindle-test");
  CHECK(abstract.native_size() == offsetof(sockaddr_un, sun_path) + 13);

  constexpr std::size_t cap = sizeof(sockaddr_un::sun_path);
  CHECK_NOTHROW(SocketAddress::unix_path(std::string(cap - 1, 'x')));
  std::string too_long(cap, 'x');
  CHECK(invalid_message([&] { SocketAddress::unix_path(too_long); }).find("too long") != std::string::npos);
  std::string abstract_max(cap, 'x');
  abstract_max[0] = '\0';
  CHECK_NOTHROW(SocketAddress::unix_path(abstract_max));
  CHECK_THROWS_AS(SocketAddress::unix_path(""), std::invalid_argument);
  CHECK_THROWS_AS(SocketAddress::unix_path("/a\0b"sv), std::invalid_argument);
}

TEST_CASE("address: from_native copies kernel forms and rejects bad ones") {
  auto v4 = SocketAddress::parse("192.0.2.7", 53);
  CHECK(SocketAddress::from_native(v4.native(), v4.native_size()) == v4);
  auto v6 = SocketAddress::parse("2001:db8::7", 53);
  CHECK(SocketAddress::from_native(v6.native(), v6.native_size()) == v6);

  // The kernel may report a Unix path's length with the NUL or with
  // padding; both normalise to the same address.
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strcpy(sun.sun_path, "/run/x.sock");
  auto padded = SocketAddress::from_native(reinterpret_cast<sockaddr*>(&sun), sizeof(sun));
  CHECK(padded.path() == "/run/x.sock");
  CHECK(padded == SocketAddress::unix_path("/run/x.sock"));
  // An unnamed socket (a connected client) has only the family.
  auto unnamed = SocketAddress::from_native(reinterpret_cast<sockaddr*>(&sun), sizeof(sa_family_t));
  CHECK(unnamed.family() == AF_UNIX);
  CHECK(unnamed.path().empty());
  CHECK(unnamed.to_string() == "unix:");

  CHECK_THROWS_AS(SocketAddress::from_native(v4.native(), sizeof(sockaddr_in) - 1), std::invalid_argument);
  CHECK_THROWS_AS(SocketAddress::from_native(v6.native(), sizeof(sockaddr_in6) - 1), std::invalid_argument);
  CHECK_THROWS_AS(SocketAddress::from_native(nullptr, 16), std::invalid_argument);
  sockaddr_storage other{};
  other.ss_family = AF_APPLETALK;
  CHECK_THROWS_AS(SocketAddress::from_native(reinterpret_cast<sockaddr*>(&other), sizeof(other)),
                  std::invalid_argument);
}

TEST_CASE("address: equality compares family, address and port") {
  CHECK(SocketAddress::parse("1.2.3.4", 1) == SocketAddress::parse("1.2.3.4", 1));
  CHECK_FALSE(SocketAddress::parse("1.2.3.4", 1) == SocketAddress::parse("1.2.3.4", 2));
  CHECK_FALSE(SocketAddress::parse("1.2.3.4", 1) == SocketAddress::parse("1.2.3.5", 1));
  CHECK_FALSE(SocketAddress::parse("::ffff:1.2.3.4", 1) == SocketAddress::parse("1.2.3.4", 1));
  CHECK_FALSE(SocketAddress::parse("1.2.3.4", 0) == SocketAddress::unix_path("/x"));
  CHECK_FALSE(SocketAddress() == SocketAddress::parse("0.0.0.0", 0));
}
