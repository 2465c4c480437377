// An HTTP/1.1 server: one fiber per connection, keep-alive, pipelining,
// Content-Length and chunked request bodies, parsed with Debian's
// libhttp-parser. The protocol lives in examples/http/ (http_conn.hpp: the
// state machine; server.hpp: the connection loop and its policies;
// routes.hpp: what it serves).
//
//   http_server [--port N] [--max-connections N] [--header-timeout SECONDS]
//               [--grace SECONDS] [--quiet]
//
//   GET /                "Hello, World!"
//   GET /delay?ms=N      answers after N ms (other clients are served meanwhile)
//   POST /echo           the request body
//
// Listens on 127.0.0.1 (port 0, the default, lets the kernel choose) and
// prints "listening on 127.0.0.1:PORT". Try `curl -v http://127.0.0.1:PORT/`.
//
// Over --max-connections (10000) a connection gets 503 and is closed; a
// client that takes longer than --header-timeout (10 s) to send its request
// headers gets 408. SIGINT or SIGTERM stops the server: it stops accepting,
// closes idle connections, lets requests in flight finish (up to --grace
// seconds, 10 by default), prints its counters and exits 0.
#include <fmt/format.h>

#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <spindle/net.hpp>
#include <spindle/run.hpp>
#include <spindle/signal.hpp>
#include <spindle/task.hpp>

#include "http/routes.hpp"
#include "http/server.hpp"

namespace {

struct Options {
  std::uint16_t port = 0;
  example::http::ServerOptions server;
};

std::chrono::nanoseconds seconds_arg(const char* text) {
  double s = std::strtod(text, nullptr);
  return std::chrono::nanoseconds(static_cast<long long>(s * 1e9));
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--port" && i + 1 < argc) {
      o.port = static_cast<std::uint16_t>(std::atoi(argv[++i]));
    } else if (a == "--max-connections" && i + 1 < argc) {
      o.server.max_connections = static_cast<std::size_t>(std::strtoull(argv[++i], nullptr, 10));
    } else if (a == "--header-timeout" && i + 1 < argc) {
      o.server.header_timeout = seconds_arg(argv[++i]);
    } else if (a == "--grace" && i + 1 < argc) {
      o.server.grace = seconds_arg(argv[++i]);
    } else {
      fmt::print(stderr,
                 "usage: {} [--port N] [--max-connections N] [--header-timeout SECONDS] "
                 "[--grace SECONDS]\n",
                 argv[0]);
      std::exit(2);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse_args(argc, argv);
  // Line-buffered even into a pipe, so that a parent waiting for the
  // "listening on" line sees it at once.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  // Blocked before anything else, so a signal that arrives before the
  // signal fiber waits stays pending rather than killing the process.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  return spindle::run([&] {
    using namespace spindle::net;
    auto listener = TcpListener::bind(SocketAddress::parse("127.0.0.1", opt.port));
    example::http::Server server(std::move(listener), opt.server, example::http::route);
    fmt::print("listening on {}\n", server.local_address().to_string());

    auto signals = spindle::spawn([&] {
      int sig = spindle::wait_signal({SIGINT, SIGTERM});
      fmt::print("{}: stopping; {} connection(s) open\n", sigabbrev_np(sig), server.open_connections());
      server.stop();
    });
    server.serve();
    const auto& s = server.stats();
    fmt::print("stopped: {} connection(s), {} request(s), {} rejected over the cap, {} error response(s)\n",
               s.accepted, s.requests, s.rejected, s.errors);
    return 0;
  });
}
