// An HTTP/1.1 server over spindle::net: one fiber per connection, each a
// plain read / answer / write loop around ServerConnection (http_conn.hpp).
//
//   auto listener = TcpListener::bind(SocketAddress::parse("127.0.0.1", 8080));
//   example::http::Server server(std::move(listener), {}, example::http::route);
//   spindle::spawn([&] { spindle::wait_signal({SIGINT, SIGTERM}); server.stop(); }).detach();
//   server.serve();                     // returns once stopped and drained
//
// Policies (each a ServerOptions field):
//
//   Connection cap   At most max_connections connections are served at once.
//                    Over the cap the server still accepts, answers 503
//                    Service Unavailable (Retry-After: 1, Connection: close)
//                    on a short-lived fiber and closes: a client learns at
//                    once that it should come back, instead of hanging in
//                    the kernel's backlog. Those fibers are capped too
//                    (max_rejecting); past that, excess connections are
//                    closed without a word.
//   Slow headers     From the moment a connection starts waiting for a
//                    request, the client has header_timeout to deliver the
//                    whole request line and header block: one deadline, not
//                    per read, so trickling a byte at a time (slowloris) does
//                    not extend it. When it passes with part of a request
//                    received the answer is 408 Request Timeout; with nothing
//                    received (an idle keep-alive connection) the connection
//                    just closes.
//   Slow bodies      Each read of a request body must deliver within
//                    body_timeout; otherwise 408.
//   Errors           After an error response (400, 408, 413, ...) the server
//                    half-closes and reads what the client still sends for up
//                    to `linger`, so that the client's unread request bytes
//                    do not turn the close into a reset that destroys the
//                    response before the client reads it.
//   Stopping         stop() closes the listener and the connections waiting
//                    for a new request; connections with a request in flight
//                    (being received, handled or answered) finish it, answer
//                    with "Connection: close" and close. serve() returns when
//                    all are closed, or after `grace`, cancelling the rest.
//
// The handler runs on the connection's fiber and may park (sleep, I/O);
// pipelined requests on one connection are handled one after another, in
// order. Everything runs on the thread that calls serve().
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>

#include <spindle/event.hpp>
#include <spindle/net/tcp.hpp>
#include <spindle/task.hpp>

#include "http_conn.hpp"

namespace example::http {

using Handler = std::function<void(const Request&, Response&)>;

struct ServerOptions {
  Limits limits{};
  std::size_t max_connections = 10000;
  std::size_t max_rejecting = 64;
  std::chrono::nanoseconds header_timeout = std::chrono::seconds(10);
  std::chrono::nanoseconds body_timeout = std::chrono::seconds(30);
  std::chrono::nanoseconds linger = std::chrono::milliseconds(500);
  std::chrono::nanoseconds grace = std::chrono::seconds(10);
};

struct ServerStats {
  std::uint64_t accepted = 0;   // connections served
  std::uint64_t rejected = 0;   // connections answered 503 (or closed) over the cap
  std::uint64_t requests = 0;   // requests answered by the handler
  std::uint64_t errors = 0;     // error responses (4xx/5xx from the protocol, 408)
};

class Server {
 public:
  Server(spindle::net::TcpListener listener, ServerOptions options, Handler handler);
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server();

  // Accepts and serves until stop(), then drains (see above). Call once,
  // from a fiber.
  void serve();
  // From any fiber of the serving thread; idempotent.
  void stop();

  spindle::net::SocketAddress local_address() const { return listener_.local_address(); }
  std::size_t open_connections() const noexcept { return serving_; }
  const ServerStats& stats() const noexcept { return stats_; }

 private:
  // What a connection's fiber is doing, so that stop() knows whom it may
  // cancel: only those waiting for a request that has not begun.
  enum class Phase { waiting, busy };
  struct Conn {
    spindle::TaskRef<void> task;
    Phase phase = Phase::busy;
  };
  using ConnList = std::list<Conn>;

  void accept_loop();
  void run_connection(spindle::net::TcpStream stream, ConnList::iterator self);
  void serve_requests(spindle::net::TcpStream& stream, Conn& self);
  void reject(spindle::net::TcpStream stream, ConnList::iterator self);
  void close_after_error(spindle::net::TcpStream& stream);
  void forget(ConnList::iterator self, bool counted) noexcept;

  spindle::net::TcpListener listener_;
  ServerOptions options_;
  Handler handler_;
  ServerStats stats_;
  ConnList conns_;               // every live connection fiber, served or rejected
  std::size_t serving_ = 0;      // conns_ counted against max_connections
  std::size_t rejecting_ = 0;    // conns_ answering 503
  bool stopping_ = false;
  spindle::Event stop_requested_;
  spindle::Event all_closed_;    // set whenever conns_ is empty
};

}  // namespace example::http
