// The client side: parses one HTTP/1.x response at a time with
// libhttp-parser, for the fetch example and for the tests that check what
// the server wrote.
//
//   ResponseParser parser;
//   while (!parser.complete()) {
//     n = read(...);
//     if (n == 0) { parser.feed_eof(); break; }
//     used = parser.feed({buf, n});      // bytes past this response stay unused
//   }
//   parser.response().status, .body, .header("content-length")
//
// Interim responses (100 Continue and the like) are skipped. A response
// delimited by the end of the connection (no Content-Length, not chunked)
// completes at feed_eof(). Malformed input throws ResponseError.
#pragma once

#include <http_parser.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "http_conn.hpp"

namespace example::http {

class ResponseError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ClientResponse {
  int status = 0;
  unsigned version_major = 0;
  unsigned version_minor = 0;
  std::string reason;
  std::vector<Header> headers;
  std::string body;
  bool keep_alive = false;  // the connection may carry another request

  const std::string* header(std::string_view name) const;
};

class ResponseParser {
 public:
  // head: the response answers a HEAD request, so it has no body whatever
  // its Content-Length says.
  explicit ResponseParser(bool head = false);
  ResponseParser(const ResponseParser&) = delete;
  ResponseParser& operator=(const ResponseParser&) = delete;

  // Parses up to one complete response; returns how many bytes it used (the
  // rest belong to the next response). Throws ResponseError on bad syntax.
  std::size_t feed(std::string_view bytes);
  // The server closed the connection: completes a response delimited by
  // EOF, throws ResponseError if a response was cut short.
  void feed_eof();

  bool complete() const noexcept { return complete_; }
  const ClientResponse& response() const noexcept { return response_; }
  // Forgets the response and expects the next one on the same connection.
  void reset(bool head = false);

 private:
  static int on_status(http_parser* p, const char* at, std::size_t n);
  static int on_header_field(http_parser* p, const char* at, std::size_t n);
  static int on_header_value(http_parser* p, const char* at, std::size_t n);
  static int on_headers_complete(http_parser* p);
  static int on_body(http_parser* p, const char* at, std::size_t n);
  static int on_message_complete(http_parser* p);
  static const http_parser_settings kSettings;

  http_parser parser_;
  ClientResponse response_;
  bool head_ = false;
  bool complete_ = false;
  bool started_ = false;  // some byte of the response has been parsed
  bool last_was_value_ = true;
};

}  // namespace example::http
