// The server side of one HTTP/1.1 connection, as a state machine with no
// sockets in it: bytes from the peer go in, complete requests come out in
// order, and the answers (plus any error, interim or timeout response the
// protocol calls for) come out as bytes to write. Parsing is Debian's
// libhttp-parser (http_parser.h); this file adds what a server needs on top.
//
//   example::http::ServerConnection conn;
//   conn.feed(bytes_read);                       // any split, any size
//   while (const Request* req = conn.next()) {   // oldest unanswered first
//     conn.respond(handle(*req));
//   }
//   write_all(conn.output()); conn.clear_output();
//   if (conn.done()) close();                    // else read again
//
// Connection states (the server's read loop follows them):
//
//   idle            no byte of the next request yet. The peer may close now.
//   awaiting_headers part of a request line or header block has arrived;
//                   a server bounds the time to complete it (slowloris: 408).
//   reading body    the header block is complete, the body (Content-Length
//                   or chunked) is not.
//   queued          complete requests wait for answers; next() returns the
//                   oldest. Several requests in one feed (pipelining) queue
//                   up and are answered strictly in order.
//   done            after the answer to a request that ends the connection
//                   (HTTP/1.0 without keep-alive, "Connection: close", an
//                   Upgrade or CONNECT that is not granted), after an error
//                   response, after timed_out(), or after EOF once the queue
//                   is answered. Input after that point is ignored.
//
// Errors: a request the server must refuse stops parsing at once; the
// requests before it are still answered, then next() returns null and puts
// the error response (with "Connection: close") into output():
//   400  malformed syntax (libhttp-parser's verdict), a missing Host in
//        HTTP/1.1, a body length that cannot be trusted (both Content-Length
//        and Transfer-Encoding, conflicting or invalid lengths, a transfer
//        coding other than a final "chunked")
//   413  a body larger than Limits::max_body_bytes (declared or received)
//   414  a request target longer than Limits::max_target_bytes
//   417  an Expect header other than 100-continue
//   431  a header block larger than Limits::max_header_bytes
//   505  an HTTP major version other than 1
//   408  from timed_out(), when part of a request had arrived
//   and any status given to refuse()
//
// Memory: a queued request holds copies of its target, headers and body, so
// the queue never holds more than a constant per request plus the bytes fed
// since the queue was last answered; a server that reads only when the queue
// is empty (as above) bounds it by its read size. Request slots are reused
// with their target and body buffers, so a keep-alive connection serving
// small requests (short headers fit std::string's inline buffer) allocates
// nothing per request once warm.
#pragma once

#include <http_parser.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace example::http {

struct Limits {
  // Request line and header fields: the target, every header name and value,
  // plus 4 bytes per header line for ": " and CRLF. Over it: 431.
  std::size_t max_header_bytes = 8 * 1024;
  // The request target alone. Over it: 414.
  std::size_t max_target_bytes = 4 * 1024;
  // The body, after chunked decoding. Over it: 413.
  std::size_t max_body_bytes = 1024 * 1024;
};

struct Header {
  std::string name;
  std::string value;
};

struct Request {
  std::string method;  // "GET", as libhttp-parser names it
  std::string target;  // "/delay?ms=5"
  unsigned version_major = 1;
  unsigned version_minor = 1;
  std::vector<Header> headers;  // in arrival order, names as sent
  std::string body;             // decoded when chunked
  // Whether the connection stays open after the answer, by HTTP/1.0 or
  // HTTP/1.1 rules ("Connection: close" / "keep-alive").
  bool keep_alive = true;

  // The path before any '?', and the query after it (empty if none).
  std::string_view path() const;
  std::string_view query() const;
  // The first header of that name (case-insensitive), or null.
  const std::string* header(std::string_view name) const;
  // Clears every field but keeps the capacity of strings and vectors.
  void reset();
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<Header> headers;  // extra fields, written as given

  void reset();
};

// The value of `name` in an application/x-www-form-urlencoded query
// ("ms=5&x=1"), without percent-decoding; nullopt when absent.
std::optional<std::string_view> query_param(std::string_view query, std::string_view name);
// ASCII case-insensitive equality, as header names and tokens compare.
bool iequals(std::string_view a, std::string_view b) noexcept;
// "OK", "Not Found", ...; "Unknown" for codes libhttp-parser does not know.
std::string_view reason_phrase(int status) noexcept;

