// UDP datagram sockets.
//
//   auto server = spindle::net::UdpSocket::bind(SocketAddress::parse("127.0.0.1", 0));
//   auto [n, from, truncated] = server.recv_from(std::span(buf));
//   server.send_to(std::span(buf, n), from);
//
// One call moves one datagram. recv parks until a datagram arrives; send
// parks only while the socket buffer is full. Errors are std::system_error
// naming the call, the fd and the peer. On a connected socket an ICMP "port
// unreachable" from an earlier send surfaces as ECONNREFUSED on a later
// call. A timed-out or cancelled recv or send leaves no registration, loses
// no datagram, and the socket stays usable: a send either went out whole or
// not at all.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include <spindle/net/address.hpp>
#include <spindle/net/socket.hpp>

namespace spindle::net {

struct UdpOptions {
  bool reuse_address = false;  // SO_REUSEADDR
  bool reuse_port = false;     // SO_REUSEPORT
  bool broadcast = false;      // SO_BROADCAST: allow sending to broadcast addresses
};

class UdpSocket {
 public:
  struct Received {
    std::size_t size;     // bytes stored in the buffer
    SocketAddress peer;   // the sender
    bool truncated;       // the datagram was longer than the buffer; the rest is gone
  };

  UdpSocket() noexcept = default;  // not open

  // Opens an IPv4 or IPv6 datagram socket bound to addr (port 0 picks one).
  // A client binds the wildcard ("0.0.0.0", 0) and then connect()s or uses
  // send_to. Errors name bind and the address.
  static UdpSocket bind(const SocketAddress& addr, const UdpOptions& options = {});

  // Sets the default peer for send/recv and filters incoming datagrams to
  // it. Does not block (no handshake).
  void connect(const SocketAddress& peer);

  // Sends one datagram; returns its size. EMSGSIZE for one that is too big.
  std::size_t send_to(std::span<const std::byte> data, const SocketAddress& to);
  std::size_t send_to(std::string_view data, const SocketAddress& to) {
    return send_to(std::as_bytes(std::span(data)), to);
  }
  // Receives one datagram (parks until one arrives).
  Received recv_from(std::span<std::byte> buf);
  Received recv_from(std::span<char> buf) { return recv_from(std::as_writable_bytes(buf)); }

  // The connected forms (after connect()).
  std::size_t send(std::span<const std::byte> data);
  std::size_t send(std::string_view data) { return send(std::as_bytes(std::span(data))); }
  // Returns the datagram's size in buf; a longer datagram is cut to
  // buf.size() (see recv_from to learn about truncation).
  std::size_t recv(std::span<std::byte> buf);
  std::size_t recv(std::span<char> buf) { return recv(std::as_writable_bytes(buf)); }

  SocketAddress local_address() const;
  // The connect()ed peer, or unspecified.
  const SocketAddress& peer_address() const noexcept { return peer_; }
  void close() noexcept { fd_.close(); }
  bool is_open() const noexcept { return fd_.is_open(); }
  int native_handle() const noexcept { return fd_.get(); }

 private:
  detail::Descriptor fd_;
  SocketAddress peer_;
};

}  // namespace spindle::net
