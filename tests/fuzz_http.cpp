// libFuzzer target for the HTTP example's request handling
// (examples/http/http_conn.hpp): arbitrary bytes, split into arbitrary
// feeds, go through ServerConnection the way the server's read loop drives
// it, and every response it writes must parse back as HTTP.
//
// Input layout: byte 0 picks the limits (small caps reach 413/414/431 with
// short inputs); byte 1 seeds the feed sizes; the rest is the stream. Bytes
// equal to 0xff in the stream never reach the connection: they end the
// current feed, so the fuzzer controls the splits directly (a real 0xff in a
// request is covered by the seed-driven splits).
//
// Besides the sanitizers, the target checks the state machine's promises:
// requests come out in order and each is answered once; after done() no
// request or byte comes out; an error status is one of the documented ones;
// every byte of output is a sequence of complete, well-formed responses,
// the same number as answers plus interim and error responses.
//
// Built with clang++ -fsanitize=fuzzer,address,undefined by tests/meson.build
// and run for a bounded time by tests/run_fuzz.py (suite 'fuzz').
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http/http_conn.hpp"
#include "http/response_parser.hpp"

namespace {

using example::http::Limits;
using example::http::Request;
using example::http::Response;
using example::http::ResponseParser;
using example::http::ServerConnection;

[[noreturn]] void broken(const char* what) {
  __builtin_printf("fuzz_http: broken promise: %s\n", what);
  std::abort();
}

bool documented_error(int status) {
  switch (status) {
    case 0:
    case 400:
    case 408:
    case 413:
    case 414:
    case 417:
    case 431:
    case 505:
      return true;
    default:
      return false;
  }
}

// Checks that `out` is complete responses only; returns how many final
// (non-1xx) responses it holds. HEAD answers are parsed as such.
std::size_t check_output(std::string_view out, std::string_view heads) {
  std::size_t finals = 0;
  while (!out.empty()) {
    const bool head = finals < heads.size() && heads[finals] == 'H';
    ResponseParser parser(head);
    std::size_t used = 0;
    try {
      used = parser.feed(out);
      // A "100 Continue" may close the output when the client never sent
      // the body (EOF): the parser has used it up and waits for more.
      if (!parser.complete() && used == out.size() && out.ends_with(" 100 Continue\r\n\r\n")) break;
      if (!parser.complete()) broken("a response was cut short");
    } catch (const example::http::ResponseError&) {
      broken("the server wrote a malformed response");
    }
    if (used == 0) broken("a response of zero bytes");
    out.remove_prefix(used);
    ++finals;
  }
  return finals;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  Limits limits;
  if (data[0] & 1) {
    limits.max_header_bytes = 64 + data[0];
    limits.max_target_bytes = 16 + data[0] / 4;
    limits.max_body_bytes = data[0] / 2;
  }
  std::uint32_t seed = data[1] + 1u;
  std::string_view stream(reinterpret_cast<const char*>(data + 2), size - 2);

  ServerConnection conn(limits);
  std::string output;
  std::string heads;  // 'H' per HEAD answer, '-' otherwise, in answer order
  std::size_t answers = 0;
  std::size_t answered_at_done = 0;
  bool was_done = false;

  auto drain = [&] {
    while (const Request* req = conn.next()) {
      if (was_done) broken("a request came out after done()");
      heads.push_back(req->method == "HEAD" ? 'H' : '-');
      Response r;
      r.body = req->body.size() < 64 ? req->body : req->body.substr(0, 64);
      r.status = req->target.size() % 3 == 0 ? 204 : 200;
      conn.respond(r);
      ++answers;
    }
    if (conn.error_status() != 0 && !documented_error(conn.error_status())) broken("undocumented status");
    if (was_done && !conn.output().empty()) broken("output after done()");
    output += conn.output();
    conn.clear_output();
    if (conn.done() && !was_done) {
      was_done = true;
      answered_at_done = answers;
    }
  };

  while (!stream.empty()) {
    std::size_t mark = stream.find('\xff');
    std::size_t n = mark == std::string_view::npos ? stream.size() : mark;
    // Within a marked piece, the seed splits further (xorshift).
    seed ^= seed << 13;
    seed ^= seed >> 17;
    seed ^= seed << 5;
    std::size_t piece = std::min<std::size_t>(n, 1 + seed % 97);
    if (piece == 0) {
      stream.remove_prefix(1);  // the 0xff marker itself
      continue;
    }
    conn.feed(stream.substr(0, piece));
    stream.remove_prefix(piece);
    drain();
  }
  // End the way a server would: timed out for odd seeds, EOF for even ones.
  if (seed & 1) {
    conn.timed_out();
  } else {
    conn.feed_eof();
  }
  drain();
  if (!conn.done()) broken("not done after EOF or timeout");
  if (answered_at_done != answers) broken("answers after done()");
  if (conn.answered() != answers) broken("answered() disagrees");

  // Interim 100 Continue responses are skipped by the parser, so the
  // final responses are the answers plus at most one error or 408.
  std::size_t finals = check_output(output, heads);
  if (finals != answers && finals != answers + 1) broken("response count does not match the answers");
  if (finals == answers + 1 && conn.error_status() == 0) broken("an extra response without an error");
  return 0;
}
