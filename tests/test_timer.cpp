// The timer heap on its own (fake fibers, no scheduler), then sleeping fibers
// under a manual clock.
//
// The heap is checked two ways: by what it hands out (expire order against a
// std::multiset reference, next_deadline after every operation) and, white
// box, by its documented shape (a 4-ary min-heap whose fibers know their
// slot): the timer_index of the fibers in the heap must be a permutation of
// 0..size-1 and every entry must not precede its parent.
#include "runtime/timer.hpp"

#include <doctest/doctest.h>
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;
using spindle::detail::Fiber;
using spindle::detail::kNoDeadline;
using spindle::detail::kNotInHeap;
using spindle::detail::TimerHeap;

namespace {

// Fake fibers for the heap: only timer_index is used; `id` tells them apart.
struct Fibers {
  explicit Fibers(std::size_t n) : v(std::make_unique<Fiber[]>(n)), n(n) {
    for (std::size_t i = 0; i < n; ++i) v[i].id = i;
  }
  Fiber* operator[](std::size_t i) { return &v[i]; }
  std::unique_ptr<Fiber[]> v;
  std::size_t n;
};

std::vector<std::uint64_t> drain(TimerHeap& h, std::int64_t now = kNoDeadline) {
  std::vector<std::uint64_t> out;
  h.expire(now, [&](Fiber* f) {
    CHECK(f->timer_index == kNotInHeap);
    out.push_back(f->id);
  });
  return out;
}

// A reference model: (deadline, insertion number) -> fiber id, and per fiber
// its key while it is armed.
struct Reference {
  using Key = std::pair<std::int64_t, std::uint64_t>;
  std::set<std::tuple<std::int64_t, std::uint64_t, std::uint64_t>> entries;
  std::vector<std::optional<Key>> key_of;
  std::uint64_t next_seq = 0;

  explicit Reference(std::size_t n) : key_of(n) {}
  void add(std::uint64_t id, std::int64_t deadline) {
    key_of[id] = Key{deadline, next_seq};
    entries.emplace(deadline, next_seq++, id);
  }
  void remove(std::uint64_t id) {
    auto [d, s] = *key_of[id];
    entries.erase({d, s, id});
    key_of[id].reset();
  }
  std::int64_t next_deadline() const { return entries.empty() ? kNoDeadline : std::get<0>(*entries.begin()); }
};

// The white-box shape check described at the top of the file. Returns an
// empty string when the heap is well formed, else what is wrong.
std::string heap_shape_error(Fibers& fibers, const Reference& ref, const TimerHeap& h) {
  std::vector<std::uint64_t> at(h.size(), ~std::uint64_t{0});
  for (std::size_t id = 0; id < fibers.n; ++id) {
    const std::uint32_t idx = fibers[id]->timer_index;
    if (!ref.key_of[id]) {
      if (idx != kNotInHeap) return fmt::format("fiber {} is not armed but has timer_index {}", id, idx);
      continue;
    }
    if (idx >= h.size()) return fmt::format("fiber {} has timer_index {} >= size {}", id, idx, h.size());
    if (at[idx] != ~std::uint64_t{0}) return fmt::format("fibers {} and {} share timer_index {}", at[idx], id, idx);
    at[idx] = id;
  }
  for (std::size_t i = 1; i < at.size(); ++i) {
    if (at[i] == ~std::uint64_t{0}) return fmt::format("no fiber has timer_index {}", i);
    const std::size_t parent = (i - 1) / 4;
    if (*ref.key_of[at[i]] < *ref.key_of[at[parent]])
      return fmt::format("slot {} (fiber {}) precedes its parent slot {} (fiber {})", i, at[i], parent, at[parent]);
  }
  return {};
}

}  // namespace

// ------------------------------------------------------------ TimerHeap

TEST_CASE("timer heap: an empty heap has no next deadline and expires nothing") {
  TimerHeap h;
  CHECK(h.empty());
  CHECK(h.size() == 0);
  CHECK(h.next_deadline() == kNoDeadline);
  CHECK(drain(h).empty());
}

