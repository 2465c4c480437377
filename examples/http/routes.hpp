// The example server's routes, shared by examples/http_server.cpp and the
// tests that run the server in-process:
//
//   GET|HEAD /            "Hello, World!\n" (the response the benchmark
//                         compares with Go's net/http, bench/http_go.go)
//   GET /delay?ms=N       parks the connection's fiber N ms (0..60000) with
//                         this_fiber::sleep_for, then answers "waited N ms\n";
//                         other connections are served meanwhile
//   POST /echo            the request body, with its Content-Type
//
// Anything else: 404, or 405 with an Allow header for a known path and the
// wrong method; a bad ms value: 400.
#pragma once

#include <string_view>

#include "http_conn.hpp"

namespace example::http {

inline constexpr std::string_view kHelloBody = "Hello, World!\n";

void route(const Request& request, Response& response);

}  // namespace example::http
