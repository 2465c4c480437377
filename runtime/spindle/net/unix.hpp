// Unix-domain stream sockets: the same surface as TCP, addressed by path.
//
//   auto listener = spindle::net::UnixListener::bind(SocketAddress::unix_path("/run/app.sock"));
//   auto [conn, peer] = listener.accept();     // peer is usually unnamed ("unix:")
//   auto client = spindle::net::UnixStream::connect(SocketAddress::unix_path("/run/app.sock"));
//
// The read/write calls and their state after a timeout or cancellation are
// documented on detail::StreamSocket in <spindle/net/socket.hpp>. A
// connect to a listener whose backlog is full retries with a short
// back-off (Linux answers EAGAIN there) until it gets in, times out or is
// cancelled. A leading '\0' in the path selects Linux's abstract namespace:
// no file, nothing to clean up.
#pragma once

#include <sys/types.h>

#include <spindle/net/address.hpp>
#include <spindle/net/socket.hpp>

namespace spindle::net {

class UnixStream : public detail::StreamSocket {
 public:
  UnixStream() noexcept = default;  // not connected

  // ENOENT (no such socket), ECONNREFUSED (a stale socket file nobody
  // listens on): std::system_error naming "connect" and the path. A
  // timed-out or cancelled connect closes the socket it was opening.
  static UnixStream connect(const SocketAddress& addr);

  // socketpair(AF_UNIX, SOCK_STREAM): two connected streams.
  struct Pair;
  static Pair pair();

  // Adopts a connected AF_UNIX stream socket (made non-blocking).
  static UnixStream from_fd(int fd);

 private:
  UnixStream(detail::Descriptor fd, SocketAddress peer) noexcept
      : StreamSocket(std::move(fd), std::move(peer)) {}
  friend class UnixListener;
};

struct UnixStream::Pair {
  UnixStream first;
  UnixStream second;
};

struct UnixListenOptions {
  int backlog = 1024;
  // What bind does when the path already exists:
  //   a socket nobody listens on (connect says ECONNREFUSED): a stale
  //     leftover of a crashed server; it is unlinked and bind proceeds.
  //   a socket someone listens on: bind fails with EADDRINUSE (nothing is
  //     removed: two servers must not steal each other's path). The probe
  //     that tells the two apart is a non-blocking connect, so the live
  //     server sees one connection that closes without data.
  //   anything else (a regular file, a directory): EADDRINUSE, untouched.
  // With remove_stale = false, any existing path fails with EADDRINUSE.
  bool remove_stale = true;
};

class UnixListener : public detail::ListenerSocket {
 public:
  struct Accepted {
    UnixStream stream;
    SocketAddress peer;
  };

  UnixListener() noexcept = default;
  UnixListener(UnixListener&& other) noexcept;
  UnixListener& operator=(UnixListener&& other) noexcept;
  // Closes (and unlinks, see close()).
  ~UnixListener();

  // socket + bind + listen; see UnixListenOptions for an existing path.
  // Errors: std::system_error naming bind (or listen) and the path.
  static UnixListener bind(const SocketAddress& addr, const UnixListenOptions& options = {});

  Accepted accept();

  // Closes the socket and unlinks its filesystem path if the path still
  // names the socket this listener created (same device and inode), so a
  // successor that already rebound the path keeps its own. Idempotent.
  void close() noexcept;

 private:
  UnixListener(detail::Descriptor fd, std::string path, dev_t dev, ino_t ino) noexcept
      : ListenerSocket(std::move(fd)), path_(std::move(path)), dev_(dev), ino_(ino) {}

  std::string path_;  // empty for abstract names: nothing to unlink
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace spindle::net
