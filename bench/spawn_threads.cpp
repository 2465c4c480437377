// Spawn+join: std::thread.
//
// What spawning a fiber replaces: clone(), a fresh 8 MiB stack mapping from
// glibc's cache, the new thread running and exiting, and join. Batches of
// 100 threads (create all, then join all) and one at a time. Not pinned:
// the new threads may start on any CPU, as they would in a program. One
// operation is one thread created and joined.
#include "bench.hpp"

#include <atomic>
#include <thread>
#include <vector>

namespace {

constexpr std::uint64_t kBatch = 100;

std::atomic<std::uint64_t> counter{0};

void trivial() { counter.fetch_add(1, std::memory_order_relaxed); }

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("spawn", argc, argv);
  if (runner.wants("threads_batch")) {
    runner.time("threads_batch", {.unit = "ns/thread", .granularity = kBatch, .note = "pin=no(by-design)"},
                [](std::uint64_t n) {
                  std::vector<std::thread> threads;
                  threads.reserve(kBatch);
                  for (std::uint64_t done = 0; done < n; done += kBatch) {
                    for (std::uint64_t i = 0; i < kBatch; ++i) threads.emplace_back(trivial);
                    for (auto& t : threads) t.join();
                    threads.clear();
                  }
                });
  }
  if (runner.wants("threads_single")) {
    runner.time("threads_single", {.unit = "ns/thread", .note = "pin=no(by-design)"}, [](std::uint64_t n) {
      for (std::uint64_t i = 0; i < n; ++i) std::thread(trivial).join();
    });
  }
  return runner.finish();
}
