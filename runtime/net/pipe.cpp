// Pipe ends over detail::retry_io, and the SIGPIPE handling that write(2)
// needs because it has no MSG_NOSIGNAL (see pipe.hpp).
#include <spindle/net/pipe.hpp>

#include <fcntl.h>
#include <fmt/core.h>
#include <signal.h>
#include <unistd.h>

#include <ctime>

#include "platform/syscall.hpp"
#include "runtime/scheduler.hpp"

namespace spindle::net {

namespace {

using detail::Direction;
using detail::retry_io;
using detail::throw_io_error;

// write(2) with SIGPIPE blocked in this thread. SIGPIPE from a pipe write is
// sent to the writing thread, so blocking it here is enough; if the write
// failed with EPIPE, the signal it raised is pending and is consumed before
// the old mask returns. When the caller already had SIGPIPE blocked, a
// pending SIGPIPE may be the caller's own business, so it is left alone.
ssize_t write_no_sigpipe(int fd, const void* buf, std::size_t len) {
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  sigset_t old;
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  ssize_t n = ::write(fd, buf, len);
  int err = errno;
  if (n < 0 && err == EPIPE && !sigismember(&old, SIGPIPE)) {
    timespec zero{};
    platform::retry_eintr([&] { return ::sigtimedwait(&pipe_only, nullptr, &zero); });
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = err;
  return n;
}

}  // namespace

PipeReader PipeReader::from_fd(int fd) {
  detail::Descriptor owned(fd);
  detail::make_nonblocking(fd);
  PipeReader r;
  r.fd_ = std::move(owned);
  return r;
}

std::size_t PipeReader::read_some(std::span<std::byte> buf) {
  detail::enter_blocking("spindle::net::PipeReader::read_some");
  int fd = fd_.get();
  if (fd < 0) throw_io_error(EBADF, "read", fd, nullptr);
  if (buf.empty()) return 0;
  ssize_t n = retry_io(fd, Direction::read, [&] { return ::read(fd, buf.data(), buf.size()); });
  if (n < 0) {
    int err = errno;
    throw_io_error(err, "read", fd, nullptr);
  }
  return static_cast<std::size_t>(n);
}

void PipeReader::read_exact(std::span<std::byte> buf) {
  std::size_t got = 0;
  while (got < buf.size()) {
    std::size_t n = read_some(buf.subspan(got));
    if (n == 0) {
      spindle::detail::raise_off_small_stack([&] {
        throw UnexpectedEof(
            fmt::format("read_exact(fd={}): EOF after {} of {} bytes", fd_.get(), got, buf.size()), got,
            buf.size());
      });
    }
    got += n;
  }
}

PipeWriter PipeWriter::from_fd(int fd) {
  detail::Descriptor owned(fd);
  detail::make_nonblocking(fd);
  PipeWriter w;
  w.fd_ = std::move(owned);
  return w;
}

void PipeWriter::write_all(std::span<const std::byte> data) {
  detail::enter_blocking("spindle::net::PipeWriter::write_all");
  int fd = fd_.get();
  if (fd < 0) throw_io_error(EBADF, "write", fd, nullptr);
  while (!data.empty()) {
    ssize_t n = retry_io(fd, Direction::write, [&] { return write_no_sigpipe(fd, data.data(), data.size()); });
    if (n < 0) {
      int err = errno;
      throw_io_error(err, "write", fd, nullptr);
    }
    data = data.subspan(static_cast<std::size_t>(n));
  }
}

Pipe Pipe::create() {
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
    int err = errno;
    platform::throw_system_error(err, "pipe2(O_NONBLOCK | O_CLOEXEC)");
  }
  // Own both before anything can throw, so neither fd leaks.
  detail::Descriptor read_end(fds[0]);
  detail::Descriptor write_end(fds[1]);
  Pipe p;
  p.reader.fd_ = std::move(read_end);
  p.writer.fd_ = std::move(write_end);
  return p;
}

}  // namespace spindle::net
