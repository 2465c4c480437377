#include "http_conn.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <iterator>
#include <stdexcept>

namespace example::http {

namespace {

char lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// The Date header's IMF-fixdate (RFC 9110 5.6.7), formatted at most once a
// second: every response carries it, and strftime per response would cost
// more than the rest of the header together. Spelled out by hand so that a
// program's setlocale cannot change the day and month names.
std::string_view http_date() {
  thread_local std::time_t cached = -1;
  thread_local char text[40];
  thread_local std::size_t size = 0;
  std::time_t now = std::time(nullptr);
  if (now != cached) {
    static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::tm tm{};
    gmtime_r(&now, &tm);
    auto end = fmt::format_to_n(text, sizeof text, "{}, {:02} {} {} {:02}:{:02}:{:02} GMT", kDays[tm.tm_wday],
                                tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                                tm.tm_sec);
    size = std::min(end.size, sizeof text);
    cached = now;
  }
  return {text, size};
}

bool has_body(int status, bool head) noexcept {
  return !head && status >= 200 && status != 204 && status != 304;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::string_view reason_phrase(int status) noexcept {
  std::string_view s = http_status_str(static_cast<http_status>(status));
  return s == "<unknown>" ? "Unknown" : s;
}

std::optional<std::string_view> query_param(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    std::size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    std::size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::string_view Request::path() const {
  std::string_view t = target;
  return t.substr(0, t.find('?'));
}

std::string_view Request::query() const {
  std::string_view t = target;
  std::size_t q = t.find('?');
  return q == std::string_view::npos ? std::string_view{} : t.substr(q + 1);
}

const std::string* Request::header(std::string_view name) const {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return &h.value;
  }
  return nullptr;
}

void Request::reset() {
  method.clear();
  target.clear();
  version_major = 1;
  version_minor = 1;
  headers.clear();
  body.clear();
  keep_alive = true;
}

void Response::reset() {
  status = 200;
  content_type = "text/plain; charset=utf-8";
  body.clear();
  headers.clear();
}

const http_parser_settings ServerConnection::kSettings = [] {
  http_parser_settings s;
  http_parser_settings_init(&s);
  s.on_message_begin = &ServerConnection::on_message_begin;
  s.on_url = &ServerConnection::on_url;
  s.on_header_field = &ServerConnection::on_header_field;
  s.on_header_value = &ServerConnection::on_header_value;
  s.on_headers_complete = &ServerConnection::on_headers_complete;
  s.on_body = &ServerConnection::on_body;
  s.on_message_complete = &ServerConnection::on_message_complete;
  return s;
}();

ServerConnection::ServerConnection(Limits limits) : limits_(limits) {
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
}

int ServerConnection::fail(int status) {
  if (error_status_ == 0) error_status_ = status;
  stopped_ = true;
  return -1;
}

bool ServerConnection::add_header_bytes(std::size_t n) {
  header_bytes_ += n;
  if (header_bytes_ <= limits_.max_header_bytes) return true;
  fail(431);
  return false;
}

int ServerConnection::on_message_begin(http_parser* p) {
  auto* self = static_cast<ServerConnection*>(p->data);
  if (self->queued_ == 0) {
    self->head_ = 0;
  } else if (self->head_ > 0 && self->head_ + self->queued_ == self->queue_.size()) {
    // Reuse the answered slots at the front before growing the vector; the
    // rotation swaps, so every slot keeps its buffers.
    std::rotate(self->queue_.begin(), self->queue_.begin() + static_cast<std::ptrdiff_t>(self->head_),
                self->queue_.end());
    self->head_ = 0;
  }
  if (self->head_ + self->queued_ == self->queue_.size()) self->queue_.emplace_back();
  self->current().reset();
  self->header_bytes_ = 0;
  self->in_message_ = true;
  self->headers_done_ = false;
  self->last_was_value_ = true;
  self->continue_due_ = false;
  return 0;
}

int ServerConnection::on_url(http_parser* p, const char* at, std::size_t n) {
  auto* self = static_cast<ServerConnection*>(p->data);
  std::string& target = self->current().target;
  if (target.size() + n > self->limits_.max_target_bytes) return self->fail(414);
  if (!self->add_header_bytes(n)) return -1;
  target.append(at, n);
  return 0;
}

int ServerConnection::on_header_field(http_parser* p, const char* at, std::size_t n) {
  auto* self = static_cast<ServerConnection*>(p->data);
  // libhttp-parser may deliver a name or value in pieces (split across
  // feeds); a field after a value starts a new header.
  std::size_t extra = self->last_was_value_ ? 4 : 0;
  if (!self->add_header_bytes(n + extra)) return -1;
  auto& headers = self->current().headers;
  if (self->last_was_value_) headers.emplace_back();
  headers.back().name.append(at, n);
  self->last_was_value_ = false;
  return 0;
}

int ServerConnection::on_header_value(http_parser* p, const char* at, std::size_t n) {
  auto* self = static_cast<ServerConnection*>(p->data);
  if (!self->add_header_bytes(n)) return -1;
  auto& headers = self->current().headers;
  // A value always follows its field in libhttp-parser's callbacks; the
  // check keeps a parser quirk from turning into an out-of-range access.
  if (headers.empty()) return self->fail(400);
  headers.back().value.append(at, n);
  self->last_was_value_ = true;
  return 0;
}

int ServerConnection::on_headers_complete(http_parser* p) {
  auto* self = static_cast<ServerConnection*>(p->data);
  Request& req = self->current();
  req.method = http_method_str(static_cast<http_method>(p->method));
  req.version_major = p->http_major;
  req.version_minor = p->http_minor;
  req.keep_alive = http_should_keep_alive(p) != 0;
  self->headers_done_ = true;
  if (p->http_major != 1) return self->fail(505);
  // RFC 9112 3.2: an HTTP/1.1 request needs exactly one Host header.
  if (p->http_minor >= 1) {
    std::size_t hosts = 0;
    for (const Header& h : req.headers) hosts += iequals(h.name, "host") ? 1 : 0;
    if (hosts != 1) return self->fail(400);
  }
  const bool chunked = (p->flags & F_CHUNKED) != 0;
  if (!chunked && (p->flags & F_CONTENTLENGTH) && p->content_length > self->limits_.max_body_bytes) {
    return self->fail(413);
  }
  if (const std::string* expect = req.header("expect")) {
    if (!iequals(*expect, "100-continue")) return self->fail(417);
    // RFC 9110 10.1.1: an HTTP/1.0 client cannot have meant it.
    const bool body_follows = chunked || ((p->flags & F_CONTENTLENGTH) && p->content_length > 0);
    self->continue_due_ = p->http_minor >= 1 && body_follows;
  }
  // An Upgrade or CONNECT this server does not grant: answer it as a plain
  // request, then close, since what the client sends next is not HTTP/1.1.
  if (p->upgrade) req.keep_alive = false;
  return 0;
}

int ServerConnection::on_body(http_parser* p, const char* at, std::size_t n) {
  auto* self = static_cast<ServerConnection*>(p->data);
  std::string& body = self->current().body;
  if (body.size() + n > self->limits_.max_body_bytes) return self->fail(413);
  body.append(at, n);
  // The client did not wait for "100 Continue" (RFC 9110 allows both).
  self->continue_due_ = false;
  return 0;
}

int ServerConnection::on_message_complete(http_parser* p) {
  auto* self = static_cast<ServerConnection*>(p->data);
  self->in_message_ = false;
  self->headers_done_ = false;
  self->continue_due_ = false;
  const bool keep_alive = self->current().keep_alive;
  ++self->queued_;
  if (!keep_alive) {
    // Nothing after this request is answered: stop libhttp-parser here
    // rather than let it report the bytes that follow as an error.
    self->stopped_ = true;
    http_parser_pause(p, 1);
  }
  return 0;
}

void ServerConnection::feed(std::string_view bytes) {
  if (stopped_ || done_ || eof_ || bytes.empty()) return;
  http_parser_execute(&parser_, &kSettings, bytes.data(), bytes.size());
  const auto err = HTTP_PARSER_ERRNO(&parser_);
  if (err == HPE_OK || err == HPE_PAUSED) return;
  // A callback that failed has set the status already; anything else is
  // libhttp-parser rejecting the syntax.
  fail(err == HPE_HEADER_OVERFLOW ? 431 : 400);
  in_message_ = false;
  headers_done_ = false;
}

void ServerConnection::feed_eof() {
  if (done_ || eof_) return;
  eof_ = true;
  in_message_ = false;
  headers_done_ = false;
  continue_due_ = false;
  if (queued_ == 0 && error_status_ == 0) done_ = true;
}

const Request* ServerConnection::next() {
  if (queued_ > 0) return &queue_[head_];
  if (done_) return nullptr;
  if (error_status_ != 0 && !error_sent_) {
    write_error(error_status_, nullptr);
  } else if (continue_due_ && !stopped_) {
    continue_due_ = false;
    out_.append("HTTP/1.1 100 Continue\r\n\r\n");
  } else if (stopped_ && error_status_ == 0) {
    // finish() or a request that ended the connection, all answered.
    done_ = true;
  }
  return nullptr;
}

void ServerConnection::write_head(int status, const Request* req, bool closing, std::size_t length,
                                  std::string_view content_type, const std::vector<Header>* extra) {
  auto out = std::back_inserter(out_);
  fmt::format_to(out, "HTTP/1.1 {} {}\r\nDate: {}\r\n", status, reason_phrase(status), http_date());
  const bool head = req != nullptr && req->method == "HEAD";
  if (status >= 200 && status != 204 && status != 304) {
    if (!content_type.empty() && (length > 0 || head)) {
      fmt::format_to(out, "Content-Type: {}\r\n", content_type);
    }
    fmt::format_to(out, "Content-Length: {}\r\n", length);
  }
  if (closing) {
    out_.append("Connection: close\r\n");
  } else if (req != nullptr && req->version_minor == 0) {
    // An HTTP/1.0 client asked for keep-alive and must hear it granted.
    out_.append("Connection: keep-alive\r\n");
  }
  if (extra != nullptr) {
    for (const Header& h : *extra) fmt::format_to(out, "{}: {}\r\n", h.name, h.value);
  }
  out_.append("\r\n");
}

void ServerConnection::respond(const Response& response) {
  if (queued_ == 0) throw std::logic_error("ServerConnection::respond: no request to answer");
  const Request& req = queue_[head_];
  const bool last = queued_ == 1;
  // Close after this answer when the request said so, or when it is the last
  // one and nothing more will be read (finish(), EOF after it, or an error
  // that stopped parsing with no request pending behind it).
  const bool closing = !req.keep_alive || (last && (eof_ || (stopped_ && error_status_ == 0)));
  const bool head = req.method == "HEAD";
  const bool body = has_body(response.status, head);
  write_head(response.status, &req, closing, response.body.size(), response.content_type, &response.headers);
  if (body) out_.append(response.body);
  ++head_;
  --queued_;
  ++answered_;
  if (closing) {
    stopped_ = true;
    done_ = true;
  }
}

void ServerConnection::timed_out() {
  if (done_) return;
  if (!idle()) {
    if (error_status_ == 0) error_status_ = 408;
    write_error(408, nullptr);
  }
  stopped_ = true;
  done_ = true;
}

void ServerConnection::refuse(int status, const std::vector<Header>& extra) {
  if (done_) return;
  error_status_ = status;
  write_error(status, &extra);
}

void ServerConnection::write_error(int status, const std::vector<Header>* extra) {
  std::string_view reason = reason_phrase(status);
  write_head(status, nullptr, true, reason.size() + 1, "text/plain; charset=utf-8", extra);
  out_.append(reason);
  out_.push_back('\n');
  error_sent_ = true;
  stopped_ = true;
  done_ = true;
}

void ServerConnection::finish() {
  stopped_ = true;
  in_message_ = false;
  headers_done_ = false;
  continue_due_ = false;
  if (queued_ == 0 && (error_status_ == 0 || error_sent_)) done_ = true;
}

}  // namespace example::http