TEST_CASE("timer heap: expire hands out fibers in deadline order") {
  Fibers f(64);
  TimerHeap h;
  std::vector<std::int64_t> deadline(64);
  std::mt19937 rng(7);
  for (std::size_t i = 0; i < 64; ++i) {
    deadline[i] = static_cast<std::int64_t>(rng() % 1'000'000) * 1000 + static_cast<std::int64_t>(i);  // distinct
    h.add(f[i], deadline[i]);
    CHECK(f[i]->timer_index < h.size());
  }
  CHECK(h.size() == 64);
  CHECK(h.next_deadline() == *std::min_element(deadline.begin(), deadline.end()));
  std::vector<std::uint64_t> expect(64);
  std::iota(expect.begin(), expect.end(), 0);
  std::sort(expect.begin(), expect.end(), [&](auto a, auto b) { return deadline[a] < deadline[b]; });
  CHECK(drain(h) == expect);
  CHECK(h.empty());
}

TEST_CASE("timer heap: equal deadlines fire in insertion order") {
  Fibers f(100);
  TimerHeap h;
  // Insert in a scrambled id order, all at two instants.
  std::vector<std::uint64_t> order(100);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(11));
  std::vector<std::uint64_t> at5;
  std::vector<std::uint64_t> at9;
  for (auto id : order) {
    const std::int64_t d = id % 3 == 0 ? 9 : 5;
    h.add(f[id], d);
    (d == 5 ? at5 : at9).push_back(id);
  }
  // Removing some from the middle does not disturb the FIFO of the rest.
  for (std::size_t k = 0; k < 10; ++k) {
    const auto id = at5[k * 3];
    h.remove(f[id]);
  }
  std::vector<std::uint64_t> expect;
  for (std::size_t k = 0; k < at5.size(); ++k)
    if (!(k % 3 == 0 && k / 3 < 10)) expect.push_back(at5[k]);
  expect.insert(expect.end(), at9.begin(), at9.end());
  CHECK(drain(h) == expect);
}

TEST_CASE("timer heap: expire pops exactly the timers that are due") {
  Fibers f(10);
  TimerHeap h;
  for (std::size_t i = 0; i < 10; ++i) h.add(f[i], static_cast<std::int64_t>((i + 1) * 10));  // 10..100
  CHECK(drain(h, 9).empty());
  CHECK(drain(h, 25) == std::vector<std::uint64_t>{0, 1});
  CHECK(h.next_deadline() == 30);
  CHECK(drain(h, 29).empty());
  CHECK(drain(h, 30) == std::vector<std::uint64_t>{2});  // the deadline itself is due
  CHECK(drain(h, 75) == std::vector<std::uint64_t>{3, 4, 5, 6});
  CHECK(h.size() == 3);
  CHECK(h.next_deadline() == 80);
  for (std::size_t i = 0; i < 7; ++i) CHECK(f[i]->timer_index == kNotInHeap);
  for (std::size_t i = 7; i < 10; ++i) CHECK(f[i]->timer_index < 3);
}

TEST_CASE("timer heap: extreme deadlines order correctly") {
  Fibers f(5);
  TimerHeap h;
  constexpr auto kMin = std::numeric_limits<std::int64_t>::min();
  h.add(f[0], kNoDeadline - 1);
  h.add(f[1], 0);
  h.add(f[2], kMin);
  h.add(f[3], -5);
  h.add(f[4], kMin);
  CHECK(h.next_deadline() == kMin);
  CHECK(drain(h, -1) == std::vector<std::uint64_t>{2, 4, 3});
  CHECK(drain(h) == std::vector<std::uint64_t>{1, 0});
}

TEST_CASE("timer heap: removing the top, a middle entry and the last entry keeps the heap valid") {
  constexpr std::size_t kN = 200;
  Fibers f(kN);
  Reference ref(kN);
  TimerHeap h;
  std::mt19937 rng(3);
  for (std::size_t i = 0; i < kN; ++i) {
    const auto d = static_cast<std::int64_t>(rng() % 50);  // many ties
    h.add(f[i], d);
    ref.add(i, d);
  }
  REQUIRE(heap_shape_error(f, ref, h).empty());
  auto fiber_at = [&](std::uint32_t idx) {
    for (std::size_t i = 0; i < kN; ++i)
      if (f[i]->timer_index == idx) return i;
    FAIL("no fiber at index ", idx);
    return std::size_t{0};
  };
  for (int round = 0; round < 60; ++round) {
    CAPTURE(round);
    const std::uint32_t n = static_cast<std::uint32_t>(h.size());
    const std::uint32_t idx = round % 3 == 0 ? 0 : round % 3 == 1 ? n / 2 : n - 1;  // top, middle, bottom
    const auto id = fiber_at(idx);
    h.remove(f[id]);
    ref.remove(id);
    CHECK(f[id]->timer_index == kNotInHeap);
    const std::string err = heap_shape_error(f, ref, h);
    CHECK_MESSAGE(err.empty(), err);
    CHECK(h.next_deadline() == ref.next_deadline());
  }
  // The rest still expire in (deadline, insertion) order.
  std::vector<std::uint64_t> expect;
  for (auto& [d, s, id] : ref.entries) expect.push_back(id);
  CHECK(drain(h) == expect);
}

