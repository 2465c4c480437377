// Spawn+join: spindle.
//
//   spindle_batch  — spawn 1,000 trivial fibers, then join them all;
//   spindle_single — spawn one, join it, repeat.
// The stack pool is warm: calibration and a warm-up run come first, in the
// same spindle::run. One operation is one fiber spawned and joined, with
// the default stack size.
#include "bench.hpp"

#include <spindle/spindle.hpp>

#include <vector>

namespace {

constexpr std::uint64_t kBatch = 1000;

std::uint64_t counter = 0;

void trivial() { ++counter; }

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("spawn", argc, argv);
  auto pin = bench::pin_current_thread(bench::primary_cpu());
  auto note = fmt::format("{} stack={}KiB", pin.note(), spindle::kDefaultStackSize / 1024);
  if (runner.wants("spindle_batch")) {
    spindle::run([&] {
      std::vector<spindle::Task<void>> tasks;
      tasks.reserve(kBatch);
      runner.time("spindle_batch", {.unit = "ns/fiber", .granularity = kBatch, .note = note},
                  [&](std::uint64_t n) {
                    for (std::uint64_t done = 0; done < n; done += kBatch) {
                      for (std::uint64_t i = 0; i < kBatch; ++i) tasks.push_back(spindle::spawn(trivial));
                      for (auto& t : tasks) t.join();
                      tasks.clear();
                    }
                  });
    });
  }
  if (runner.wants("spindle_single")) {
    spindle::run([&] {
      runner.time("spindle_single", {.unit = "ns/fiber", .note = note}, [](std::uint64_t n) {
        for (std::uint64_t i = 0; i < n; ++i) spindle::spawn(trivial).join();
      });
    });
  }
  bench::do_not_optimize(counter);
  return runner.finish();
}
