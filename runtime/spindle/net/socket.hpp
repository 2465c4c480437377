// What every spindle::net byte stream shares: its errors, the fd owner, the
// one "retry the syscall, park on EAGAIN" loop, and the stream-socket surface
// that TcpStream and UnixStream inherit.
//
// Errors, for all of spindle::net:
//   std::system_error  an OS failure; the message names the call, the fd and,
//                      for sockets, the peer: "send(fd=7, 127.0.0.1:8080)".
//                      EOF is not an error: read_some returns 0.
//   UnexpectedEof      read_exact (and StreamReader::read_exactly) met EOF
//                      before the buffer was full.
//   LimitExceeded      read_until / read_line found no delimiter within the
//                      byte limit.
//   TimeoutError, Cancelled  from the waits, as everywhere in spindle.
// Every blocking call is a suspension point: a pending cancellation or an
// expired Timeout scope throws on entry even when data is already there.
// Called outside a fiber, blocking calls throw std::logic_error.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <spindle/io.hpp>
#include <spindle/net/address.hpp>

namespace spindle::net {

// asyncio's StreamReader limit, and the default for read_line.
inline constexpr std::size_t kDefaultLimit = 64 * 1024;

// EOF came before a read_exact / read_exactly had all its bytes (asyncio's
// IncompleteReadError). The bytes that did arrive are consumed and lost to
// the stream; bytes_read() says how many there were.
class UnexpectedEof : public std::runtime_error {
 public:
  UnexpectedEof(const std::string& what, std::size_t bytes_read,
                std::size_t bytes_expected)
      : std::runtime_error(what), read_(bytes_read), expected_(bytes_expected) {}
  std::size_t bytes_read() const noexcept { return read_; }
  std::size_t bytes_expected() const noexcept { return expected_; }

 private:
  std::size_t read_;
  std::size_t expected_;
};

// No delimiter within `limit` bytes (asyncio's LimitOverrunError). Nothing
// is consumed: the bytes stay buffered, so the caller may read them with
// read_some, or give up and close.
class LimitExceeded : public std::length_error {
 public:
  LimitExceeded(const std::string& what, std::size_t limit)
      : std::length_error(what), limit_(limit) {}
  std::size_t limit() const noexcept { return limit_; }

