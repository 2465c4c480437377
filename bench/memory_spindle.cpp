// Memory: resident KiB per parked spindle fiber, at 10k, 100k and 1M.
//
// Each sample is a fresh process: read the resident set (/proc/self/statm),
// spawn N detached fibers that each sleep for an hour, yield once so every
// one of them runs up to its sleep and parks, read the resident set again,
// divide the growth by N. The figure covers all a parked fiber costs: the
// touched part of its stack, its record, its timer. Then the root returns
// and spindle::run cancels and joins the sleepers.
//   spindle_*        — default stack size (spindle::kDefaultStackSize);
//   spindle_small_*  — SpawnOptions{.stack_size = spindle::kSmallStackSize}
//                      (2 KiB): stacks packed without guard pages, overflow
//                      caught by a canary (runtime/stack.hpp). A default
//                      stack is page-granular (a parked fiber touches one
//                      4 KiB page); a small one costs its 2 KiB. Short mode:
//                      100k only. The program re-executes itself with
//                      LD_BIND_NOW=1, which small stacks require.
#include "bench.hpp"

#include <spindle/spindle.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <vector>

namespace {

double per_fiber_kib(std::uint64_t count, std::size_t stack_size) {
  return spindle::run([&] {
    std::uint64_t parked = 0;
    double before = bench::resident_kib();
    for (std::uint64_t i = 0; i < count; ++i) {
      spindle::spawn(spindle::SpawnOptions{.name = {}, .stack_size = stack_size}, [&parked] {
        ++parked;
        spindle::this_fiber::sleep_for(std::chrono::hours(1));
      }).detach();
    }
    // FIFO: one yield lets every new fiber run to its sleep; loop in case
    // the scheduler interleaves differently.
    while (parked < count) spindle::this_fiber::yield();
    double after = bench::resident_kib();
    return (after - before) / static_cast<double>(count);
  });
}

}  // namespace

int main(int argc, char** argv) {
  // Small stacks need immediate binding (runtime/stack.hpp), which the
  // dynamic linker decides at start-up: start again with it.
  if (!std::getenv("LD_BIND_NOW")) {
    ::setenv("LD_BIND_NOW", "1", 1);
    ::execv("/proc/self/exe", argv);
    std::perror("execv(/proc/self/exe)");
    return 1;
  }
  bench::Runner runner("memory", argc, argv);
  runner.memory(
      "spindle", [](std::uint64_t count) { return per_fiber_kib(count, 0); },
      fmt::format("stack={}KiB", spindle::kDefaultStackSize / 1024));
  // The per-fiber figure is flat across counts; short mode measures the
  // small-stack option at 100k only, to stay inside its time budget.
  std::vector<std::uint64_t> small_counts = {100'000};
  if (runner.full()) small_counts = {10'000, 100'000, 1'000'000};
  runner.memory(
      "spindle_small", [](std::uint64_t count) { return per_fiber_kib(count, spindle::kSmallStackSize); },
      fmt::format("stack={}B", spindle::kSmallStackSize), small_counts);
  return runner.finish();
}
