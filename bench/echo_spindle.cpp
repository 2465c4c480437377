// echo_spindle: the spindle server of the echo benchmark. One fiber per
// connection, written as blocking code: read what is there, write it back.
//
//   echo_spindle [--port N] [--small-stacks]   (port 0: the kernel picks one)
//
// Listens on 127.0.0.1, prints "port=N impl=spindle" (or spindle_small) on
// stdout once it accepts connections, and stops on SIGTERM or SIGINT.
// Single-threaded, like the C reference (bench/echo_epoll.c): one scheduler,
// one epoll set.
//
// --small-stacks: the same server written for many connections, each fiber
// on a small stack (spindle::kSmallStackSize, 2 KiB, packed without guard
// pages) reading into a 512-byte buffer on it. What a parked connection
// costs the caches is then a few lines of one shared page, not a 64 KiB
// stack whose 16 KiB buffer puts its hot frames on two pages; with 1,000
// connections that is what separates the two (bench/README.md). Small
// stacks need every symbol bound at start-up (runtime/stack.hpp), so the
// server re-executes itself with LD_BIND_NOW=1.
//
// Per round trip the connection fiber does what the C server does: one
// read into a 16 KiB buffer (512 bytes with --small-stacks), one send of
// what it got. A read that returned
// less than it asked for has drained the socket, so the next read_some
// parks on the poller at once instead of meeting EAGAIN first; see
// bench/README.md.
#include <fmt/format.h>

#include <pthread.h>
#include <unistd.h>
#include <signal.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <system_error>

#include <spindle/net.hpp>
#include <spindle/run.hpp>
#include <spindle/signal.hpp>
#include <spindle/task.hpp>

namespace {

template <std::size_t kBuffer>
void serve(spindle::net::TcpStream stream) {
  try {
    stream.set_nodelay(true);
    std::array<char, kBuffer> buf;
    for (;;) {
      std::size_t n = stream.read_some(buf);
      if (n == 0) return;  // the client closed
      stream.write_all(std::string_view(buf.data(), n));
    }
  } catch (const std::system_error&) {
    // A reset or a broken pipe ends this connection only.
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::uint16_t port = 0;
  bool small = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = static_cast<std::uint16_t>(std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--small-stacks") == 0) {
      small = true;
    } else {
      fmt::print(stderr, "usage: {} [--port N] [--small-stacks]\n", argv[0]);
      return 2;
    }
  }
  if (small && std::getenv("LD_BIND_NOW") == nullptr) {
    setenv("LD_BIND_NOW", "1", 1);
    execv("/proc/self/exe", argv);
    fmt::print(stderr, "echo_spindle: execv(/proc/self/exe): {}\n", std::strerror(errno));
    return 1;
  }
  // Blocked from the start, so a SIGTERM that comes before the signal fiber
  // waits stays pending instead of killing the process (signal.hpp).
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  return spindle::run([port, small] {
    using namespace spindle::net;
    auto listener = TcpListener::bind(SocketAddress::parse("127.0.0.1", port), ListenOptions{.backlog = 4096});
    fmt::print("port={} impl={}\n", listener.local_address().port(), small ? "spindle_small" : "spindle");
    std::fflush(stdout);

    auto acceptor = spindle::spawn([&] {
      for (;;) {
        auto accepted = listener.accept();
        if (small)
          spindle::spawn(spindle::SpawnOptions{.stack_size = spindle::kSmallStackSize}, serve<512>,
                         std::move(accepted.stream))
              .detach();
        else
          spindle::spawn(serve<16 * 1024>, std::move(accepted.stream)).detach();
      }
    });
    spindle::wait_signal({SIGTERM, SIGINT});
    // Returning cancels the acceptor and every connection fiber; run()
    // waits for them to unwind, which closes their sockets.
    return 0;
  });
}
