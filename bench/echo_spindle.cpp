// echo_spindle: the spindle server of the echo benchmark. One fiber per
// connection, written as blocking code: read what is there, write it back.
//
//   echo_spindle [--port N]      (default 0: the kernel picks a port)
//
// Listens on 127.0.0.1, prints "port=N impl=spindle" on stdout once it
// accepts connections, and stops on SIGTERM or SIGINT. Single-threaded, like
// the C reference (bench/echo_epoll.c): one scheduler, one epoll set.
//
// Per round trip the connection fiber does what the C server does: one
// read into a 16 KiB buffer, one send of what it got. A read that returned
// less than it asked for has drained the socket, so the next read_some
// parks on the poller at once instead of meeting EAGAIN first; see
// bench/README.md.
#include <fmt/format.h>

#include <pthread.h>
#include <signal.h>

#include <array>
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

void serve(spindle::net::TcpStream stream) {
  try {
    stream.set_nodelay(true);
    std::array<char, 16 * 1024> buf;
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
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = static_cast<std::uint16_t>(std::atoi(argv[++i]));
    } else {
      fmt::print(stderr, "usage: {} [--port N]\n", argv[0]);
      return 2;
    }
  }
  // Blocked from the start, so a SIGTERM that comes before the signal fiber
  // waits stays pending instead of killing the process (signal.hpp).
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  return spindle::run([port] {
    using namespace spindle::net;
    auto listener = TcpListener::bind(SocketAddress::parse("127.0.0.1", port), ListenOptions{.backlog = 4096});
    fmt::print("port={} impl=spindle\n", listener.local_address().port());
    std::fflush(stdout);

    auto acceptor = spindle::spawn([&] {
      for (;;) {
        auto accepted = listener.accept();
        spindle::spawn(serve, std::move(accepted.stream)).detach();
      }
    });
    spindle::wait_signal({SIGTERM, SIGINT});
    // Returning cancels the acceptor and every connection fiber; run()
    // waits for them to unwind, which closes their sockets.
    return 0;
  });
}
