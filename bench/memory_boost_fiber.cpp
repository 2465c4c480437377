// Memory: resident KiB per parked Boost.Fiber fiber, at 10k, 100k and 1M.
//
// As memory_spindle: a fresh process per sample, N detached fibers each
// calling boost::this_fiber::sleep_for(1h) with the default stack allocator
// (fixedsize_stack, 128 KiB from malloc; the fiber's control block sits at
// the top of its stack), the resident set read before and after they have
// all parked. Boost.Fiber cannot cancel a sleeping fiber, so the child
// process ends with _exit instead of tearing them down.
#include "bench.hpp"

#include <boost/fiber/all.hpp>

#include <chrono>

int main(int argc, char** argv) {
  bench::Runner runner("memory", argc, argv);
  runner.memory(
      "boost_fiber",
      [](std::uint64_t count) {
        std::uint64_t parked = 0;
        double before = bench::resident_kib();
        for (std::uint64_t i = 0; i < count; ++i) {
          boost::fibers::fiber([&parked] {
            ++parked;
            boost::this_fiber::sleep_for(std::chrono::hours(1));
          }).detach();
        }
        while (parked < count) boost::this_fiber::yield();
        double after = bench::resident_kib();
        return (after - before) / static_cast<double>(count);
      },
      fmt::format("stack={}KiB", boost::context::stack_traits::default_size() / 1024));
  return runner.finish();
}
