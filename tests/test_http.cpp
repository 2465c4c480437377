// The HTTP example's protocol state machine (examples/http/http_conn.hpp),
// without sockets: bytes in, requests and response bytes out. What the
// server writes is read back with the example's own ResponseParser, so each
// check is on parsed responses rather than on exact header text.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "http/http_conn.hpp"
#include "http/response_parser.hpp"

using example::http::ClientResponse;
using example::http::Limits;
using example::http::Request;
using example::http::Response;
using example::http::ResponseParser;
using example::http::ServerConnection;

namespace {

// Parses every response in `out`; heads[i] says whether response i answers
// a HEAD request. Fails the test on trailing bytes or a cut-off response.
std::vector<ClientResponse> parse_responses(std::string_view out, const std::vector<bool>& heads = {}) {
  std::vector<ClientResponse> all;
  while (!out.empty()) {
    const bool head = all.size() < heads.size() && heads[all.size()];
    ResponseParser parser(head);
    std::size_t used = parser.feed(out);
    if (!parser.complete()) parser.feed_eof();
    REQUIRE(parser.complete());
    REQUIRE(used > 0);
    all.push_back(parser.response());
    out.remove_prefix(used);
  }
  return all;
}

// Answers every queued request with "<METHOD> <target> <body>" and returns
// what was answered, in order.
std::vector<std::string> answer_all(ServerConnection& conn) {
  std::vector<std::string> seen;
  while (const Request* req = conn.next()) {
    std::string line = req->method + " " + req->target + " " + req->body;
    seen.push_back(line);
    Response r;
    r.body = line;
    conn.respond(r);
  }
  return seen;
}

// One complete exchange: feeds `input`, answers everything, returns the
// parsed responses.
std::vector<ClientResponse> exchange(ServerConnection& conn, std::string_view input) {
  conn.feed(input);
  answer_all(conn);
  std::vector<ClientResponse> r = parse_responses(conn.output());
  conn.clear_output();
  return r;
}

int error_of(std::string_view input, Limits limits = {}) {
  ServerConnection conn(limits);
  conn.feed(input);
  answer_all(conn);
  auto responses = parse_responses(conn.output());
  REQUIRE(!responses.empty());
  CHECK(conn.done());
  CHECK(responses.back().header("connection") != nullptr);
  CHECK(*responses.back().header("connection") == "close");
  CHECK(responses.back().status == conn.error_status());
  return responses.back().status;
}

constexpr std::string_view kPipelined =
    "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    "5;ext=1\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\nTrailer-Field: t\r\n\r\n"
    "POST /b?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello there"
    "GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
const std::vector<std::string> kPipelinedAnswers = {"POST /a hello, world", "POST /b?q=1 hello there",
                                                    "GET /c "};

}  // namespace

TEST_CASE("http: a GET is parsed and answered with a keep-alive response") {
  ServerConnection conn;
  CHECK(conn.idle());
  CHECK(conn.awaiting_headers());
  conn.feed("GET /x?a=1&b=2 HTTP/1.1\r\nHost: example\r\nX-Two: a\r\nx-two: b\r\n\r\n");
  const Request* req = conn.next();
  REQUIRE(req != nullptr);
  CHECK(req->method == "GET");
  CHECK(req->target == "/x?a=1&b=2");
  CHECK(req->path() == "/x");
  CHECK(req->query() == "a=1&b=2");
  CHECK(req->version_major == 1);
  CHECK(req->version_minor == 1);
  CHECK(req->keep_alive);
  REQUIRE(req->headers.size() == 3);
  REQUIRE(req->header("HOST") != nullptr);
  CHECK(*req->header("host") == "example");
  CHECK(*req->header("X-TWO") == "a");
  CHECK(req->header("missing") == nullptr);
  CHECK(!conn.idle());
  Response r;
  r.body = "hi\n";
  r.headers.push_back({"X-Test", "1"});
  conn.respond(r);
  CHECK(conn.next() == nullptr);
  auto responses = parse_responses(conn.output());
  REQUIRE(responses.size() == 1);
  CHECK(responses[0].status == 200);
  CHECK(responses[0].version_minor == 1);
  CHECK(responses[0].body == "hi\n");
  CHECK(*responses[0].header("content-length") == "3");
  CHECK(*responses[0].header("content-type") == "text/plain; charset=utf-8");
  CHECK(*responses[0].header("x-test") == "1");
  CHECK(responses[0].header("date") != nullptr);
  CHECK(responses[0].header("connection") == nullptr);
  CHECK(responses[0].keep_alive);
  CHECK(!conn.done());
  CHECK(conn.idle());
  CHECK(conn.answered() == 1);
}

