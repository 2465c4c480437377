// spindle::Semaphore and BoundedSemaphore: counting, FIFO hand-off of
// permits, the bound, timed acquisition, cancellation and Timeout scopes,
// the races where a waiter is interrupted as release() hands it a permit,
// and release() from a plain OS thread and another thread's scheduler.
#include <doctest/doctest.h>
#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;

namespace {

constexpr auto kPatience = 20s;

void spin_for(std::chrono::nanoseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) std::this_thread::yield();
}

template <class F>
std::string invalid_argument_text(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  FAIL("no std::invalid_argument was thrown");
  return {};
}

}  // namespace

TEST_CASE("semaphore: starts with its value (1 by default); a negative value throws") {
  spindle::Semaphore one;
  CHECK(one.value() == 1);
  spindle::Semaphore five(5);
  CHECK(five.value() == 5);
  spindle::Semaphore zero(0);
  CHECK(zero.value() == 0);
  CHECK(zero.locked());
  CHECK(invalid_argument_text([] { spindle::Semaphore s(-1); }).find("spindle::Semaphore") !=
        std::string::npos);
  CHECK_THROWS_AS(spindle::BoundedSemaphore(-2), std::invalid_argument);
}

TEST_CASE("semaphore: release before acquire does not block") {
  spindle::run([] {
    spindle::Semaphore s(0);
    s.release();
    CHECK(s.value() == 1);
    bool other_ran = false;
    auto t = spindle::spawn([&] { other_ran = true; });
    s.acquire();  // a free permit: not a suspension point
    CHECK_FALSE(other_ran);
    CHECK(s.value() == 0);
    t.join();
  });
}

TEST_CASE("semaphore: try_acquire takes a free permit and never parks; any thread may call it") {
  spindle::Semaphore s(2);
  CHECK(s.try_acquire());
  CHECK(std::async(std::launch::async, [&] { return s.try_acquire(); }).get());
  CHECK_FALSE(s.try_acquire());
  CHECK(s.value() == 0);
  s.release(2);
  CHECK(s.value() == 2);
}

TEST_CASE("semaphore: acquire parks at zero; release wakes waiters in FIFO order") {
  spindle::run([] {
    spindle::Semaphore s(0);
    std::vector<int> order;
    std::vector<spindle::Task<void>> tasks;
    for (int i = 0; i < 6; ++i)
      tasks.push_back(spindle::spawn([&, i] {
        s.acquire();
        order.push_back(i);
      }));
    spindle::this_fiber::yield();
    CHECK(s.locked());
    s.release();
    s.release(2);
    spindle::this_fiber::yield();
    CHECK(order == std::vector<int>{0, 1, 2});
    s.release(5);  // three to the waiters, two to the count
    for (auto& t : tasks) t.join();
    CHECK(order == std::vector<int>{0, 1, 2, 3, 4, 5});
    CHECK(s.value() == 2);
  });
}

TEST_CASE("semaphore: a permit released while fibers wait goes to the longest waiter, never to a newcomer") {
  spindle::run([] {
    spindle::Semaphore s(0);
    auto waiter = spindle::spawn([&] { s.acquire(); });
    spindle::this_fiber::yield();
    s.release();
    // The permit is the waiter's even though it has not run yet.
    CHECK(s.value() == 0);
    CHECK_FALSE(s.try_acquire());
    waiter.join();
    CHECK(s.value() == 0);
  });
}

TEST_CASE("semaphore: release of a negative count throws and changes nothing") {
  spindle::Semaphore s(1);
  CHECK(invalid_argument_text([&] { s.release(-1); }).find("spindle::Semaphore::release") !=
        std::string::npos);
  CHECK(s.value() == 1);
  s.release(0);
  CHECK(s.value() == 1);
}

TEST_CASE("semaphore: acquire at zero outside a fiber throws std::logic_error naming the call") {
  spindle::Semaphore s(0);
  try {
    s.acquire();
    FAIL("acquire did not throw");
  } catch (const std::logic_error& e) {
    CHECK(std::string(e.what()).find("spindle::Semaphore::acquire") != std::string::npos);
  }
  CHECK_THROWS_AS((void)s.try_acquire_for(1ms), std::logic_error);
  CHECK(s.value() == 0);
  s.release();
  s.acquire();  // a free permit needs no fiber
  CHECK(s.value() == 0);
}

