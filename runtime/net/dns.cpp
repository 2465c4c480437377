// spindle::net::resolve (spindle/net/dns.hpp): c-ares driven by spindle.
//
// One resolve() runs in three steps:
//
// 1. Numeric hosts are answered on the spot.
// 2. On the blocking pool: the service name is looked up, /etc/hosts is
//    searched through a c-ares channel whose only lookup is "f" (it answers
//    synchronously, inside ares_getaddrinfo), and, if the name is not there,
//    a second channel with the lookup "b" (DNS only) is initialised, which
//    reads /etc/resolv.conf. Both reads are plain file I/O, hence the pool.
// 3. On the calling fiber: ares_getaddrinfo on the DNS channel, driven by a
//    Resolver (below) until its callback has run.
//
// Driving c-ares. The channel's socket functions (ares_set_socket_functions)
// are ours, so every socket c-ares opens or closes passes through here: a
// Watch is made when c-ares opens a socket and retired when it closes it,
// and the close hook calls spindle::forget_fd before close(2), so the poller
// never holds a closed fd. The socket-state callback says which directions
// c-ares wants; for each wanted direction a helper fiber parks in
// wait_readable / wait_writable and calls ares_process_fd when the socket is
// ready. The calling fiber parks until c-ares's next retransmission timeout
// (ares_timeout), then lets c-ares process it; helpers ready it after each
// step, so it re-reads the timeout and sees the callback's result.
//
// Spindle's readiness is edge-triggered, and c-ares reads a TCP socket only
// once per ares_process_fd. So the socket functions record whether the last
// recv/send on a socket made progress or met EAGAIN; a helper parks only
// after EAGAIN (or when c-ares did not touch the socket), and otherwise
// calls ares_process_fd again.
//
// No fiber parks inside a c-ares call (the socket functions never park, and
// helpers are started after the call returns), so the channel is only ever
// used by one fiber at a time, all on the scheduler's thread.
#include <spindle/net/dns.hpp>

#include <ares.h>
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include <spindle/blocking.hpp>
#include <spindle/detail/assert.hpp>
#include <spindle/detail/fiber.hpp>
#include <spindle/error.hpp>
#include <spindle/io.hpp>
#include <spindle/task.hpp>
#include <spindle/this_fiber.hpp>

#include "platform/syscall.hpp"

namespace spindle::net {

static_assert(static_cast<int>(DnsErrc::no_data) == ARES_ENODATA);
static_assert(static_cast<int>(DnsErrc::not_found) == ARES_ENOTFOUND);
static_assert(static_cast<int>(DnsErrc::bad_family) == ARES_EBADFAMILY);
static_assert(static_cast<int>(DnsErrc::connection_refused) == ARES_ECONNREFUSED);
static_assert(static_cast<int>(DnsErrc::timeout) == ARES_ETIMEOUT);
static_assert(static_cast<int>(DnsErrc::destruction) == ARES_EDESTRUCTION);
static_assert(static_cast<int>(DnsErrc::no_name) == ARES_ENONAME);
static_assert(static_cast<int>(DnsErrc::cancelled) == ARES_ECANCELLED);
static_assert(static_cast<int>(DnsErrc::bad_service) == ARES_ESERVICE);

namespace {

class DnsCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "dns"; }
  std::string message(int code) const override {
    // c-ares 1.18's ares_strerror has no text for ARES_ESERVICE.
    if (code == ARES_ESERVICE) return "Unknown service name";
    return ares_strerror(code);
  }
  std::error_condition default_error_condition(int code) const noexcept override {
    switch (code) {
      case ARES_ETIMEOUT: return std::errc::timed_out;
      case ARES_ECONNREFUSED: return std::errc::connection_refused;
      case ARES_ENOMEM: return std::errc::not_enough_memory;
      case ARES_ECANCELLED:
      case ARES_EDESTRUCTION: return std::errc::operation_canceled;
      default: return {code, *this};
    }
  }
};

constexpr const char* kCall = "spindle::net::resolve";
// Helper fibers run c-ares's read path, which keeps a full UDP packet
// buffer on the stack; give them room beyond the 64 KiB default.
constexpr std::size_t kHelperStack = 256 * 1024;

void init_library() {
  static std::once_flag once;
  std::call_once(once, [] {
    const int status = ares_library_init(ARES_LIB_INIT_ALL);
    if (status != ARES_SUCCESS)
      throw DnsError(static_cast<DnsErrc>(status), "spindle::net::resolve: ares_library_init");
  });
}

