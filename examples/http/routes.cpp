#include "routes.hpp"

#include <fmt/format.h>

#include <charconv>
#include <chrono>

#include <spindle/this_fiber.hpp>

namespace example::http {

namespace {

void plain(Response& response, int status, std::string_view text) {
  response.status = status;
  response.body.assign(text);
}

void not_allowed(Response& response, std::string_view allow) {
  plain(response, 405, "Method Not Allowed\n");
  response.headers.push_back({"Allow", std::string(allow)});
}

void delay(const Request& request, Response& response) {
  std::string_view text = query_param(request.query(), "ms").value_or("");
  long ms = -1;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), ms);
  if (ec != std::errc{} || end != text.data() + text.size() || ms < 0 || ms > 60000) {
    plain(response, 400, "delay needs ?ms=N with 0 <= N <= 60000\n");
    return;
  }
  spindle::this_fiber::sleep_for(std::chrono::milliseconds(ms));
  response.body = fmt::format("waited {} ms\n", ms);
}

}  // namespace

void route(const Request& request, Response& response) {
  const std::string_view path = request.path();
  const bool get = request.method == "GET" || request.method == "HEAD";
  if (path == "/") {
    if (!get) return not_allowed(response, "GET, HEAD");
    response.body.assign(kHelloBody);
  } else if (path == "/delay") {
    if (!get) return not_allowed(response, "GET, HEAD");
    delay(request, response);
  } else if (path == "/echo") {
    if (request.method != "POST") return not_allowed(response, "POST");
    const std::string* type = request.header("content-type");
    response.content_type = type != nullptr ? *type : "application/octet-stream";
    response.body = request.body;
  } else {
    plain(response, 404, "Not Found\n");
  }
}

}  // namespace example::http