TEST_CASE(
    "bounded semaphore: a release above the initial value throws (asyncio's ValueError) and changes "
    "nothing") {
  spindle::run([] {
    spindle::BoundedSemaphore s(2);
    CHECK(s.max() == 2);
    auto what = invalid_argument_text([&] { s.release(); });
    CHECK(what.find("spindle::BoundedSemaphore::release") != std::string::npos);
    CHECK(what.find("too many") != std::string::npos);
    CHECK(s.value() == 2);
    s.acquire();
    s.acquire();
    CHECK(s.value() == 0);
    CHECK_THROWS_AS(s.release(3), std::invalid_argument);
    CHECK(s.value() == 0);
    s.release(2);
    CHECK(s.value() == 2);
    CHECK_THROWS_AS(s.release(), std::invalid_argument);

    // Permits handed to waiters count as taken.
    s.acquire();
    s.acquire();
    auto w = spindle::spawn([&] { s.acquire(); });
    spindle::this_fiber::yield();
    s.release();  // to the waiter
    s.release();  // to the count: 1
    CHECK(s.value() == 1);
    CHECK_THROWS_AS(s.release(2), std::invalid_argument);
    w.join();
    s.release();
    CHECK(s.value() == 2);
  });
}

TEST_CASE(
    "semaphore: try_acquire_for times out exactly at its deadline; succeeds when released in time (manual "
    "clock)") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Semaphore s(0);
    const auto t0 = spindle::now();
    CHECK_FALSE(s.try_acquire_for(300ms));
    CHECK(spindle::now() - t0 == 300ms);
    CHECK_FALSE(s.try_acquire_until(t0));  // in the past
    auto releaser = spindle::spawn([&] {
      spindle::this_fiber::sleep_for(200ms);
      s.release();
    });
    CHECK(s.try_acquire_for(1s));
    CHECK(spindle::now() - t0 == 500ms);
    releaser.join();
    CHECK(s.value() == 0);
    spindle::this_fiber::sleep_for(3s);  // no timer left behind
    CHECK(spindle::now() - t0 == 3500ms);
  });
}

TEST_CASE("semaphore: a Timeout scope or cancel interrupts a parked acquire and leaves the count alone") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Semaphore s(0);
    {
      spindle::Timeout scope(50ms);
      CHECK_THROWS_AS(s.acquire(), spindle::TimeoutError);
    }
    auto t = spindle::spawn([&] { s.acquire(); });
    spindle::this_fiber::yield();
    t.cancel();
    CHECK_THROWS_AS(t.join(), spindle::Cancelled);
    s.release();
    CHECK(s.value() == 1);  // nobody was left waiting to take it
  });
}

TEST_CASE("semaphore: race: a waiter cancelled as release() hands it a permit gives it to the next waiter") {
  spindle::run([] {
    spindle::Semaphore s(0);
    std::vector<std::string> log;
    auto w1 = spindle::spawn([&] {
      s.acquire();
      log.push_back("w1");
    });
    auto w2 = spindle::spawn([&] {
      s.acquire();
      log.push_back("w2");
    });
    spindle::this_fiber::yield();
    w1.cancel();  // readied as cancelled, has not run
    s.release();  // the permit is handed to w1
    CHECK(s.value() == 0);
    CHECK_THROWS_AS(w1.join(), spindle::Cancelled);
    w2.join();
    CHECK(log == std::vector<std::string>{"w2"});
    CHECK(s.value() == 0);
  });
}

TEST_CASE(
    "semaphore: race: a waiter cancelled as it is handed a permit, with nobody behind it, returns it to the "
    "count") {
  spindle::run([] {
    spindle::BoundedSemaphore s(1);
    s.acquire();
    auto w = spindle::spawn([&] { s.acquire(); });
    spindle::this_fiber::yield();
    w.cancel();
    s.release();
    CHECK_THROWS_AS(w.join(), spindle::Cancelled);
    CHECK(s.value() == 1);
    CHECK_THROWS_AS(s.release(), std::invalid_argument);  // the bound is still exact
  });
}

TEST_CASE(
    "semaphore: race: try_acquire_for whose deadline passes as it is handed a permit returns false and gives "
    "it back") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Semaphore s(0);
    auto w1 = spindle::spawn([&] { return s.try_acquire_for(1s); });
    auto w2 = spindle::spawn([&] {
      s.acquire();
      return true;
    });
    spindle::this_fiber::sleep_for(1s);  // our timer fires before w1's
    s.release();
    CHECK_FALSE(w1.join());
    CHECK(w2.join());
    CHECK(s.value() == 0);
  });
}

TEST_CASE(
    "semaphore: race: a waiter whose Timeout scope expires as it is handed a permit throws and gives it "
    "back") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Semaphore s(0);
    auto w = spindle::spawn([&] {
      spindle::Timeout scope(1s);
      s.acquire();
    });
    spindle::this_fiber::sleep_for(1s);
    s.release();
    CHECK_THROWS_AS(w.join(), spindle::TimeoutError);
    CHECK(s.value() == 1);
  });
}

