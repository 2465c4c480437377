// Wake-up: spindle, a fiber parked on an fd woken by a write from another
// fiber of the same scheduler.
//
//   spindle_pipe        two fibers, two pipes (O_NONBLOCK). A writes a byte
//                       into pipe 1 and reads pipe 2; B reads pipe 1 and
//                       answers on pipe 2. Each read that finds nothing
//                       calls spindle::wait_readable and parks, so every
//                       hop takes the whole path: write -> the kernel marks
//                       the fd ready -> the scheduler, with nothing left to
//                       run, blocks in epoll_wait and gets the event ->
//                       readies the parked fiber -> switches to it.
//   spindle_socketpair  the same over one AF_UNIX stream socketpair, the
//                       kind of fd a server waits on.
//   spindle_event       the same ping-pong over two spindle::Event: the wake
//                       without the kernel, for contrast (sync_spindle has
//                       it per one-way signal as spindle_event_pingpong).
//
// The unit is one round trip: two wakes, one each way. The reads follow the
// pattern io.hpp documents (read, and wait only on EAGAIN), so a one-way hop
// costs one write, one read that fails with EAGAIN, one epoll_wait, one
// switch and one read that succeeds. The clock starts in the first fiber, so
// creating the fds and spawning the fibers are left out.
#include "bench.hpp"

#include <spindle/spindle.hpp>

#include <cerrno>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

using bench::Clock;

// Throws the errno of a failed call; `what` names the call and its key
// argument, as the runtime's own errors do.
[[noreturn]] void fail(const std::string& what) {
  throw std::system_error(errno, std::system_category(), what);
}

// Reads one byte, parking on EAGAIN until the fd is readable.
void read_byte(int fd) {
  char c;
  for (;;) {
    ssize_t n = ::read(fd, &c, 1);
    if (n == 1) return;
    if (n == 0) throw std::runtime_error("wake bench: unexpected end of file");
    if (errno == EAGAIN) {
      spindle::wait_readable(fd);
    } else if (errno != EINTR) {
      fail(fmt::format("read(fd={})", fd));
    }
  }
}

// The pipes and socket buffers hold far more than the one byte in flight,
// so a write never meets EAGAIN here.
void write_byte(int fd) {
  char c = 'x';
  while (::write(fd, &c, 1) != 1) {
    if (errno != EINTR) fail(fmt::format("write(fd={})", fd));
  }
}

// The ends of the two directions: a writes a_out and b reads it as b_in;
// b answers on b_out and a reads a_in. A socketpair uses each end both ways.
struct Channel {
  int a_out, b_in, b_out, a_in;
};

// n round trips between two fibers over the channel.
double pingpong(const Channel& ch, std::uint64_t n) {
  Clock::time_point start, stop;
  auto a = spindle::spawn([&] {
    start = Clock::now();
    for (std::uint64_t i = 0; i < n; ++i) {
      write_byte(ch.a_out);
      read_byte(ch.a_in);
    }
    stop = Clock::now();
  });
  auto b = spindle::spawn([&] {
    for (std::uint64_t i = 0; i < n; ++i) {
      read_byte(ch.b_in);
      write_byte(ch.b_out);
    }
  });
  a.join();
  b.join();
  return bench::elapsed_ns(start, stop);
}

void close_all(std::initializer_list<int> fds) {
  for (int fd : fds) {
    spindle::forget_fd(fd);
    ::close(fd);
  }
}

double pipe_round(std::uint64_t n) {
  int p1[2], p2[2];
  if (::pipe2(p1, O_NONBLOCK | O_CLOEXEC) != 0) fail("pipe2");
  if (::pipe2(p2, O_NONBLOCK | O_CLOEXEC) != 0) fail("pipe2");
  double ns = pingpong({.a_out = p1[1], .b_in = p1[0], .b_out = p2[1], .a_in = p2[0]}, n);
  close_all({p1[0], p1[1], p2[0], p2[1]});
  return ns;
}

double socketpair_round(std::uint64_t n) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
    fail("socketpair(AF_UNIX)");
  double ns = pingpong({.a_out = sv[0], .b_in = sv[1], .b_out = sv[1], .a_in = sv[0]}, n);
  close_all({sv[0], sv[1]});
  return ns;
}

double event_round(std::uint64_t n) {
  spindle::Event ping, pong;
  Clock::time_point start, stop;
  auto a = spindle::spawn([&] {
    start = Clock::now();
    for (std::uint64_t i = 0; i < n; ++i) {
      ping.set();
      pong.wait();
      pong.clear();
    }
    stop = Clock::now();
  });
  auto b = spindle::spawn([&] {
    for (std::uint64_t i = 0; i < n; ++i) {
      ping.wait();
      ping.clear();
      pong.set();
    }
  });
  a.join();
  b.join();
  return bench::elapsed_ns(start, stop);
}

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("wake", argc, argv);
  auto pin = bench::pin_current_thread(bench::primary_cpu());
  const bench::Case c{.unit = "ns/roundtrip", .note = pin.note() + " wakes_per_op=2"};
  spindle::run([&] {
    if (runner.wants("spindle_pipe")) runner.time("spindle_pipe", c, pipe_round);
    if (runner.wants("spindle_socketpair")) runner.time("spindle_socketpair", c, socketpair_round);
    if (runner.wants("spindle_event")) runner.time("spindle_event", c, event_round);
  });
  return runner.finish();
}