TEST_CASE("http: pipelined requests in one feed are answered in order") {
  ServerConnection conn;
  conn.feed(kPipelined);
  CHECK(answer_all(conn) == kPipelinedAnswers);
  auto responses = parse_responses(conn.output());
  REQUIRE(responses.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) CHECK(responses[i].body == kPipelinedAnswers[i]);
  CHECK(!conn.done());
  CHECK(conn.idle());
}

TEST_CASE("http: the same pipelined input split at every position parses the same") {
  for (std::size_t cut = 0; cut <= kPipelined.size(); ++cut) {
    ServerConnection conn;
    std::vector<std::string> seen;
    conn.feed(kPipelined.substr(0, cut));
    for (auto& s : answer_all(conn)) seen.push_back(s);
    conn.feed(kPipelined.substr(cut));
    for (auto& s : answer_all(conn)) seen.push_back(s);
    INFO("cut at ", cut);
    CHECK(seen == kPipelinedAnswers);
    CHECK(parse_responses(conn.output()).size() == 3);
  }
}

TEST_CASE("http: chunked bodies fed in random pieces, down to single bytes, decode the same") {
  // A fixed-seed generator: the splits are arbitrary but every run is the same.
  std::uint64_t state = 0x9e3779b97f4a7c15u;
  auto next_rand = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  for (int round = 0; round < 300; ++round) {
    ServerConnection conn;
    std::vector<std::string> seen;
    std::string_view rest = kPipelined;
    while (!rest.empty()) {
      std::size_t n = round == 0 ? 1 : 1 + next_rand() % 24;
      n = std::min(n, rest.size());
      conn.feed(rest.substr(0, n));
      rest.remove_prefix(n);
      for (auto& s : answer_all(conn)) seen.push_back(s);
    }
    INFO("round ", round);
    CHECK(seen == kPipelinedAnswers);
  }
}

TEST_CASE("http: a keep-alive connection serves many requests and reuses its slots") {
  ServerConnection conn;
  for (int i = 0; i < 1000; ++i) {
    std::string req = "GET /" + std::to_string(i) + " HTTP/1.1\r\nHost: h\r\n\r\n";
    auto responses = exchange(conn, req);
    REQUIRE(responses.size() == 1);
    CHECK(responses[0].body == "GET /" + std::to_string(i) + " ");
  }
  // Answering while more requests arrive behind the queue keeps the order.
  std::string batch;
  for (int i = 0; i < 50; ++i) batch += "GET /p" + std::to_string(i) + " HTTP/1.1\r\nHost: h\r\n\r\n";
  conn.feed(batch.substr(0, batch.size() / 2));
  std::vector<std::string> seen;
  if (const Request* req = conn.next()) {
    seen.push_back(req->target);
    conn.respond(Response{});
  }
  conn.feed(batch.substr(batch.size() / 2));
  while (const Request* req = conn.next()) {
    seen.push_back(req->target);
    conn.respond(Response{});
  }
  REQUIRE(seen.size() == 50);
  for (int i = 0; i < 50; ++i) CHECK(seen[static_cast<std::size_t>(i)] == "/p" + std::to_string(i));
  CHECK(conn.answered() == 1050);
}

