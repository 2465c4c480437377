// The seeds' "fetch three URLs concurrently", for real: three HTTP/1.1 GET
// requests over spindle::net::TcpStream, gathered. The server answers
// /delay?ms=N after N ms, so the three fetches of 2, 5 and 7 s (times
// --scale) finish together after about 7 s, not 14.
//
//   http_fetch [--port N] [--scale X]
//
// With --port, it fetches from an http_server already listening on
// 127.0.0.1:N. Without, it starts the http_server next to its own binary as
// a child process (spindle::Process), reads the port from the child's
// "listening on" line, and stops it with SIGTERM at the end.
#include <fmt/format.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>

#include <spindle/gather.hpp>
#include <spindle/net.hpp>
#include <spindle/process.hpp>
#include <spindle/run.hpp>
#include <spindle/task.hpp>
#include <spindle/timeout.hpp>

#include "example.hpp"
#include "http/response_parser.hpp"

namespace {

constexpr std::string_view kHost = "127.0.0.1";

struct Options {
  std::uint16_t port = 0;  // 0: start a server
};

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--port" && i + 1 < argc) {
      o.port = static_cast<std::uint16_t>(std::atoi(argv[++i]));
      if (o.port != 0) continue;
    } else if (a == "--scale" && i + 1 < argc) {
      example::scale = std::strtod(argv[++i], nullptr);
      if (example::scale > 0) continue;
    }
    fmt::print(stderr, "usage: {} [--port N] [--scale X]   (X > 0 multiplies every delay)\n", argv[0]);
    std::exit(2);
  }
  return o;
}

// One GET on its own connection; returns the line the seed prints.
std::string fetch(std::uint16_t port, int seconds) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(example::seconds(seconds)).count();
  const std::string url = fmt::format("http://{}:{}/delay?ms={}", kHost, port, ms);
  fmt::print("Starting to fetch {}\n", url);
  example::Stopwatch clock;
  auto stream = spindle::net::TcpStream::connect(kHost, port);
  stream.write_all(fmt::format(
      "GET /delay?ms={} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: spindle-http-fetch\r\nConnection: close\r\n\r\n",
      ms, kHost, port));
  example::http::ResponseParser parser;
  std::array<char, 4096> buf;
  while (!parser.complete()) {
    std::size_t n = stream.read_some(buf);
    if (n == 0) {
      parser.feed_eof();  // throws if the response was cut short
      break;
    }
    parser.feed(std::string_view(buf.data(), n));
  }
  const auto& r = parser.response();
  std::string body = r.body;
  while (!body.empty() && body.back() == '\n') body.pop_back();
  return fmt::format("Fetched {} after {:.2f} s: {} {}, \"{}\"", url, clock.elapsed(), r.status, r.reason, body);
}

// The http_server binary that sits next to this one.
std::string sibling_server(const char* argv0) {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) self = std::filesystem::absolute(argv0, ec);
  return (self.parent_path() / "http_server").string();
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse_args(argc, argv);
  example::Stopwatch clock;
  int status = spindle::run([&] {
    spindle::Process server;
    std::uint16_t port = opt.port;
    std::optional<spindle::net::StreamReader> server_out;
    if (port == 0) {
      server = spindle::Process::spawn({sibling_server(argv[0]), "--port", "0"},
                                       {.out = spindle::Stdio::pipe, .kill_on_destroy = true});
      server_out.emplace(server.stdout_pipe());
      spindle::Timeout limit(std::chrono::seconds(10));
      std::string line = server_out->read_line();
      auto colon = line.rfind(':');
      if (!line.starts_with("listening on ") || colon == std::string::npos) {
        fmt::print(stderr, "http_fetch: unexpected first line from the server: {:?}\n", line);
        return 1;
      }
      port = static_cast<std::uint16_t>(std::atoi(line.c_str() + colon + 1));
      fmt::print("started {} ({}), listening on port {}\n", server.command(), server.pid(), port);
    }

    {
      // Generous: a fetch that hangs fails the run instead of blocking it.
      spindle::Timeout limit(example::seconds(7) * 3 + std::chrono::seconds(10));
      // Spawned one statement at a time: function arguments are evaluated in
      // no fixed order, and the fetches should start in the seed's order.
      auto a = spindle::spawn(fetch, port, 2);
      auto b = spindle::spawn(fetch, port, 5);
      auto c = spindle::spawn(fetch, port, 7);
      auto results = spindle::gather(a, b, c);
      std::apply([](const auto&... r) { (fmt::print("{}\n", r), ...); }, results);
    }

    if (server.pid() > 0) {
      server.terminate();
      spindle::Timeout limit(std::chrono::seconds(15));
      // What the server printed after its first line, then its exit status.
      auto rest = server.communicate();
      std::string_view text = rest.out;
      while (!text.empty()) {
        auto nl = text.find('\n');
        fmt::print("  server: {}\n", text.substr(0, nl));
        if (nl == std::string_view::npos) break;
        text.remove_prefix(nl + 1);
      }
      if (!rest.status.success()) {
        fmt::print(stderr, "http_fetch: the server ended with {}\n", rest.status.to_string());
        return 1;
      }
    }
    return 0;
  });
  fmt::print("http_fetch executed in {:.2f} seconds.\n", clock.elapsed());
  return status;
}
