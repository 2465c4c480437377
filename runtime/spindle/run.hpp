// spindle::run: the entry point, like asyncio.run.
//
//   int main() { return spindle::run([] { ...; return 0; }); }
//
// Sets up a scheduler on the calling thread, runs f on a fiber and returns
// its value or rethrows its exception. Fibers still alive when f returns are
// cancelled and waited for before run returns. One scheduler per thread: run
// inside run throws std::logic_error. Other threads may run their own.
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include <spindle/clock.hpp>
#include <spindle/task.hpp>

namespace spindle {

struct RunOptions {
  // A manual clock for deterministic tests; nullptr = the real monotonic clock.
  ManualClock* clock = nullptr;
  // Stack size for spawns that don't say (0 = kDefaultStackSize).
  std::size_t default_stack_size = 0;
  // Name of the fiber that runs f.
  std::string name = "main";
};

namespace detail {
class Scheduler;

// Owns the thread's scheduler for the duration of run().
class RunScope {
 public:
  explicit RunScope(const RunOptions& options);
  ~RunScope();
  RunScope(const RunScope&) = delete;
  RunScope& operator=(const RunScope&) = delete;
  // Parks the thread's own context until `root` is done, then cancels and
  // waits for every fiber still alive.
  void finish(Fiber* root) noexcept;

 private:
  Scheduler* sched_;
};
}  // namespace detail

template <class F>
auto run(RunOptions options, F&& f) -> std::invoke_result_t<std::decay_t<F>> {
  detail::RunScope scope(options);
  auto root = spawn(SpawnOptions{.name = std::move(options.name)}, std::forward<F>(f));
  scope.finish(root.fiber());
  return root.join();
}

template <class F>
  requires(!std::is_same_v<std::decay_t<F>, RunOptions>)
auto run(F&& f) -> std::invoke_result_t<std::decay_t<F>> {
  return run(RunOptions{}, std::forward<F>(f));
}

}  // namespace spindle