 private:
  std::size_t limit_;
};

namespace detail {

enum class Direction { read, write };

// The shared I/O loop: calls op() (a non-blocking syscall returning -1 and
// setting errno on failure) until it succeeds or fails with an error other
// than EINTR or EAGAIN; on EAGAIN parks on fd in direction d. Returns op()'s
// last result; on -1, errno still holds its error. Cancellation or a Timeout
// during the park throws, leaving no registration behind.
template <typename Op>
auto retry_io(int fd, Direction d, Op&& op) -> decltype(op()) {
  for (;;) {
    auto result = op();
    if (result >= 0) return result;
    int err = errno;
    if (err == EINTR) continue;
    if (err != EAGAIN && err != EWOULDBLOCK) return result;
    if (d == Direction::read)
      spindle::wait_readable(fd);
    else
      spindle::wait_writable(fd);
  }
}

// Throws std::system_error(err) naming "call(fd=N, peer)" (or "call(fd=N)"
// when peer is null or unspecified).
[[noreturn]] void throw_io_error(int err, std::string_view call, int fd,
                                 const SocketAddress* peer);

// The suspension point every blocking net call starts with (throws
// Cancelled, TimeoutError, or std::logic_error outside a fiber).
void enter_blocking(const char* call);

// Owns one non-blocking fd. close() stops the scheduler watching it
// (spindle::forget_fd, when on a scheduler thread) before closing it, so a
// reused fd number never meets a stale registration.
class Descriptor {
 public:
  Descriptor() noexcept = default;
  explicit Descriptor(int fd) noexcept : fd_(fd) {}
  Descriptor(Descriptor&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Descriptor& operator=(Descriptor&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~Descriptor() { close(); }

  int get() const noexcept { return fd_; }
  bool is_open() const noexcept { return fd_ >= 0; }
  // Gives the fd up (forgotten by the scheduler, still open).
  int release() noexcept;
  // Idempotent. close(2)'s own error is ignored: on Linux the fd is gone
  // either way, and a retry could close someone else's.
  void close() noexcept;

 private:
  int fd_ = -1;
};

// Sets O_NONBLOCK (and FD_CLOEXEC) on an fd handed in from elsewhere;
// throws std::system_error naming fcntl and the fd.
void make_nonblocking(int fd);

// The byte-stream socket surface (TcpStream, UnixStream). Move-only; the
// destructor closes.
//
// read_until and read_line need the bytes that arrive after a delimiter to
// survive until the next call, so the stream keeps a small read-ahead buffer
// (allocated on first use). Every read (read_some, read_exact, read_until,
// read_line) takes from that buffer first, so mixing them loses nothing.
// StreamReader layers on read_some and therefore sees the same bytes too.
//
// State after a read, write or wait that ends early (TimeoutError,
// Cancelled): a read leaves no registration and the stream usable; bytes a
// read_exact already took are lost; read_until / read_line keep what they
// buffered, so a retry sees it. write_all / writev_all may have sent part of
// the data: the stream is at an unknown position, so close it.
class StreamSocket {
 public:
  StreamSocket(StreamSocket&&) noexcept = default;
  StreamSocket& operator=(StreamSocket&&) noexcept = default;

  // Up to buf.size() bytes; parks until at least one byte or EOF. Returns 0
  // at EOF (peer shut down its write side or closed), and 0 for an empty
  // buffer without waiting. ECONNRESET and friends: std::system_error.
  std::size_t read_some(std::span<std::byte> buf);
  std::size_t read_some(std::span<char> buf) {
    return read_some(std::as_writable_bytes(buf));
  }
  // Fills buf entirely or throws UnexpectedEof.
  void read_exact(std::span<std::byte> buf);
  void read_exact(std::span<char> buf) { read_exact(std::as_writable_bytes(buf)); }
  // Appends to `out` the bytes up to and including the first `delim` and
  // returns how many it appended. At EOF it appends what is left without a
  // delimiter (check out's tail) and returns 0 only when nothing was left.
  // Throws LimitExceeded (consuming nothing) when `max` bytes, delimiter
  // included, hold no delimiter. delim must not be empty.
  std::size_t read_until(std::string& out, std::string_view delim,
                         std::size_t max = kDefaultLimit);
  // One line including its "\n"; the last line may lack it; "" at EOF.
  std::string read_line(std::size_t max = kDefaultLimit);

  // Sends everything (send with MSG_NOSIGNAL: a dead peer is EPIPE as a
  // std::system_error, never SIGPIPE).
  void write_all(std::span<const std::byte> data);
  void write_all(std::string_view data) { write_all(std::as_bytes(std::span(data))); }
  // Vectored: sendmsg with MSG_NOSIGNAL, resuming mid-iovec after partial
  // sends. The iovecs themselves are not modified.
  void writev_all(std::span<const iovec> parts);

  // shutdown(SHUT_WR): the peer reads EOF; this side may still read.
  void shutdown_write();
  // Idempotent; fibers parked on this stream get std::system_error(EBADF).
  void close() noexcept;
  bool is_open() const noexcept { return fd_.is_open(); }

  SocketAddress local_address() const;  // getsockname; throws
  const SocketAddress& peer_address() const noexcept { return peer_; }
  int native_handle() const noexcept { return fd_.get(); }

 protected:
  StreamSocket() noexcept = default;
  StreamSocket(Descriptor fd, SocketAddress peer) noexcept
      : fd_(std::move(fd)), peer_(std::move(peer)) {}
  ~StreamSocket() = default;

  // Set by TcpStream: on TCP a read that returns fewer bytes than asked for
  // has emptied the receive queue, so the next read waits for the poller's
  // edge first instead of spending a read(2) on EAGAIN (Tokio does the same).
  // Not for Unix streams: they stop short at a change of sender credentials
  // or at passed fds with data still queued.
  bool short_read_drains_ = false;

 private:
  std::size_t buffered() const noexcept { return ahead_.size() - ahead_pos_; }
  std::size_t take_buffered(std::span<std::byte> buf) noexcept;
  std::size_t read_raw(void* buf, std::size_t len);

  Descriptor fd_;
  SocketAddress peer_;
  std::string ahead_;           // read-ahead; bytes before ahead_pos_ are consumed
  std::size_t ahead_pos_ = 0;
  bool drained_ = false;        // the last read was short (see short_read_drains_)
};

// socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC); throws naming socket.
Descriptor open_socket(int family, int type);

// Non-blocking connect of a fresh SOCK_STREAM socket to addr: EINPROGRESS
// parks until writable and reads SO_ERROR. A Unix socket whose listener's
// backlog is full answers EAGAIN without a connection in progress (Linux):
// that is retried after a short sleep, doubling from 1 ms to 100 ms.
// Failures throw std::system_error naming "connect", the fd and addr. A
// cancelled or timed-out connect closes the socket (RAII).
Descriptor connect_stream(const SocketAddress& addr);

// The listening-socket surface shared by TcpListener and UnixListener.
//
// accept uses accept4(SOCK_NONBLOCK | SOCK_CLOEXEC) and parks while the
// backlog is empty. Errors about one connection that has already gone
// (ECONNABORTED, EPROTO, and the network errors accept(2) says to treat
// like EAGAIN on Linux) are retried, never thrown. Running out of
// descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) does not fail
// either: the listener backs off, sleeping 1 ms doubling up to 100 ms, so
// the process keeps serving the connections it already has, and retries
// until descriptors are freed; the pending connections wait in the backlog.
// Each such episode logs one line to stderr. A cancelled or timed-out
// accept (including during back-off) loses no connection and leaves the
// listener usable.
class ListenerSocket {
 public:
  ListenerSocket(ListenerSocket&&) noexcept = default;
  ListenerSocket& operator=(ListenerSocket&&) noexcept = default;

  SocketAddress local_address() const;  // getsockname; throws
  int native_handle() const noexcept { return fd_.get(); }
  bool is_open() const noexcept { return fd_.is_open(); }

 protected:
  ListenerSocket() noexcept = default;
  explicit ListenerSocket(Descriptor fd) noexcept : fd_(std::move(fd)) {}
  ~ListenerSocket() = default;

  struct Connection {
    Descriptor fd;
    SocketAddress peer;
  };
  Connection accept_connection();

  Descriptor fd_;

 private:
  bool backing_off_ = false;  // inside an EMFILE episode (logged once)
};

}  // namespace detail
}  // namespace spindle::net
