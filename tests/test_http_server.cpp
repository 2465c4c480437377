// The HTTP example's server (examples/http/server.hpp) on loopback, in
// process: real sockets, real time. Each case starts a Server on port 0
// with the example's routes, talks to it with raw TcpStreams (so that it can
// pipeline, trickle and misbehave at will) and reads the answers back with
// the example's ResponseParser. Every read runs under a Timeout, so a
// server that fails to answer fails the case instead of hanging it.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <array>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <spindle/net.hpp>
#include <spindle/run.hpp>
#include <spindle/task.hpp>
#include <spindle/this_fiber.hpp>
#include <spindle/timeout.hpp>

#include "http/response_parser.hpp"
#include "http/routes.hpp"
#include "http/server.hpp"

using namespace std::chrono_literals;
using example::http::ClientResponse;
using example::http::ResponseParser;
using example::http::Server;
using example::http::ServerOptions;
using spindle::net::SocketAddress;
using spindle::net::TcpListener;
using spindle::net::TcpStream;

namespace {

using Seconds = std::chrono::duration<double>;

// A client connection that keeps what it read past the last response.
class Client {
 public:
  explicit Client(const SocketAddress& server) : stream_(TcpStream::connect(server)) { stream_.set_nodelay(true); }

  void send(std::string_view bytes) { stream_.write_all(bytes); }

  // The next response (HEAD answers parsed as such); throws ResponseError
  // if the server closes first.
  ClientResponse receive(bool head = false) {
    spindle::Timeout limit(5s);
    ResponseParser parser(head);
    for (;;) {
      if (!pending_.empty()) {
        std::size_t used = parser.feed(pending_);
        pending_.erase(0, used);
        if (parser.complete()) return parser.response();
      }
      std::array<char, 4096> buf;
      std::size_t n = stream_.read_some(buf);
      if (n == 0) {
        parser.feed_eof();
        return parser.response();
      }
      pending_.append(buf.data(), n);
    }
  }

  // True when the server closed the connection with nothing more to say
  // (EOF, or a reset after the answers were read).
  bool closed_by_server(std::chrono::milliseconds within = 3000ms) {
    spindle::Timeout limit(within);
    std::array<char, 256> buf;
    try {
      for (;;) {
        if (!pending_.empty()) return false;
        std::size_t n = stream_.read_some(buf);
        if (n == 0) return true;
        pending_.append(buf.data(), n);
      }
    } catch (const spindle::TimeoutError&) {
      return false;
    } catch (const std::system_error&) {
      return true;
    }
  }

  TcpStream& stream() { return stream_; }

 private:
  TcpStream stream_;
  std::string pending_;
};

std::string get(std::string_view target, std::string_view extra = "") {
  return fmt::format("GET {} HTTP/1.1\r\nHost: test\r\n{}\r\n", target, extra);
}

// Runs body(server, address) against a serving Server; stops it afterwards
// and checks that serve() returned.
template <class Body>
void with_server(ServerOptions options, Body body) {
  spindle::run([&] {
    spindle::Timeout whole(30s);
    auto listener = TcpListener::bind(SocketAddress::parse("127.0.0.1", 0));
    Server server(std::move(listener), options, example::http::route);
    const SocketAddress address = server.local_address();
    auto serving = spindle::spawn([&] { server.serve(); });
    body(server, address);
    server.stop();
    serving.join();
    CHECK(server.open_connections() == 0);
  });
}

ServerOptions quick() {
  ServerOptions o;
  o.header_timeout = 2s;
  o.grace = 3s;
  o.linger = 200ms;
  return o;
}

}  // namespace

TEST_CASE("http server: a keep-alive connection serves requests one after another") {
  with_server(quick(), [](Server& server, const SocketAddress& address) {
    Client c(address);
    for (int i = 0; i < 5; ++i) {
      c.send(get("/"));
      ClientResponse r = c.receive();
      CHECK(r.status == 200);
      CHECK(r.body == example::http::kHelloBody);
      CHECK(r.keep_alive);
    }
    c.send("HEAD / HTTP/1.1\r\nHost: test\r\n\r\n");
    ClientResponse head = c.receive(true);
    CHECK(head.body.empty());
    CHECK(*head.header("content-length") == "14");
    c.send(get("/", "Connection: close\r\n"));
    ClientResponse last = c.receive();
    CHECK(last.status == 200);
    CHECK(!last.keep_alive);
    CHECK(c.closed_by_server());
    CHECK(server.stats().accepted == 1);
    CHECK(server.stats().requests == 7);
  });
}

