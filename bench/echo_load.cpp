// echo_load: the load client of the echo benchmark (issue 4), and the driver
// of its servers.
//
//   echo_load [--server NAME=PATH ...] [--connections 1,64,1000] [--full]
//             [--repetitions N] [--window-ms X] [--warmup-ms X] [--size BYTES]
//
// Without --server it runs the servers built next to it: echo_epoll (the
// plain C reference), echo_spindle (twice: as "spindle", and with
// --small-stacks as "spindle_small") and, when Go was installed, echo_go. Each
// server is started once, pinned to one CPU (bench::primary_cpu), and prints
// "port=N impl=... [key=value ...]" when it listens; the client pins itself
// to another CPU, so client and server never compete for a core.
//
// The workload: C connections per server, one outstanding message of `size`
// bytes (64) on each. A connection sends its message, waits until all of it
// has come back, checks the bytes, and sends the next one. For each C and
// each server, after a warm-up, every repetition runs a short pre-roll and
// then a measured window during which it counts completed round trips,
// records each one's latency (send to last byte back, as the client sees it)
// and reads the server's CPU time (utime + stime of all its threads) before
// and after. Then it stops sending and drains, so nothing is in flight when
// the next server's repetition starts. Repetitions rotate through the servers
// (epoll, spindle, go, then spindle, go, epoll, ...) so that a burst of noise
// from elsewhere on the machine spreads over all of them rather than hitting
// one server's run.
//
// Output, per server and C, in the usual RESULT format (bench.hpp):
//   echo      <server>_c<C>  round trips per second   (higher is better)
//   echo_p50  <server>_c<C>  median latency, µs
//   echo_p99  <server>_c<C>  99th percentile latency, µs
//   echo_cpu  <server>_c<C>  server CPU µs per round trip
// with median, min and max over the repetitions. The note carries the
// server's and the client's CPU use during the windows (a client near 100%
// means the client, not the server, set the pace) and the pinning.
//
// The client is deliberately plain: one thread, level-triggered epoll, one
// read and one write per round trip, nothing from spindle, so it treats
// every server alike.
#include "bench.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace {

[[noreturn]] void throw_errno(const std::string& what) {
  int err = errno;
  throw std::system_error(err, std::system_category(), what);
}

