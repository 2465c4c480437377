// The fd owner and the stream-socket surface shared by TcpStream and
// UnixStream. All blocking goes through detail::retry_io, so every call
// parks on the scheduler instead of blocking the thread.
#include <spindle/net/socket.hpp>

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <spindle/detail/assert.hpp>
#include <spindle/detail/fiber.hpp>
#include <spindle/error.hpp>
#include <spindle/this_fiber.hpp>
#include <system_error>

#include "platform/syscall.hpp"
#include "runtime/scheduler.hpp"

namespace spindle::net::detail {

namespace {

// How much read_until asks the kernel for at a time (capped by what the
// limit still allows, plus one byte to tell "limit reached" from "more").
constexpr std::size_t kReadChunk = 4096;

// Back-off bounds for resource exhaustion (accept) and full Unix backlogs.
constexpr std::chrono::milliseconds kBackoffMin{1};
constexpr std::chrono::milliseconds kBackoffMax{100};

SocketAddress socket_name(int fd, const SocketAddress* peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (fd < 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) {
    int err = fd < 0 ? EBADF : errno;
    throw_io_error(err, "getsockname", fd, peer);
  }
  return SocketAddress::from_native(reinterpret_cast<sockaddr*>(&ss), len);
}

}  // namespace

void throw_io_error(int err, std::string_view call, int fd, const SocketAddress* peer) {
  spindle::detail::raise_off_small_stack([&] {
    if (peer != nullptr && peer->family() != AF_UNSPEC) {
      platform::throw_system_error(err, fmt::format("{}(fd={}, {})", call, fd, peer->to_string()));
    }
    platform::throw_system_error(err, fmt::format("{}(fd={})", call, fd));
  });
}

void enter_blocking(const char* call) { spindle::detail::enter_wait(call); }

int Descriptor::release() noexcept {
  if (fd_ >= 0) spindle::forget_fd(fd_);
  return std::exchange(fd_, -1);
}

void Descriptor::close() noexcept {
  if (fd_ < 0) return;
  int fd = std::exchange(fd_, -1);
  spindle::forget_fd(fd);
  ::close(fd);
}

void make_nonblocking(int fd) {
  int flags = platform::retry_eintr([&] { return ::fcntl(fd, F_GETFL); });
  if (flags < 0 || ((flags & O_NONBLOCK) == 0 &&
                    platform::retry_eintr([&] { return ::fcntl(fd, F_SETFL, flags | O_NONBLOCK); }) < 0)) {
    int err = errno;
    platform::throw_system_error(err, fmt::format("fcntl(fd={}, O_NONBLOCK)", fd));
  }
  int fdflags = platform::retry_eintr([&] { return ::fcntl(fd, F_GETFD); });
  if (fdflags < 0 || ((fdflags & FD_CLOEXEC) == 0 &&
                      platform::retry_eintr([&] { return ::fcntl(fd, F_SETFD, fdflags | FD_CLOEXEC); }) < 0)) {
    int err = errno;
    platform::throw_system_error(err, fmt::format("fcntl(fd={}, FD_CLOEXEC)", fd));
  }
}

// ------------------------------------------------------------ StreamSocket

std::size_t StreamSocket::take_buffered(std::span<std::byte> buf) noexcept {
  std::size_t n = std::min(buf.size(), buffered());
  std::memcpy(buf.data(), ahead_.data() + ahead_pos_, n);
  ahead_pos_ += n;
  if (ahead_pos_ == ahead_.size()) {
    ahead_.clear();
    ahead_pos_ = 0;
  }
  return n;
}

// One read(2) worth, parking until it returns something; no buffer involved.
std::size_t StreamSocket::read_raw(void* buf, std::size_t len) {
  int fd = fd_.get();
  if (fd < 0) throw_io_error(EBADF, "read", fd, &peer_);
  if (drained_) {
    // Returns at once if an edge arrived since the short read, or if the
    // peer's FIN or an error was reported: those edges are not repeated.
    drained_ = false;
    spindle::detail::wait_readable_unless_closed(fd, "read");
  }
  ssize_t n = retry_io(fd, Direction::read, [&] { return ::read(fd, buf, len); });
  if (n < 0) {
    int err = errno;
    throw_io_error(err, "read", fd, &peer_);
  }
  drained_ = short_read_drains_ && n > 0 && static_cast<std::size_t>(n) < len;
  return static_cast<std::size_t>(n);
}

std::size_t StreamSocket::read_some(std::span<std::byte> buf) {
  enter_blocking("spindle::net::StreamSocket::read_some");
  if (buf.empty()) return 0;
  if (buffered() > 0) return take_buffered(buf);
  return read_raw(buf.data(), buf.size());
}

void StreamSocket::read_exact(std::span<std::byte> buf) {
  enter_blocking("spindle::net::StreamSocket::read_exact");
  std::size_t got = take_buffered(buf);
  while (got < buf.size()) {
    std::size_t n = read_raw(buf.data() + got, buf.size() - got);
    if (n == 0) {
      spindle::detail::raise_off_small_stack([&] {
        throw UnexpectedEof(fmt::format("read_exact(fd={}, {}): EOF after {} of {} bytes", fd_.get(),
                                        peer_.to_string(), got, buf.size()),
                            got, buf.size());
      });
    }
    got += n;
  }
}

std::size_t StreamSocket::read_until(std::string& out, std::string_view delim, std::size_t max) {
  enter_blocking("spindle::net::StreamSocket::read_until");
  if (delim.empty()) throw std::invalid_argument("spindle::net read_until: empty delimiter");
  // Where the next search starts, relative to ahead_pos_: a delimiter can
  // straddle the old and the new bytes, so back up delim.size() - 1.
  std::size_t searched = 0;
  for (;;) {
    std::string_view have(ahead_.data() + ahead_pos_, buffered());
    std::size_t at = have.find(delim, searched);
    if (at != std::string_view::npos && at + delim.size() <= max) {
      std::size_t n = at + delim.size();
      out.append(have.substr(0, n));
      ahead_pos_ += n;
      if (ahead_pos_ == ahead_.size()) {
        ahead_.clear();
        ahead_pos_ = 0;
      }
      return n;
    }
    if (at != std::string_view::npos || have.size() >= max) {
      spindle::detail::raise_off_small_stack([&] {
        throw LimitExceeded(fmt::format("read_until(fd={}, {}): no delimiter within {} bytes", fd_.get(),
                                        peer_.to_string(), max),
                            max);
      });
    }
    searched = have.size() >= delim.size() ? have.size() - delim.size() + 1 : 0;
    // Keep the buffer compact: drop the consumed prefix before growing.
    if (ahead_pos_ > 0) {
      ahead_.erase(0, ahead_pos_);
      ahead_pos_ = 0;
    }
    std::size_t old = ahead_.size();
    std::size_t want = std::max<std::size_t>(kReadChunk, std::min(max - old + 1, kReadChunk * 16));
    ahead_.resize(old + want);
    std::size_t n = 0;
    try {
      n = read_raw(ahead_.data() + old, want);
    } catch (...) {
      ahead_.resize(old);
      throw;
    }
    ahead_.resize(old + n);
    if (n == 0) {
      // EOF: hand over the undelimited rest (possibly nothing).
      out.append(ahead_);
      std::size_t rest = ahead_.size();
      ahead_.clear();
      return rest;
    }
  }
}

std::string StreamSocket::read_line(std::size_t max) {
  std::string line;
  read_until(line, "\n", max);
  return line;
}

void StreamSocket::write_all(std::span<const std::byte> data) {
  enter_blocking("spindle::net::StreamSocket::write_all");
  int fd = fd_.get();
  if (fd < 0) throw_io_error(EBADF, "send", fd, &peer_);
  while (!data.empty()) {
    ssize_t n = retry_io(fd, Direction::write,
                         [&] { return ::send(fd, data.data(), data.size(), MSG_NOSIGNAL); });
    if (n < 0) {
      int err = errno;
      throw_io_error(err, "send", fd, &peer_);
    }
    data = data.subspan(static_cast<std::size_t>(n));
  }
}

void StreamSocket::writev_all(std::span<const iovec> parts) {
  enter_blocking("spindle::net::StreamSocket::writev_all");
  int fd = fd_.get();
  if (fd < 0) throw_io_error(EBADF, "sendmsg", fd, &peer_);
  // A partial send may end inside an iovec: keep a private copy of the
  // window still to send, 64 entries per call (well under IOV_MAX).
  iovec window[64];
  std::size_t next = 0;     // first part not yet copied into the window
  std::size_t skip = 0;     // bytes of parts[next] already sent
  while (next < parts.size()) {
    std::size_t count = 0;
    for (std::size_t i = next; i < parts.size() && count < std::size(window); ++i) {
      std::size_t offset = i == next ? skip : 0;
      if (parts[i].iov_len == offset) continue;
      window[count].iov_base = static_cast<char*>(parts[i].iov_base) + offset;
      window[count].iov_len = parts[i].iov_len - offset;
      ++count;
    }
    if (count == 0) return;
    msghdr msg{};
    msg.msg_iov = window;
    msg.msg_iovlen = count;
    ssize_t n = retry_io(fd, Direction::write, [&] { return ::sendmsg(fd, &msg, MSG_NOSIGNAL); });
    if (n < 0) {
      int err = errno;
      throw_io_error(err, "sendmsg", fd, &peer_);
    }
    // Advance (next, skip) past n bytes.
    auto sent = static_cast<std::size_t>(n);
    while (next < parts.size()) {
      std::size_t left = parts[next].iov_len - skip;
      if (sent < left) {
        skip += sent;
        break;
      }
      sent -= left;
      ++next;
      skip = 0;
    }
  }
}

void StreamSocket::shutdown_write() {
  int fd = fd_.get();
  if (fd < 0 || ::shutdown(fd, SHUT_WR) < 0) {
    int err = fd < 0 ? EBADF : errno;
    throw_io_error(err, "shutdown(SHUT_WR)", fd, &peer_);
  }
}

void StreamSocket::close() noexcept {
  fd_.close();
  ahead_.clear();
  ahead_pos_ = 0;
}

SocketAddress StreamSocket::local_address() const { return socket_name(fd_.get(), &peer_); }

// ------------------------------------------------------- connect, accept

Descriptor open_socket(int family, int type) {
  int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int err = errno;
    platform::throw_system_error(err, fmt::format("socket(family={}, type={})", family, type));
  }
  return Descriptor(fd);
}

