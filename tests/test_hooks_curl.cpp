// libcurl's easy API, unmodified, on fibers through libspindle_hooks,
// fetching from the project's HTTP example server (examples/http_server),
// which tests/hooks_servers/servers.py starts on 127.0.0.1
// (SPINDLE_HTTP_PORT).
//
// curl_easy_perform connects non-blocking and waits in poll() over its
// socket and its wake-up socketpair: the hooks park the fiber there.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#define SPINDLE_WORKLOAD_CURL 1
#include "hooks_servers/workloads.hpp"

using namespace hooks_workloads;

TEST_CASE("libcurl: 50 fibers fetch /delay?ms=200 at once, bodies checked") {
  REQUIRE(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
  const std::string base = "http://127.0.0.1:" + env("SPINDLE_HTTP_PORT");
  // Sequentially: 5 requests (~1 s), extrapolated to 50 (~10 s).
  const Comparison c =
      compare(5, 50, [&](int) { CHECK(curl_fetch(base + "/delay?ms=200") == "waited 200 ms\n"); });
  print("libcurl GET /delay?ms=200", c);
  CHECK(c.sequential_s >= 5 * 0.2);
  CHECK(c.fibers_s >= 0.2);
  CHECK(c.fibers_s < 1.0);
  curl_global_cleanup();
}

TEST_CASE("libcurl: 50 fibers POST distinct bodies to /echo and get them back") {
  REQUIRE(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
  // By name: curl resolves "localhost" itself or through getaddrinfo.
  const std::string url = "http://localhost:" + env("SPINDLE_HTTP_PORT") + "/echo";
  spindle::run([&] {
    std::vector<spindle::Task<void>> tasks;
    for (int i = 0; i < 50; ++i) {
      tasks.push_back(spindle::spawn([&url, i] {
        std::string body = fmt::format("fiber {} says ", i);
        body += std::string(static_cast<std::size_t>(i) * 2000, static_cast<char>('a' + i % 26));
        CHECK(curl_fetch(url, &body) == body);
      }));
    }
    spindle::gather(tasks);
  });
  curl_global_cleanup();
}