struct ChannelDeleter {
  void operator()(ares_channel ch) const noexcept { ares_destroy(ch); }
};
using Channel = std::unique_ptr<std::remove_pointer_t<ares_channel>, ChannelDeleter>;

struct AddrInfoDeleter {
  void operator()(ares_addrinfo* ai) const noexcept { ares_freeaddrinfo(ai); }
};
using AddrInfo = std::unique_ptr<ares_addrinfo, AddrInfoDeleter>;

// What an ares_getaddrinfo callback delivers.
struct Outcome {
  bool done = false;
  int status = ARES_SUCCESS;
  AddrInfo result;

  static void callback(void* arg, int status, int /*timeouts*/, ares_addrinfo* res) noexcept {
    auto* self = static_cast<Outcome*>(arg);
    AddrInfo owned(res);
    if (self->done) return;  // only the first outcome counts
    self->done = true;
    self->status = status;
    self->result = std::move(owned);
  }
};

std::string describe(std::string_view host, std::string_view service) {
  if (service.empty()) return fmt::format("resolve(\"{}\")", host);
  return fmt::format("resolve(\"{}\", \"{}\")", host, service);
}

// "" is port 0; digits are the port; anything else is a name (nullopt).
std::optional<std::uint16_t> numeric_service(std::string_view service, const std::string& what) {
  if (service.empty()) return 0;
  if (!std::all_of(service.begin(), service.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(service.data(), service.data() + service.size(), value);
  if (ec != std::errc{} || end != service.data() + service.size() || value > 65535)
    throw DnsError(DnsErrc::bad_service, what);
  return static_cast<std::uint16_t>(value);
}

// On the pool: the services database may be a file or an NSS module.
std::uint16_t lookup_service(const std::string& service, const std::string& what) {
  servent entry{};
  servent* found = nullptr;
  char buf[4096];
  const int err = ::getservbyname_r(service.c_str(), nullptr, &entry, buf, sizeof buf, &found);
  if (err != 0 || !found) throw DnsError(DnsErrc::bad_service, what);
  return ntohs(static_cast<std::uint16_t>(found->s_port));
}

// A numeric host, or nullopt for a name. Numeric IPv6 text always holds a
// ':', which no host name does.
std::optional<SocketAddress> numeric_host(std::string_view host, std::uint16_t port, int family,
                                          const std::string& what) {
  SocketAddress addr;
  in_addr v4{};
  const std::string text(host);
  if (::inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    addr = SocketAddress::parse(host, port);
  } else if (host.find(':') != std::string_view::npos) {
    try {
      addr = SocketAddress::parse(host, port);
    } catch (const std::invalid_argument&) {
      throw DnsError(DnsErrc::bad_name, what);
    }
  } else {
    return std::nullopt;
  }
  if (family != AF_UNSPEC && addr.family() != family) throw DnsError(DnsErrc::bad_family, what);
  return addr;
}

std::vector<SocketAddress> to_addresses(const ares_addrinfo* ai, std::uint16_t port, int family) {
  std::vector<SocketAddress> out;
  for (const ares_addrinfo_node* n = ai ? ai->nodes : nullptr; n; n = n->ai_next) {
    if (!n->ai_addr || (family != AF_UNSPEC && n->ai_family != family)) continue;
    if (n->ai_family != AF_INET && n->ai_family != AF_INET6) continue;
    sockaddr_storage ss{};
    const auto len = static_cast<socklen_t>(std::min<std::size_t>(n->ai_addrlen, sizeof ss));
    std::memcpy(&ss, n->ai_addr, len);
    if (n->ai_family == AF_INET)
      reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(port);
    else
      reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(port);
    SocketAddress addr = SocketAddress::from_native(reinterpret_cast<const sockaddr*>(&ss), len);
    if (std::find(out.begin(), out.end(), addr) == out.end()) out.push_back(std::move(addr));
  }
  return out;
}

// ----------------------------------------------------------------- Resolver

// One socket c-ares opened, from its asocket to its aclose.
struct Watch {
  int fd;
  bool want_read = false;   // c-ares's socket state
  bool want_write = false;
  bool closed = false;       // aclose ran; the fd number may belong to someone else now
  bool reader_running = false;
  bool writer_running = false;
  // Whether the last recv / send on the socket made progress (true) or met
  // EAGAIN or an error (false): spindle's readiness is edge-triggered, so a
  // helper may park only once the socket has been drained.
  bool read_progress = false;
  bool write_progress = false;
};

class Resolver {
 public:
  Resolver() : fiber_(detail::current_fiber()) {}
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Destroying the channel closes its sockets through close_hook (which
  // forgets them in the poller) and runs the callback with
  // ARES_EDESTRUCTION if the lookup was still pending; then the helpers,
  // readied by the forgets, are waited for (shielded: this may run while
  // the fiber unwinds from Cancelled or TimeoutError).
  ~Resolver() {
    channel_.reset();
    helpers_.clear();
  }

  // Called on the pool before the channel is used: the options that point
  // back at this object.
  void configure(ares_options& opts, int& mask) noexcept {
    opts.sock_state_cb = &Resolver::state_hook;
    opts.sock_state_cb_data = this;
    mask |= ARES_OPT_SOCK_STATE_CB;
  }
  static void install_socket_functions(ares_channel ch, Resolver* self) noexcept {
    static const ares_socket_functions functions = {
        &Resolver::socket_hook, &Resolver::close_hook, &Resolver::connect_hook,
        &Resolver::recvfrom_hook, &Resolver::sendv_hook,
    };
    ares_set_socket_functions(ch, &functions, self);
  }

  // Runs the lookup to its end on the calling fiber.
  Outcome run(Channel channel, const std::string& host, int family) {
    channel_ = std::move(channel);
    ares_addrinfo_hints hints{};
    hints.ai_family = family;
    ares_getaddrinfo(channel_.get(), host.c_str(), nullptr, &hints, &Outcome::callback, &outcome_);
    while (!outcome_.done) {
      rethrow_helper_error();
      start_helpers();
      timeval tv{};
      std::int64_t deadline = detail::kNoDeadline;
      if (ares_timeout(channel_.get(), nullptr, &tv)) {
        const std::int64_t wait_ns =
            static_cast<std::int64_t>(tv.tv_sec) * 1'000'000'000 + static_cast<std::int64_t>(tv.tv_usec) * 1000;
        deadline = detail::now_ns() + wait_ns;
      }
      parked_ = true;
      const detail::WakeReason r = detail::park(deadline);
      parked_ = false;
      if (detail::leave_wait(r, deadline, kCall) == detail::WakeReason::timed_out)
        ares_process_fd(channel_.get(), ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    }
    rethrow_helper_error();
    return std::move(outcome_);
  }

 private:
  static Resolver* self(void* p) noexcept { return static_cast<Resolver*>(p); }

  Watch* find(int fd) noexcept {
    auto it = watches_.find(fd);
    return it == watches_.end() ? nullptr : it->second.get();
  }

  // Readies the calling fiber if it is parked in run(), so it looks again.
  void kick() noexcept {
    if (parked_) detail::ready(fiber_);
  }

  void rethrow_helper_error() {
    if (helper_error_) std::rethrow_exception(std::exchange(helper_error_, nullptr));
  }

  // Starts a helper for every direction c-ares wants and nobody serves.
  void start_helpers() {
    for (auto& [fd, w] : watches_) {
      if (w->want_read && !w->reader_running) start_helper(w.get(), false);
      if (w->want_write && !w->writer_running) start_helper(w.get(), true);
    }
  }

  void start_helper(Watch* w, bool write) {
    helpers_.reserve(helpers_.size() + 1);  // so the push_back below cannot fail
    auto task = spindle::spawn(SpawnOptions{.name = write ? "dns-writer" : "dns-reader", .stack_size = kHelperStack},
                               [this, w, write] { pump(w, write); });
    (write ? w->writer_running : w->reader_running) = true;
    helpers_.push_back(std::move(task));
  }

  // A helper fiber's body: serves one direction of one socket until c-ares
  // stops wanting it or closes the socket.
  void pump(Watch* w, bool write) {
    // Cleared however the fiber ends, so a later want is served again.
    struct Running {
      bool& flag;
      ~Running() { flag = false; }
    } running{write ? w->writer_running : w->reader_running};
    try {
      for (;;) {
        const bool& wanted = write ? w->want_write : w->want_read;
        bool& progress = write ? w->write_progress : w->read_progress;
        if (w->closed || !wanted) break;
        if (progress) {
          // The last call made progress and may have left data behind.
          this_fiber::yield();
        } else {
          try {
            if (write)
              wait_writable(w->fd);
            else
              wait_readable(w->fd);
          } catch (const std::system_error&) {
            // close_hook forgot the fd while we waited on it.
            if (w->closed) break;
            throw;
          }
        }
        if (w->closed || !wanted) break;
        progress = false;
        ares_process_fd(channel_.get(), write ? ARES_SOCKET_BAD : w->fd, write ? w->fd : ARES_SOCKET_BAD);
        start_helpers();
        kick();
      }
    } catch (const std::exception&) {
      if (!helper_error_) helper_error_ = std::current_exception();
      kick();
    }
  }

  // --- c-ares callbacks: never throw, never park ---

  static void state_hook(void* data, ares_socket_t fd, int readable, int writable) noexcept {
    if (Watch* w = self(data)->find(fd)) {
      w->want_read = readable != 0;
      w->want_write = writable != 0;
    }
  }

  static ares_socket_t socket_hook(int domain, int type, int protocol, void* data) noexcept {
    Resolver* r = self(data);
    const int fd = ::socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
    if (fd < 0) return ARES_SOCKET_BAD;
    try {
      auto w = std::make_unique<Watch>();
      w->fd = fd;
      auto [it, fresh] = r->watches_.try_emplace(fd);
      if (!fresh) r->retire(std::move(it->second));  // cannot happen: close_hook erases
      it->second = std::move(w);
      // Room to retire every open socket, so retire() never allocates.
      r->retired_.reserve(r->retired_.size() + r->watches_.size());
    } catch (const std::bad_alloc&) {
      ::close(fd);
      errno = ENOMEM;
      return ARES_SOCKET_BAD;
    }
    return fd;
  }

  static int close_hook(ares_socket_t fd, void* data) noexcept {
    Resolver* r = self(data);
    auto it = r->watches_.find(fd);
    if (it != r->watches_.end()) {
      std::unique_ptr<Watch> w = std::move(it->second);
      r->watches_.erase(it);
      r->retire(std::move(w));
    }
    // Before close: the fd number is free for reuse the moment it closes.
    spindle::forget_fd(fd);
    return ::close(fd);
  }

  static int connect_hook(ares_socket_t fd, const sockaddr* addr, ares_socklen_t len, void*) noexcept {
    return platform::retry_eintr([&] { return ::connect(fd, addr, len); });
  }

  static ares_ssize_t recvfrom_hook(ares_socket_t fd, void* buf, size_t len, int flags, sockaddr* from,
                                    ares_socklen_t* from_len, void* data) noexcept {
    const ssize_t n = platform::retry_eintr([&] { return ::recvfrom(fd, buf, len, flags, from, from_len); });
    const int err = errno;
    if (Watch* w = self(data)->find(fd)) w->read_progress = n >= 0;
    errno = err;
    return n;
  }

  static ares_ssize_t sendv_hook(ares_socket_t fd, const iovec* iov, int count, void* data) noexcept {
    msghdr msg{};
    msg.msg_iov = const_cast<iovec*>(iov);
    msg.msg_iovlen = static_cast<std::size_t>(count);
    // MSG_NOSIGNAL: a TCP peer that went away must not raise SIGPIPE.
    const ssize_t n = platform::retry_eintr([&] { return ::sendmsg(fd, &msg, MSG_NOSIGNAL); });
    const int err = errno;
    if (Watch* w = self(data)->find(fd)) w->write_progress = n >= 0;
    errno = err;
    return n;
  }

  // A closed socket's Watch stays alive until the Resolver ends: its
  // helpers may still be about to resume and look at it.
  void retire(std::unique_ptr<Watch> w) noexcept {
    w->closed = true;
    w->want_read = w->want_write = false;
    SPINDLE_ASSERT(retired_.size() < retired_.capacity(), "dns: no room reserved to retire a socket");
    retired_.push_back(std::move(w));
  }

  detail::Fiber* fiber_;
  bool parked_ = false;
  Outcome outcome_;
  std::exception_ptr helper_error_;
  std::unordered_map<int, std::unique_ptr<Watch>> watches_;
  std::vector<std::unique_ptr<Watch>> retired_;
  // Declared after the watches, so the helpers (which use their Watch to
  // the end) are destroyed before them; the destructor clears them first
  // anyway, right after the channel.
  std::vector<Task<void>> helpers_;
  Channel channel_;
};

// What the pool step hands back.
struct Prepared {
  std::uint16_t port = 0;
  AddrInfo hosts;   // /etc/hosts had the name
  Channel channel;  // otherwise: the DNS channel to query with
};

Channel make_channel(ares_options& opts, int mask, const std::string& what) {
  ares_channel ch = nullptr;
  const int status = ares_init_options(&ch, &opts, mask);
  if (status != ARES_SUCCESS) throw DnsError(static_cast<DnsErrc>(status), what);
  return Channel(ch);
}

Prepared prepare(const std::string& host, std::string_view service, std::optional<std::uint16_t> port,
                 bool numeric, const ResolveOptions& options, Resolver& resolver, const std::string& what) {
  Prepared out;
  out.port = port ? *port : lookup_service(std::string(service), what);
  if (numeric) return out;
  init_library();

  // /etc/hosts: a channel whose only lookup is the file answers inside
  // ares_getaddrinfo, without sockets.
  {
    ares_options opts{};
    char lookups[] = "f";
    opts.lookups = lookups;
    Channel files = make_channel(opts, ARES_OPT_LOOKUPS, what);
    ares_addrinfo_hints hints{};
    hints.ai_family = options.family;
    Outcome outcome;
    ares_getaddrinfo(files.get(), host.c_str(), nullptr, &hints, &Outcome::callback, &outcome);
    SPINDLE_ASSERT(outcome.done, "c-ares did not answer a files-only lookup synchronously");
    if (outcome.status == ARES_SUCCESS && outcome.result && outcome.result->nodes) {
      out.hosts = std::move(outcome.result);
      return out;
    }
  }

  ares_options opts{};
  int mask = ARES_OPT_LOOKUPS | ARES_OPT_FLAGS;
  char lookups[] = "b";
  opts.lookups = lookups;
  // HOSTALIASES would be read from a file on the fiber's thread; /etc/hosts
  // has been consulted above instead.
  opts.flags = ARES_FLAG_NOALIASES;
  if (options.timeout.count() > 0) {
    opts.timeout = static_cast<int>(std::min<std::chrono::milliseconds::rep>(options.timeout.count(), INT_MAX));
    mask |= ARES_OPT_TIMEOUTMS;
  }
  if (options.tries > 0) {
    opts.tries = options.tries;
    mask |= ARES_OPT_TRIES;
  }
  resolver.configure(opts, mask);
  out.channel = make_channel(opts, mask, what);
  Resolver::install_socket_functions(out.channel.get(), &resolver);
  if (!options.servers.empty()) {
    std::string csv;
    for (const std::string& s : options.servers) {
      if (s.empty() || s.find(',') != std::string::npos)
        throw std::invalid_argument(fmt::format("spindle::net::resolve: bad DNS server \"{}\"", s));
      if (!csv.empty()) csv += ',';
      csv += s;
    }
    if (ares_set_servers_ports_csv(out.channel.get(), csv.c_str()) != ARES_SUCCESS)
      throw std::invalid_argument(fmt::format("spindle::net::resolve: bad DNS server list \"{}\"", csv));
  }
  return out;
}

}  // namespace

const std::error_category& dns_category() noexcept {
  static const DnsCategory category;
  return category;
}

std::vector<SocketAddress> resolve(std::string_view host, std::string_view service, const ResolveOptions& options) {
  // A suspension point like any blocking call, and a fiber is required.
  (void)detail::enter_wait(kCall);
  if (options.family != AF_UNSPEC && options.family != AF_INET && options.family != AF_INET6)
    throw std::invalid_argument(
        fmt::format("spindle::net::resolve: family {} is not AF_UNSPEC, AF_INET or AF_INET6", options.family));
  const std::string what = describe(host, service);
  if (host.empty()) throw DnsError(DnsErrc::bad_name, what);
  const std::optional<std::uint16_t> port = numeric_service(service, what);
  const std::optional<SocketAddress> numeric = numeric_host(host, port.value_or(0), options.family, what);
  if (numeric && port) return {*numeric};

  const std::string name(host);
  Resolver resolver;
  Outcome outcome;
  std::uint16_t prepared_port = 0;
  try {
    Prepared prepared = run_blocking(
        [&] { return prepare(name, service, port, numeric.has_value(), options, resolver, what); });
    if (numeric) return {SocketAddress::parse(host, prepared.port)};
    prepared_port = prepared.port;
    if (prepared.hosts) {
      outcome.status = ARES_SUCCESS;
      outcome.result = std::move(prepared.hosts);
    } else {
      outcome = resolver.run(std::move(prepared.channel), name, options.family);
    }
  } catch (const TimeoutError&) {
    // Name the lookup a Timeout scope ended, as its other errors do.
    throw TimeoutError(fmt::format("spindle::net::{}: Timeout expired", what));
  }
  if (outcome.status != ARES_SUCCESS) throw DnsError(static_cast<DnsErrc>(outcome.status), what);
  std::vector<SocketAddress> out = to_addresses(outcome.result.get(), prepared_port, options.family);
  if (out.empty()) throw DnsError(DnsErrc::no_data, what);
  return out;
}

}  // namespace spindle::net
