// A tiny UDP DNS server for the resolver tests: a plain std::thread on
// 127.0.0.1, a kernel-chosen port, fixed answers.
//
//   good.test     A 192.0.2.1 and 192.0.2.2, AAAA 2001:db8::1
//   v4only.test   A 192.0.2.7; AAAA: NOERROR with no answer (no data)
//   silent.test   never answered
//   tcp.test      over UDP a truncated (TC) empty answer, so the client
//                 retries over TCP, where A is 192.0.2.9
//   anything else NXDOMAIN
//
// It counts the queries it receives, so tests can tell that an answer came
// from /etc/hosts or from the numeric shortcut without asking it.
#pragma once

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace test {

class DnsResponder {
 public:
  static constexpr std::uint16_t kTypeA = 1;
  static constexpr std::uint16_t kTypeAAAA = 28;

  DnsResponder() {
    // A UDP port from the kernel, and the TCP side on the same number for
    // truncated answers. Another process may hold that number for TCP, so
    // try again with a fresh UDP port when it does.
    for (int attempt = 0;; ++attempt) {
      REQUIRE(attempt < 100);
      fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      REQUIRE(fd_ >= 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
      socklen_t len = sizeof addr;
      REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
      port_ = ntohs(addr.sin_port);
      listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      REQUIRE(listen_fd_ >= 0);
      const int one = 1;
      ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
      REQUIRE(errno == EADDRINUSE);
      ::close(listen_fd_);
      ::close(fd_);
    }
    REQUIRE(::listen(listen_fd_, 16) == 0);
    thread_ = std::thread([this] { serve(); });
  }
  ~DnsResponder() {
    stop_ = true;
    thread_.join();
    for (const Conn& c : conns_) ::close(c.fd);
    ::close(listen_fd_);
    ::close(fd_);
  }
  DnsResponder(const DnsResponder&) = delete;
  DnsResponder& operator=(const DnsResponder&) = delete;

  std::string server() const { return fmt::format("127.0.0.1:{}", port_); }
  std::uint16_t port() const { return port_; }
  int queries() const { return queries_.load(); }
  int tcp_queries() const { return tcp_queries_.load(); }
  // "name/type" of every query received, in order.
  std::vector<std::string> log() const {
    std::lock_guard lock(mu_);
    return log_;
  }

 private:
  struct Conn {
    int fd;
    std::vector<unsigned char> in;
  };

  void serve() {
    while (!stop_) {
      std::vector<pollfd> fds{{fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
      for (const Conn& c : conns_) fds.push_back({c.fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents) serve_udp();
      if (fds[1].revents) {
        const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) conns_.push_back({c, {}});
      }
      for (std::size_t i = 2; i < fds.size(); ++i)
        if (fds[i].revents) serve_tcp(fds[i].fd);
      conns_.erase(std::remove_if(conns_.begin(), conns_.end(), [](const Conn& c) { return c.fd < 0; }),
                   conns_.end());
    }
  }

  void serve_udp() {
    unsigned char buf[1500];
    sockaddr_storage from{};
    socklen_t from_len = sizeof from;
    const ssize_t n = ::recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 12) return;
    std::vector<unsigned char> reply;
    if (!answer(buf, static_cast<std::size_t>(n), reply, false)) return;
    ::sendto(fd_, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&from), from_len);
  }

  // Reads what arrived on a TCP connection and answers every complete,
  // length-prefixed query in it; closes the connection on EOF.
  void serve_tcp(int fd) {
    auto it = std::find_if(conns_.begin(), conns_.end(), [fd](const Conn& c) { return c.fd == fd; });
    unsigned char buf[1500];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      ::close(fd);
      it->fd = -1;
      return;
    }
    it->in.insert(it->in.end(), buf, buf + n);
    while (it->in.size() >= 2) {
      const std::size_t len = static_cast<std::size_t>(it->in[0] << 8 | it->in[1]);
      if (it->in.size() < 2 + len) break;
      std::vector<unsigned char> reply;
      ++tcp_queries_;
      if (len >= 12 && answer(it->in.data() + 2, len, reply, true)) {
        std::vector<unsigned char> framed;
        put16(framed, static_cast<unsigned>(reply.size()));
        framed.insert(framed.end(), reply.begin(), reply.end());
        REQUIRE(::write(fd, framed.data(), framed.size()) == static_cast<ssize_t>(framed.size()));
      }
      it->in.erase(it->in.begin(), it->in.begin() + static_cast<std::ptrdiff_t>(2 + len));
    }
  }

  static void put16(std::vector<unsigned char>& out, unsigned v) {
    out.push_back(static_cast<unsigned char>(v >> 8));
    out.push_back(static_cast<unsigned char>(v & 0xff));
  }

  // Builds the reply to one query; false when it must go unanswered.
  bool answer(const unsigned char* q, std::size_t n, std::vector<unsigned char>& out, bool tcp) {
    const unsigned qdcount = (q[4] << 8) | q[5];
    if (qdcount != 1) return false;
    std::size_t i = 12;
    std::string name;
    while (i < n && q[i] != 0) {
      const std::size_t len = q[i];
      if ((len & 0xc0) != 0 || i + 1 + len > n) return false;
      if (!name.empty()) name += '.';
      for (std::size_t k = 0; k < len; ++k)
        name += static_cast<char>(std::tolower(static_cast<unsigned char>(q[i + 1 + k])));
      i += 1 + len;
    }
    if (i + 5 > n) return false;
    const std::size_t question_end = i + 5;
    const unsigned qtype = (q[i + 1] << 8) | q[i + 2];
    ++queries_;
    {
      std::lock_guard lock(mu_);
      log_.push_back(fmt::format("{}/{}", name, qtype == kTypeA ? "A" : qtype == kTypeAAAA ? "AAAA" : "?"));
    }
    if (name == "silent.test") return false;

    std::vector<std::vector<unsigned char>> rdata;
    unsigned rcode = 0;
    bool truncated = false;
    if (name == "tcp.test") {
      if (!tcp) truncated = true;
      else if (qtype == kTypeA) rdata = {{192, 0, 2, 9}};
    } else if (name == "good.test") {
      if (qtype == kTypeA) rdata = {{192, 0, 2, 1}, {192, 0, 2, 2}};
      if (qtype == kTypeAAAA) rdata = {{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}};
    } else if (name == "v4only.test") {
      if (qtype == kTypeA) rdata = {{192, 0, 2, 7}};
    } else {
      rcode = 3;  // NXDOMAIN
    }
    out.assign(q, q + 2);                             // id
    put16(out, 0x8000 | (truncated ? 0x0200 : 0) | (q[2] & 0x01) << 8 | 0x80 | rcode);  // QR, TC, RD, RA
    put16(out, 1);
    put16(out, static_cast<unsigned>(rdata.size()));
    put16(out, 0);
    put16(out, 0);
    out.insert(out.end(), q + 12, q + question_end);
    for (const auto& rd : rdata) {
      put16(out, 0xc00c);  // the name: a pointer to the question's
      put16(out, qtype);
      put16(out, 1);  // IN
      put16(out, 0);
      put16(out, 60);  // TTL
      put16(out, static_cast<unsigned>(rd.size()));
      out.insert(out.end(), rd.begin(), rd.end());
    }
    return true;
  }

  int fd_ = -1;
  int listen_fd_ = -1;
  std::vector<Conn> conns_;  // the server thread's only
  std::atomic<int> tcp_queries_{0};
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> queries_{0};
  mutable std::mutex mu_;
  std::vector<std::string> log_;
  std::thread thread_;
};

}  // namespace test
