// Porting synchronous code without rewriting it: the same blocking
// function runs twice, first as it always did (one call after another),
// then one call per fiber under spindle::run. Linked with
// libspindle_hooks, its plain socket(), connect(), write(), read() and
// nanosleep() calls park the fiber instead of blocking the thread, so the
// three jobs overlap: about 3 s, then about 1 s (like count_sync and count).
//
// The "server" is a plain thread of this program that answers each request
// after one second; it knows nothing about spindle either (outside fibers
// the hooks pass every call to the kernel unchanged).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <spindle/spindle.hpp>

#include "example.hpp"

namespace {

[[noreturn]] void fail(const char* call) {
  throw std::runtime_error(fmt::format("{}: {}", call, std::strerror(errno)));
}

// ------------------------------------------------------ the legacy code
//
// Written for threads or for one thing at a time: blocking calls, no
// callbacks, no spindle anywhere.

std::string ask(const sockaddr_in& server, int id) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail("socket");
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&server), sizeof server) < 0) fail("connect");
  const std::string request = fmt::format("question {}\n", id);
  if (::write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) fail("write");
  std::string answer;
  char buf[256];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);  // blocks until the server answers
    if (n < 0) fail("read");
    if (n == 0) break;
    answer.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return answer;
}

void job(const sockaddr_in& server, int id) {
  fmt::print("job {}: asking the server\n", id);
  const std::string answer = ask(server, id);
  fmt::print("job {}: got \"{}\"\n", id, answer);
}

// ------------------------------------------------------ the server

class SlowServer {
 public:
  SlowServer() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (listener_ < 0) fail("socket");
    addr_.sin_family = AF_INET;
    addr_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr_;
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr_), sizeof addr_) < 0) fail("bind");
    if (::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr_), &len) < 0) fail("getsockname");
    if (::listen(listener_, 16) < 0) fail("listen");
    acceptor_ = std::thread([this] { serve(); });
  }
  ~SlowServer() {
    // shutdown wakes the thread blocked in accept (close would not).
    ::shutdown(listener_, SHUT_RDWR);
    acceptor_.join();
    for (auto& t : handlers_) t.join();
    ::close(listener_);
  }
  const sockaddr_in& address() const { return addr_; }

 private:
  void serve() {
    for (;;) {
      const int conn = ::accept(listener_, nullptr, nullptr);
      if (conn < 0) return;
      std::lock_guard lock(mu_);
      handlers_.emplace_back([conn] {
        char buf[256];
        const ssize_t n = ::read(conn, buf, sizeof buf);
        std::this_thread::sleep_for(example::seconds(1));  // thinking
        if (n > 0) {
          std::string question(buf, static_cast<std::size_t>(n));
          while (!question.empty() && question.back() == '\n') question.pop_back();
          const std::string answer = "answer to " + question;
          (void)!::write(conn, answer.data(), answer.size());
        }
        ::close(conn);
      });
    }
  }

  int listener_ = -1;
  sockaddr_in addr_{};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> handlers_;
};

}  // namespace

int main(int argc, char** argv) {
  example::parse_args(argc, argv);
  SlowServer server;

  fmt::print("-- without spindle: one job after another\n");
  {
    example::Stopwatch clock;
    for (int id = 1; id <= 3; ++id) job(server.address(), id);
    fmt::print("without spindle: executed in {:.2f} seconds.\n", clock.elapsed());
  }

  fmt::print("-- with spindle and libspindle_hooks: one fiber per job, same code\n");
  {
    example::Stopwatch clock;
    spindle::run([&] {
      std::vector<spindle::Task<void>> tasks;
      for (int id = 1; id <= 3; ++id)
        tasks.push_back(spindle::spawn([&server, id] { job(server.address(), id); }));
      spindle::gather(tasks);
    });
    fmt::print("with spindle: executed in {:.2f} seconds.\n", clock.elapsed());
  }
}
