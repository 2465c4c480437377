// spindle::Barrier: arrival indices, reuse cycle after cycle (1,000 cycles
// with aborts), abort/reset/broken, fibers that leave by cancellation or
// Timeout, the race where a waiter is cancelled as its cycle completes, and
// misuse errors.
#include <doctest/doctest.h>
#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;

TEST_CASE("barrier: parties must be at least 1; parties, n_waiting and broken report the state") {
  CHECK_THROWS_AS(spindle::Barrier(0), std::invalid_argument);
  spindle::Barrier b(3);
  CHECK(b.parties() == 3);
  CHECK(b.n_waiting() == 0);
  CHECK_FALSE(b.broken());
}

TEST_CASE("barrier: wait returns the arrival index; the last to arrive does not park") {
  spindle::run([] {
    spindle::Barrier b(3);
    std::vector<std::size_t> idx(2, 99);
    auto t0 = spindle::spawn([&] { idx[0] = b.wait(); });
    auto t1 = spindle::spawn([&] { idx[1] = b.wait(); });
    spindle::this_fiber::yield();
    CHECK(b.n_waiting() == 2);
    bool other_ran = false;
    auto t2 = spindle::spawn([&] { other_ran = true; });
    CHECK(b.wait() == 2);  // completes the cycle without parking
    CHECK_FALSE(other_ran);
    CHECK(b.n_waiting() == 0);  // ready for the next cycle at once
    t0.join();
    t1.join();
    t2.join();
    CHECK(idx == std::vector<std::size_t>{0, 1});
  });
}

TEST_CASE("barrier: a barrier of one party never parks") {
  spindle::run([] {
    spindle::Barrier b(1);
    for (int i = 0; i < 3; ++i) CHECK(b.wait() == 0);
  });
}

TEST_CASE("barrier: 1,000 cycles with aborts and resets: indices are 0..parties-1 each cycle") {
  constexpr int kParties = 4;
  constexpr int kCycles = 1000;
  std::mt19937 rng(2024);
  std::vector<bool> abort_cycle(kCycles);
  int aborts = 0;
  for (int c = 0; c < kCycles; ++c) aborts += (abort_cycle[c] = rng() % 10 == 0);
  spindle::run([&] {
    spindle::Barrier b(kParties);
    std::vector<std::vector<std::size_t>> indices(kCycles);
    std::vector<int> broken(kCycles, 0);
    std::vector<spindle::Task<void>> workers;
    for (int w = 0; w < kParties; ++w)
      workers.push_back(spindle::spawn([&, w] {
        for (int c = 0; c < kCycles; ++c) {
          if (abort_cycle[c] && w == 0) {
            // Worker 0 breaks this cycle once the others are all waiting,
            // then resets the barrier for the next one.
            while (b.n_waiting() != kParties - 1) spindle::this_fiber::yield();
            b.abort();
            CHECK(b.broken());
            CHECK_THROWS_AS(b.wait(), spindle::BrokenBarrierError);  // later callers too
            b.reset();
            CHECK_FALSE(b.broken());
            continue;
          }
          try {
            indices[c].push_back(b.wait());
          } catch (const spindle::BrokenBarrierError&) {
            ++broken[c];
          }
        }
      }));
    for (auto& t : workers) t.join();
    int checked = 0;
    for (int c = 0; c < kCycles; ++c) {
      if (abort_cycle[c]) {
        CHECK(indices[c].empty());
        CHECK(broken[c] == kParties - 1);
      } else {
        auto v = indices[c];
        std::sort(v.begin(), v.end());
        CHECK(v == std::vector<std::size_t>{0, 1, 2, 3});
        CHECK(broken[c] == 0);
      }
      ++checked;
    }
    CHECK(checked == kCycles);
    CHECK(b.n_waiting() == 0);
  });
  CHECK(aborts > 50);
}

TEST_CASE("barrier: abort breaks it for the waiters and every later caller until reset") {
  spindle::run([] {
    spindle::Barrier b(3);
    std::vector<std::string> log;
    auto w = spindle::spawn([&] {
      try {
        b.wait();
      } catch (const spindle::BrokenBarrierError& e) {
        log.push_back("broken");
        CHECK(std::string(e.what()).find("spindle::Barrier::wait") != std::string::npos);
      }
    });
    spindle::this_fiber::yield();
    b.abort();
    CHECK(b.broken());
    CHECK(b.n_waiting() == 0);
    w.join();
    CHECK(log == std::vector<std::string>{"broken"});
    CHECK_THROWS_AS(b.wait(), spindle::BrokenBarrierError);
    b.abort();  // again: no change
    b.reset();
    CHECK_FALSE(b.broken());
    auto a = spindle::spawn([&] { return b.wait(); });
    auto c = spindle::spawn([&] { return b.wait(); });
    spindle::this_fiber::yield();
    CHECK(b.wait() == 2);
    CHECK(a.join() == 0);
    CHECK(c.join() == 1);
  });
}

