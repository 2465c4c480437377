// Pipes driven from fibers: a reader end and a writer end, each owning one
// non-blocking fd.
//
//   auto [reader, writer] = spindle::net::Pipe::create();
//   writer.write_all("hello");
//   writer.close();                       // the reader then sees EOF
//   char buf[16];
//   std::size_t n = reader.read_some(std::span(buf));   // 5, then 0
//
// Both ends are O_NONBLOCK and FD_CLOEXEC. O_NONBLOCK belongs to the open
// file description, which a child shares after dup2: to give an end to a
// child process, release() it, clear O_NONBLOCK (fcntl F_SETFL) and dup2
// it in the child, or create that end's pipe with pipe2(2) yourself.
//
// SIGPIPE: a write to a pipe whose read end is closed raises SIGPIPE, and
// unlike send(2) write(2) has no MSG_NOSIGNAL. PipeWriter therefore blocks
// SIGPIPE in the calling thread around each write(2) (never across a park)
// and, when the write failed with EPIPE, consumes the SIGPIPE that write
// raised with a zero-timeout sigtimedwait before restoring the mask. The
// process's SIGPIPE disposition is never changed, so a program that wants
// SIGPIPE for its own writes keeps it. (A SIGPIPE sent to the thread by
// kill(2) in that few-microsecond window could be consumed as well.)
//
// Errors: EPIPE and other failures are std::system_error naming the call
// and the fd ("write(fd=9)"); EOF on read is the value 0; read_exact throws
// UnexpectedEof. Every call honours cancellation and Timeout scopes; after a
// timed-out or cancelled read the end is usable and nothing is registered;
// after a timed-out or cancelled write_all part of the data may have been
// written, so the stream position is unknown: close the writer.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include <spindle/net/socket.hpp>

namespace spindle::net {

class PipeReader {
 public:
  PipeReader() noexcept = default;
  // Takes ownership of fd and makes it non-blocking (and close-on-exec);
  // throws std::system_error naming fcntl and the fd if that fails (fd is
  // then closed).
  static PipeReader from_fd(int fd);

  // Up to buf.size() bytes, at least one unless at EOF (all writers closed):
  // then 0. An empty buf returns 0 at once.
  std::size_t read_some(std::span<std::byte> buf);
  std::size_t read_some(std::span<char> buf) { return read_some(std::as_writable_bytes(buf)); }
  // Fills buf or throws UnexpectedEof.
  void read_exact(std::span<std::byte> buf);
  void read_exact(std::span<char> buf) { read_exact(std::as_writable_bytes(buf)); }

  // Idempotent; a fiber parked on this end gets std::system_error(EBADF).
  void close() noexcept { fd_.close(); }
  bool is_open() const noexcept { return fd_.is_open(); }
  int native_handle() const noexcept { return fd_.get(); }
  // Gives up ownership (the scheduler forgets the fd); -1 if closed.
  int release() noexcept { return fd_.release(); }

 private:
  friend struct Pipe;
  detail::Descriptor fd_;
};

class PipeWriter {
 public:
  PipeWriter() noexcept = default;
  // As PipeReader::from_fd.
  static PipeWriter from_fd(int fd);

  // Writes everything, parking while the pipe is full. EPIPE (no reader)
  // is a std::system_error naming write and the fd; no SIGPIPE (see above).
  void write_all(std::span<const std::byte> data);
  void write_all(std::string_view data) { write_all(std::as_bytes(std::span(data))); }

  void close() noexcept { fd_.close(); }
  bool is_open() const noexcept { return fd_.is_open(); }
  int native_handle() const noexcept { return fd_.get(); }
  int release() noexcept { return fd_.release(); }

 private:
  friend struct Pipe;
  detail::Descriptor fd_;
};

struct Pipe {
  PipeReader reader;
  PipeWriter writer;
  // pipe2(O_NONBLOCK | O_CLOEXEC); throws std::system_error naming pipe2.
  static Pipe create();
};

}  // namespace spindle::net
