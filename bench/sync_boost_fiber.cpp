// Synchronization primitives: Boost.Fiber, the peers of bench/sync_spindle.cpp
// on Boost.Fiber's default round_robin scheduler, one thread.
//
//   boost_fiber_lock_uncontended   boost::fibers::mutex lock() + unlock()
//   boost_fiber_lock_handoff       two fibers each lock, yield, unlock
//   boost_fiber_event_pingpong     Boost.Fiber has no event: the usual
//                                  mutex + condition_variable + flag
//   boost_fiber_semaphore_pingpong no semaphore either: mutex +
//                                  condition_variable + count
//   boost_fiber_queue_1p1c         buffered_channel<uint64_t>(1024)
//   boost_fiber_queue_10p10c       the same, ten producers, ten consumers
//   boost_fiber_barrier_100        boost::fibers::barrier(100)
//
// Operations are counted as in sync_spindle.cpp. Boost.Fiber's primitives
// are all thread-safe (spinlocks inside), like spindle's Event, Semaphore
// and Queue; spindle's Lock and Barrier serve one thread and take no lock.
#include "bench.hpp"

#include <boost/fiber/all.hpp>

#include <cstdint>
#include <mutex>
#include <vector>

namespace {

using bench::Clock;
namespace fibers = boost::fibers;

struct Span {
  Clock::time_point start{}, stop{};
  void begin() {
    if (start == Clock::time_point{}) start = Clock::now();
  }
  void end() { stop = Clock::now(); }
  double ns() const { return bench::elapsed_ns(start, stop); }
};

// asyncio.Event's behaviour from Boost.Fiber's parts.
class Event {
 public:
  void set() {
    {
      std::lock_guard lock(mu_);
      set_ = true;
    }
    cv_.notify_all();
  }
  void clear() {
    std::lock_guard lock(mu_);
    set_ = false;
  }
  void wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return set_; });
  }

 private:
  fibers::mutex mu_;
  fibers::condition_variable cv_;
  bool set_ = false;
};

// A counting semaphore from Boost.Fiber's parts.
class Semaphore {
 public:
  explicit Semaphore(long value) : value_(value) {}
  void release() {
    {
      std::lock_guard lock(mu_);
      ++value_;
    }
    cv_.notify_one();
  }
  void acquire() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return value_ > 0; });
    --value_;
  }

 private:
  fibers::mutex mu_;
  fibers::condition_variable cv_;
  long value_;
};

void run_queue(std::uint64_t n, int producers, int consumers, Span& span) {
  fibers::buffered_channel<std::uint64_t> ch(1024);  // a power of two, as Boost requires
  std::vector<fibers::fiber> tasks;
  std::uint64_t sum = 0;
  for (int p = 0; p < producers; ++p)
    tasks.emplace_back([&, per = n / static_cast<std::uint64_t>(producers)] {
      span.begin();
      for (std::uint64_t i = 0; i < per; ++i) ch.push(i);
    });
  for (int c = 0; c < consumers; ++c)
    tasks.emplace_back([&, per = n / static_cast<std::uint64_t>(consumers)] {
      std::uint64_t local = 0;
      for (std::uint64_t i = 0; i < per; ++i) local += ch.value_pop();
      sum += local;
      span.end();
    });
  for (auto& t : tasks) t.join();
  bench::do_not_optimize(sum);
}

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("sync", argc, argv);
  auto pin = bench::pin_current_thread(bench::primary_cpu());
  const std::string note = pin.note();

  if (runner.wants("boost_fiber_lock_uncontended")) {
    fibers::mutex lock;
    runner.time("boost_fiber_lock_uncontended", {.unit = "ns/op", .note = note},
                [&](std::uint64_t n) -> double {
                  // In a fiber, like spindle's, so the mutex sees a fiber as its owner.
                  double ns = 0;
                  fibers::fiber([&] {
                    auto start = Clock::now();
                    for (std::uint64_t i = 0; i < n; ++i) {
                      lock.lock();
                      lock.unlock();
                    }
                    ns = bench::elapsed_ns(start, Clock::now());
                  }).join();
                  return ns;
                });
  }

  if (runner.wants("boost_fiber_lock_handoff")) {
    runner.time("boost_fiber_lock_handoff", {.unit = "ns/op", .granularity = 2, .note = note},
                [&](std::uint64_t n) -> double {
                  fibers::mutex lock;
                  Span span;
                  auto body = [&] {
                    span.begin();
                    for (std::uint64_t i = 0; i < n / 2; ++i) {
                      lock.lock();
                      boost::this_fiber::yield();
                      lock.unlock();
                    }
                    span.end();
                  };
                  fibers::fiber a(body), b(body);
                  a.join();
                  b.join();
                  return span.ns();
                });
  }

  if (runner.wants("boost_fiber_event_pingpong")) {
    runner.time("boost_fiber_event_pingpong", {.unit = "ns/op", .granularity = 2, .note = note},
                [&](std::uint64_t n) -> double {
                  Event ping, pong;
                  Span span;
                  fibers::fiber a([&] {
                    span.begin();
                    for (std::uint64_t i = 0; i < n / 2; ++i) {
                      ping.set();
                      pong.wait();
                      pong.clear();
                    }
                    span.end();
                  });
                  fibers::fiber b([&] {
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

  if (runner.wants("boost_fiber_semaphore_pingpong")) {
    runner.time("boost_fiber_semaphore_pingpong", {.unit = "ns/op", .granularity = 2, .note = note},
                [&](std::uint64_t n) -> double {
                  Semaphore ping(0), pong(0);
                  Span span;
                  fibers::fiber a([&] {
                    span.begin();
                    for (std::uint64_t i = 0; i < n / 2; ++i) {
                      ping.release();
                      pong.acquire();
                    }
                    span.end();
                  });
                  fibers::fiber b([&] {
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

  if (runner.wants("boost_fiber_queue_1p1c")) {
    runner.time("boost_fiber_queue_1p1c", {.unit = "ns/item", .note = note + " capacity=1024"},
                [&](std::uint64_t n) -> double {
                  Span span;
                  run_queue(n, 1, 1, span);
                  return span.ns();
                });
  }

  if (runner.wants("boost_fiber_queue_10p10c")) {
    runner.time("boost_fiber_queue_10p10c",
                {.unit = "ns/item", .granularity = 10, .note = note + " capacity=1024"},
                [&](std::uint64_t n) -> double {
                  Span span;
                  run_queue(n, 10, 10, span);
                  return span.ns();
                });
  }

  if (runner.wants("boost_fiber_barrier_100")) {
    runner.time("boost_fiber_barrier_100", {.unit = "ns/cycle", .note = note + " parties=100"},
                [&](std::uint64_t n) -> double {
                  fibers::barrier barrier(100);
                  Span span;
                  std::vector<fibers::fiber> tasks;
                  for (int f = 0; f < 100; ++f)
                    tasks.emplace_back([&] {
                      span.begin();
                      for (std::uint64_t i = 0; i < n; ++i) barrier.wait();
                      span.end();
                    });
                  for (auto& t : tasks) t.join();
                  return span.ns();
                });
  }
  return runner.finish();
}
