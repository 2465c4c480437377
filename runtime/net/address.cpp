// SocketAddress parsing and formatting. Numeric only: nothing here can block,
// so it is safe on a fiber's path (if_nametoindex is an ioctl on a local
// socket, not a lookup).
#include <spindle/net/address.hpp>

#include <arpa/inet.h>
#include <fmt/core.h>
#include <net/if.h>

#include <charconv>
#include <cstddef>
#include <cstring>
#include <stdexcept>

namespace spindle::net {

namespace {

constexpr std::size_t kUnixPathOffset = offsetof(sockaddr_un, sun_path);

[[noreturn]] void invalid(std::string_view what, std::string_view text) {
  throw std::invalid_argument(fmt::format("{}: '{}'", what, text));
}

// Parses "fe80::1%eth0"'s scope: an interface name, or a decimal index.
std::uint32_t parse_scope(std::string_view scope, std::string_view whole) {
  if (scope.empty()) invalid("SocketAddress: empty IPv6 scope", whole);
  std::uint32_t index = 0;
  auto [end, ec] = std::from_chars(scope.data(), scope.data() + scope.size(), index);
  if (ec == std::errc{} && end == scope.data() + scope.size()) return index;
  std::string name(scope);
  index = ::if_nametoindex(name.c_str());
  if (index == 0) invalid("SocketAddress: unknown IPv6 scope interface", whole);
  return index;
}

std::uint16_t parse_port(std::string_view text, std::string_view whole) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() ||
      value > 65535) {
    invalid("SocketAddress: bad port", whole);
  }
  return static_cast<std::uint16_t>(value);
}

}  // namespace

SocketAddress SocketAddress::from_native(const sockaddr* sa, socklen_t len) {
  if (sa == nullptr || len < static_cast<socklen_t>(sizeof(sa_family_t)) ||
      len > static_cast<socklen_t>(sizeof(sockaddr_storage))) {
    throw std::invalid_argument(
        fmt::format("SocketAddress::from_native: bad length {}", len));
  }
  SocketAddress out;
  switch (sa->sa_family) {
    case AF_INET:
      if (len < static_cast<socklen_t>(sizeof(sockaddr_in))) break;
      std::memcpy(&out.storage_, sa, sizeof(sockaddr_in));
      out.size_ = sizeof(sockaddr_in);
      return out;
    case AF_INET6:
      if (len < static_cast<socklen_t>(sizeof(sockaddr_in6))) break;
      std::memcpy(&out.storage_, sa, sizeof(sockaddr_in6));
      out.size_ = sizeof(sockaddr_in6);
      return out;
    case AF_UNIX: {
      std::memcpy(&out.storage_, sa, len);
      out.size_ = len;
      // The kernel may count a filesystem path's NUL, or padding, in len;
      // normalise to path + NUL so equal paths compare and print equal.
      // storage_ is zero-filled and larger than sockaddr_un, so strnlen
      // always finds a terminator.
      const char* path = reinterpret_cast<const sockaddr_un*>(&out.storage_)->sun_path;
      if (len > kUnixPathOffset && path[0] != '\0') {
        std::size_t n = ::strnlen(path, len - kUnixPathOffset);
        out.size_ = static_cast<socklen_t>(kUnixPathOffset + n + 1);
      }
      return out;
    }
    default:
      throw std::invalid_argument(fmt::format(
          "SocketAddress::from_native: unsupported family {}", sa->sa_family));
  }
  throw std::invalid_argument(fmt::format(
      "SocketAddress::from_native: length {} too short for family {}", len,
      sa->sa_family));
}

SocketAddress SocketAddress::parse(std::string_view ip, std::uint16_t port) {
  std::string_view text = ip;
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  SocketAddress out;
  // inet_pton wants a NUL-terminated string; addresses are short.
  char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  if (text.empty() || text.size() >= sizeof(buf)) {
    invalid("SocketAddress: not a numeric IP address", ip);
  }
  if (text.find(':') == std::string_view::npos) {
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';
    auto* sin = reinterpret_cast<sockaddr_in*>(&out.storage_);
    if (::inet_pton(AF_INET, buf, &sin->sin_addr) != 1) {
      invalid("SocketAddress: not a numeric IP address", ip);
    }
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    out.size_ = sizeof(sockaddr_in);
    return out;
  }
  std::string_view addr = text;
  std::uint32_t scope = 0;
  if (auto pct = text.find('%'); pct != std::string_view::npos) {
    addr = text.substr(0, pct);
    scope = parse_scope(text.substr(pct + 1), ip);
  }
  std::memcpy(buf, addr.data(), addr.size());
  buf[addr.size()] = '\0';
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&out.storage_);
  if (::inet_pton(AF_INET6, buf, &sin6->sin6_addr) != 1) {
    invalid("SocketAddress: not a numeric IP address", ip);
  }
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(port);
  sin6->sin6_scope_id = scope;
  out.size_ = sizeof(sockaddr_in6);
  return out;
}

