// libspindle_hooks with unmodified client libraries against real servers:
// the same synchronous code run one call after another on a plain thread,
// and one call per fiber on one thread (tests/hooks_servers/workloads.hpp).
//
//   libpq_sequential / libpq_fibers_50      connect + SELECT pg_sleep(0.2)
//   hiredis_sequential / hiredis_fibers_100 connect + BLPOP with 0.2 s timeout
//   curl_sequential / curl_fibers_50        GET /delay?ms=200 from
//                                           examples/http_server
//
// Seconds for the whole batch. The sequential figure is 5 calls timed and
// extrapolated to the batch size (the note says so): the batch itself
// would take 10 to 20 s per library. Started without the servers'
// addresses in its environment, the binary runs itself again through
// tests/hooks_servers/servers.py, which starts PostgreSQL, redis-server and
// the HTTP example for the run and stops them afterwards.
#include "bench.hpp"

#include <unistd.h>

#include <string_view>
#include <vector>

#define SPINDLE_WORKLOAD_LIBPQ 1
#define SPINDLE_WORKLOAD_HIREDIS 1
#define SPINDLE_WORKLOAD_CURL 1
#include "hooks_servers/workloads.hpp"

#ifndef SPINDLE_SERVERS_PY
#error "SPINDLE_SERVERS_PY (path of tests/hooks_servers/servers.py) must be defined"
#endif
#ifndef SPINDLE_HTTP_SERVER
#error "SPINDLE_HTTP_SERVER (path of examples/http_server) must be defined"
#endif

namespace {

using namespace hooks_workloads;

constexpr int kSequentialCalls = 5;

template <class Call>
void measure(bench::Runner& runner, const char* lib, int batch, int reps, Call call) {
  const std::string seq_name = fmt::format("{}_sequential", lib);
  const std::string fib_name = fmt::format("{}_fibers_{}", lib, batch);
  const bool want_seq = runner.wants(seq_name), want_fib = runner.wants(fib_name);
  if (!want_seq && !want_fib) return;
  std::vector<double> seq, fib;
  for (int r = 0; r < reps; ++r) {
    const Comparison c = compare(kSequentialCalls, batch, call);
    seq.push_back(c.extrapolated_s());
    fib.push_back(c.fibers_s);
  }
  if (want_seq)
    runner.value(seq_name, "s", seq, fmt::format("calls={} extrapolated_to={}", kSequentialCalls, batch));
  if (want_fib) runner.value(fib_name, "s", fib, fmt::format("calls={} threads=1", batch));
}

}  // namespace

int main(int argc, char** argv) {
  bool listing = false;
  for (int i = 1; i < argc; ++i) listing = listing || std::string_view(argv[i]) == "--list";
  if (!listing && !std::getenv("SPINDLE_PG_CONNINFO")) {
    std::vector<char*> args = {const_cast<char*>("python3"),    const_cast<char*>(SPINDLE_SERVERS_PY),
                               const_cast<char*>("--postgres"), const_cast<char*>("--redis"),
                               const_cast<char*>("--http"),     const_cast<char*>(SPINDLE_HTTP_SERVER),
                               const_cast<char*>("--")};
    for (int i = 0; i < argc; ++i) args.push_back(argv[i]);
    args.push_back(nullptr);
    ::execvp("python3", args.data());
    fmt::print(stderr, "hooks_clients: cannot run python3 {}: {}\n", SPINDLE_SERVERS_PY,
               std::strerror(errno));
    return 1;
  }

  bench::Runner runner("hooks_clients", argc, argv);
  const int reps = runner.full() ? 3 : 1;
  if (listing) {
    measure(runner, "libpq", 50, reps, [](int) {});
    measure(runner, "hiredis", 100, reps, [](int) {});
    measure(runner, "curl", 50, reps, [](int) {});
    return runner.finish();
  }
  try {
    const std::string conninfo = env("SPINDLE_PG_CONNINFO");
    libpq_sleep(conninfo, 0, 0);  // the first connection warms the server up
    measure(runner, "libpq", 50, reps, [&](int i) { libpq_sleep(conninfo, i, 0.2); });

    const int redis_port = std::stoi(env("SPINDLE_REDIS_PORT"));
    measure(runner, "hiredis", 100, reps,
            [&](int i) { redis_blpop_timeout(redis_port, fmt::format("bench:empty:{}", i), 0.2); });

    curl_global_init(CURL_GLOBAL_DEFAULT);
    const std::string url = fmt::format("http://127.0.0.1:{}/delay?ms=200", env("SPINDLE_HTTP_PORT"));
    measure(runner, "curl", 50, reps, [&](int) {
      if (curl_fetch(url) != "waited 200 ms\n") throw std::runtime_error("unexpected body");
    });
    curl_global_cleanup();
  } catch (const std::exception& e) {
    fmt::print(stderr, "hooks_clients: {}\n", e.what());
    return 1;
  }
  return runner.finish();
}
