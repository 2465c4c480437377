// libpq, unmodified and synchronous, on fibers through libspindle_hooks,
// against a real PostgreSQL 15 that tests/hooks_servers/servers.py starts
// on 127.0.0.1 (SPINDLE_PG_CONNINFO).
//
// libpq connects with a non-blocking socket and waits in poll() (its
// pqSocketPoll); the hooks park the fiber there, so 50 connections each
// running SELECT pg_sleep(0.2) overlap on one thread.
#include <doctest/doctest.h>

#include <set>
#include <string>
#include <vector>

#define SPINDLE_WORKLOAD_LIBPQ 1
#include "hooks_servers/workloads.hpp"

using namespace hooks_workloads;

TEST_CASE("libpq: 50 fibers, a connection each, SELECT pg_sleep(0.2) at once: well under 1 s") {
  const std::string conninfo = env("SPINDLE_PG_CONNINFO");
  // The first connection after the server starts warms its caches.
  libpq_sleep(conninfo, 0, 0);
  std::vector<int> pids(50, 0);
  // Sequentially: 5 sessions (~1 s), extrapolated to 50 (~10 s).
  const Comparison c =
      compare(5, 50, [&](int i) { pids[static_cast<std::size_t>(i)] = libpq_sleep(conninfo, i, 0.2); });
  print("libpq SELECT pg_sleep(0.2)", c);
  CHECK(c.sequential_s >= 5 * 0.2);
  CHECK(c.extrapolated_s() >= 10.0);
  CHECK(c.fibers_s >= 0.2);
  CHECK(c.fibers_s < 1.0);
  // 50 sessions at the same time: 50 different server processes.
  CHECK(std::set<int>(pids.begin(), pids.end()).size() == 50);
}

TEST_CASE("libpq: queries from many fibers return their own results") {
  const std::string conninfo = env("SPINDLE_PG_CONNINFO");
  spindle::run([&] {
    std::vector<spindle::Task<long>> tasks;
    for (int i = 0; i < 20; ++i) {
      tasks.push_back(spindle::spawn([&conninfo, i]() -> long {
        PGconn* conn = PQconnectdb(conninfo.c_str());
        REQUIRE(PQstatus(conn) == CONNECTION_OK);
        long sum = 0;
        for (int q = 0; q < 5; ++q) {
          const std::string sql =
              fmt::format("SELECT sum(x) FROM generate_series(1, {}) AS x", 1000 * (i + 1) + q);
          PGresult* res = PQexec(conn, sql.c_str());
          REQUIRE(PQresultStatus(res) == PGRES_TUPLES_OK);
          const long n = 1000L * (i + 1) + q;
          CHECK(std::atol(PQgetvalue(res, 0, 0)) == n * (n + 1) / 2);
          sum += std::atol(PQgetvalue(res, 0, 0));
          PQclear(res);
        }
        PQfinish(conn);
        return sum;
      }));
    }
    for (int i = 0; i < 20; ++i) {
      long expect = 0;
      for (int q = 0; q < 5; ++q) {
        const long n = 1000L * (i + 1) + q;
        expect += n * (n + 1) / 2;
      }
      CHECK(tasks[static_cast<std::size_t>(i)].join() == expect);
    }
  });
}