class ServerConnection {
 public:
  explicit ServerConnection(Limits limits = {});
  // libhttp-parser calls back with a pointer to this object: not movable.
  ServerConnection(const ServerConnection&) = delete;
  ServerConnection& operator=(const ServerConnection&) = delete;

  // Parses bytes from the peer. Ignored once the connection is done or has
  // stopped parsing (error, a request that ends the connection, finish()).
  void feed(std::string_view bytes);
  // The peer closed its sending side. A partial request is dropped without
  // an answer (nobody will complete it); queued requests are still answered.
  void feed_eof();

  // The oldest unanswered request, or null; the pointer is valid until the
  // next feed() or respond(). When it returns null it also
  // puts into output() what is due once every queued request is answered:
  // the error response, or "100 Continue" for a request whose body the
  // client holds back until told to send it.
  const Request* next();
  // Answers the request next() returned, and drops it from the queue. Adds
  // Date, Content-Length and, when the connection ends here or the client
  // spoke HTTP/1.0 with keep-alive, a Connection header. A HEAD request gets
  // the headers only; 1xx, 204 and 304 never carry a body.
  void respond(const Response& response);

  // The server gave up waiting for input: 408 when part of a request had
  // arrived (and ends the connection either way).
  void timed_out();
  // Answers `status` without looking at any request (503 over a connection
  // cap) and ends the connection.
  void refuse(int status, const std::vector<Header>& extra = {});
  // The server is shutting down: stop parsing; the queued requests are still
  // answered, the last one with "Connection: close", then done.
  void finish();

  // Bytes to write to the peer, in order.
  const std::string& output() const noexcept { return out_; }
  void clear_output() noexcept { out_.clear(); }

  // After writing output(), close the connection.
  bool done() const noexcept { return done_; }
  // No byte of an unanswered request has arrived (between requests).
  bool idle() const noexcept { return queued_ == 0 && !in_message_; }
  // Input is needed to complete the header block of the next request: idle,
  // or inside a request line or header block.
  bool awaiting_headers() const noexcept { return queued_ == 0 && !headers_done_; }
  // The status the connection failed with (400, 413, 414, 417, 431, 505,
  // 408), or 0.
  int error_status() const noexcept { return error_status_; }
  // Requests answered so far.
  std::size_t answered() const noexcept { return answered_; }

 private:
  static int on_message_begin(http_parser* p);
  static int on_url(http_parser* p, const char* at, std::size_t n);
  static int on_header_field(http_parser* p, const char* at, std::size_t n);
  static int on_header_value(http_parser* p, const char* at, std::size_t n);
  static int on_headers_complete(http_parser* p);
  static int on_body(http_parser* p, const char* at, std::size_t n);
  static int on_message_complete(http_parser* p);
  static const http_parser_settings kSettings;

  // Fails the connection with `status` (the first failure wins); parsing stops.
  int fail(int status);
  bool add_header_bytes(std::size_t n);
  Request& current() { return queue_[head_ + queued_]; }
  // The status line, headers and reason-phrase body of an error response,
  // with "Connection: close".
  void write_error(int status, const std::vector<Header>* extra);
  void write_head(int status, const Request* req, bool closing, std::size_t length,
                  std::string_view content_type, const std::vector<Header>* extra);

  Limits limits_;
  http_parser parser_;
  // queue_[head_, head_ + queued_) are complete requests; queue_[head_ +
  // queued_] is the one being parsed, when in_message_. Slots are reused.
  std::vector<Request> queue_;
  std::size_t head_ = 0;
  std::size_t queued_ = 0;
  std::size_t header_bytes_ = 0;   // of the message being parsed
  bool in_message_ = false;        // on_message_begin seen, complete not yet
  bool headers_done_ = false;      // the current message's header block is complete
  bool last_was_value_ = true;     // which header callback came last
  bool continue_due_ = false;      // the current message awaits "100 Continue"
  bool stopped_ = false;           // parse nothing more
  bool eof_ = false;
  bool done_ = false;
  bool error_sent_ = false;
  int error_status_ = 0;
  std::size_t answered_ = 0;
  std::string out_;
};

}  // namespace example::http
