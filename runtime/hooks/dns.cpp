// Hooks for name resolution: getaddrinfo, freeaddrinfo, gethostbyname.
//
// On a fiber, names are answered by spindle::net::resolve (c-ares on
// spindle's poller: /etc/hosts, then DNS), which parks instead of blocking.
// The lists it builds have glibc's layout: each node one malloc block with
// its sockaddr right behind it (ai_addr points into the block), the
// canonical name (first node only) a separate malloc'd string. So glibc's
// freeaddrinfo frees them, and the freeaddrinfo below (glibc's algorithm,
// needed so that a static link does not pull libc.a's getaddrinfo.o, which
// defines getaddrinfo too) frees glibc's lists. Either frees either.
//
// getaddrinfo hints handled on a fiber: ai_family AF_UNSPEC, AF_INET,
// AF_INET6; ai_socktype 0 (one entry per address for SOCK_STREAM,
// SOCK_DGRAM and, unless the service is a name, SOCK_RAW, as glibc does),
// SOCK_STREAM, SOCK_DGRAM, SOCK_RAW; ai_protocol (0: TCP for streams, UDP
// for datagrams); flags AI_PASSIVE (a null node gives the wildcard
// addresses, else loopback), AI_NUMERICHOST, AI_NUMERICSERV, AI_CANONNAME
// (the name as given: resolve does not report CNAME targets) and
// AI_ADDRCONFIG (accepted, not applied: both families are returned and the
// caller's connect loop skips the one the host cannot reach). A null hints
// means AF_UNSPEC, any type. Other flags (AI_V4MAPPED, AI_ALL with
// AF_INET6, AI_IDN, ...) go to libc's getaddrinfo on the blocking pool
// (spindle::run_blocking), which parks the fiber too; in a static
// executable, which has no libc getaddrinfo left, they are ignored.
//
// Outside fibers both calls are libc's, found with dlsym(RTLD_NEXT) once. A
// static executable has no libc definition left to find (these hooks
// replaced it): there they run the same resolve-based code with a
// scheduler of its own on a short-lived helper thread.
//
// gethostbyname returns a per-thread buffer, valid until the next call on
// that thread (glibc's is per process). Its h_name is the name as given.
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <spindle/blocking.hpp>
#include <spindle/net/dns.hpp>
#include <spindle/run.hpp>

#include "runtime/hooks/hooks.hpp"

