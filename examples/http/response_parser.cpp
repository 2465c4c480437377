#include "response_parser.hpp"

#include <fmt/format.h>

namespace example::http {

const std::string* ClientResponse::header(std::string_view name) const {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return &h.value;
  }
  return nullptr;
}

const http_parser_settings ResponseParser::kSettings = [] {
  http_parser_settings s;
  http_parser_settings_init(&s);
  s.on_status = &ResponseParser::on_status;
  s.on_header_field = &ResponseParser::on_header_field;
  s.on_header_value = &ResponseParser::on_header_value;
  s.on_headers_complete = &ResponseParser::on_headers_complete;
  s.on_body = &ResponseParser::on_body;
  s.on_message_complete = &ResponseParser::on_message_complete;
  return s;
}();

ResponseParser::ResponseParser(bool head) { reset(head); }

void ResponseParser::reset(bool head) {
  http_parser_init(&parser_, HTTP_RESPONSE);
  parser_.data = this;
  response_ = ClientResponse{};
  head_ = head;
  complete_ = false;
  started_ = false;
  last_was_value_ = true;
}

int ResponseParser::on_status(http_parser* p, const char* at, std::size_t n) {
  auto* self = static_cast<ResponseParser*>(p->data);
  self->started_ = true;
  self->response_.reason.append(at, n);
  return 0;
}

int ResponseParser::on_header_field(http_parser* p, const char* at, std::size_t n) {
  auto* self = static_cast<ResponseParser*>(p->data);
  if (self->last_was_value_) self->response_.headers.emplace_back();
  self->response_.headers.back().name.append(at, n);
  self->last_was_value_ = false;
  return 0;
}

int ResponseParser::on_header_value(http_parser* p, const char* at, std::size_t n) {
  auto* self = static_cast<ResponseParser*>(p->data);
  if (self->response_.headers.empty()) return -1;
  self->response_.headers.back().value.append(at, n);
  self->last_was_value_ = true;
  return 0;
}

int ResponseParser::on_headers_complete(http_parser* p) {
  auto* self = static_cast<ResponseParser*>(p->data);
  self->started_ = true;
  self->response_.status = static_cast<int>(p->status_code);
  self->response_.version_major = p->http_major;
  self->response_.version_minor = p->http_minor;
  // Returning 1 tells libhttp-parser that no body follows (its contract
  // for responses to HEAD).
  return self->head_ && p->status_code >= 200 ? 1 : 0;
}

int ResponseParser::on_body(http_parser* p, const char* at, std::size_t n) {
  static_cast<ResponseParser*>(p->data)->response_.body.append(at, n);
  return 0;
}

int ResponseParser::on_message_complete(http_parser* p) {
  auto* self = static_cast<ResponseParser*>(p->data);
  if (p->status_code >= 100 && p->status_code < 200 && p->status_code != 101) {
    // An interim response: the final one follows on the same stream.
    self->response_ = ClientResponse{};
    self->last_was_value_ = true;
    return 0;
  }
  self->response_.keep_alive = http_should_keep_alive(p) != 0;
  self->complete_ = true;
  // Stop right after this response so that feed() can report how much of
  // its input belonged to it.
  http_parser_pause(p, 1);
  return 0;
}

std::size_t ResponseParser::feed(std::string_view bytes) {
  if (complete_ || bytes.empty()) return 0;
  std::size_t used = http_parser_execute(&parser_, &kSettings, bytes.data(), bytes.size());
  const auto err = HTTP_PARSER_ERRNO(&parser_);
  if (err != HPE_OK && err != HPE_PAUSED) {
    throw ResponseError(fmt::format("bad HTTP response: {} ({})", http_errno_description(err),
                                    http_errno_name(err)));
  }
  if (used > 0) started_ = true;
  return used;
}

void ResponseParser::feed_eof() {
  if (complete_) return;
  http_parser_execute(&parser_, &kSettings, nullptr, 0);
  const auto err = HTTP_PARSER_ERRNO(&parser_);
  if ((err != HPE_OK && err != HPE_PAUSED) || !complete_) {
    throw ResponseError(started_ ? "the connection closed in the middle of a response"
                                 : "the connection closed before a response");
  }
}

}  // namespace example::http
