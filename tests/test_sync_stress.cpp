// Randomized workloads over the synchronization primitives, with the
// invariants checked after every step:
//   - mutual exclusion: at most one fiber inside the Lock's critical
//     section, and the fiber that entered is the one that leaves;
//   - permits: a Semaphore(3) and a BoundedSemaphore(2) never go negative
//     and never above their bound, counting the permits fibers hold; at the
//     end all are back and a BoundedSemaphore release above the bound throws;
//   - the bounded Queue never holds more than maxsize items, and every item
//     put is delivered exactly once (what is left at the end is drained);
//   - Condition waiters see only states that were notified under the lock.
// Worker fibers do random operations (blocking, timed and non-blocking
// variants, inside random Timeout scopes) while a chaos fiber cancels random
// workers and starts new ones, so cancellations and timeouts hit waits at
// every moment, including the instant of a hand-off. A manual clock makes a
// seed's run exactly repeatable; seeds are fixed, printed on failure, and
// SPINDLE_STRESS_SEED=<n> replays one. A second case adds plain OS threads
// putting into the queue and releasing the semaphore, on the real clock.
#include <doctest/doctest.h>
#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;

namespace {

std::vector<std::uint32_t> seeds(std::vector<std::uint32_t> defaults) {
  if (const char* s = std::getenv("SPINDLE_STRESS_SEED")) return {static_cast<std::uint32_t>(std::stoul(s))};
  return defaults;
}

constexpr int kSemPermits = 3;
constexpr int kBoundedPermits = 2;
constexpr std::size_t kQueueMax = 4;

struct World {
  std::uint32_t seed = 0;
  long target_ops = 0;

  spindle::Lock lock;
  spindle::Condition cond;
  spindle::Semaphore sem{kSemPermits};
  spindle::BoundedSemaphore bsem{kBoundedPermits};
  spindle::Queue<std::uint64_t> queue{kQueueMax};
  spindle::Event event;

  int holder = -1;      // worker inside the lock's critical section
  long generation = 0;  // changed under the lock, announced through cond
  long announced = 0;   // the last generation notified
  int sem_held = 0;     // permits of sem held by workers
  int bsem_held = 0;
  std::uint64_t next_id = 0;
  std::vector<std::uint8_t> put_ok;     // by item id: put succeeded
  std::vector<std::uint8_t> delivered;  // by item id: times got

  long ops = 0, timeouts = 0, cancels = 0, respawns = 0, puts = 0, gets = 0, lock_sections = 0;
  long violations = 0;
  std::string first_violation;

  void violation(std::string what) {
    if (violations++ == 0) first_violation = fmt::format("after {} steps: {}", ops, what);
  }