Descriptor connect_stream(const SocketAddress& addr) {
  enter_blocking("spindle::net::connect");
  Descriptor sock = open_socket(addr.family(), SOCK_STREAM);
  int fd = sock.get();
  auto backoff = kBackoffMin;
  for (;;) {
    if (::connect(fd, addr.native(), addr.native_size()) == 0) return sock;
    int err = errno;
    if (err == EAGAIN && addr.family() == AF_UNIX) {
      // Linux: a full Unix backlog; nothing is in progress and no readiness
      // event will announce room, so poll with a bounded back-off.
      this_fiber::sleep_for(backoff);
      backoff = std::min(backoff * 2, kBackoffMax);
      continue;
    }
    // EINTR: the connect goes on asynchronously, exactly as EINPROGRESS.
    if (err != EINPROGRESS && err != EINTR) throw_io_error(err, "connect", fd, &addr);
    break;
  }
  // Writable means the handshake finished, one way or the other; an older
  // edge may wake us early, so SO_ERROR == 0 alone is not proof: confirm
  // with getpeername (ENOTCONN while still in progress).
  for (;;) {
    try {
      spindle::wait_writable(fd);
    } catch (const TimeoutError&) {
      // A Timeout scope ended the handshake: name the call and the peer, as
      // every other failure of connect does. The socket is closed on the way
      // out (sock owns it), which abandons the attempt.
      spindle::detail::raise_off_small_stack(
          [&] { throw TimeoutError(fmt::format("connect(fd={}, {}): Timeout expired", fd, addr.to_string())); });
    }
    int so_error = 0;
    socklen_t len = sizeof(so_error);
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) < 0) {
      int err = errno;
      throw_io_error(err, "getsockopt(SO_ERROR)", fd, &addr);
    }
    if (so_error != 0) throw_io_error(so_error, "connect", fd, &addr);
    sockaddr_storage ss{};
    socklen_t sslen = sizeof(ss);
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &sslen) == 0) return sock;
    int err = errno;
    if (err != ENOTCONN) throw_io_error(err, "connect", fd, &addr);
  }
}