TEST_CASE("http: empty lines before a request line are ignored") {
  ServerConnection conn;
  auto responses = exchange(conn, "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
  REQUIRE(responses.size() == 1);
  CHECK(responses[0].status == 200);
}

TEST_CASE("http: HTTP/1.0 closes by default and keeps alive when asked") {
  SUBCASE("no Connection header: answered with Connection: close, then done") {
    ServerConnection conn;
    conn.feed("GET / HTTP/1.0\r\n\r\nGET /never HTTP/1.0\r\n\r\n");
    CHECK(answer_all(conn) == std::vector<std::string>{"GET / "});
    auto responses = parse_responses(conn.output());
    REQUIRE(responses.size() == 1);
    CHECK(*responses[0].header("connection") == "close");
    CHECK(conn.done());
  }
  SUBCASE("Connection: keep-alive is granted and said so") {
    ServerConnection conn;
    auto responses = exchange(conn, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    REQUIRE(responses.size() == 1);
    CHECK(*responses[0].header("connection") == "keep-alive");
    CHECK(!conn.done());
    responses = exchange(conn, "GET /2 HTTP/1.0\r\n\r\n");
    REQUIRE(responses.size() == 1);
    CHECK(*responses[0].header("connection") == "close");
    CHECK(conn.done());
  }
  SUBCASE("HTTP/1.0 needs no Host header") {
    ServerConnection conn;
    auto responses = exchange(conn, "GET / HTTP/1.0\r\n\r\n");
    REQUIRE(responses.size() == 1);
    CHECK(responses[0].status == 200);
  }
}

TEST_CASE("http: Connection: close ends the connection after that answer") {
  ServerConnection conn;
  conn.feed(
      "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
      "GET /2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
      "GET /3 HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK(answer_all(conn) == std::vector<std::string>{"GET /1 ", "GET /2 "});
  auto responses = parse_responses(conn.output());
  REQUIRE(responses.size() == 2);
  CHECK(responses[0].header("connection") == nullptr);
  CHECK(*responses[1].header("connection") == "close");
  CHECK(conn.done());
  conn.feed("GET /4 HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK(conn.next() == nullptr);
}

TEST_CASE("http: HEAD gets the headers of the GET answer and no body") {
  ServerConnection conn;
  conn.feed("HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
  while (const Request* req = conn.next()) {
    (void)req;
    Response r;
    r.body = "twelve bytes";
    conn.respond(r);
  }
  auto responses = parse_responses(conn.output(), {true, false});
  REQUIRE(responses.size() == 2);
  CHECK(*responses[0].header("content-length") == "12");
  CHECK(responses[0].body.empty());
  CHECK(responses[1].body == "twelve bytes");
}

TEST_CASE("http: 204 and 304 carry neither body nor Content-Length") {
  ServerConnection conn;
  conn.feed("GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
  for (int status : {204, 304}) {
    REQUIRE(conn.next() != nullptr);
    Response r;
    r.status = status;
    r.body = "dropped";
    conn.respond(r);
  }
  auto responses = parse_responses(conn.output());
  REQUIRE(responses.size() == 2);
  CHECK(responses[0].status == 204);
  CHECK(responses[1].status == 304);
  for (auto& r : responses) {
    CHECK(r.body.empty());
    CHECK(r.header("content-length") == nullptr);
  }
}

TEST_CASE("http: Expect: 100-continue gets an interim response before the body") {
  SUBCASE("body held back: 100 Continue, then the request once the body arrives") {
    ServerConnection conn;
    conn.feed("PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    CHECK(conn.next() == nullptr);
    CHECK(conn.output() == "HTTP/1.1 100 Continue\r\n\r\n");
    CHECK(!conn.awaiting_headers());
    conn.clear_output();
    CHECK(conn.next() == nullptr);  // said once
    CHECK(conn.output().empty());
    conn.feed("data");
    CHECK(answer_all(conn) == std::vector<std::string>{"PUT /up data"});
  }
  SUBCASE("body already sent: no interim response") {
    ServerConnection conn;
    conn.feed("PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nda");
    CHECK(conn.next() == nullptr);
    CHECK(conn.output().empty());
  }
  SUBCASE("no body: no interim response") {
    ServerConnection conn;
    auto responses = exchange(conn, "GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n");
    REQUIRE(responses.size() == 1);
    CHECK(responses[0].status == 200);
  }
  SUBCASE("the interim response waits for the answers to earlier requests") {
    ServerConnection conn;
    conn.feed(
        "GET /first HTTP/1.1\r\nHost: h\r\n\r\n"
        "POST /second HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    const Request* req = conn.next();
    REQUIRE(req != nullptr);
    CHECK(req->target == "/first");
    CHECK(conn.output().empty());
    conn.respond(Response{});
    CHECK(conn.next() == nullptr);
    CHECK(conn.output().ends_with("HTTP/1.1 100 Continue\r\n\r\n"));
    CHECK(conn.output().starts_with("HTTP/1.1 200 OK\r\n"));
  }
}

TEST_CASE("http: requests before a malformed one are answered, then 400 and close") {
  ServerConnection conn;
  conn.feed("GET /ok HTTP/1.1\r\nHost: h\r\n\r\nGARBAGE\x01 / HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK(answer_all(conn) == std::vector<std::string>{"GET /ok "});
  auto responses = parse_responses(conn.output());
  REQUIRE(responses.size() == 2);
  CHECK(responses[0].status == 200);
  CHECK(responses[1].status == 400);
  CHECK(responses[1].body == "Bad Request\n");
  CHECK(*responses[1].header("connection") == "close");
  CHECK(conn.done());
  CHECK(conn.error_status() == 400);
  conn.clear_output();
  conn.feed("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
  CHECK(conn.next() == nullptr);
  CHECK(conn.output().empty());
}

TEST_CASE("http: every kind of bad request gets its status") {
  SUBCASE("400: syntax") {
    CHECK(error_of("GET / HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n") == 400);
    CHECK(error_of("GET / HTTZ/1.1\r\n\r\n") == 400);
    CHECK(error_of("GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
    CHECK(error_of("GET / HTTP/1.1\r\nHost: h\r\nX\x01Y: z\r\n\r\n") == 400);
    CHECK(error_of("BREW / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
  }
  SUBCASE("400: Host missing or repeated in HTTP/1.1") {
    CHECK(error_of("GET / HTTP/1.1\r\n\r\n") == 400);
    CHECK(error_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400);
  }
  SUBCASE("400: a body length that cannot be trusted") {
    CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n") ==
          400);
    CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd") == 400);
    CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n") == 400);
    CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n") == 400);
    CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n") == 400);
    CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n") == 400);
  }
  SUBCASE("413: a declared or a received body over the cap") {
    Limits small;
    small.max_body_bytes = 10;
    CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", small) == 413);
    CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n3\r\n123\r\n",
                   small) == 413);
    ServerConnection conn(small);
    auto responses = exchange(conn, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789");
    REQUIRE(responses.size() == 1);
    CHECK(responses[0].status == 200);
  }
  SUBCASE("414: a target over the cap") {
    Limits small;
    small.max_target_bytes = 16;
    CHECK(error_of("GET /" + std::string(16, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n", small) == 414);
    ServerConnection conn(small);
    auto responses = exchange(conn, "GET /" + std::string(15, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n");
    REQUIRE(responses.size() == 1);
    CHECK(responses[0].status == 200);
  }
  SUBCASE("417: an expectation other than 100-continue") {
    CHECK(error_of("POST / HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\nx") == 417);
  }
  SUBCASE("505: a major version other than 1") {
    CHECK(error_of("GET / HTTP/2.0\r\nHost: h\r\n\r\n") == 505);
    CHECK(error_of("GET / HTTP/0.9\r\n\r\n") == 505);
  }
}

TEST_CASE("http: the header cap is exact and answered with 431") {
  // "GET / HTTP/1.1\r\nHost: h\r\nX: <pad>\r\n\r\n" counts the target (1),
  // "Host" + "h" + 4, "X" + pad + 4.
  Limits limits;
  limits.max_header_bytes = 100;
  const std::size_t fixed = 1 + (4 + 1 + 4) + (1 + 4);
  const std::string fits = "GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(100 - fixed, 'p') + "\r\n\r\n";
  ServerConnection ok(limits);
  auto responses = exchange(ok, fits);
  REQUIRE(responses.size() == 1);
  CHECK(responses[0].status == 200);
  const std::string over = "GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(101 - fixed, 'p') + "\r\n\r\n";
  CHECK(error_of(over, limits) == 431);
  // Many small headers count as well as one long one.
  std::string many = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 40; ++i) many += "A: b\r\n";
  CHECK(error_of(many + "\r\n", limits) == 431);
  // The default cap is 8 KiB.
  CHECK(error_of("GET / HTTP/1.1\r\nHost: h\r\nBig: " + std::string(8 * 1024, 'x') + "\r\n\r\n") == 431);
}

TEST_CASE("http: timed_out gives 408 after part of a request, silence when idle") {
  SUBCASE("half a header block: 408") {
    ServerConnection conn;
    conn.feed("GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ");
    CHECK(conn.next() == nullptr);
    CHECK(!conn.idle());
    CHECK(conn.awaiting_headers());
    conn.timed_out();
    CHECK(conn.done());
    auto responses = parse_responses(conn.output());
    REQUIRE(responses.size() == 1);
    CHECK(responses[0].status == 408);
    CHECK(*responses[0].header("connection") == "close");
    CHECK(conn.error_status() == 408);
  }
  SUBCASE("half a body: 408") {
    ServerConnection conn;
    conn.feed("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
    CHECK(conn.next() == nullptr);
    CHECK(!conn.awaiting_headers());
    conn.timed_out();
    auto responses = parse_responses(conn.output());
    REQUIRE(responses.size() == 1);
    CHECK(responses[0].status == 408);
  }
  SUBCASE("idle between requests: closed without a response") {
    ServerConnection conn;
    exchange(conn, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(conn.idle());
    conn.timed_out();
    CHECK(conn.done());
    CHECK(conn.output().empty());
  }
}

TEST_CASE("http: EOF drops a partial request and closes after the queued ones") {
  SUBCASE("partial request: done, nothing written") {
    ServerConnection conn;
    conn.feed("GET / HTTP/1.1\r\nHo");
    conn.feed_eof();
    CHECK(conn.next() == nullptr);
    CHECK(conn.done());
    CHECK(conn.output().empty());
  }
  SUBCASE("queued request: answered with Connection: close") {
    ServerConnection conn;
    conn.feed("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    conn.feed_eof();
    CHECK(!conn.done());
    CHECK(answer_all(conn).size() == 1);
    CHECK(conn.done());
    auto responses = parse_responses(conn.output());
    REQUIRE(responses.size() == 1);
    CHECK(*responses[0].header("connection") == "close");
  }
  SUBCASE("idle: done at once") {
    ServerConnection conn;
    conn.feed_eof();
    CHECK(conn.done());
  }
}

TEST_CASE("http: finish answers the queued requests, the last with Connection: close") {
  ServerConnection conn;
  conn.feed("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3 HTT");
  conn.finish();
  CHECK(answer_all(conn) == std::vector<std::string>{"GET /1 ", "GET /2 "});
  CHECK(conn.done());
  auto responses = parse_responses(conn.output());
  REQUIRE(responses.size() == 2);
  CHECK(responses[0].header("connection") == nullptr);
  CHECK(*responses[1].header("connection") == "close");
}

TEST_CASE("http: an Upgrade that is not granted is answered, then the connection closes") {
  ServerConnection conn;
  conn.feed("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello");
  CHECK(answer_all(conn) == std::vector<std::string>{"GET /ws "});
  CHECK(conn.done());
  auto responses = parse_responses(conn.output());
  REQUIRE(responses.size() == 1);
  CHECK(*responses[0].header("connection") == "close");
}

TEST_CASE("http: respond without a queued request is a logic error") {
  ServerConnection conn;
  CHECK_THROWS_AS(conn.respond(Response{}), std::logic_error);
}

TEST_CASE("http: query_param finds values without decoding them") {
  using example::http::query_param;
  CHECK(query_param("ms=50", "ms") == "50");
  CHECK(query_param("a=1&ms=7&b", "ms") == "7");
  CHECK(query_param("a=1&b", "b") == "");
  CHECK(!query_param("a=1", "ms").has_value());
  CHECK(!query_param("", "ms").has_value());
  CHECK(!query_param("mss=1", "ms").has_value());
}

TEST_CASE("http: the response parser skips interim responses and reports bad input") {
  ResponseParser parser;
  std::string_view input = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nokEXTRA";
  std::size_t used = parser.feed(input);
  REQUIRE(parser.complete());
  CHECK(parser.response().status == 201);
  CHECK(parser.response().body == "ok");
  CHECK(input.substr(used) == "EXTRA");

  ResponseParser until_eof;
  until_eof.feed("HTTP/1.0 200 OK\r\n\r\nall of it");
  CHECK(!until_eof.complete());
  until_eof.feed_eof();
  CHECK(until_eof.response().body == "all of it");

  ResponseParser cut;
  cut.feed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab");
  CHECK_THROWS_AS(cut.feed_eof(), example::http::ResponseError);
  ResponseParser bad;
  CHECK_THROWS_AS(bad.feed("NOT HTTP\r\n\r\n"), example::http::ResponseError);
}