std::int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t cpu_ns(clockid_t clock) {
  timespec ts;
  if (clock_gettime(clock, &ts) != 0) return -1;
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// ---------------------------------------------------------------------------
// A server process

struct Server {
  std::string name;  // "epoll", "spindle", "spindle_small", "go"
  std::string path;
  std::string arg;  // one argument to start it with, or none
  pid_t pid = -1;
  int out_fd = -1;  // the read end of its stdout, kept open until it exits
  int port = 0;
  std::string extra;      // the key=value tokens it printed besides port and impl
  std::string pin;        // server-cpuN or server-no(why)
  clockid_t clock{};      // its process CPU-time clock
  bool have_clock = false;
  std::string failure;    // set when it died or misbehaved; no more results then

  // utime + stime of all its threads, in ns. The process CPU clock is exact;
  // /proc/PID/stat's fields 14 and 15 (clock ticks, usually 10 ms) are the
  // fallback where the kernel refuses the clock.
  std::int64_t cpu_time() const {
    if (have_clock) return cpu_ns(clock);
    std::FILE* f = std::fopen(fmt::format("/proc/{}/stat", pid).c_str(), "r");
    if (!f) return -1;
    char text[1024];
    std::size_t n = std::fread(text, 1, sizeof text - 1, f);
    std::fclose(f);
    text[n] = '\0';
    // The command name in parentheses may hold spaces; fields resume after
    // the last ')'. utime and stime are fields 14 and 15 overall, i.e. the
    // 12th and 13th after the name.
    const char* p = std::strrchr(text, ')');
    if (!p) return -1;
    unsigned long long utime = 0, stime = 0;
    if (std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
      return -1;
    return static_cast<std::int64_t>((utime + stime) * (1'000'000'000ULL / sysconf(_SC_CLK_TCK)));
  }
};

// Starts path pinned to `cpu` (or unpinned, cpu < 0), reads its "port=N"
// line, and checks the affinity took.
void start_server(Server& s, int cpu) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    if (cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      sched_setaffinity(0, sizeof set, &set);  // checked by the parent
    }
    dup2(fds[1], STDOUT_FILENO);
    if (s.arg.empty())
      execl(s.path.c_str(), s.path.c_str(), static_cast<char*>(nullptr));
    else
      execl(s.path.c_str(), s.path.c_str(), s.arg.c_str(), static_cast<char*>(nullptr));
    fmt::print(stderr, "echo_load: exec {}: {}\n", s.path, std::strerror(errno));
    _exit(127);
  }
  close(fds[1]);
  s.pid = pid;
  s.out_fd = fds[0];

  // The first line, within 10 seconds.
  std::string line;
  auto deadline = now_ns() + 10'000'000'000;
  while (line.find('\n') == std::string::npos) {
    pollfd p{s.out_fd, POLLIN, 0};
    int left = static_cast<int>(std::max<std::int64_t>(0, (deadline - now_ns()) / 1'000'000));
    int r = poll(&p, 1, left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) throw std::runtime_error(fmt::format("{} printed no port within 10 s", s.path));
    char buf[256];
    ssize_t n = read(s.out_fd, buf, sizeof buf);
    if (n <= 0) throw std::runtime_error(fmt::format("{} exited before printing its port", s.path));
    line.append(buf, static_cast<std::size_t>(n));
  }
  line.resize(line.find('\n'));
  std::size_t pos = 0;
  while (pos < line.size()) {
    std::size_t end = line.find(' ', pos);
    if (end == std::string::npos) end = line.size();
    std::string tok = line.substr(pos, end - pos);
    pos = end + 1;
    if (tok.rfind("port=", 0) == 0) {
      s.port = std::atoi(tok.c_str() + 5);
    } else if (!tok.empty() && tok.rfind("impl=", 0) != 0) {
      s.extra += (s.extra.empty() ? "" : " ") + tok;
    }
  }
  if (s.port <= 0) throw std::runtime_error(fmt::format("{} printed {:?}, not port=N", s.path, line));

  s.have_clock = clock_getcpuclockid(pid, &s.clock) == 0 && cpu_ns(s.clock) >= 0;

  if (cpu < 0) {
    s.pin = "server-no(one-cpu)";
  } else {
    cpu_set_t check;
    CPU_ZERO(&check);
    bool ok = sched_getaffinity(pid, sizeof check, &check) == 0 && CPU_COUNT(&check) == 1 &&
              CPU_ISSET(cpu, &check);
    s.pin = ok ? fmt::format("server-cpu{}", cpu) : "server-no(mask-not-applied)";
  }
}

// Every thread of the server (Go starts several) must carry the mask.
void check_server_threads(Server& s, int cpu) {
  if (cpu < 0 || s.pin.find("no(") != std::string::npos) return;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", s.pid), ec)) {
    pid_t tid = std::atoi(entry.path().filename().c_str());
    cpu_set_t check;
    CPU_ZERO(&check);
    if (sched_getaffinity(tid, sizeof check, &check) != 0 || CPU_COUNT(&check) != 1 || !CPU_ISSET(cpu, &check)) {
      s.pin = "server-no(thread-mask)";
      return;
    }
  }
}

// SIGTERM, then up to 5 s for a clean exit. Returns "" or what went wrong.
std::string stop_server(Server& s) {
  if (s.pid <= 0) return {};
  kill(s.pid, SIGTERM);
  int status = 0;
  std::string why;
  auto deadline = now_ns() + 5'000'000'000;
  for (;;) {
    pid_t r = waitpid(s.pid, &status, WNOHANG);
    if (r == s.pid) break;
    if (r < 0 && errno != EINTR) {
      why = "waitpid failed";
      break;
    }
    if (now_ns() > deadline) {
      kill(s.pid, SIGKILL);
      waitpid(s.pid, &status, 0);
      why = "did not exit within 5 s of SIGTERM";
      break;
    }
    usleep(10'000);
  }
  if (why.empty() && WIFSIGNALED(status)) why = fmt::format("died of signal {}", WTERMSIG(status));
  if (why.empty() && WIFEXITED(status) && WEXITSTATUS(status) != 0)
    why = fmt::format("exited with status {}", WEXITSTATUS(status));
  close(s.out_fd);
  s.pid = -1;
  return why;
}

// ---------------------------------------------------------------------------
// Connections and the load loop

struct Conn {
  int fd = -1;
  std::uint32_t got = 0;      // bytes of the current reply received
  std::int64_t sent_at = 0;   // when the current message went out
  bool busy = false;          // a message is in flight
  char* reply = nullptr;      // where its reply collects
};

struct Sample {
  double rate = 0;            // round trips per second
  double p50_us = 0, p99_us = 0;
  double cpu_us_per_rt = 0;   // server CPU per round trip
  double server_util = 0;     // server CPU time / wall time in the window
  double client_util = 0;
};

class Load {
 public:
  Load(const Server& server, int connections, std::size_t size)
      : server_(server), size_(size), message_(size), replies_(size * static_cast<std::size_t>(connections)) {
    for (std::size_t i = 0; i < size; ++i) message_[i] = static_cast<char>('a' + i % 26);
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) throw_errno("epoll_create1");
    conns_.resize(static_cast<std::size_t>(connections));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(server.port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (std::size_t i = 0; i < conns_.size(); ++i) {
      conns_[i].reply = replies_.data() + i * size;
      // A blocking connect: on loopback it completes as soon as the server's
      // kernel queues the connection (backlog 4096 on every server).
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) throw_errno("socket");
      conns_[i].fd = fd;
      if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        throw_errno(fmt::format("connect(127.0.0.1:{}) #{}", server.port, i));
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0) throw_errno("fcntl(O_NONBLOCK)");
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u32 = static_cast<std::uint32_t>(i);
      if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("epoll_ctl(ADD)");
    }
    latencies_.reserve(1 << 20);
  }
  ~Load() {
    for (auto& c : conns_)
      if (c.fd >= 0) close(c.fd);
    if (ep_ >= 0) close(ep_);
  }
  Load(const Load&) = delete;
  Load& operator=(const Load&) = delete;

  // Keeps every connection busy for preroll_ns, then measures for window_ns
  // (when window_ns > 0), then drains. Throws if the server misbehaves.
  Sample drive(std::int64_t preroll_ns, std::int64_t window_ns) {
    latencies_.clear();
    std::int64_t start = now_ns();
    for (auto& c : conns_) send_message(c, start);
    std::size_t in_flight = conns_.size();

    enum class Phase { preroll, window, drain } phase = Phase::preroll;
    const std::int64_t window_start = start + preroll_ns;
    const std::int64_t window_end = window_start + window_ns;
    std::int64_t t0 = 0, t1 = 0, server0 = 0, server1 = 0, client0 = 0, client1 = 0;
    std::uint64_t count = 0;
    std::int64_t last_progress = start;
    std::array<epoll_event, 1024> events;

    while (phase != Phase::drain || in_flight > 0) {
      int n = epoll_wait(ep_, events.data(), static_cast<int>(events.size()), 100);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw_errno("epoll_wait");
      }
      std::int64_t now = now_ns();
      if (phase == Phase::preroll && now >= window_start) {
        if (window_ns <= 0) {
          phase = Phase::drain;
        } else {
          phase = Phase::window;
          t0 = now;
          server0 = server_.cpu_time();
          client0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
          count = 0;
          latencies_.clear();
        }
      }
      if (phase == Phase::window && now >= window_end) {
        phase = Phase::drain;
        t1 = now;
        server1 = server_.cpu_time();
        client1 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
      }
      if (n == 0) {
        if (now - last_progress > 5'000'000'000)
          throw std::runtime_error(fmt::format("no reply for 5 s ({} messages in flight)", in_flight));
        continue;
      }
      last_progress = now;
      for (int i = 0; i < n; ++i) {
        Conn& c = conns_[events[i].data.u32];
        if (!receive(c)) continue;  // part of the reply so far
        std::int64_t done = now_ns();
        if (phase == Phase::window) {
          ++count;
          latencies_.push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(done - c.sent_at, UINT32_MAX)));
        }
        if (phase == Phase::drain) {
          --in_flight;
        } else {
          send_message(c, done);
        }
      }
    }

    Sample s;
    if (window_ns <= 0 || count == 0) return s;
    double wall = static_cast<double>(t1 - t0);
    s.rate = static_cast<double>(count) * 1e9 / wall;
    s.p50_us = percentile(0.50) / 1e3;
    s.p99_us = percentile(0.99) / 1e3;
    s.cpu_us_per_rt = static_cast<double>(server1 - server0) / 1e3 / static_cast<double>(count);
    s.server_util = static_cast<double>(server1 - server0) / wall;
    s.client_util = static_cast<double>(client1 - client0) / wall;
    return s;
  }

 private:
  void send_message(Conn& c, std::int64_t now) {
    c.got = 0;
    c.sent_at = now;
    c.busy = true;
    // With one message in flight the send buffer is always empty here, so
    // the write takes all of it; anything else is the server's fault.
    ssize_t n;
    do {
      n = ::send(c.fd, message_.data(), size_, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) throw_errno("send");
    if (static_cast<std::size_t>(n) != size_)
      throw std::runtime_error(fmt::format("short send ({} of {} bytes)", n, size_));
  }

  // One read; true when the reply is complete (and correct).
  bool receive(Conn& c) {
    ssize_t n;
    do {
      n = ::read(c.fd, c.reply + c.got, size_ - c.got);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    if (n < 0) throw_errno("read");
    if (n == 0) throw std::runtime_error("the server closed a connection");
    if (!c.busy) throw std::runtime_error("the server sent bytes nobody asked for");
    c.got += static_cast<std::uint32_t>(n);
    if (c.got < size_) return false;
    if (std::memcmp(c.reply, message_.data(), size_) != 0)
      throw std::runtime_error("the server echoed different bytes");
    c.busy = false;
    return true;
  }

  double percentile(double q) {
    std::size_t k = std::min(latencies_.size() - 1, static_cast<std::size_t>(q * static_cast<double>(latencies_.size())));
    std::nth_element(latencies_.begin(), latencies_.begin() + static_cast<std::ptrdiff_t>(k), latencies_.end());
    return latencies_[k];
  }

  const Server& server_;
  std::size_t size_;
  std::vector<char> message_;
  // size_ bytes per connection: a reply may arrive in pieces, and another
  // connection's reply must not overwrite a piece waiting for the rest.
  std::vector<char> replies_;
  std::vector<Conn> conns_;
  std::vector<std::uint32_t> latencies_;
  int ep_ = -1;
};

// ---------------------------------------------------------------------------

struct ServerSpec {
  std::string name, path, arg;
};

struct Options {
  std::vector<ServerSpec> servers;
  std::vector<int> connections{1, 64, 1000};
  bool full = false;
  int repetitions = 0;
  double window_ms = 0, warmup_ms = 0;
  std::size_t size = 64;
};

[[noreturn]] void usage(const char* argv0, const std::string& error) {
  if (!error.empty()) fmt::print(stderr, "{}: {}\n", argv0, error);
  fmt::print(stderr,
             "usage: {} [--server NAME=PATH ...] [--connections 1,64,1000] [--full]\n"
             "          [--repetitions N] [--window-ms X] [--warmup-ms X] [--size BYTES]\n",
             argv0);
  std::exit(error.empty() ? 0 : 2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(argv[0], a + " needs a value");
      return argv[++i];
    };
    if (a == "--server") {
      std::string v = next();
      auto eq = v.find('=');
      if (eq == std::string::npos || eq == 0) usage(argv[0], "--server takes NAME=PATH");
      o.servers.push_back({v.substr(0, eq), v.substr(eq + 1), ""});
    } else if (a == "--connections") {
      o.connections.clear();
      std::string v = next();
      for (std::size_t pos = 0; pos <= v.size();) {
        auto comma = v.find(',', pos);
        if (comma == std::string::npos) comma = v.size();
        int c = std::atoi(v.substr(pos, comma - pos).c_str());
        if (c <= 0) usage(argv[0], "--connections takes positive counts, comma-separated");
        o.connections.push_back(c);
        pos = comma + 1;
      }
    } else if (a == "--full") {
      o.full = true;
    } else if (a == "--repetitions") {
      o.repetitions = std::max(1, std::atoi(next().c_str()));
    } else if (a == "--window-ms") {
      o.window_ms = std::atof(next().c_str());
    } else if (a == "--warmup-ms") {
      o.warmup_ms = std::atof(next().c_str());
    } else if (a == "--size") {
      o.size = static_cast<std::size_t>(std::max(1, std::atoi(next().c_str())));
    } else if (a == "--list") {
      // run.py asks every binary for its callgrind cases; this one has none.
      std::exit(0);
    } else if (a == "--help" || a == "-h") {
      usage(argv[0], {});
    } else {
      usage(argv[0], "unknown argument " + a);
    }
  }
  // Short mode keeps the echo section near 20 s for three servers; --full
  // runs 4x longer windows and three times the repetitions.
  if (o.repetitions == 0) o.repetitions = o.full ? 9 : 3;
  if (o.window_ms <= 0) o.window_ms = o.full ? 2000 : 500;
  if (o.warmup_ms <= 0) o.warmup_ms = o.full ? 1000 : 300;
  return o;
}

