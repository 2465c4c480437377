// Switch: Boost.Fiber, two fibers calling boost::this_fiber::yield().
//
// Boost.Fiber's default round_robin scheduler on one thread. The main
// context joins the two fibers, so only they are ready and each yield hands
// control to the other. One switch is one yield.
#include "bench.hpp"

#include <boost/fiber/all.hpp>

int main(int argc, char** argv) {
  bench::Runner runner("switch", argc, argv);
  if (runner.wants("boost_fiber")) {
    auto pin = bench::pin_current_thread(bench::primary_cpu());
    runner.time("boost_fiber", {.unit = "ns/switch", .granularity = 2, .note = pin.note()},
                [](std::uint64_t n) -> double {
                  // The clock starts when the first fiber runs, so the two
                  // spawns are left out; the last fiber to finish stops it.
                  bench::Clock::time_point start, stop;
                  auto body = [&] {
                    if (start == bench::Clock::time_point{}) start = bench::Clock::now();
                    for (std::uint64_t i = 0; i < n / 2; ++i) boost::this_fiber::yield();
                    stop = bench::Clock::now();
                  };
                  boost::fibers::fiber a(body), b(body);
                  a.join();
                  b.join();
                  return bench::elapsed_ns(start, stop);
                });
  }
  return runner.finish();
}