SocketAddress SocketAddress::parse(std::string_view host_port) {
  std::string_view host;
  std::string_view port;
  if (!host_port.empty() && host_port.front() == '[') {
    auto close = host_port.find(']');
    if (close == std::string_view::npos || close + 1 >= host_port.size() ||
        host_port[close + 1] != ':') {
      invalid("SocketAddress: expected [ipv6]:port", host_port);
    }
    host = host_port.substr(1, close - 1);
    port = host_port.substr(close + 2);
  } else {
    auto colon = host_port.rfind(':');
    // A bare IPv6 address has several colons; without brackets its port
    // cannot be told apart, so demand them.
    if (colon == std::string_view::npos ||
        host_port.substr(0, colon).find(':') != std::string_view::npos) {
      invalid("SocketAddress: expected ip:port or [ipv6]:port", host_port);
    }
    host = host_port.substr(0, colon);
    port = host_port.substr(colon + 1);
  }
  std::uint16_t p = parse_port(port, host_port);
  SocketAddress out;
  try {
    out = parse(host, p);
  } catch (const std::invalid_argument&) {
    invalid("SocketAddress: not a numeric ip:port", host_port);
  }
  // "[1.2.3.4]:80" is not a valid form: brackets are for IPv6 only.
  if (host_port.front() == '[' && out.family() != AF_INET6) {
    invalid("SocketAddress: brackets around an IPv4 address", host_port);
  }
  return out;
}

SocketAddress SocketAddress::unix_path(std::string_view path) {
  constexpr std::size_t capacity = sizeof(sockaddr_un::sun_path);
  if (path.empty()) invalid("SocketAddress: empty Unix socket path", path);
  bool abstract = path.front() == '\0';
  if (!abstract && path.find('\0') != std::string_view::npos) {
    invalid("SocketAddress: NUL inside a Unix socket path", path);
  }
  // A filesystem path needs room for its terminating NUL; an abstract name
  // is counted by length and may use every byte.
  if (path.size() + (abstract ? 0 : 1) > capacity) {
    throw std::invalid_argument(fmt::format(
        "SocketAddress: Unix socket path too long ({} bytes, at most {}): '{}'",
        path.size(), abstract ? capacity : capacity - 1, path));
  }
  SocketAddress out;
  auto* sun = reinterpret_cast<sockaddr_un*>(&out.storage_);
  sun->sun_family = AF_UNIX;
  std::memcpy(sun->sun_path, path.data(), path.size());
  out.size_ = static_cast<socklen_t>(kUnixPathOffset + path.size() + (abstract ? 0 : 1));
  return out;
}

int SocketAddress::family() const noexcept { return storage_.ss_family; }

std::uint16_t SocketAddress::port() const noexcept {
  switch (storage_.ss_family) {
    case AF_INET:
      return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
    case AF_INET6:
      return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
    default:
      return 0;
  }
}

std::string SocketAddress::ip() const {
  char buf[INET6_ADDRSTRLEN];
  switch (storage_.ss_family) {
    case AF_INET: {
      auto* sin = reinterpret_cast<const sockaddr_in*>(&storage_);
      ::inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
      return buf;
    }
    case AF_INET6: {
      auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
      ::inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
      std::string out = buf;
      if (sin6->sin6_scope_id != 0) {
        char name[IF_NAMESIZE];
        if (::if_indextoname(sin6->sin6_scope_id, name) != nullptr) {
          out += fmt::format("%{}", name);
        } else {
          out += fmt::format("%{}", sin6->sin6_scope_id);
        }
      }
      return out;
    }
    default:
      return {};
  }
}

std::string SocketAddress::path() const {
  if (storage_.ss_family != AF_UNIX || size_ <= kUnixPathOffset) return {};
  auto* sun = reinterpret_cast<const sockaddr_un*>(&storage_);
  if (sun->sun_path[0] == '\0') {
    return std::string(sun->sun_path, size_ - kUnixPathOffset);
  }
  return std::string(sun->sun_path, ::strnlen(sun->sun_path, size_ - kUnixPathOffset));
}

std::string SocketAddress::to_string() const {
  switch (storage_.ss_family) {
    case AF_INET:
      return fmt::format("{}:{}", ip(), port());
    case AF_INET6:
      return fmt::format("[{}]:{}", ip(), port());
    case AF_UNIX: {
      std::string p = path();
      if (!p.empty() && p.front() == '\0') p.front() = '@';
      return "unix:" + p;
    }
    default:
      return "unspecified";
  }
}

bool operator==(const SocketAddress& a, const SocketAddress& b) noexcept {
  if (a.family() != b.family()) return false;
  switch (a.family()) {
    case AF_INET: {
      auto* x = reinterpret_cast<const sockaddr_in*>(&a.storage_);
      auto* y = reinterpret_cast<const sockaddr_in*>(&b.storage_);
      return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    case AF_INET6: {
      auto* x = reinterpret_cast<const sockaddr_in6*>(&a.storage_);
      auto* y = reinterpret_cast<const sockaddr_in6*>(&b.storage_);
      return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
             std::memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(in6_addr)) == 0;
    }
    case AF_UNIX:
      return a.size_ == b.size_ &&
             std::memcmp(&a.storage_, &b.storage_, a.size_) == 0;
    default:
      return true;
  }
}

}  // namespace spindle::net
