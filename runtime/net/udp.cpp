// UDP over detail::retry_io: one syscall per datagram, parking on EAGAIN.
#include <spindle/net/udp.hpp>

#include <fmt/core.h>
#include <sys/socket.h>

#include <stdexcept>

#include "platform/syscall.hpp"

namespace spindle::net {

namespace {

using detail::Direction;
using detail::retry_io;
using detail::throw_io_error;

void set_flag(int fd, int option, const char* name, const SocketAddress& addr) {
  int one = 1;
  if (::setsockopt(fd, SOL_SOCKET, option, &one, sizeof(one)) < 0) {
    int err = errno;
    platform::throw_system_error(err, fmt::format("setsockopt(fd={}, {}, {})", fd, name, addr.to_string()));
  }
}

}  // namespace

UdpSocket UdpSocket::bind(const SocketAddress& addr, const UdpOptions& options) {
  if (addr.family() != AF_INET && addr.family() != AF_INET6) {
    throw std::invalid_argument(fmt::format("UdpSocket::bind: not an IP address: {}", addr.to_string()));
  }
  detail::Descriptor sock = detail::open_socket(addr.family(), SOCK_DGRAM);
  int fd = sock.get();
  if (options.reuse_address) set_flag(fd, SO_REUSEADDR, "SO_REUSEADDR", addr);
  if (options.reuse_port) set_flag(fd, SO_REUSEPORT, "SO_REUSEPORT", addr);
  if (options.broadcast) set_flag(fd, SO_BROADCAST, "SO_BROADCAST", addr);
  if (::bind(fd, addr.native(), addr.native_size()) < 0) {
    int err = errno;
    throw_io_error(err, "bind", fd, &addr);
  }
  UdpSocket s;
  s.fd_ = std::move(sock);
  return s;
}

void UdpSocket::connect(const SocketAddress& peer) {
  int fd = fd_.get();
  if (fd < 0 || ::connect(fd, peer.native(), peer.native_size()) < 0) {
    int err = fd < 0 ? EBADF : errno;
    throw_io_error(err, "connect", fd, &peer);
  }
  peer_ = peer;
}

std::size_t UdpSocket::send_to(std::span<const std::byte> data, const SocketAddress& to) {
  detail::enter_blocking("spindle::net::UdpSocket::send_to");
  int fd = fd_.get();
  if (fd < 0) throw_io_error(EBADF, "sendto", fd, &to);
  ssize_t n = retry_io(fd, Direction::write, [&] {
    return ::sendto(fd, data.data(), data.size(), MSG_NOSIGNAL, to.native(), to.native_size());
  });
  if (n < 0) {
    int err = errno;
    throw_io_error(err, "sendto", fd, &to);
  }
  return static_cast<std::size_t>(n);
}

UdpSocket::Received UdpSocket::recv_from(std::span<std::byte> buf) {
  detail::enter_blocking("spindle::net::UdpSocket::recv_from");
  int fd = fd_.get();
  if (fd < 0) throw_io_error(EBADF, "recvmsg", fd, &peer_);
  sockaddr_storage ss{};
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  ssize_t n = retry_io(fd, Direction::read, [&] {
    msg = msghdr{};
    msg.msg_name = &ss;
    msg.msg_namelen = sizeof(ss);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    return ::recvmsg(fd, &msg, 0);
  });
  if (n < 0) {
    int err = errno;
    throw_io_error(err, "recvmsg", fd, &peer_);
  }
  return {static_cast<std::size_t>(n), SocketAddress::from_native(reinterpret_cast<sockaddr*>(&ss), msg.msg_namelen),
          (msg.msg_flags & MSG_TRUNC) != 0};
}

std::size_t UdpSocket::send(std::span<const std::byte> data) {
  detail::enter_blocking("spindle::net::UdpSocket::send");
  int fd = fd_.get();
  if (fd < 0) throw_io_error(EBADF, "send", fd, &peer_);
  ssize_t n = retry_io(fd, Direction::write, [&] { return ::send(fd, data.data(), data.size(), MSG_NOSIGNAL); });
  if (n < 0) {
    int err = errno;
    throw_io_error(err, "send", fd, &peer_);
  }
  return static_cast<std::size_t>(n);
}

std::size_t UdpSocket::recv(std::span<std::byte> buf) {
  detail::enter_blocking("spindle::net::UdpSocket::recv");
  int fd = fd_.get();
  if (fd < 0) throw_io_error(EBADF, "recv", fd, &peer_);
  ssize_t n = retry_io(fd, Direction::read, [&] { return ::recv(fd, buf.data(), buf.size(), 0); });
  if (n < 0) {
    int err = errno;
    throw_io_error(err, "recv", fd, &peer_);
  }
  return static_cast<std::size_t>(n);
}

SocketAddress UdpSocket::local_address() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  int fd = fd_.get();
  if (fd < 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) {
    int err = fd < 0 ? EBADF : errno;
    throw_io_error(err, "getsockname", fd, nullptr);
  }
  return SocketAddress::from_native(reinterpret_cast<sockaddr*>(&ss), len);
}

}  // namespace spindle::net
