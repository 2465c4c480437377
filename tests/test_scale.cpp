// Scale: 10,000 TCP connections open at once, served by one thread.
//
// The server is this process: spindle::run on the test's own thread, one
// fiber per accepted connection with the default stack (what a user gets
// from spawn), echoing lines. The clients are a forked child with its own
// scheduler, so each process spends one descriptor per connection and the
// count fits under a hard RLIMIT_NOFILE of about 10,100 (this machine's is
// 20,000); with both ends in one process the test would need twice that.
//
// "At once" is checked, not assumed: no client writes or closes before all
// 10,000 have connected, and the server records how many connections it
// held open at the peak and how many threads the process had then.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fmt/core.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;
using spindle::net::SocketAddress;
using spindle::net::TcpListener;
using spindle::net::TcpStream;

namespace {

constexpr int kConnections = 10000;
// Descriptors a process needs besides its connections: stdio, the
// listener, the poller, the timer and wake-up fds, the pipe to the other
// side, and what doctest and the loader hold.
constexpr int kHeadroom = 100;

int entries_in(const char* dir) {
  int n = 0;
  DIR* d = ::opendir(dir);
  REQUIRE(d != nullptr);
  while (auto* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

// The clients, in the forked child: connect all, throttled so the SYNs
// never overflow the accept queue (an overflow costs a one-second
// retransmit); once every one is connected, each sends a line and reads
// it back; once every one has its answer, all close. Exits 0 if every
// round trip came back intact, 1 otherwise, 2 on an exception.
[[noreturn]] void run_clients(std::uint16_t port) {
  int status = 2;
  try {
    spindle::run([port, &status] {
      const auto addr = SocketAddress::parse("127.0.0.1", port);
      spindle::Semaphore connecting(256);
      spindle::Event all_connected, all_answered;
      int connected = 0, answered = 0, intact = 0;
      std::vector<spindle::Task<void>> clients;
      clients.reserve(kConnections);
      for (int i = 0; i < kConnections; ++i) {
        clients.push_back(spindle::spawn({.stack_size = 32 * 1024}, [&, i] {
          connecting.acquire();
          TcpStream s = TcpStream::connect(addr);
          connecting.release();
          if (++connected == kConnections) all_connected.set();
          all_connected.wait();
          const std::string msg = fmt::format("client {:05}\n", i);
          s.write_all(msg);
          if (s.read_line() == msg) ++intact;
          if (++answered == kConnections) all_answered.set();
          all_answered.wait();
        }));
      }
      spindle::Timeout limit(120s);
      for (auto& t : clients) t.join();
      std::fprintf(stderr, "clients: %d connected, %d answered intact\n", connected, intact);
      status = intact == kConnections ? 0 : 1;
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "clients: %s\n", e.what());
  }
  std::fflush(stderr);
  ::_exit(status);
}

}  // namespace

TEST_CASE("scale: 10,000 concurrent TCP connections served by one thread, one fiber each") {
  rlimit rl{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &rl) == 0);
  const rlim_t needed = kConnections + kHeadroom;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < needed) {
    MESSAGE(fmt::format("skipped: the hard RLIMIT_NOFILE is {}; 10,000 connections need about {} per process",
                        rl.rlim_max, needed));
    return;
  }
  const rlimit saved = rl;
  rl.rlim_cur = rl.rlim_max;  // raise the soft limit; the child inherits it
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &rl) == 0);

  // The listener exists before the fork so the child knows the port; the
  // child never touches it (it closes its copy first thing).
  int port_pipe[2];
  REQUIRE(::pipe(port_pipe) == 0);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(port_pipe[1]);
    // doctest's handlers belong to the parent's run; a hang ends by SIGALRM.
    ::signal(SIGSEGV, SIG_DFL);
    ::signal(SIGABRT, SIG_DFL);
    ::alarm(240);
    std::uint16_t port = 0;
    // Before this process has a scheduler: a plain blocking read is fine.
    const bool got = ::read(port_pipe[0], &port, sizeof port) == static_cast<ssize_t>(sizeof port);
    ::close(port_pipe[0]);
    if (!got) ::_exit(4);  // the parent gave up before binding
    run_clients(port);
  }
  ::close(port_pipe[0]);

  int served = 0, open = 0, peak = 0, threads_at_peak = 0, intact_lines = 0;
  // Whatever ends the server early (the Timeout, a failed REQUIRE, an I/O
  // error) is caught, so the child is killed and reaped below either way.
  std::string server_error;
  try {
    spindle::run([&] {
      auto listener = TcpListener::bind(SocketAddress::parse("127.0.0.1", 0), {.backlog = 4096});
      const std::uint16_t port = listener.local_address().port();
      // Two bytes into an empty pipe: never blocks.
      REQUIRE(::write(port_pipe[1], &port, sizeof port) == static_cast<ssize_t>(sizeof port));
      ::close(port_pipe[1]);
      port_pipe[1] = -1;

      spindle::Timeout limit(150s);
      std::vector<spindle::Task<void>> conns;
      conns.reserve(kConnections);
      for (int i = 0; i < kConnections; ++i) {
        auto accepted = listener.accept();
        ++open;
        if (open > peak) {
          peak = open;
          if (peak == kConnections) threads_at_peak = entries_in("/proc/self/task");
        }
        conns.push_back(spindle::spawn([&, conn = std::move(accepted.stream)]() mutable {
          // The line comes back whole, then the client's EOF.
          const std::string line = conn.read_line(64);
          if (line.size() == 13 && line.starts_with("client ")) ++intact_lines;
          conn.write_all(line);
          std::array<char, 16> rest{};
          while (conn.read_some(std::span(rest)) != 0) {
          }
          --open;
          ++served;
        }));
      }
      for (auto& t : conns) t.join();
    });
  } catch (const std::exception& e) {
    server_error = e.what();
  } catch (...) {
    server_error = "ended by a failed assertion";
  }
  if (port_pipe[1] >= 0) ::close(port_pipe[1]);
  if (!server_error.empty()) ::kill(child, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  ::setrlimit(RLIMIT_NOFILE, &saved);

  MESSAGE(fmt::format("server: {} served, peak {} open at once, {} thread(s) at the peak", served, peak,
                      threads_at_peak));
  INFO("server: " << server_error);
  CHECK(server_error.empty());
  CHECK(served == kConnections);
  CHECK(intact_lines == kConnections);
  CHECK(peak == kConnections);
  CHECK(threads_at_peak == 1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
