// Memory: resident KiB per parked spindle fiber, at 10k, 100k and 1M.
//
// Each sample is a fresh process: read the resident set (/proc/self/statm),
// spawn N detached fibers that each sleep for an hour, yield once so every
// one of them runs up to its sleep and parks, read the resident set again,
// divide the growth by N. The figure covers all a parked fiber costs: the
// touched part of its stack, its record, its timer. Then the root returns
// and spindle::run cancels and joins the sleepers.
//   spindle_*        — default stack size (spindle::kDefaultStackSize);
//   spindle_stack16k — SpawnOptions{.stack_size = 16 KiB}, the small-stack
//                      option: a quarter of the virtual memory, but a parked
//                      fiber touches only the top page or so of its stack
//                      either way, so the resident figure shows whether the
//                      option buys anything. Short mode: 100k only.
#include "bench.hpp"

#include <spindle/spindle.hpp>

#include <chrono>
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
  bench::Runner runner("memory", argc, argv);
  runner.memory(
      "spindle", [](std::uint64_t count) { return per_fiber_kib(count, 0); },
      fmt::format("stack={}KiB", spindle::kDefaultStackSize / 1024));
  // The per-fiber figure is flat across counts; short mode measures the
  // small-stack option at 100k only, to stay inside its time budget.
  std::vector<std::uint64_t> small_counts = {100'000};
  if (runner.full()) small_counts = {10'000, 100'000, 1'000'000};
  runner.memory(
      "spindle_stack16k", [](std::uint64_t count) { return per_fiber_kib(count, 16 * 1024); }, "stack=16KiB",
      small_counts);
  return runner.finish();
}