SocketAddress ListenerSocket::local_address() const { return socket_name(fd_.get(), nullptr); }

ListenerSocket::Connection ListenerSocket::accept_connection() {
  enter_blocking("spindle::net::accept");
  int fd = fd_.get();
  if (fd < 0) throw_io_error(EBADF, "accept4", fd, nullptr);
  auto backoff = kBackoffMin;
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int conn = static_cast<int>(retry_io(fd, Direction::read, [&] {
      return ::accept4(fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    }));
    if (conn >= 0) {
      backing_off_ = false;  // the episode is over; the next one logs again
      Descriptor owned(conn);
      return {std::move(owned), SocketAddress::from_native(reinterpret_cast<sockaddr*>(&ss), len)};
    }
    int err = errno;
    switch (err) {
      // The connection died between SYN and accept, or the kernel reports a
      // network error that accept(2) on Linux says to treat as EAGAIN: the
      // listener itself is fine, so take the next one.
      case ECONNABORTED:
      case EPROTO:
      case ENETDOWN:
      case ENOPROTOOPT:
      case EHOSTDOWN:
      case ENONET:
      case EHOSTUNREACH:
      case EOPNOTSUPP:
      case ENETUNREACH:
      case EPERM:  // a firewall rule refused it
        continue;
      // Out of descriptors or memory: keep serving the open connections and
      // try again a little later; the new one waits in the backlog.
      case EMFILE:
      case ENFILE:
      case ENOBUFS:
      case ENOMEM: {
        if (!backing_off_) {
          backing_off_ = true;
          std::error_code ec(err, std::system_category());
          fmt::print(stderr, "spindle: accept4(fd={}): {}; backing off until resources are freed\n", fd,
                     ec.message());
          std::fflush(stderr);
        }
        this_fiber::sleep_for(backoff);
        backoff = std::min(backoff * 2, kBackoffMax);
        // The listener may have been closed while we slept.
        fd = fd_.get();
        if (fd < 0) throw_io_error(EBADF, "accept4", fd, nullptr);
        continue;
      }
      default:
        throw_io_error(err, "accept4", fd, nullptr);
    }
  }
}

}  // namespace spindle::net::detail
