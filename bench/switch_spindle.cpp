// Switch: spindle, fibers calling spindle::this_fiber::yield().
//
//   spindle_pingpong — two fibers yielding to each other: the run queue is
//                      FIFO, so each yield hands control to the other one.
//                      Compare with raw_fcontext, the bare jump_fcontext
//                      ping-pong the runtime is built on.
//   spindle_pingpong_fpflags — the same after one of the two raised MXCSR's
//                      inexact flag (compare raw_fcontext_fpflags).
//   spindle_ring1000 — 1,000 fibers yielding in turn: the same switch with
//                      1,000 stacks and fiber records cycling through the
//                      caches, closer to a busy server than a ping-pong.
// One switch is one yield. The clock runs from the first fiber's first
// instruction to the last fiber's return, so the spawns are left out (the
// ring's 1,000 fiber exits are in, amortised over its switches).
#include "bench.hpp"
#include "raw_pingpong.hpp"

#include <spindle/spindle.hpp>

#include <vector>

namespace {

constexpr std::uint64_t kRing = 1000;

// `fibers` fibers each yield n / fibers times; with fp_flag the first one
// raises MXCSR's inexact flag before it starts and the others do not.
double yield_round(std::uint64_t fibers, std::uint64_t n, bool fp_flag = false) {
  bench::Clock::time_point start, stop;
  bool started = false;
  auto body = [&, per_fiber = n / fibers] {
    if (!started) {
      started = true;
      if (fp_flag) bench::raise_inexact();
      start = bench::Clock::now();
    }
    for (std::uint64_t i = 0; i < per_fiber; ++i) spindle::this_fiber::yield();
    stop = bench::Clock::now();
  };
  std::vector<spindle::Task<void>> tasks;
  tasks.reserve(fibers);
  for (std::uint64_t i = 0; i < fibers; ++i) tasks.push_back(spindle::spawn(body));
  for (auto& t : tasks) t.join();
  return bench::elapsed_ns(start, stop);
}

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("switch", argc, argv);
  auto pin = bench::pin_current_thread(bench::primary_cpu());
  if (runner.wants("spindle_pingpong")) {
    spindle::run([&] {
      runner.time("spindle_pingpong", {.unit = "ns/switch", .granularity = 2, .note = pin.note()},
                  [](std::uint64_t n) { return yield_round(2, n); });
    });
  }
  if (runner.wants("spindle_pingpong_fpflags")) {
    spindle::run([&] {
      runner.time("spindle_pingpong_fpflags", {.unit = "ns/switch", .granularity = 2, .note = pin.note()},
                  [](std::uint64_t n) { return yield_round(2, n, true); });
    });
  }
  // The ratio the targets are judged by: spindle's ping-pong and the raw
  // one alternated repetition by repetition (bench.hpp, Runner::paired).
  if (runner.wants_timed("paired")) {
    bench::RawPingPong raw;
    spindle::run([&] {
      runner.paired(
          "switch_paired", "raw_fcontext", {.unit = "ns/switch", .granularity = 2, .note = pin.note()},
          [&](std::uint64_t n) { raw.run(n); }, "spindle_pingpong",
          {.unit = "ns/switch", .granularity = 2, .note = pin.note()},
          [](std::uint64_t n) { return yield_round(2, n); });
    });
  }
  if (runner.wants("spindle_ring1000")) {
    spindle::run([&] {
      runner.time("spindle_ring1000", {.unit = "ns/switch", .granularity = kRing, .note = pin.note()},
                  [](std::uint64_t n) { return yield_round(kRing, n); });
    });
  }
  return runner.finish();
}