TEST_CASE("timer heap: a removed fiber can be armed again") {
  Fibers f(3);
  TimerHeap h;
  h.add(f[0], 10);
  h.add(f[1], 20);
  h.add(f[2], 30);
  h.remove(f[0]);
  h.add(f[0], 25);  // a later seq: after 1, before 2
  CHECK(drain(h) == std::vector<std::uint64_t>{1, 0, 2});
  h.add(f[2], 1);
  CHECK(drain(h) == std::vector<std::uint64_t>{2});
}

TEST_CASE("timer heap: on_due may add and remove other timers") {
  Fibers f(6);
  TimerHeap h;
  for (std::size_t i = 0; i < 5; ++i) h.add(f[i], static_cast<std::int64_t>(i) * 10);  // 0..40
  std::vector<std::uint64_t> out;
  h.expire(25, [&](Fiber* x) {
    out.push_back(x->id);
    if (x->id == 0) {
      h.remove(f[3]);     // a pending one disappears
      h.add(f[5], 15);    // a new one, due within this expire
      h.add(f[0], 1000);  // the expired one re-arms for later
    }
  });
  CHECK(out == std::vector<std::uint64_t>{0, 1, 5, 2});
  CHECK(h.size() == 2);
  CHECK(drain(h) == std::vector<std::uint64_t>{4, 0});
}

TEST_CASE("timer heap: 100,000 random operations match a multiset reference") {
  // Override with SPINDLE_TEST_SEED to replay a failure.
  std::uint32_t seed = 0x5eed71;
  if (const char* s = std::getenv("SPINDLE_TEST_SEED")) seed = static_cast<std::uint32_t>(std::stoul(s));
  CAPTURE(seed);
  constexpr std::size_t kN = 2000;
  constexpr int kOps = 100'000;
  Fibers f(kN);
  Reference ref(kN);
  TimerHeap h;
  std::mt19937 rng(seed);
  std::int64_t now = 0;
  std::vector<std::uint64_t> armed;  // ids with a timer, for random picks
  std::vector<std::size_t> pos_in_armed(kN, ~std::size_t{0});
  auto arm = [&](std::uint64_t id) {
    pos_in_armed[id] = armed.size();
    armed.push_back(id);
  };
  auto disarm = [&](std::uint64_t id) {
    const std::size_t p = pos_in_armed[id];
    armed[p] = armed.back();
    pos_in_armed[armed[p]] = p;
    armed.pop_back();
    pos_in_armed[id] = ~std::size_t{0};
  };
  int mismatches = 0;
  for (int op = 0; op < kOps && mismatches < 5; ++op) {
    CAPTURE(op);
    const unsigned what = rng() % 10;
    if (what < 5) {  // add a timer for an idle fiber
      const auto id = rng() % kN;
      if (ref.key_of[id]) continue;
      // Deadlines near now, with many ties and some in the past.
      const std::int64_t d = now + static_cast<std::int64_t>(rng() % 200) - 20;
      h.add(f[id], d);
      ref.add(id, d);
      arm(id);
    } else if (what < 8) {  // cancel a random pending timer
      if (armed.empty()) continue;
      const auto id = armed[rng() % armed.size()];
      h.remove(f[id]);
      ref.remove(id);
      disarm(id);
      CHECK(f[id]->timer_index == kNotInHeap);
    } else {  // time passes; exactly the due ones fire, in order
      now += static_cast<std::int64_t>(rng() % 30);
      std::vector<std::uint64_t> expect;
      for (auto it = ref.entries.begin(); it != ref.entries.end() && std::get<0>(*it) <= now; ++it)
        expect.push_back(std::get<2>(*it));
      const auto got = drain(h, now);
      if (got != expect) ++mismatches;
      CHECK(got == expect);
      for (auto id : got) {
        if (ref.key_of[id]) {
          ref.remove(id);
          disarm(id);
        }
      }
    }
    REQUIRE(h.size() == ref.entries.size());
    REQUIRE(h.next_deadline() == ref.next_deadline());
    if (op % 997 == 0) {
      const std::string err = heap_shape_error(f, ref, h);
      REQUIRE_MESSAGE(err.empty(), err);
    }
  }
  const std::string err = heap_shape_error(f, ref, h);
  CHECK_MESSAGE(err.empty(), err);
  std::vector<std::uint64_t> expect;
  for (auto& [d, s, id] : ref.entries) expect.push_back(id);
  CHECK(drain(h) == expect);
}