TEST_CASE("http server: pipelined requests on a real socket come back in order") {
  with_server(quick(), [](Server&, const SocketAddress& address) {
    Client c(address);
    std::string batch = get("/delay?ms=50") + get("/") +
                        "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: text/x-test\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n" +
                        get("/nope") + "PUT / HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n" +
                        get("/delay?ms=x");
    // One write: the server sees the whole batch in one or a few reads.
    c.send(batch);
    std::vector<ClientResponse> r;
    for (int i = 0; i < 6; ++i) r.push_back(c.receive());
    CHECK(r[0].status == 200);
    CHECK(r[0].body == "waited 50 ms\n");
    CHECK(r[1].body == example::http::kHelloBody);
    CHECK(r[2].status == 200);
    CHECK(r[2].body == "abcdefg");
    CHECK(*r[2].header("content-type") == "text/x-test");
    CHECK(r[3].status == 404);
    CHECK(r[4].status == 405);
    CHECK(*r[4].header("allow") == "GET, HEAD");
    CHECK(r[5].status == 400);
    // Still open for more.
    c.send(get("/"));
    CHECK(c.receive().status == 200);
  });
}

TEST_CASE("http server: malformed requests get 400, oversized headers 431, then the connection closes") {
  with_server(quick(), [](Server& server, const SocketAddress& address) {
    {
      Client c(address);
      c.send(get("/") + "NOT HTTP AT ALL\r\n\r\n");
      CHECK(c.receive().status == 200);
      ClientResponse bad = c.receive();
      CHECK(bad.status == 400);
      CHECK(!bad.keep_alive);
      CHECK(c.closed_by_server());
    }
    {
      Client c(address);
      c.send("GET / HTTP/1.1\r\nHost: test\r\nX-Big: " + std::string(9000, 'x') + "\r\n\r\n");
      CHECK(c.receive().status == 431);
      CHECK(c.closed_by_server());
    }
    {
      // The client is still sending a body the server refused: the answer
      // must survive (no reset before the client reads it).
      Client c(address);
      c.send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5000000\r\n\r\n");
      c.send(std::string(64 * 1024, 'b'));
      CHECK(c.receive().status == 413);
    }
    CHECK(server.stats().errors == 3);
  });
}

TEST_CASE("http server: a client too slow with its headers gets 408 (slowloris)") {
  ServerOptions options = quick();
  options.header_timeout = 300ms;
  with_server(options, [](Server&, const SocketAddress& address) {
    Client c(address);
    auto start = spindle::now();
    c.send("GET / HTTP/1.1\r\nHost: test\r\n");
    // One header byte every 50 ms: each read brings data, but the header
    // block never completes. The deadline must hold anyway.
    auto trickler = spindle::spawn([&] {
      try {
        for (int i = 0; i < 100; ++i) {
          c.send("X");
          spindle::this_fiber::sleep_for(50ms);
        }
      } catch (const std::system_error&) {
        // The server closed the connection: what the test expects.
      }
    });
    ClientResponse r = c.receive();
    const double took = std::chrono::duration_cast<Seconds>(spindle::now() - start).count();
    trickler.cancel();
    trickler.wait();
    CHECK(r.status == 408);
    CHECK(took >= 0.3);
    CHECK(took < 2.0);
  });
}

TEST_CASE("http server: an idle keep-alive connection is closed without a response") {
  ServerOptions options = quick();
  options.header_timeout = 200ms;
  with_server(options, [](Server&, const SocketAddress& address) {
    Client c(address);
    c.send(get("/"));
    CHECK(c.receive().status == 200);
    auto start = spindle::now();
    CHECK(c.closed_by_server());
    const double took = std::chrono::duration_cast<Seconds>(spindle::now() - start).count();
    CHECK(took >= 0.15);
  });
}

