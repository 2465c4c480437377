// Synchronization primitives: spindle. bench/sync_boost_fiber.cpp runs the
// same scenarios on Boost.Fiber; run.py prints each Boost.Fiber figure as a
// multiple of spindle's.
//
//   spindle_lock_uncontended   lock() + unlock() of a free Lock, one fiber
//   spindle_lock_handoff       two fibers each lock, yield, unlock: every
//                              acquisition is a hand-off to a parked fiber
//   spindle_event_pingpong     two fibers, two Events: set, wait, clear
//   spindle_semaphore_pingpong two fibers, two Semaphore(0): release, acquire
//   spindle_queue_1p1c         one producer, one consumer, Queue(1024)
//   spindle_queue_10p10c       ten producers, ten consumers, Queue(1024)
//   spindle_barrier_100        100 fibers wait() on a Barrier(100) in a loop
//
// Ping-pongs count one signal (a wake of the other fiber) per operation,
// queues one item, the barrier one complete cycle of all 100 fibers. The
// clock starts when the first fiber runs, so spawning is left out.
#include "bench.hpp"

#include <spindle/spindle.hpp>

#include <cstdint>
#include <vector>

namespace {

using bench::Clock;

// Times a set of fibers: from the first fiber's start to the last one's end.
struct Span {
  Clock::time_point start{}, stop{};
  void begin() {
    if (start == Clock::time_point{}) start = Clock::now();
  }
  void end() { stop = Clock::now(); }
  double ns() const { return bench::elapsed_ns(start, stop); }
};

template <class Item>
void run_queue(std::uint64_t n, int producers, int consumers, Span& span) {
  spindle::Queue<Item> q(1024);
  std::vector<spindle::Task<void>> tasks;
  std::uint64_t sum = 0;
  for (int p = 0; p < producers; ++p)
    tasks.push_back(spindle::spawn([&, per = n / static_cast<std::uint64_t>(producers)] {
      span.begin();
      for (std::uint64_t i = 0; i < per; ++i) q.put(i);
    }));
  for (int c = 0; c < consumers; ++c)
    tasks.push_back(spindle::spawn([&, per = n / static_cast<std::uint64_t>(consumers)] {
      std::uint64_t local = 0;
      for (std::uint64_t i = 0; i < per; ++i) local += q.get();
      sum += local;
      span.end();
    }));
  for (auto& t : tasks) t.join();
  bench::do_not_optimize(sum);
}

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("sync", argc, argv);
  auto pin = bench::pin_current_thread(bench::primary_cpu());
  const std::string note = pin.note();

  spindle::run([&] {
    if (runner.wants("spindle_lock_uncontended")) {
      spindle::Lock lock;
      runner.time("spindle_lock_uncontended", {.unit = "ns/op", .note = note}, [&](std::uint64_t n) {
        for (std::uint64_t i = 0; i < n; ++i) {
          lock.lock();
          lock.unlock();
        }
      });
    }

    if (runner.wants("spindle_lock_handoff")) {
      runner.time("spindle_lock_handoff", {.unit = "ns/op", .granularity = 2, .note = note},
                  [&](std::uint64_t n) -> double {
                    spindle::Lock lock;
                    Span span;
                    auto body = [&] {
                      span.begin();
                      for (std::uint64_t i = 0; i < n / 2; ++i) {
                        lock.lock();
                        spindle::this_fiber::yield();  // the other fiber parks on the lock
                        lock.unlock();                 // and is handed it
                      }
                      span.end();
                    };
                    auto a = spindle::spawn(body);
                    auto b = spindle::spawn(body);
                    a.join();
                    b.join();
                    return span.ns();
                  });
    }

    if (runner.wants("spindle_event_pingpong")) {
      runner.time("spindle_event_pingpong", {.unit = "ns/op", .granularity = 2, .note = note},
                  [&](std::uint64_t n) -> double {
                    spindle::Event ping, pong;
                    Span span;
                    auto a = spindle::spawn([&] {
                      span.begin();
                      for (std::uint64_t i = 0; i < n / 2; ++i) {
                        ping.set();
                        pong.wait();
                        pong.clear();
                      }
                      span.end();
                    });
                    auto b = spindle::spawn([&] {
                      for (std::uint64_t i = 0; i < n / 2; ++i) {
                        ping.wait();
                        ping.clear();
                        pong.set();
                      }
                    });
                    a.join();
                    b.join();
                    return span.ns();
                  });
    }

    if (runner.wants("spindle_semaphore_pingpong")) {
      runner.time("spindle_semaphore_pingpong", {.unit = "ns/op", .granularity = 2, .note = note},
                  [&](std::uint64_t n) -> double {
                    spindle::Semaphore ping(0), pong(0);
                    Span span;
                    auto a = spindle::spawn([&] {
                      span.begin();
                      for (std::uint64_t i = 0; i < n / 2; ++i) {
                        ping.release();
                        pong.acquire();
                      }
                      span.end();
                    });
                    auto b = spindle::spawn([&] {
                      for (std::uint64_t i = 0; i < n / 2; ++i) {
                        ping.acquire();
                        pong.release();
                      }
                    });
                    a.join();
                    b.join();
                    return span.ns();
                  });
    }

    if (runner.wants("spindle_queue_1p1c")) {
      runner.time("spindle_queue_1p1c", {.unit = "ns/item", .note = note + " maxsize=1024"},
                  [&](std::uint64_t n) -> double {
                    Span span;
                    run_queue<std::uint64_t>(n, 1, 1, span);
                    return span.ns();
                  });
    }

    if (runner.wants("spindle_queue_10p10c")) {
      runner.time("spindle_queue_10p10c",
                  {.unit = "ns/item", .granularity = 10, .note = note + " maxsize=1024"},
                  [&](std::uint64_t n) -> double {
                    Span span;
                    run_queue<std::uint64_t>(n, 10, 10, span);
                    return span.ns();
                  });
    }

    if (runner.wants("spindle_barrier_100")) {
      runner.time("spindle_barrier_100", {.unit = "ns/cycle", .note = note + " parties=100"},
                  [&](std::uint64_t n) -> double {
                    spindle::Barrier barrier(100);
                    Span span;
                    std::vector<spindle::Task<void>> tasks;
                    for (int f = 0; f < 100; ++f)
                      tasks.push_back(spindle::spawn([&] {
                        span.begin();
                        for (std::uint64_t i = 0; i < n; ++i) barrier.wait();
                        span.end();
                      }));
                    for (auto& t : tasks) t.join();
                    return span.ns();
                  });
    }
  });
  return runner.finish();
}