// The servers next to this binary, in the order of the table. spindle_small
// is echo_spindle on small stacks (see bench/echo_spindle.cpp).
std::vector<ServerSpec> default_servers(std::vector<ServerSpec>& missing) {
  std::vector<ServerSpec> found;
  std::error_code ec;
  auto dir = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
  const ServerSpec known[] = {{"epoll", "echo_epoll", ""},
                              {"spindle", "echo_spindle", ""},
                              {"spindle_small", "echo_spindle", "--small-stacks"},
                              {"go", "echo_go", ""}};
  for (const ServerSpec& k : known) {
    auto path = dir / k.path;
    if (access(path.c_str(), X_OK) == 0)
      found.push_back({k.name, path.string(), k.arg});
    else
      missing.push_back(k);
  }
  return found;
}

double median(std::vector<double> v) { return bench::summarize(std::move(v)).median; }

void report(std::string_view section, const std::string& name, std::vector<double> values,
            std::string_view unit, const std::string& note) {
  auto s = bench::summarize(std::move(values));
  fmt::print("RESULT\t{}\t{}\t{:.3f}\t{:.3f}\t{:.3f}\t{}\treps={} {}\n", section, name, s.median, s.min, s.max, unit,
             s.repetitions, bench::detail::sanitize(note));
}

}  // namespace

