// Unix-domain stream sockets: listener setup with stale-path handling, and
// connect. The I/O itself lives in detail::StreamSocket (socket.cpp).
//
// bind, stat and unlink touch the filesystem from the fiber's thread. They
// are setup calls on a local path (bind(2) itself creates the file), not
// per-request I/O, so they are not worth a trip to the blocking pool.
#include <spindle/net/unix.hpp>

#include <fmt/core.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdexcept>

#include "platform/syscall.hpp"

namespace spindle::net {

namespace {

void require_unix(const SocketAddress& addr, const char* call) {
  if (addr.family() != AF_UNIX || addr.path().empty()) {
    throw std::invalid_argument(fmt::format("{}: not a Unix socket path: {}", call, addr.to_string()));
  }
}

// True when the socket file at addr is a leftover nobody listens on. A
// non-blocking connect answers at once: success or EAGAIN (backlog full)
// means a live listener; ECONNREFUSED means nobody has it open.
bool is_stale_socket(const SocketAddress& addr) {
  struct stat st{};
  std::string path = addr.path();
  if (::lstat(path.c_str(), &st) < 0 || !S_ISSOCK(st.st_mode)) return false;
  int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) return false;
  int rc = ::connect(probe, addr.native(), addr.native_size());
  int err = errno;
  ::close(probe);
  return rc < 0 && err == ECONNREFUSED;
}

}  // namespace

UnixStream UnixStream::connect(const SocketAddress& addr) {
  require_unix(addr, "UnixStream::connect");
  return UnixStream(detail::connect_stream(addr), addr);
}

UnixStream::Pair UnixStream::pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0) {
    int err = errno;
    platform::throw_system_error(err, "socketpair(AF_UNIX, SOCK_STREAM)");
  }
  detail::Descriptor a(fds[0]);
  detail::Descriptor b(fds[1]);
  return {UnixStream(std::move(a), SocketAddress()), UnixStream(std::move(b), SocketAddress())};
}

UnixStream UnixStream::from_fd(int fd) {
  detail::Descriptor owned(fd);
  detail::make_nonblocking(fd);
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) {
    int err = errno;
    platform::throw_system_error(err, fmt::format("getpeername(fd={})", fd));
  }
  return UnixStream(std::move(owned), SocketAddress::from_native(reinterpret_cast<sockaddr*>(&ss), len));
}

UnixListener::UnixListener(UnixListener&& other) noexcept
    : ListenerSocket(std::move(other)),
      path_(std::move(other.path_)),
      dev_(std::exchange(other.dev_, 0)),
      ino_(std::exchange(other.ino_, 0)) {
  other.path_.clear();
}

UnixListener& UnixListener::operator=(UnixListener&& other) noexcept {
  if (this != &other) {
    close();
    ListenerSocket::operator=(std::move(other));
    path_ = std::move(other.path_);
    other.path_.clear();
    dev_ = std::exchange(other.dev_, 0);
    ino_ = std::exchange(other.ino_, 0);
  }
  return *this;
}

UnixListener::~UnixListener() { close(); }

UnixListener UnixListener::bind(const SocketAddress& addr, const UnixListenOptions& options) {
  require_unix(addr, "UnixListener::bind");
  detail::Descriptor sock = detail::open_socket(AF_UNIX, SOCK_STREAM);
  int fd = sock.get();
  std::string path = addr.path();
  bool abstract = path.front() == '\0';
  if (::bind(fd, addr.native(), addr.native_size()) < 0) {
    int err = errno;
    if (!(err == EADDRINUSE && !abstract && options.remove_stale && is_stale_socket(addr))) {
      detail::throw_io_error(err, "bind", fd, &addr);
    }
    // Removing the leftover and binding again can still lose a race with
    // another server doing the same; then its EADDRINUSE is the answer.
    ::unlink(path.c_str());
    if (::bind(fd, addr.native(), addr.native_size()) < 0) {
      err = errno;
      detail::throw_io_error(err, "bind", fd, &addr);
    }
  }
  struct stat st{};
  if (!abstract && ::stat(path.c_str(), &st) < 0) {
    int err = errno;
    detail::throw_io_error(err, "stat", fd, &addr);
  }
  if (::listen(fd, options.backlog) < 0) {
    int err = errno;
    if (!abstract) ::unlink(path.c_str());
    detail::throw_io_error(err, "listen", fd, &addr);
  }
  return UnixListener(std::move(sock), abstract ? std::string() : std::move(path), st.st_dev, st.st_ino);
}

UnixListener::Accepted UnixListener::accept() {
  Connection c = accept_connection();
  SocketAddress peer = c.peer;
  return {UnixStream(std::move(c.fd), std::move(c.peer)), std::move(peer)};
}

void UnixListener::close() noexcept {
  if (!path_.empty()) {
    struct stat st{};
    if (::stat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) ::unlink(path_.c_str());
    path_.clear();
  }
  fd_.close();
}

}  // namespace spindle::net
