// TCP streams and listeners.
//
//   auto listener = spindle::net::TcpListener::bind(SocketAddress::parse("127.0.0.1", 0));
//   auto [conn, peer] = listener.accept();
//   std::string line = conn.read_line();
//   conn.write_all(line);
//
//   auto client = spindle::net::TcpStream::connect("localhost", 8080);
//
// TcpStream's read/write surface (read_some, read_exact, read_until,
// read_line, write_all, writev_all, shutdown_write, ...) and what each call
// leaves behind when it times out or is cancelled are documented on
// detail::StreamSocket in <spindle/net/socket.hpp>. Errors are
// std::system_error naming the call, the fd and the peer.
#pragma once

#include <cstdint>
#include <string_view>

#include <spindle/net/address.hpp>
#include <spindle/net/socket.hpp>

namespace spindle::net {

class TcpStream : public detail::StreamSocket {
 public:
  TcpStream() noexcept = default;  // not connected; is_open() is false

  // Connects to addr (IPv4 or IPv6). ECONNREFUSED, ETIMEDOUT (the kernel's
  // SYN retries), ENETUNREACH...: std::system_error naming "connect" and
  // addr. A timed-out (Timeout scope) or cancelled connect closes the
  // socket it was opening; nothing is left behind.
  static TcpStream connect(const SocketAddress& addr);
  // A numeric host ("10.0.0.1", "::1") connects directly; any other name
  // goes through spindle::net::resolve (<spindle/net/dns.hpp>) and each
  // resolved address is tried in order. If all fail, std::system_error with
  // the last error, naming host:port and the last address tried. Resolution
  // errors propagate as resolve throws them.
  static TcpStream connect(std::string_view host, std::uint16_t port);

  // Adopts a connected SOCK_STREAM socket (made non-blocking); the peer is
  // read with getpeername. Throws std::system_error (fd then closed).
  static TcpStream from_fd(int fd);

  // TCP_NODELAY: send small writes at once instead of coalescing them.
  void set_nodelay(bool on);

 private:
  TcpStream(detail::Descriptor fd, SocketAddress peer) noexcept
      : StreamSocket(std::move(fd), std::move(peer)) {
    // from_fd may adopt a Unix stream; only TCP has the property.
    short_read_drains_ = peer_address().family() != AF_UNIX;
  }
  friend class TcpListener;
};

struct ListenOptions {
  int backlog = 1024;          // listen(2); the kernel caps it at somaxconn
  bool reuse_address = true;   // SO_REUSEADDR: rebind while old connections sit in TIME_WAIT
  bool reuse_port = false;     // SO_REUSEPORT: several listeners share the port
  bool v6_only = false;        // IPV6_V6ONLY for IPv6 addresses ("::" then takes IPv6 only)
};

class TcpListener : public detail::ListenerSocket {
 public:
  struct Accepted {
    TcpStream stream;
    SocketAddress peer;
  };

  TcpListener() noexcept = default;  // not listening

  // socket + options + bind + listen. Port 0 picks a free port (read it
  // back with local_address()). EADDRINUSE etc.: std::system_error naming
  // bind and the address.
  static TcpListener bind(const SocketAddress& addr, const ListenOptions& options = {});

  // Parks until a connection arrives; see detail::ListenerSocket for the
  // errors it retries (ECONNABORTED) or rides out (EMFILE).
  Accepted accept();

  // Idempotent; a fiber parked in accept gets std::system_error(EBADF).
  void close() noexcept { fd_.close(); }

 private:
  explicit TcpListener(detail::Descriptor fd) noexcept : ListenerSocket(std::move(fd)) {}
};

}  // namespace spindle::net