int main(int argc, char** argv) {
  bench::initial_cpus();
  Options opt = parse(argc, argv);
  bench::print_machine();

  // 1,000 connections per server need more than the usual 1,024 fds once
  // three servers' sockets are open here at once; the servers inherit it.
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  signal(SIGPIPE, SIG_IGN);

  std::vector<ServerSpec> missing;
  if (opt.servers.empty()) opt.servers = default_servers(missing);
  for (const auto& m : missing) {
    for (int c : opt.connections)
      fmt::print("SKIPPED\techo\t{}_c{}\t{} is not built{}\n", m.name, c, m.path,
                 m.name == "go" ? " (go not installed)" : "");
  }

  // Server on the primary CPU, client on another; both unpinned when the
  // machine has one CPU (then they share it and the note says so).
  auto second = bench::secondary_cpu();
  int server_cpu = second ? bench::primary_cpu() : -1;
  std::string client_pin = "client-no(one-cpu)";
  if (second) {
    auto pin = bench::pin_current_thread(*second);
    client_pin = pin.pinned ? fmt::format("client-cpu{}", *second) : fmt::format("client-no({})", pin.why);
  }

  std::vector<Server> servers;
  for (auto& spec : opt.servers) {
    Server s;
    s.name = spec.name;
    s.path = spec.path;
    s.arg = spec.arg;
    servers.push_back(std::move(s));
  }
  int status = 0;
  for (auto& s : servers) {
    try {
      start_server(s, server_cpu);
    } catch (const std::exception& e) {
      s.failure = e.what();
      fmt::print(stderr, "echo_load: server {}: {}\n", s.name, e.what());
      status = 1;
    }
  }

  const auto window_ns = static_cast<std::int64_t>(opt.window_ms * 1e6);
  const auto warmup_ns = static_cast<std::int64_t>(opt.warmup_ms * 1e6);
  // Each repetition's pre-roll re-warms a server whose connections sat idle
  // while the others were measured.
  const std::int64_t preroll_ns = std::min<std::int64_t>(warmup_ns, opt.full ? 200'000'000 : 100'000'000);

  for (int c : opt.connections) {
    std::vector<std::unique_ptr<Load>> loads(servers.size());
    std::vector<std::vector<Sample>> samples(servers.size());
    auto fail = [&](std::size_t i, const std::exception& e) {
      servers[i].failure = fmt::format("C={}: {}", c, e.what());
      fmt::print(stderr, "echo_load: server {}: {}\n", servers[i].name, servers[i].failure);
      loads[i].reset();
      status = 1;
    };
    for (std::size_t i = 0; i < servers.size(); ++i) {
      if (!servers[i].failure.empty()) continue;
      try {
        loads[i] = std::make_unique<Load>(servers[i], c, opt.size);
        loads[i]->drive(warmup_ns, 0);
        check_server_threads(servers[i], server_cpu);
      } catch (const std::exception& e) {
        fail(i, e);
      }
    }
    for (int rep = 0; rep < opt.repetitions; ++rep) {
      for (std::size_t k = 0; k < servers.size(); ++k) {
        std::size_t i = (k + static_cast<std::size_t>(rep)) % servers.size();
        if (!loads[i]) continue;
        try {
          samples[i].push_back(loads[i]->drive(preroll_ns, window_ns));
        } catch (const std::exception& e) {
          fail(i, e);
        }
      }
    }
    for (std::size_t i = 0; i < servers.size(); ++i) {
      const Server& s = servers[i];
      std::string name = fmt::format("{}_c{}", s.name, c);
      if (!loads[i] || samples[i].empty()) {
        fmt::print("SKIPPED\techo\t{}\t{}\n", name,
                   bench::detail::sanitize(s.failure.empty() ? "not run" : s.failure));
        continue;
      }
      std::vector<double> rate, p50, p99, cpu, sutil, cutil;
      for (const auto& x : samples[i]) {
        rate.push_back(x.rate);
        p50.push_back(x.p50_us);
        p99.push_back(x.p99_us);
        cpu.push_back(x.cpu_us_per_rt);
        sutil.push_back(x.server_util * 100);
        cutil.push_back(x.client_util * 100);
      }
      std::string note = fmt::format(
          "conns={} size={} window_ms={:g} pin={},{} server_cpu={:.0f}% client_cpu={:.0f}% cpuclock={}{}{}", c,
          opt.size, opt.window_ms, client_pin, s.pin, median(sutil), median(cutil),
          s.have_clock ? "process-clock" : "proc-stat", s.extra.empty() ? "" : " ", s.extra);
      report("echo", name, rate, "rt/s", note);
      report("echo_p50", name, p50, "us", note);
      report("echo_p99", name, p99, "us", note);
      report("echo_cpu", name, cpu, "us/rt", note);
    }
    std::fflush(stdout);
  }

  for (auto& s : servers) {
    std::string why = stop_server(s);
    if (!why.empty()) {
      fmt::print(stderr, "echo_load: server {} {}\n", s.name, why);
      status = 1;
    }
  }
  return status;
}