TEST_CASE("http server: over the connection cap a client gets 503, and is served once a slot frees") {
  ServerOptions options = quick();
  options.max_connections = 2;
  with_server(options, [](Server& server, const SocketAddress& address) {
    auto a = std::make_unique<Client>(address);
    Client b(address);
    for (Client* c : {a.get(), &b}) {
      c->send(get("/"));
      CHECK(c->receive().status == 200);
    }
    CHECK(server.open_connections() == 2);
    {
      Client over(address);
      over.send(get("/"));
      ClientResponse r = over.receive();
      CHECK(r.status == 503);
      CHECK(*r.header("retry-after") == "1");
      CHECK(!r.keep_alive);
      CHECK(over.closed_by_server());
    }
    a.reset();  // frees a slot once the server sees the close
    ClientResponse r;
    for (int attempt = 0; attempt < 50; ++attempt) {
      Client again(address);
      again.send(get("/"));
      r = again.receive();
      if (r.status == 200) break;
      spindle::this_fiber::sleep_for(20ms);
    }
    CHECK(r.status == 200);
    CHECK(server.stats().rejected >= 1);
  });
}

TEST_CASE("http server: fibers serve slow requests concurrently") {
  with_server(quick(), [](Server&, const SocketAddress& address) {
    auto start = spindle::now();
    std::vector<spindle::Task<int>> clients;
    for (int i = 0; i < 40; ++i) {
      clients.push_back(spindle::spawn([&address] {
        Client c(address);
        c.send(get("/delay?ms=200"));
        return c.receive().status;
      }));
    }
    for (auto& t : clients) CHECK(t.join() == 200);
    const double took = std::chrono::duration_cast<Seconds>(spindle::now() - start).count();
    CHECK(took >= 0.2);
    CHECK(took < 1.5);  // serially it would take 8 s
  });
}

TEST_CASE("http server: stop closes idle connections and finishes requests in flight") {
  spindle::run([] {
    spindle::Timeout whole(30s);
    auto listener = TcpListener::bind(SocketAddress::parse("127.0.0.1", 0));
    ServerOptions options = quick();
    Server server(std::move(listener), options, example::http::route);
    const SocketAddress address = server.local_address();
    auto serving = spindle::spawn([&] { server.serve(); });

    Client idle(address);
    idle.send(get("/"));
    CHECK(idle.receive().status == 200);
    Client busy(address);
    busy.send(get("/delay?ms=400"));
    spindle::this_fiber::sleep_for(100ms);  // the request is in the handler now

    auto start = spindle::now();
    server.stop();
    CHECK(idle.closed_by_server(1000ms));
    ClientResponse r = busy.receive();
    CHECK(r.status == 200);
    CHECK(r.body == "waited 400 ms\n");
    CHECK(!r.keep_alive);  // answered with Connection: close
    CHECK(busy.closed_by_server());
    serving.join();
    const double took = std::chrono::duration_cast<Seconds>(spindle::now() - start).count();
    CHECK(took < 2.0);
    CHECK(server.open_connections() == 0);
    // The listener is closed: nobody answers any more.
    CHECK_THROWS_AS(TcpStream::connect(address), std::system_error);
  });
}

TEST_CASE("http server: stop cancels what is still running when the grace period ends") {
  spindle::run([] {
    spindle::Timeout whole(30s);
    auto listener = TcpListener::bind(SocketAddress::parse("127.0.0.1", 0));
    ServerOptions options = quick();
    options.grace = 200ms;
    Server server(std::move(listener), options, example::http::route);
    const SocketAddress address = server.local_address();
    auto serving = spindle::spawn([&] { server.serve(); });
    Client slow(address);
    slow.send(get("/delay?ms=10000"));
    spindle::this_fiber::sleep_for(50ms);
    auto start = spindle::now();
    server.stop();
    serving.join();
    const double took = std::chrono::duration_cast<Seconds>(spindle::now() - start).count();
    CHECK(took >= 0.2);
    CHECK(took < 2.0);
    CHECK(slow.closed_by_server());
  });
}