namespace spindle::hooks {

namespace {

using GetaddrinfoFn = int (*)(const char*, const char*, const addrinfo*, addrinfo**);
using GethostbynameFn = hostent* (*)(const char*);

// libc's definitions, looked up once (function-local statics initialise
// thread-safely); nullptr in a static executable.
GetaddrinfoFn libc_getaddrinfo() noexcept {
  static const auto fn = reinterpret_cast<GetaddrinfoFn>(::dlsym(RTLD_NEXT, "getaddrinfo"));
  return fn;
}
GethostbynameFn libc_gethostbyname() noexcept {
  static const auto fn = reinterpret_cast<GethostbynameFn>(::dlsym(RTLD_NEXT, "gethostbyname"));
  return fn;
}

void free_list(addrinfo* ai) noexcept {
  while (ai) {
    addrinfo* next = ai->ai_next;
    std::free(ai->ai_canonname);
    std::free(ai);
    ai = next;
  }
}

bool all_digits(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// getaddrinfo's code for a failed resolve.
int eai_for(net::DnsErrc e) noexcept {
  using net::DnsErrc;
  switch (e) {
    case DnsErrc::not_found:
    case DnsErrc::no_name:
    case DnsErrc::bad_name:
    case DnsErrc::bad_string:
      return EAI_NONAME;
    case DnsErrc::no_data:
      return EAI_NODATA;
    case DnsErrc::bad_family:
      return EAI_ADDRFAMILY;
    case DnsErrc::bad_service:
      return EAI_SERVICE;
    case DnsErrc::no_memory:
      return EAI_MEMORY;
    case DnsErrc::bad_flags:
    case DnsErrc::bad_hints:
      return EAI_BADFLAGS;
    case DnsErrc::timeout:
    case DnsErrc::connection_refused:
    case DnsErrc::server_failure:
    case DnsErrc::refused:
    case DnsErrc::eof:
    case DnsErrc::file:
      return EAI_AGAIN;
    default:
      return EAI_FAIL;
  }
}

// Runs a resolve on the current fiber and turns every outcome into an EAI
// code (EAI_SYSTEM with errno for cancellation, Timeout scopes and system
// errors).
template <class F>
int guarded_resolve(F&& f) noexcept {
  int eai = 0;
  const int err = run_wait(detail::kNoDeadline, [&] {
    try {
      f();
    } catch (const net::DnsError& e) {
      eai = eai_for(e.errc());
    } catch (const std::invalid_argument&) {
      eai = EAI_NONAME;
    }
  });
  if (err == 0) return eai;
  errno = err;
  return err == ENOMEM ? EAI_MEMORY : EAI_SYSTEM;
}

struct Hints {
  int flags = 0;
  int family = AF_UNSPEC;
  int socktype = 0;
  int protocol = 0;
};

constexpr int kHandledFlags = AI_PASSIVE | AI_CANONNAME | AI_NUMERICHOST | AI_NUMERICSERV | AI_ADDRCONFIG;

// Whether the resolve-based path answers these hints (else libc's does).
bool handled(const Hints& h) noexcept {
  int flags = h.flags;
  // AI_V4MAPPED and AI_ALL mean something only for AF_INET6 queries.
  if (h.family != AF_INET6) flags &= ~(AI_V4MAPPED | AI_ALL);
  return (flags & ~kHandledFlags) == 0;
}

// Appends one node per socket type for `addr` to the list ending at *tail.
int append_nodes(const net::SocketAddress& addr, const Hints& h, bool named_service,
                 addrinfo*** tail) noexcept {
  static constexpr int kTypes[] = {SOCK_STREAM, SOCK_DGRAM, SOCK_RAW};
  for (int type : kTypes) {
    if (h.socktype != 0 && h.socktype != type) continue;
    if (h.socktype == 0 && type == SOCK_RAW && named_service) continue;
    const socklen_t len = addr.native_size();
    auto* node = static_cast<addrinfo*>(std::calloc(1, sizeof(addrinfo) + len));
    if (!node) return EAI_MEMORY;
    node->ai_family = addr.family();
    node->ai_socktype = type;
    node->ai_protocol = h.protocol != 0       ? h.protocol
                        : type == SOCK_STREAM ? IPPROTO_TCP
                        : type == SOCK_DGRAM  ? IPPROTO_UDP
                                              : 0;
    node->ai_addrlen = len;
    node->ai_addr = reinterpret_cast<sockaddr*>(node + 1);
    std::memcpy(node->ai_addr, addr.native(), len);
    **tail = node;
    *tail = &node->ai_next;
  }
  return 0;
}

// getaddrinfo answered by spindle::net::resolve; must run on a fiber.
int resolve_getaddrinfo(const char* node, const char* service, const Hints& h, addrinfo** res) noexcept {
  if (!node && !service) return EAI_NONAME;
  if (h.family != AF_UNSPEC && h.family != AF_INET && h.family != AF_INET6) return EAI_FAMILY;
  if (h.socktype != 0 && h.socktype != SOCK_STREAM && h.socktype != SOCK_DGRAM && h.socktype != SOCK_RAW)
    return EAI_SOCKTYPE;
  if ((h.flags & AI_CANONNAME) && !node) return EAI_BADFLAGS;
  const std::string_view serv = service ? service : "";
  const bool named_service = !serv.empty() && !all_digits(serv);
  if (named_service && (h.flags & AI_NUMERICSERV)) return EAI_NONAME;
  if (!serv.empty() && h.socktype == SOCK_RAW) return EAI_SERVICE;

  std::vector<net::SocketAddress> addrs;
  const int eai = guarded_resolve([&] {
    net::ResolveOptions options;
    options.family = h.family;
    if (node) {
      if (h.flags & AI_NUMERICHOST) (void)net::SocketAddress::parse(node, 0);  // invalid_argument: EAI_NONAME
      addrs = net::resolve(node, serv, options);
      return;
    }
    // No node: the wildcard addresses for a server (IPv4 first, as glibc
    // orders them), else loopback (IPv6 first).
    const bool passive = (h.flags & AI_PASSIVE) != 0;
    const char* order[2] = {passive ? "0.0.0.0" : "::1", passive ? "::" : "127.0.0.1"};
    for (const char* host : order) {
      const int family = std::strchr(host, ':') ? AF_INET6 : AF_INET;
      if (h.family != AF_UNSPEC && h.family != family) continue;
      for (auto& a : net::resolve(host, serv, options)) addrs.push_back(std::move(a));
    }
  });
  if (eai != 0) return eai;

  addrinfo* head = nullptr;
  addrinfo** tail = &head;
  for (const auto& a : addrs) {
    if (const int err = append_nodes(a, h, named_service, &tail)) {
      free_list(head);
      return err;
    }
  }
  if (!head) return EAI_NONAME;
  if (h.flags & AI_CANONNAME) {
    head->ai_canonname = ::strdup(node);
    if (!head->ai_canonname) {
      free_list(head);
      return EAI_MEMORY;
    }
  }
  *res = head;
  return 0;
}

// The per-thread result of gethostbyname.
struct HostBuffer {
  hostent host{};
  std::string name;
  char* aliases[1] = {nullptr};
  std::vector<in_addr> addrs;
  std::vector<char*> list;
};
thread_local HostBuffer tls_host;

int herrno_for(net::DnsErrc e) noexcept {
  using net::DnsErrc;
  switch (e) {
    case DnsErrc::no_data:
      return NO_DATA;
    case DnsErrc::timeout:
    case DnsErrc::connection_refused:
    case DnsErrc::server_failure:
    case DnsErrc::refused:
      return TRY_AGAIN;
    case DnsErrc::not_found:
    case DnsErrc::no_name:
    case DnsErrc::bad_name:
    case DnsErrc::bad_family:
      return HOST_NOT_FOUND;
    default:
      return NO_RECOVERY;
  }
}

// gethostbyname answered by spindle::net::resolve into `out`; must run on
// a fiber. Returns the h_errno value, 0 on success.
int resolve_gethostbyname(const char* name, HostBuffer& out) noexcept {
  std::vector<net::SocketAddress> addrs;
  int herr = 0;
  const int err = run_wait(detail::kNoDeadline, [&] {
    try {
      addrs = net::resolve(name, "", {.family = AF_INET});
    } catch (const net::DnsError& e) {
      herr = herrno_for(e.errc());
    } catch (const std::invalid_argument&) {
      herr = HOST_NOT_FOUND;
    }
  });
  if (err != 0) {
    errno = err;
    return TRY_AGAIN;
  }
  if (herr != 0) return herr;
  try {
    out.name = name;
    out.addrs.clear();
    for (const auto& a : addrs)
      out.addrs.push_back(reinterpret_cast<const sockaddr_in*>(a.native())->sin_addr);
    out.list.clear();
    for (in_addr& a : out.addrs) out.list.push_back(reinterpret_cast<char*>(&a));
    out.list.push_back(nullptr);
  } catch (const std::bad_alloc&) {
    return NO_RECOVERY;
  }
  out.host.h_name = out.name.data();
  out.host.h_aliases = out.aliases;
  out.host.h_addrtype = AF_INET;
  out.host.h_length = sizeof(in_addr);
  out.host.h_addr_list = out.list.data();
  return 0;
}

// A static executable outside fibers: `f` runs on a fiber of a scheduler
// of its own, on a helper thread (this thread may already run one, or be
// inside a library that must not see a scheduler appear). Returns false,
// with errno set, when the thread could not be started.
template <class F>
bool on_helper_scheduler(F&& f) noexcept {
  int err = 0;
  try {
    std::thread helper([&] {
      try {
        spindle::run([&] { f(); });
      } catch (const std::system_error& e) {
        err = e.code().value();
      } catch (const std::exception&) {
        err = EIO;
      }
    });
    helper.join();
  } catch (const std::system_error& e) {
    err = e.code().value();
  }
  if (err == 0) return true;
  errno = err;
  return false;
}

}  // namespace

int hook_getaddrinfo(const char* node, const char* service, const addrinfo* hints, addrinfo** res) noexcept {
  Hints h;
  if (hints) h = {hints->ai_flags, hints->ai_family, hints->ai_socktype, hints->ai_protocol};
  const GetaddrinfoFn libc = libc_getaddrinfo();
  if (!current_fiber()) {
    if (libc) return libc(node, service, hints, res);
    int rc = EAI_SYSTEM, sys_err = 0;
    if (!on_helper_scheduler([&] {
          rc = resolve_getaddrinfo(node, service, h, res);
          sys_err = errno;  // errno is the helper thread's own
        }))
      return EAI_SYSTEM;
    if (rc == EAI_SYSTEM) errno = sys_err;
    return rc;
  }
  if (handled(h) || !libc) return resolve_getaddrinfo(node, service, h, res);
  // Hints only libc understands: its getaddrinfo on the blocking pool. The
  // list lands in `list` first so that an interrupted wait (which still
  // waits for the call to end) can free it.
  addrinfo* list = nullptr;
  int rc = EAI_SYSTEM;
  const int err = run_wait(detail::kNoDeadline,
                           [&] { rc = run_blocking([&] { return libc(node, service, hints, &list); }); });
  if (err != 0) {
    free_list(list);
    errno = err;
    return EAI_SYSTEM;
  }
  if (rc == 0) *res = list;
  return rc;
}

hostent* hook_gethostbyname(const char* name) noexcept {
  if (!name) {
    h_errno = HOST_NOT_FOUND;
    return nullptr;
  }
  int herr = 0;
  if (!current_fiber()) {
    if (const GethostbynameFn libc = libc_gethostbyname()) return libc(name);
    HostBuffer& out = tls_host;
    if (!on_helper_scheduler([&] { herr = resolve_gethostbyname(name, out); })) herr = NO_RECOVERY;
  } else {
    herr = resolve_gethostbyname(name, tls_host);
  }
  if (herr != 0) {
    h_errno = herr;
    return nullptr;
  }
  return &tls_host.host;
}

}  // namespace spindle::hooks

using namespace spindle::hooks;

extern "C" {

int getaddrinfo(const char* node, const char* service, const addrinfo* hints, addrinfo** res) {
  return hook_getaddrinfo(node, service, hints, res);
}

void freeaddrinfo(addrinfo* ai) noexcept { free_list(ai); }

hostent* gethostbyname(const char* name) { return hook_gethostbyname(name); }

}  // extern "C"