TEST_CASE("timer heap: a million timers are added and removed in bounded time") {
  constexpr std::size_t kN = 1'000'000;
  Fibers f(kN);
  TimerHeap h;
  std::mt19937_64 rng(99);
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < kN; ++i) h.add(f[i], static_cast<std::int64_t>(rng() % 1'000'000'000));
  CHECK(h.size() == kN);
  // Cancel in random order, checking the minimum now and then.
  std::vector<std::size_t> order(kN);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::int64_t last_min = std::numeric_limits<std::int64_t>::min();
  for (std::size_t k = 0; k < kN; ++k) {
    h.remove(f[order[k]]);
    if (k % 100'000 == 0 && !h.empty()) {
      // Cancelling only raises the minimum.
      CHECK(h.next_deadline() >= last_min);
      last_min = h.next_deadline();
    }
  }
  CHECK(h.empty());
  // And a churn: add+remove pairs on a heap of ~1,000.
  for (std::size_t i = 0; i < 1000; ++i) h.add(f[i], static_cast<std::int64_t>(rng() % 1000));
  for (std::size_t k = 0; k < kN; ++k) {
    const std::size_t i = 1000 + k % (kN - 1000);
    h.add(f[i], static_cast<std::int64_t>(rng() % 1000));
    h.remove(f[i]);
  }
  CHECK(h.size() == 1000);
  const auto took = std::chrono::steady_clock::now() - t0;
  MESSAGE("a million add + remove, plus a million churn pairs: "
          << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
  // Generous: O(n log n) work takes well under a second natively; this only
  // catches accidental O(n) cancels (minutes).
  CHECK(took < 60s);
}

// ------------------------------------------------------ sleeping fibers

TEST_CASE("sleep: fibers sleeping different durations wake in deadline order, exactly on time (manual clock)") {
  spindle::ManualClock clock;
  constexpr int kFibers = 1000;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    const auto t0 = spindle::now();
    std::mt19937 rng(5);
    std::vector<std::chrono::milliseconds> dur(kFibers);
    for (auto& d : dur) d = std::chrono::milliseconds(1 + rng() % 5000);
    std::vector<std::pair<spindle::Duration, int>> woke;  // (when, who)
    std::vector<spindle::Task<void>> tasks;
    for (int i = 0; i < kFibers; ++i)
      tasks.push_back(spindle::spawn([&, i] {
        spindle::this_fiber::sleep_for(dur[i]);
        woke.emplace_back(spindle::now() - t0, i);
      }));
    for (auto& t : tasks) t.join();
    REQUIRE(woke.size() == kFibers);
    for (auto& [when, who] : woke) CHECK(when == dur[who]);
    // Deadline order; ties in the order the fibers went to sleep (spawn order).
    std::vector<std::pair<spindle::Duration, int>> sorted = woke;
    std::stable_sort(sorted.begin(), sorted.end());
    CHECK(woke == sorted);
  });
}

TEST_CASE("sleep: fibers with the same deadline wake in the order they went to sleep") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    const auto deadline = spindle::now() + 1s;
    std::vector<int> order;
    std::vector<spindle::Task<void>> tasks;
    for (int i = 0; i < 50; ++i)
      tasks.push_back(spindle::spawn([&, i] {
        // Stagger when they go to sleep: odd ids yield first.
        if (i % 2) spindle::this_fiber::yield();
        spindle::this_fiber::sleep_until(deadline);
        order.push_back(i);
      }));
    for (auto& t : tasks) t.join();
    std::vector<int> expect;
    for (int i = 0; i < 50; i += 2) expect.push_back(i);
    for (int i = 1; i < 50; i += 2) expect.push_back(i);
    CHECK(order == expect);
    CHECK(spindle::now() == deadline);
  });
}