  // After every step of every worker.
  void check(int me, const char* where) {
    if (holder != -1 && holder == me && std::string_view(where) != "lock")
      violation(fmt::format("worker {} still marked inside the critical section at {}", me, where));
    const auto v = sem.value();
    if (v < 0 || sem_held < 0 || v + sem_held > kSemPermits)
      violation(fmt::format("semaphore: value {} + held {} > {} at {}", v, sem_held, kSemPermits, where));
    const auto bv = bsem.value();
    if (bv < 0 || bsem_held < 0 || bv + bsem_held > kBoundedPermits)
      violation(fmt::format("bounded semaphore: value {} + held {} > {} at {}", bv, bsem_held,
                            kBoundedPermits, where));
    if (queue.size() > kQueueMax)
      violation(fmt::format("queue holds {} > {} items at {}", queue.size(), kQueueMax, where));
  }
};

// Marks the critical section; leaving it (also by unwinding) clears it.
struct Inside {
  World& w;
  int me;
  Inside(World& world, int i) : w(world), me(i) {
    if (w.holder != -1) w.violation(fmt::format("worker {} entered while worker {} is inside", me, w.holder));
    w.holder = me;
  }
  ~Inside() {
    if (w.holder != me)
      w.violation(fmt::format("worker {} left but worker {} is marked inside", me, w.holder));
    w.holder = -1;
  }
};

// A permit held by a worker; released when the scope ends (also by unwinding).
template <class Sem>
struct Permit {
  Sem& sem;
  int& held;
  int bound;
  World& w;
  Permit(Sem& s, int& h, int b, World& world) : sem(s), held(h), bound(b), w(world) {
    if (++held > bound) w.violation(fmt::format("{} permits held, bound {}", held, bound));
  }
  ~Permit() {
    --held;
    sem.release();
  }
};

// Deadlines fall on a 50 us grid so that many timers expire in the same
// instant: the fibers readied first then hand things to the ones readied
// (as timed out) after them, which is the race the hand-off rules are for.
std::chrono::microseconds short_wait(std::mt19937& rng) {
  return std::chrono::microseconds(50 * (rng() % 7));
}

void pause(std::mt19937& rng) {
  switch (rng() % 4) {
    case 0:
      spindle::this_fiber::yield();
      break;
    case 1:
      spindle::this_fiber::sleep_for(short_wait(rng));
      break;
    default:
      break;
  }
}

void put_item(World& w, std::mt19937& rng) {
  const std::uint64_t id = w.next_id++;
  w.put_ok.push_back(0);
  w.delivered.push_back(0);
  bool ok = false;
  switch (rng() % 4) {
    case 0:
      w.queue.put(id);
      ok = true;
      break;
    case 1:
      ok = w.queue.try_put_for(id, short_wait(rng));
      break;
    case 2:
      ok = w.queue.try_put(id);
      break;
    default:
      try {
        w.queue.put_nowait(id);
        ok = true;
      } catch (const spindle::QueueFull&) {
      }
      break;
  }
  if (ok) {
    w.put_ok[id] = 1;
    ++w.puts;
  }
}

void get_item(World& w, std::mt19937& rng) {
  std::optional<std::uint64_t> got;
  switch (rng() % 4) {
    case 0:
      got = w.queue.get();
      break;
    case 1:
      got = w.queue.try_get_for(short_wait(rng));
      break;
    case 2:
      got = w.queue.try_get();
      break;
    default:
      try {
        got = w.queue.get_nowait();
      } catch (const spindle::QueueEmpty&) {
      }
      break;
  }
  if (!got) return;
  ++w.gets;
  if (*got >= w.delivered.size() || !w.put_ok[*got])
    w.violation(fmt::format("got item {} that was never put", *got));
  else if (++w.delivered[*got] > 1)
    w.violation(fmt::format("item {} delivered {} times", *got, w.delivered[*got]));
  w.queue.task_done();
}

void step(World& w, int me, std::mt19937& rng) {
  switch (rng() % 8) {
    case 0: {  // the lock
      std::unique_lock lk(w.lock, std::defer_lock);
      if (rng() % 3 == 0) {
        if (!lk.try_lock_for(short_wait(rng))) return;
      } else {
        lk.lock();
      }
      Inside inside(w, me);
      ++w.lock_sections;
      pause(rng);
      w.check(me, "lock");
      break;
    }
    case 1: {  // condition: announce a new generation, or wait for one
      std::unique_lock lk(w.lock);
      Inside inside(w, me);
      if (rng() % 2) {
        ++w.generation;
        w.announced = w.generation;
        if (rng() % 2)
          w.cond.notify_one();
        else
          w.cond.notify_all();
      } else {
        const long seen = w.generation;
        // The wait releases the lock: we are not inside while parked. It
        // returns or throws with the lock held again, and we are back inside.
        struct Reenter {
          World& w;
          int me;
          ~Reenter() {
            if (w.holder != -1)
              w.violation(fmt::format("worker {} reacquired while {} is inside", me, w.holder));
            w.holder = me;
          }
        };
        w.holder = -1;
        Reenter reenter{w, me};
        const bool changed = w.cond.wait_for(lk, short_wait(rng), [&] { return w.generation != seen; });
        if (changed && w.announced != w.generation)
          w.violation("a condition waiter saw an unannounced state");
      }
      break;
    }
    case 2: {  // semaphore
      if (rng() % 3 == 0) {
        if (!w.sem.try_acquire_for(short_wait(rng))) return;
      } else {
        w.sem.acquire();
      }
      Permit p(w.sem, w.sem_held, kSemPermits, w);
      pause(rng);
      break;
    }
    case 3: {  // bounded semaphore
      if (rng() % 2 == 0) {
        if (!w.bsem.try_acquire()) return;
      } else {
        w.bsem.acquire();
      }
      Permit p(w.bsem, w.bsem_held, kBoundedPermits, w);
      pause(rng);
      break;
    }
    case 4:
      put_item(w, rng);
      break;
    case 5:
      get_item(w, rng);
      break;
    case 6:  // event
      switch (rng() % 3) {
        case 0:
          w.event.set();
          break;
        case 1:
          w.event.clear();
          break;
        default:
          (void)w.event.wait_for(short_wait(rng));
          break;
      }
      break;
    default:
      pause(rng);
      break;
  }
}

void worker(World& w, int me, std::uint32_t stream) {
  std::mt19937 rng(w.seed * 0x9E3779B9u + stream);
  while (w.ops < w.target_ops) {
    try {
      if (rng() % 4 == 0) {
        spindle::Timeout scope(short_wait(rng));
        step(w, me, rng);
      } else {
        step(w, me, rng);
      }
    } catch (const spindle::TimeoutError&) {
      ++w.timeouts;
    }
    ++w.ops;
    w.check(me, "step");
  }
}

void run_world(World& w, int workers) {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    std::vector<spindle::Task<void>> tasks;
    std::uint32_t stream = 0;
    for (int i = 0; i < workers; ++i) tasks.push_back(spindle::spawn(worker, std::ref(w), i, stream++));
    std::mt19937 rng(w.seed);
    long last_ops = -1, stalled_rounds = 0;
    while (w.ops < w.target_ops) {
      // A primitive left in a wrong state (say, a lock owned by a fiber that
      // has gone) stalls the workers: report it instead of spinning forever.
      stalled_rounds = w.ops == last_ops ? stalled_rounds + 1 : 0;
      last_ops = w.ops;
      if (stalled_rounds > 2000) {
        w.violation("no progress for 2000 chaos rounds: the workers are stuck");
        break;
      }
      spindle::this_fiber::sleep_for(short_wait(rng));
      // Cancel a few at once: each is readied as cancelled behind the
      // fibers already runnable, which may hand it something first.
      std::vector<int> victims;
      for (int k = 1 + static_cast<int>(rng() % 3); k > 0; --k) {
        const int victim = static_cast<int>(rng() % tasks.size());
        if (std::find(victims.begin(), victims.end(), victim) != victims.end()) continue;
        tasks[victim].cancel();
        victims.push_back(victim);
        ++w.cancels;
      }
      for (int victim : victims) {
        try {
          tasks[victim].join();
        } catch (const spindle::Cancelled&) {
        }
        tasks[victim] = spindle::spawn(worker, std::ref(w), victim, stream++);
        ++w.respawns;
      }
    }
    for (auto& t : tasks) t.cancel();
    for (auto& t : tasks) {
      try {
        t.join();
      } catch (const spindle::Cancelled&) {
      }
    }
    // Quiescent: everything is back.
    while (auto id = w.queue.try_get()) {
      if (++w.delivered[*id] > 1) w.violation(fmt::format("item {} delivered twice (drained)", *id));
      w.queue.task_done();
    }
  });
  for (std::uint64_t id = 0; id < w.next_id; ++id)
    if (w.put_ok[id] != w.delivered[id])
      w.violation(
          fmt::format("item {}: put {} time(s), delivered {} time(s)", id, w.put_ok[id], w.delivered[id]));
  if (w.holder != -1) w.violation("a worker is still marked inside the critical section");
  if (w.lock.locked()) w.violation("the lock is still locked");
  if (w.sem.value() != kSemPermits) w.violation(fmt::format("semaphore ends at {}", w.sem.value()));
  if (w.bsem.value() != kBoundedPermits)
    w.violation(fmt::format("bounded semaphore ends at {}", w.bsem.value()));
  try {
    w.bsem.release();
    w.violation("a bounded semaphore release above the bound did not throw");
  } catch (const std::invalid_argument&) {
  }
}

}  // namespace

