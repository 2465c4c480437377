// Name resolution without blocking the scheduler: asyncio's getaddrinfo.
//
//   for (const auto& addr : spindle::net::resolve("example.org", "443"))
//     ... connect to addr ...
//   auto v6 = spindle::net::resolve("example.org", "https", {.family = AF_INET6});
//
// resolve(host, service) returns the addresses of host with service's port,
// in the order to try them (RFC 6724, as c-ares sorts them), duplicates
// removed; it never returns an empty list. How a name is answered:
//
//   numeric host   "127.0.0.1", "::1", "fe80::1%eth0": answered at once, no
//                  file read and no query. A numeric host of the other
//                  family than options.family asks for is DnsError
//                  (bad_family).
//   /etc/hosts     consulted first (c-ares lookups "fb": file, then DNS);
//                  "localhost" is normally answered here.
//   DNS            c-ares queries the servers of /etc/resolv.conf, or
//                  options.servers, over UDP (TCP for truncated answers).
//   service        "" means port 0; digits are the port; a name ("https")
//                  is looked up in the services database.
//
// The calling thread never blocks: /etc/resolv.conf, /etc/hosts and the
// services database are read on the blocking pool (spindle::run_blocking),
// and the queries run on c-ares sockets that spindle's poller watches, with
// c-ares's retransmission timeouts as spindle timers. Each call has its own
// c-ares channel, so its options, sockets and cleanup are its own; setting
// one up costs a pool round trip and a read of resolv.conf, which is small
// next to a DNS query. Several resolves may run at once on any number of
// fibers and schedulers.
//
// Errors:
//   DnsError            the lookup failed; code() is in dns_category() with
//                       the c-ares status as value (DnsErrc below), and
//                       what() names the host (and service, when one was
//                       given): `resolve("nosuch.test"): Domain name not
//                       found`. c-ares's own give-up after options.tries
//                       (DnsErrc::timeout) is a DnsError, and compares equal
//                       to std::errc::timed_out.
//   TimeoutError        a Timeout scope around the call expired.
//   Cancelled           the fiber was cancelled.
//   std::invalid_argument  a bad options.family or options.servers entry.
// On any of them the call's c-ares channel is destroyed and every socket it
// opened is dropped from the poller before it is closed, so nothing is left
// registered and fd numbers are reused cleanly. Like every blocking call,
// resolve needs a fiber (std::logic_error otherwise) and is a suspension
// point even for numeric hosts.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <spindle/net/address.hpp>

namespace spindle::net {

// The c-ares status codes (ARES_E*), so callers need not include <ares.h>.
enum class DnsErrc {
  no_data = 1,          // the name exists but has no address of that family
  format_error,         // the server could not parse the query
  server_failure,       // SERVFAIL
  not_found,            // NXDOMAIN: no such name
  not_implemented,      // NOTIMP
  refused,              // REFUSED
  bad_query,            // misformatted query
  bad_name,             // misformatted domain name
  bad_family,           // unsupported address family
  bad_response,         // misformatted answer
  connection_refused,   // no server could be reached
  timeout,              // every try of every server timed out
  eof,                  // end of file
  file,                 // error reading a file
  no_memory,            // out of memory
  destruction,          // the channel was destroyed
  bad_string,           // misformatted string
  bad_flags,            // illegal flags
  no_name,              // the host is not numeric (with "numeric only")
  bad_hints,            // illegal hints
  not_initialized,      // c-ares not initialised
  load_iphlpapi,        // Windows only
  get_network_params,   // Windows only
  cancelled,            // the query was cancelled
  bad_service,          // the service is not a number and not a known name
};

const std::error_category& dns_category() noexcept;

inline std::error_code make_error_code(DnsErrc e) noexcept { return {static_cast<int>(e), dns_category()}; }

class DnsError : public std::system_error {
 public:
  DnsError(DnsErrc code, const std::string& what) : std::system_error(make_error_code(code), what) {}
  DnsErrc errc() const noexcept { return static_cast<DnsErrc>(code().value()); }
};

struct ResolveOptions {
  // AF_UNSPEC (IPv4 and IPv6), AF_INET or AF_INET6.
  int family = AF_UNSPEC;
  // Servers to ask instead of /etc/resolv.conf's: "192.0.2.1", "192.0.2.1:5353",
  // "[2001:db8::1]:53". Empty: resolv.conf. /etc/hosts is consulted either way.
  std::vector<std::string> servers{};
  // How long c-ares waits for an answer on the first try; later rounds over
  // the servers wait twice as long as the one before (c-ares's back-off).
  // Zero: resolv.conf's "options timeout:", else c-ares's 5 s.
  std::chrono::milliseconds timeout{0};
  // Rounds over the servers before DnsErrc::timeout. Zero: resolv.conf's
  // "options attempts:", else c-ares's 4.
  int tries = 0;
};

std::vector<SocketAddress> resolve(std::string_view host, std::string_view service = {},
                                   const ResolveOptions& options = {});

}  // namespace spindle::net

template <>
struct std::is_error_code_enum<spindle::net::DnsErrc> : std::true_type {};
