// hiredis' synchronous API, unmodified, on fibers through libspindle_hooks,
// against a real redis-server that tests/hooks_servers/servers.py starts on
// 127.0.0.1 (SPINDLE_REDIS_PORT).
//
// hiredis resolves with getaddrinfo, connects non-blocking and waits in
// poll(), then reads and writes a blocking socket: all of it parks fibers.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#define SPINDLE_WORKLOAD_HIREDIS 1
#include "hooks_servers/workloads.hpp"

using namespace hooks_workloads;

TEST_CASE("hiredis: 100 fibers each BLPOP with a 0.2 s timeout finish in about 0.2 s") {
  const int port = std::stoi(env("SPINDLE_REDIS_PORT"));
  // Sequentially: 5 BLPOPs (~1 s), extrapolated to 100 (~20 s).
  const Comparison c =
      compare(5, 100, [&](int i) { redis_blpop_timeout(port, fmt::format("spindle:empty:{}", i), 0.2); });
  print("hiredis BLPOP 0.2 s timeout", c);
  CHECK(c.sequential_s >= 5 * 0.2);
  CHECK(c.fibers_s >= 0.2);
  CHECK(c.fibers_s < 1.0);
}

TEST_CASE("hiredis: SET, GET and INCR from 100 fibers, results checked") {
  const int port = std::stoi(env("SPINDLE_REDIS_PORT"));
  spindle::run([&] {
    std::vector<spindle::Task<void>> tasks;
    for (int i = 0; i < 100; ++i) {
      tasks.push_back(spindle::spawn([port, i] {
        RedisConn c = redis_connect(port);
        const std::string key = fmt::format("spindle:key:{}", i);
        const std::string value =
            fmt::format("value-{}-{}", i, std::string(static_cast<std::size_t>(i) * 100, 'x'));
        for (int round = 0; round < 10; ++round) {
          RedisReplyPtr set = redis_command(c.get(), {"SET", key, value + std::to_string(round)});
          CHECK(std::string(set->str, set->len) == "OK");
          RedisReplyPtr get = redis_command(c.get(), {"GET", key});
          REQUIRE(get->type == REDIS_REPLY_STRING);
          CHECK(std::string(get->str, get->len) == value + std::to_string(round));
          redis_command(c.get(), {"INCR", "spindle:counter"});
        }
      }));
    }
    spindle::gather(tasks);
    RedisConn c = redis_connect(port);
    RedisReplyPtr counter = redis_command(c.get(), {"GET", "spindle:counter"});
    REQUIRE(counter->type == REDIS_REPLY_STRING);
    CHECK(std::string(counter->str, counter->len) == "1000");
  });
}