TEST_CASE("sync stress: workers lock, wait, acquire, put and get while a chaos fiber cancels them") {
  for (std::uint32_t seed : seeds({1, 2, 3, 0xBEEF})) {
    CAPTURE(seed);
    World w;
    w.seed = seed;
    w.target_ops = 20'000;
    run_world(w, 24);
    MESSAGE(fmt::format("seed {}: {} steps ({} lock sections, {} puts, {} gets), {} timeouts, {} cancels",
                        seed, w.ops, w.lock_sections, w.puts, w.gets, w.timeouts, w.cancels));
    CHECK_MESSAGE(w.violations == 0,
                  fmt::format("seed {}: {} violations, first: {}", seed, w.violations, w.first_violation));
    CHECK(w.ops >= 20'000);
    CHECK(w.puts > 1000);
    CHECK(w.gets > 1000);
    CHECK(w.lock_sections > 1000);
  }
}

TEST_CASE(
    "sync stress: plain threads put and release while fibers get and acquire with timeouts and cancels") {
  for (std::uint32_t seed : seeds({7, 8})) {
    CAPTURE(seed);
    constexpr int kThreads = 2;
    constexpr int kPerThread = 5000;
    spindle::Queue<int> queue(8);
    spindle::Semaphore sem(0);
    std::vector<std::uint8_t> seen(kThreads * kPerThread, 0);
    std::atomic<int> released{0};
    std::atomic<int> producers_done{0};
    long acquired = 0, cancels = 0;
    std::vector<std::thread> producers;
    spindle::run([&] {
      for (int t = 0; t < kThreads; ++t)
        producers.emplace_back([&, t] {
          for (int i = 0; i < kPerThread; ++i) {
            queue.put(t * kPerThread + i);
            if (i % 3 == 0) {
              sem.release();
              ++released;
            }
          }
          ++producers_done;
        });
      std::mt19937 rng(seed);
      auto consumer = [&](std::uint32_t stream) {
        std::mt19937 r(seed * 31 + stream);
        for (;;) {
          if (r() % 4 == 0) {
            if (sem.try_acquire_for(std::chrono::microseconds(r() % 50))) ++acquired;
          } else if (auto v = queue.try_get_for(std::chrono::microseconds(r() % 50))) {
            if (++seen[*v] > 1) FAIL(fmt::format("seed {}: item {} delivered twice", seed, *v));
          } else if (producers_done.load() == kThreads) {
            return;
          }
        }
      };
      std::vector<spindle::Task<void>> consumers;
      std::uint32_t stream = 0;
      for (int c = 0; c < 4; ++c) consumers.push_back(spindle::spawn(consumer, stream++));
      while (producers_done.load() != kThreads) {
        spindle::this_fiber::sleep_for(std::chrono::microseconds(100 + rng() % 400));
        const auto victim = rng() % consumers.size();
        consumers[victim].cancel();
        ++cancels;
        try {
          consumers[victim].join();
        } catch (const spindle::Cancelled&) {
        }
        consumers[victim] = spindle::spawn(consumer, stream++);
      }
      for (auto& c : consumers) c.join();
      for (auto& p : producers) p.join();
      while (auto v = queue.try_get())
        if (++seen[*v] > 1) FAIL(fmt::format("seed {}: item {} delivered twice (drained)", seed, *v));
      while (sem.try_acquire()) ++acquired;
    });
    MESSAGE(fmt::format("seed {}: {} items, {} permits, {} cancels", seed, seen.size(), released.load(),
                        cancels));
    CHECK(std::all_of(seen.begin(), seen.end(), [](std::uint8_t n) { return n == 1; }));
    CHECK(acquired == released.load());
    CHECK(sem.value() == 0);
  }
}