TEST_CASE("sleep: sleep_until in the past returns at once but still honours cancellation and Timeouts") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    const auto t0 = spindle::now();
    spindle::this_fiber::sleep_until(t0 - 1s);
    spindle::this_fiber::sleep_until(t0);
    CHECK(spindle::now() == t0);

    // A pending cancellation is delivered there.
    bool reached = false;
    auto t = spindle::spawn([&] {
      spindle::this_fiber::sleep_until(spindle::now() - 1s);
      reached = true;
    });
    t.cancel();
    t.wait();
    CHECK(t.cancelled());
    CHECK_FALSE(reached);

    // It is a scheduling point too, like sleep_for(0): a loop of past-due
    // sleeps lets the other fibers run (here: the one that cancels it).
    int iterations = 0;
    auto u = spindle::spawn([&] {
      for (; iterations < 100'000; ++iterations) spindle::this_fiber::sleep_until(spindle::now() - 1s);
    });
    spindle::this_fiber::yield();
    u.cancel();
    u.wait();
    CHECK(u.cancelled());
    CHECK(iterations < 100'000);

    // An expired Timeout scope is reported there too.
    {
      spindle::Timeout scope(t0 - 1ms);
      CHECK_THROWS_AS(spindle::this_fiber::sleep_until(t0 - 1s), spindle::TimeoutError);
      CHECK(scope.expired());
    }
    CHECK(spindle::now() == t0);
  });
}

TEST_CASE("sleep: sleep_for zero or negative is a yield, not a timer") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    const auto t0 = spindle::now();
    std::vector<std::string> log;
    auto other = spindle::spawn([&] { log.push_back("other"); });
    spindle::this_fiber::sleep_for(0s);
    log.push_back("main");
    spindle::this_fiber::sleep_for(-5s);
    CHECK(log == std::vector<std::string>{"other", "main"});
    CHECK(spindle::now() == t0);
    other.join();
  });
}

TEST_CASE("sleep: a sleep shorter than another's wakes first even if started later (manual clock)") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    const auto t0 = spindle::now();
    std::vector<std::string> log;
    auto a = spindle::spawn([&] {
      spindle::this_fiber::sleep_for(10s);
      log.push_back("a");
    });
    auto b = spindle::spawn([&] {
      spindle::this_fiber::sleep_for(3s);
      log.push_back("b1");
      spindle::this_fiber::sleep_for(3s);  // at 6 s
      log.push_back("b2");
      spindle::this_fiber::sleep_for(5s);  // at 11 s
      log.push_back("b3");
    });
    a.join();
    CHECK(spindle::now() - t0 == 10s);
    b.join();
    CHECK(spindle::now() - t0 == 11s);
    CHECK(log == std::vector<std::string>{"b1", "b2", "a", "b3"});
  });
}

TEST_CASE("sleep: with the real clock a sleep is not early") {
  spindle::run([] {
    for (auto d : {1ms, 5ms, 20ms}) {
      const auto t0 = std::chrono::steady_clock::now();
      spindle::this_fiber::sleep_for(d);
      const auto took = std::chrono::steady_clock::now() - t0;
      CHECK(took >= d);
      CHECK(took < d + 5s);
    }
    // Several overlapping sleeps end in deadline order.
    std::vector<int> order;
    auto s1 = spindle::spawn([&] {
      spindle::this_fiber::sleep_for(30ms);
      order.push_back(30);
    });
    auto s2 = spindle::spawn([&] {
      spindle::this_fiber::sleep_for(10ms);
      order.push_back(10);
    });
    s1.join();
    s2.join();
    CHECK(order == std::vector<int>{10, 30});
  });
}

TEST_CASE("sleep: a cancelled sleeper leaves no timer behind") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    const auto t0 = spindle::now();
    std::vector<spindle::Task<void>> sleepers;
    for (int i = 0; i < 100; ++i) sleepers.push_back(spindle::spawn([] { spindle::this_fiber::sleep_for(1h); }));
    spindle::this_fiber::yield();
    for (auto& s : sleepers) s.cancel();
    for (auto& s : sleepers) s.wait();
    // A timer left behind for a finished fiber would fire at 1 h and touch
    // freed memory; the clock would also stop there first.
    spindle::this_fiber::sleep_for(2h);
    CHECK(spindle::now() - t0 == 2h);
  });
}
