#include "server.hpp"

#include <array>
#include <exception>
#include <optional>
#include <system_error>
#include <utility>

#include <spindle/clock.hpp>
#include <spindle/error.hpp>
#include <spindle/timeout.hpp>

namespace example::http {

using spindle::net::TcpStream;

namespace {

// Reads and drops what the peer still sends, until EOF, `limit` bytes or the
// caller's Timeout; see "Errors" in server.hpp for why.
void drain(TcpStream& stream, std::size_t limit) {
  std::array<char, 4096> sink;
  std::size_t total = 0;
  while (total < limit) {
    std::size_t n = stream.read_some(sink);
    if (n == 0) break;
    total += n;
  }
}

constexpr std::size_t kDrainLimit = 256 * 1024;

}  // namespace

Server::Server(spindle::net::TcpListener listener, ServerOptions options, Handler handler)
    : listener_(std::move(listener)), options_(options), handler_(std::move(handler)) {
  all_closed_.set();
}

Server::~Server() {
  // A serve() that was itself cancelled leaves connection fibers behind that
  // refer to this object: end them before it goes away. Destructors that run
  // while unwinding are not interrupted again, so this wait completes.
  for (Conn& c : conns_) c.task.cancel();
  if (!conns_.empty()) {
    spindle::Shield shield;
    all_closed_.wait();
  }
}

void Server::stop() {
  if (stopping_) return;
  stopping_ = true;
  stop_requested_.set();
}

void Server::serve() {
  auto acceptor = spindle::spawn([this] {
    try {
      accept_loop();
    } catch (...) {
      // The listener failed: serve() must not wait for a stop() that may
      // never come. The exception is rethrown from serve() below.
      stop();
      throw;
    }
  });
  stop_requested_.wait();
  acceptor.cancel();
  acceptor.wait();
  listener_.close();
  // Connections between requests have nothing in flight: close them now.
  // The others see stopping_ at their next turn and close after answering.
  for (Conn& c : conns_) {
    if (c.phase == Phase::waiting) c.task.cancel();
  }
  if (!all_closed_.wait_for(options_.grace)) {
    for (Conn& c : conns_) c.task.cancel();
    all_closed_.wait();
  }
  if (acceptor.error() && !acceptor.cancelled()) acceptor.join();
}

void Server::accept_loop() {
  for (;;) {
    auto accepted = listener_.accept();
    const bool over = serving_ >= options_.max_connections;
    if (over) {
      ++stats_.rejected;
      // Past both caps the stream's destructor closes the connection.
      if (rejecting_ >= options_.max_rejecting) continue;
      ++rejecting_;
    } else {
      ++serving_;
      ++stats_.accepted;
    }
    auto self = conns_.emplace(conns_.end());
    all_closed_.clear();
    auto task = spindle::spawn([this, over, self, stream = std::move(accepted.stream)]() mutable {
      if (over) {
        reject(std::move(stream), self);
      } else {
        run_connection(std::move(stream), self);
      }
    });
    // The fiber runs only once this one parks, so the handle is in place
    // before anything can look for it.
    self->task = task.ref();
    task.detach();
  }
}

void Server::forget(ConnList::iterator self, bool counted) noexcept {
  conns_.erase(self);
  --(counted ? serving_ : rejecting_);
  if (conns_.empty()) all_closed_.set();
}

void Server::run_connection(TcpStream stream, ConnList::iterator self) {
  // A guard, because cancellation (stop, grace over) unwinds past the catch.
  struct Forget {
    Server& server;
    ConnList::iterator self;
    ~Forget() { server.forget(self, true); }
  } forget{*this, self};
  try {
    serve_requests(stream, *self);
  } catch (const std::system_error&) {
    // The peer reset or vanished mid-write: nothing left to tell it.
  }
}

void Server::serve_requests(TcpStream& stream, Conn& self) {
  // Each answer is written whole; there is no point in Nagle holding a
  // response back until the previous one is acknowledged.
  stream.set_nodelay(true);
  ServerConnection conn(options_.limits);
  Response response;
  std::array<char, 8192> buf;
  std::optional<spindle::TimePoint> header_deadline;
  for (;;) {
    while (const Request* request = conn.next()) {
      self.phase = Phase::busy;
      response.reset();
      try {
        handler_(*request, response);
      } catch (const std::exception&) {
        response.reset();
        response.status = 500;
        response.body = "Internal Server Error\n";
      }
      if (stopping_) conn.finish();
      conn.respond(response);
      ++stats_.requests;
    }
    if (!conn.output().empty()) {
      self.phase = Phase::busy;
      stream.write_all(conn.output());
      conn.clear_output();
    }
    if (conn.done() || (stopping_ && conn.idle())) break;

    std::size_t n = 0;
    try {
      if (conn.awaiting_headers()) {
        // One deadline for the whole header block, set when the wait for it
        // began: reads that each bring a byte do not extend it.
        if (!header_deadline) header_deadline = spindle::now() + options_.header_timeout;
        self.phase = conn.idle() ? Phase::waiting : Phase::busy;
        spindle::Timeout limit(*header_deadline);
        n = stream.read_some(buf);
      } else {
        self.phase = Phase::busy;
        spindle::Timeout limit(options_.body_timeout);
        n = stream.read_some(buf);
      }
    } catch (const spindle::TimeoutError&) {
      conn.timed_out();
      continue;  // writes the 408, if one is due, and ends
    }
    self.phase = Phase::busy;
    if (n == 0) {
      conn.feed_eof();
    } else {
      conn.feed(std::string_view(buf.data(), n));
    }
    if (!conn.awaiting_headers()) header_deadline.reset();
  }
  if (conn.error_status() != 0) {
    ++stats_.errors;
    close_after_error(stream);
  }
}

void Server::close_after_error(TcpStream& stream) {
  try {
    stream.shutdown_write();
    spindle::Timeout limit(options_.linger);
    drain(stream, kDrainLimit);
  } catch (const std::system_error&) {
    // Timed out, reset or gone: the socket closes either way.
  }
}

void Server::reject(TcpStream stream, ConnList::iterator self) {
  struct Forget {
    Server& server;
    ConnList::iterator self;
    ~Forget() { server.forget(self, false); }
  } forget{*this, self};
  try {
    // The whole exchange is bounded, so a client that never reads cannot
    // keep one of the few rejecting fibers.
    spindle::Timeout limit(options_.linger);
    ServerConnection conn(options_.limits);
    conn.refuse(503, {{"Retry-After", "1"}});
    stream.write_all(conn.output());
    stream.shutdown_write();
    drain(stream, kDrainLimit);
  } catch (const std::system_error&) {
    // As in close_after_error.
  }
}

}  // namespace example::http
