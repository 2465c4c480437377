// Spawn+join: Boost.Fiber, with its default stack allocator and with
// pooled_fixedsize_stack.
//
// The default allocator (fixedsize_stack, 128 KiB) takes each stack from
// malloc and frees it when the fiber ends; pooled_fixedsize_stack keeps
// freed stacks for reuse. Each case spawns trivial fibers and joins them,
// either in batches of 1,000 (spawn all, then join all) or one at a time.
// The stacks are warm: calibration and a warm-up run come first. One
// operation is one fiber spawned and joined.
#include "bench.hpp"

#include <boost/fiber/all.hpp>

#include <vector>

namespace bf = boost::fibers;

namespace {

constexpr std::uint64_t kBatch = 1000;

std::uint64_t counter = 0;

void trivial() { ++counter; }

template <class Alloc>
void batch(Alloc& alloc, std::uint64_t n) {
  std::vector<bf::fiber> fibers;
  fibers.reserve(kBatch);
  for (std::uint64_t done = 0; done < n; done += kBatch) {
    for (std::uint64_t i = 0; i < kBatch; ++i) fibers.emplace_back(std::allocator_arg, alloc, trivial);
    for (auto& f : fibers) f.join();
    fibers.clear();
  }
}

template <class Alloc>
void single(Alloc& alloc, std::uint64_t n) {
  for (std::uint64_t i = 0; i < n; ++i) bf::fiber(std::allocator_arg, alloc, trivial).join();
}

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("spawn", argc, argv);
  auto pin = bench::pin_current_thread(bench::primary_cpu());
  bf::default_stack default_alloc;
  bf::pooled_fixedsize_stack pooled_alloc;
  auto note = fmt::format("{} stack={}KiB", pin.note(), boost::context::stack_traits::default_size() / 1024);

  if (runner.wants("boost_fiber_batch")) {
    runner.time("boost_fiber_batch", {.unit = "ns/fiber", .granularity = kBatch, .note = note},
                [&](std::uint64_t n) { batch(default_alloc, n); });
  }
  if (runner.wants("boost_fiber_pooled_batch")) {
    runner.time("boost_fiber_pooled_batch", {.unit = "ns/fiber", .granularity = kBatch, .note = note},
                [&](std::uint64_t n) { batch(pooled_alloc, n); });
  }
  if (runner.wants("boost_fiber_single")) {
    runner.time("boost_fiber_single", {.unit = "ns/fiber", .note = note},
                [&](std::uint64_t n) { single(default_alloc, n); });
  }
  if (runner.wants("boost_fiber_pooled_single")) {
    runner.time("boost_fiber_pooled_single", {.unit = "ns/fiber", .note = note},
                [&](std::uint64_t n) { single(pooled_alloc, n); });
  }
  bench::do_not_optimize(counter);
  return runner.finish();
}
