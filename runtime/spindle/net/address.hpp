// SocketAddress: a value type for IPv4, IPv6 and Unix-domain endpoints.
//
//   auto a = spindle::net::SocketAddress::parse("127.0.0.1", 8080);
//   auto b = spindle::net::SocketAddress::parse("[::1]:8080");
//   auto c = spindle::net::SocketAddress::unix_path("/run/app.sock");
//   ::connect(fd, a.native(), a.native_size());
//
// It holds a sockaddr_storage and the length the kernel uses, so it goes to
// and from the socket calls unchanged. Parsing is numeric only (no DNS; see
// <spindle/net/dns.hpp> for names). Bad input throws std::invalid_argument
// naming the text; the accessors never throw except where noted.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace spindle::net {

class SocketAddress {
 public:
  // family() == AF_UNSPEC, native_size() == 0.
  SocketAddress() = default;

  // Copies an address the kernel handed back (accept, getsockname,
  // recvfrom, getaddrinfo). Throws std::invalid_argument if the family is
  // not AF_INET, AF_INET6 or AF_UNIX, or len is too short for it (or longer
  // than sockaddr_storage).
  static SocketAddress from_native(const sockaddr* sa, socklen_t len);

  // Numeric IPv4 ("10.0.0.1") or IPv6 ("::1", "fe80::1%eth0", also
  // "[::1]"); throws std::invalid_argument naming the text otherwise.
  static SocketAddress parse(std::string_view ip, std::uint16_t port);
  // "1.2.3.4:80" or "[::1]:80"; the port is required, decimal, 0..65535.
  static SocketAddress parse(std::string_view host_port);

  // A Unix-domain socket path. A leading '\0' selects Linux's abstract
  // namespace (no file is created). Throws std::invalid_argument if the
  // path is empty or does not fit sun_path (including the terminating NUL
  // for filesystem paths).
  static SocketAddress unix_path(std::string_view path);

  int family() const noexcept;
  // Host byte order; 0 for Unix and unspecified addresses.
  std::uint16_t port() const noexcept;
  // The numeric address text without port or brackets ("::1"); empty for
  // Unix and unspecified addresses.
  std::string ip() const;
  // The Unix path (with its leading '\0' when abstract); empty for others,
  // and for an unnamed Unix socket (a connected client's peer).
  std::string path() const;
  // "1.2.3.4:80", "[::1]:80", "unix:/p", "unix:@name" for abstract paths
  // (the '\0' shown as '@', as ss(8) does), "unix:" for unnamed,
  // "unspecified" for a default-constructed address.
  std::string to_string() const;

  const sockaddr* native() const noexcept {
    return reinterpret_cast<const sockaddr*>(&storage_);
  }
  socklen_t native_size() const noexcept { return size_; }

  // Same family, address bytes and port (IPv6 also flowinfo-independent but
  // scope-id sensitive); Unix addresses compare their paths.
  friend bool operator==(const SocketAddress& a,
                         const SocketAddress& b) noexcept;

 private:
  sockaddr_storage storage_{};
  socklen_t size_ = 0;
};

}  // namespace spindle::net
