// A TCP echo server: one fiber per connection, written as plain blocking
// code. Each fiber reads what its client sent and writes it back; while it
// waits, the others run.
//
//   echo_server [--port N] [--grace SECONDS]
//
// Listens on 127.0.0.1 (port 0, the default, lets the kernel choose) and
// prints "listening on 127.0.0.1:PORT". Try it with `nc 127.0.0.1 PORT`.
//
// SIGINT or SIGTERM stops it gracefully: the listener closes at once, so new
// clients are refused, while the connections already open keep being served
// until their clients hang up or the grace period (5 s by default) runs out.
// Whatever is still open then is cancelled: its fiber unwinds and its socket
// closes. The server exits 0 either way.
#include <fmt/format.h>

#include <pthread.h>
#include <signal.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <system_error>

#include <spindle/event.hpp>
#include <spindle/net.hpp>
#include <spindle/run.hpp>
#include <spindle/signal.hpp>
#include <spindle/task.hpp>

namespace {

struct Options {
  std::uint16_t port = 0;
  double grace_seconds = 5;
};

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--port" && i + 1 < argc) {
      o.port = static_cast<std::uint16_t>(std::atoi(argv[++i]));
    } else if (a == "--grace" && i + 1 < argc) {
      o.grace_seconds = std::strtod(argv[++i], nullptr);
    } else {
      fmt::print(stderr, "usage: {} [--port N] [--grace SECONDS]\n", argv[0]);
      std::exit(2);
    }
  }
  return o;
}

// Open connections, so that shutdown can wait for the last one to end.
struct Connections {
  std::size_t open = 0;
  spindle::Event none_left;
};

void serve(spindle::net::TcpStream stream, Connections& conns) {
  const std::string peer = stream.peer_address().to_string();
  // Counted by a guard, because cancellation at the end of the grace period
  // unwinds past the catch below.
  struct Count {
    Connections& c;
    explicit Count(Connections& conns) : c(conns) {
      ++c.open;
      c.none_left.clear();
    }
    ~Count() {
      if (--c.open == 0) c.none_left.set();
    }
  } count(conns);
  std::uint64_t bytes = 0;
  try {
    stream.set_nodelay(true);
    std::array<char, 16 * 1024> buf;
    for (;;) {
      std::size_t n = stream.read_some(buf);
      if (n == 0) break;  // the client closed its side
      stream.write_all(std::string_view(buf.data(), n));
      bytes += n;
    }
    fmt::print("{}: closed after {} bytes\n", peer, bytes);
  } catch (const std::system_error& e) {
    fmt::print("{}: {} after {} bytes\n", peer, e.what(), bytes);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse_args(argc, argv);
  // Line-buffered even into a pipe, so whoever watches the log sees each
  // event as it happens.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  // Blocked before anything else, so a signal that arrives before the
  // signal fiber waits stays pending rather than killing the process.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  // Outside run(): the connections still open when the root fiber returns
  // are cancelled by run() afterwards and update the count as they unwind.
  Connections conns;
  conns.none_left.set();
  return spindle::run([&] {
    using namespace spindle::net;
    auto listener = TcpListener::bind(SocketAddress::parse("127.0.0.1", opt.port));
    fmt::print("listening on {}\n", listener.local_address().to_string());

    auto acceptor = spindle::spawn([&] {
      for (;;) {
        auto accepted = listener.accept();
        fmt::print("{}: connected\n", accepted.peer.to_string());
        spindle::spawn(serve, std::move(accepted.stream), std::ref(conns)).detach();
      }
    });

    int sig = spindle::wait_signal({SIGINT, SIGTERM});
    acceptor.cancel();
    acceptor.wait();
    listener.close();
    fmt::print("SIG{}: stopped accepting; waiting up to {:g} s for {} open connection(s)\n", sigabbrev_np(sig),
               opt.grace_seconds, conns.open);
    if (!conns.none_left.wait_for(std::chrono::duration<double>(opt.grace_seconds)))
      fmt::print("grace period over: closing {} connection(s)\n", conns.open);
    fmt::print("stopped\n");
    return 0;  // run() cancels the connections still open and waits for them
  });
}