TEST_CASE("barrier: reset with fibers waiting: they get BrokenBarrierError, the barrier stays usable") {
  spindle::run([] {
    spindle::Barrier b(3);
    auto w1 = spindle::spawn([&] { return b.wait(); });
    auto w2 = spindle::spawn([&] { return b.wait(); });
    spindle::this_fiber::yield();
    CHECK(b.n_waiting() == 2);
    b.reset();
    CHECK_FALSE(b.broken());
    CHECK(b.n_waiting() == 0);
    CHECK_THROWS_AS(w1.join(), spindle::BrokenBarrierError);
    CHECK_THROWS_AS(w2.join(), spindle::BrokenBarrierError);
    auto w3 = spindle::spawn([&] { return b.wait(); });
    auto w4 = spindle::spawn([&] { return b.wait(); });
    spindle::this_fiber::yield();
    CHECK(b.wait() == 2);
    CHECK(w3.join() == 0);
    CHECK(w4.join() == 1);
  });
}

TEST_CASE(
    "barrier: a fiber cancelled while waiting leaves: the barrier is not broken and indices stay "
    "0..parties-1") {
  spindle::run([] {
    spindle::Barrier b(3);
    auto w1 = spindle::spawn([&] { return b.wait(); });
    auto w2 = spindle::spawn([&] { return b.wait(); });
    spindle::this_fiber::yield();
    w1.cancel();
    CHECK_THROWS_AS(w1.join(), spindle::Cancelled);
    CHECK(b.n_waiting() == 1);
    CHECK_FALSE(b.broken());
    auto w3 = spindle::spawn([&] { return b.wait(); });
    spindle::this_fiber::yield();
    CHECK(b.n_waiting() == 2);
    CHECK(b.wait() == 2);
    std::set<std::size_t> got{w2.join(), w3.join()};
    CHECK(got == std::set<std::size_t>{0, 1});
  });
}

TEST_CASE("barrier: a Timeout scope makes a waiting fiber leave with TimeoutError") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Barrier b(2);
    {
      spindle::Timeout scope(100ms);
      CHECK_THROWS_AS(b.wait(), spindle::TimeoutError);
    }
    CHECK(b.n_waiting() == 0);
    CHECK_FALSE(b.broken());
    auto w = spindle::spawn([&] { return b.wait(); });
    spindle::this_fiber::yield();
    CHECK(b.wait() == 1);
    CHECK(w.join() == 0);
  });
}

TEST_CASE("barrier: race: a waiter cancelled as the cycle completes throws Cancelled; the cycle stands") {
  spindle::run([] {
    spindle::Barrier b(3);
    auto w1 = spindle::spawn([&] { return b.wait(); });
    auto w2 = spindle::spawn([&] { return b.wait(); });
    spindle::this_fiber::yield();
    w1.cancel();           // readied as cancelled, still counted as waiting
    CHECK(b.wait() == 2);  // completes the cycle: w1 was handed index 0
    CHECK(b.n_waiting() == 0);
    CHECK_THROWS_AS(w1.join(), spindle::Cancelled);
    CHECK(w2.join() == 1);
    CHECK(b.n_waiting() == 0);
    CHECK_FALSE(b.broken());
    // The next cycle starts clean.
    auto w3 = spindle::spawn([&] { return b.wait(); });
    auto w4 = spindle::spawn([&] { return b.wait(); });
    spindle::this_fiber::yield();
    CHECK(b.wait() == 2);
    CHECK(w3.join() == 0);
    CHECK(w4.join() == 1);
  });
}

TEST_CASE("barrier: wait outside a fiber throws std::logic_error naming the call") {
  spindle::Barrier b(2);
  try {
    b.wait();
    FAIL("wait did not throw");
  } catch (const std::logic_error& e) {
    CHECK(std::string(e.what()).find("spindle::Barrier::wait") != std::string::npos);
  }
  CHECK(b.n_waiting() == 0);
}

TEST_CASE(
    "barrier: abort from another thread while fibers wait throws std::logic_error and changes nothing") {
  spindle::Barrier b(2);
  std::atomic<int> stage{0};
  std::thread other([&] {
    while (stage.load() != 1) std::this_thread::sleep_for(1ms);
    try {
      b.abort();
    } catch (const std::logic_error&) {
      stage = 2;
      return;
    }
    stage = 3;
  });
  spindle::run([&] {
    auto w = spindle::spawn([&] { return b.wait(); });
    spindle::this_fiber::yield();
    stage = 1;
    while (stage.load() == 1) std::this_thread::sleep_for(1ms);  // blocks this thread on purpose
    CHECK_FALSE(b.broken());
    CHECK(b.wait() == 1);
    CHECK(w.join() == 0);
  });
  other.join();
  CHECK(stage.load() == 2);
}
