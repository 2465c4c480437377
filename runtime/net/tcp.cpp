// TCP: listener setup, accept, and connect by address or by name. The I/O
// itself lives in detail::StreamSocket (socket.cpp).
#include <spindle/net/tcp.hpp>

#include <fmt/core.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <optional>
#include <spindle/error.hpp>
#include <spindle/net/dns.hpp>
#include <string>
#include <system_error>

#include "platform/syscall.hpp"

namespace spindle::net {

namespace {

void set_flag(int fd, int level, int option, bool on, const char* name, const SocketAddress& addr) {
  int value = on ? 1 : 0;
  if (::setsockopt(fd, level, option, &value, sizeof(value)) < 0) {
    int err = errno;
    platform::throw_system_error(err, fmt::format("setsockopt(fd={}, {}, {})", fd, name, addr.to_string()));
  }
}

}  // namespace

TcpStream TcpStream::connect(const SocketAddress& addr) {
  if (addr.family() != AF_INET && addr.family() != AF_INET6) {
    throw std::invalid_argument(fmt::format("TcpStream::connect: not an IP address: {}", addr.to_string()));
  }
  return TcpStream(detail::connect_stream(addr), addr);
}

TcpStream TcpStream::connect(std::string_view host, std::uint16_t port) {
  std::optional<SocketAddress> numeric;
  try {
    numeric = SocketAddress::parse(host, port);
  } catch (const std::invalid_argument&) {
    // Not numeric: a name for the resolver.
  }
  if (numeric) return connect(*numeric);
  std::vector<SocketAddress> addrs = resolve(host, std::to_string(port));
  std::error_code last_error;
  SocketAddress last_addr;
  for (const SocketAddress& addr : addrs) {
    try {
      return connect(addr);
    } catch (const TimeoutError&) {
      // A Timeout scope is about the whole call, not this address.
      throw;
    } catch (const std::system_error& e) {
      last_error = e.code();
      last_addr = addr;
    }
  }
  // resolve never returns an empty list, so last_addr names a real attempt.
  throw std::system_error(last_error, fmt::format("connect({}:{}): {} address(es) failed, last tried {}", host,
                                                  port, addrs.size(), last_addr.to_string()));
}

TcpStream TcpStream::from_fd(int fd) {
  detail::Descriptor owned(fd);
  detail::make_nonblocking(fd);
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) {
    int err = errno;
    platform::throw_system_error(err, fmt::format("getpeername(fd={})", fd));
  }
  return TcpStream(std::move(owned), SocketAddress::from_native(reinterpret_cast<sockaddr*>(&ss), len));
}

void TcpStream::set_nodelay(bool on) {
  int value = on ? 1 : 0;
  int fd = native_handle();
  if (fd < 0 || ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &value, sizeof(value)) < 0) {
    int err = fd < 0 ? EBADF : errno;
    detail::throw_io_error(err, "setsockopt(TCP_NODELAY)", fd, &peer_address());
  }
}

TcpListener TcpListener::bind(const SocketAddress& addr, const ListenOptions& options) {
  if (addr.family() != AF_INET && addr.family() != AF_INET6) {
    throw std::invalid_argument(fmt::format("TcpListener::bind: not an IP address: {}", addr.to_string()));
  }
  detail::Descriptor sock = detail::open_socket(addr.family(), SOCK_STREAM);
  int fd = sock.get();
  if (options.reuse_address) set_flag(fd, SOL_SOCKET, SO_REUSEADDR, true, "SO_REUSEADDR", addr);
  if (options.reuse_port) set_flag(fd, SOL_SOCKET, SO_REUSEPORT, true, "SO_REUSEPORT", addr);
  if (addr.family() == AF_INET6) set_flag(fd, IPPROTO_IPV6, IPV6_V6ONLY, options.v6_only, "IPV6_V6ONLY", addr);
  if (::bind(fd, addr.native(), addr.native_size()) < 0) {
    int err = errno;
    detail::throw_io_error(err, "bind", fd, &addr);
  }
  if (::listen(fd, options.backlog) < 0) {
    int err = errno;
    detail::throw_io_error(err, "listen", fd, &addr);
  }
  return TcpListener(std::move(sock));
}

TcpListener::Accepted TcpListener::accept() {
  Connection c = accept_connection();
  SocketAddress peer = c.peer;
  return {TcpStream(std::move(c.fd), std::move(c.peer)), std::move(peer)};
}

}  // namespace spindle::net