// ------------------------------------------------------------ cross-thread

TEST_CASE("semaphore: release from a plain OS thread wakes a parked fiber (many rounds, both orders)") {
  std::mt19937 rng(4242);
  for (int round = 0; round < 300; ++round) {
    const auto delay = std::chrono::microseconds(rng() % 200);
    spindle::Semaphore s(0);
    std::thread releaser;
    spindle::run([&] {
      releaser = std::thread([&] {
        spin_for(delay);
        s.release();
      });
      spindle::Timeout scope(kPatience);
      s.acquire();
    });
    releaser.join();
    CHECK(s.value() == 0);
  }
}

TEST_CASE(
    "semaphore: a plain thread releasing 20,000 permits to four fibers: every one is taken exactly once") {
  spindle::Semaphore s(0);
  constexpr int kPermits = 20000;
  std::atomic<int> taken{0};
  std::thread releaser;
  spindle::run([&] {
    releaser = std::thread([&] {
      for (int i = 0; i < kPermits; ++i) s.release();
    });
    std::vector<spindle::Task<void>> fibers;
    for (int f = 0; f < 4; ++f)
      fibers.push_back(spindle::spawn([&] {
        spindle::Timeout scope(kPatience);
        for (int i = 0; i < kPermits / 4; ++i) {
          s.acquire();
          ++taken;
        }
      }));
    for (auto& f : fibers) f.join();
  });
  releaser.join();
  CHECK(taken.load() == kPermits);
  CHECK(s.value() == 0);
}

TEST_CASE("semaphore: release from a fiber of another thread's scheduler wakes a parked fiber") {
  for (int round = 0; round < 100; ++round) {
    spindle::Semaphore a(0), b(0);
    std::thread other([&] {
      spindle::run([&] {
        spindle::Timeout scope(kPatience);
        a.acquire();
        b.release();
      });
    });
    spindle::run([&] {
      spindle::Timeout scope(kPatience);
      a.release();
      b.acquire();
    });
    other.join();
    CHECK(a.value() == 0);
    CHECK(b.value() == 0);
  }
}

TEST_CASE("semaphore: cross-thread releases racing timeouts and cancels keep the count exact") {
  std::mt19937 rng(99);
  for (int round = 0; round < 200; ++round) {
    spindle::Semaphore s(0);
    const int releases = 1 + static_cast<int>(rng() % 4);
    std::atomic<int> acquired{0};
    std::thread releaser;
    spindle::run([&] {
      std::vector<spindle::Task<void>> fibers;
      for (int i = 0; i < 4; ++i)
        fibers.push_back(spindle::spawn([&] {
          if (s.try_acquire_for(std::chrono::microseconds(rng() % 80))) ++acquired;
        }));
      releaser = std::thread([&, d = rng() % 80] {
        spin_for(std::chrono::microseconds(d));
        for (int i = 0; i < releases; ++i) s.release();
      });
      if (rng() % 2) fibers[rng() % 4].cancel();
      for (auto& f : fibers) {
        try {
          f.join();
        } catch (const spindle::Cancelled&) {
        }
      }
    });
    releaser.join();
    // Every release either went to a fiber that kept it or is in the count.
    CHECK(acquired.load() + s.value() == releases);
  }
}

TEST_CASE("semaphore: a second thread joining a thread that hammers it keeps the count exact") {
  // The first thread to use a semaphore gets a lock fast path of plain
  // loads and stores; the second one must take that away safely while the
  // first is in the middle of its loop. A lost update shows in the count.
  for (int round = 0; round < 50; ++round) {
    spindle::Semaphore s(4);
    std::atomic<bool> started{false};
    std::atomic<long> in_hand{0};
    long max_in_hand = 0;
    auto hammer = [&](long& peak) {
      for (int i = 0; i < 20000; ++i) {
        if (s.try_acquire()) {
          const long now = ++in_hand;
          peak = std::max(peak, now);
          --in_hand;
          s.release();
        }
      }
    };
    long peak_a = 0, peak_b = 0;
    std::thread a([&] {
      started = true;
      hammer(peak_a);
    });
    while (!started.load()) std::this_thread::yield();
    std::thread b([&] { hammer(peak_b); });
    a.join();
    b.join();
    max_in_hand = std::max(peak_a, peak_b);
    CHECK(s.value() == 4);
    CHECK(max_in_hand <= 4);
  }
}
