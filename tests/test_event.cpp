// spindle::Event: set/clear/is_set, waking every waiter in FIFO order,
// timed waits, cancellation and Timeout scopes, the races at the moment of
// set(), and set() from a plain OS thread and from another thread's
// scheduler while the waiting fiber is parked.
//
// Cross-thread cases loop many times with fresh state each round because
// the interesting bugs (a lost wake, a wake delivered to a fiber that has
// moved on) are races; every wait sits inside a Timeout scope so that a
// lost wake fails the case instead of hanging it.
#include <doctest/doctest.h>
#include <fmt/core.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;

namespace {

// Long enough that only a lost wake reaches it, even under valgrind.
constexpr auto kPatience = 20s;

void spin_for(std::chrono::nanoseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) std::this_thread::yield();
}

}  // namespace

TEST_CASE("event: set, clear and is_set, from any thread, inside or outside run") {
  spindle::Event e;
  CHECK_FALSE(e.is_set());
  e.set();
  CHECK(e.is_set());
  e.set();  // setting a set event changes nothing
  CHECK(e.is_set());
  e.clear();
  CHECK_FALSE(e.is_set());
  std::thread([&] { e.set(); }).join();
  CHECK(e.is_set());
  spindle::run([&] {
    e.clear();
    CHECK_FALSE(e.is_set());
  });
}

TEST_CASE("event: wait on a set event returns at once: not a suspension point, and needs no fiber") {
  spindle::Event e;
  e.set();
  e.wait();  // outside run: allowed, as it does not park
  CHECK(e.wait_for(1s));
  spindle::run([&] {
    bool other_ran = false;
    auto t = spindle::spawn([&] { other_ran = true; });
    e.wait();
    CHECK_FALSE(other_ran);
    t.join();
  });
}

TEST_CASE("event: wait on an unset event outside a fiber throws std::logic_error naming the call") {
  spindle::Event e;
  try {
    e.wait();
    FAIL("wait did not throw");
  } catch (const std::logic_error& err) {
    CHECK(std::string(err.what()).find("spindle::Event::wait") != std::string::npos);
  }
  CHECK_THROWS_AS((void)e.wait_for(1ms), std::logic_error);
  CHECK_FALSE(e.is_set());
}

TEST_CASE("event: set wakes every waiter, in FIFO order") {
  spindle::run([] {
    spindle::Event e;
    std::vector<int> order;
    std::vector<spindle::Task<void>> tasks;
    for (int i = 0; i < 10; ++i)
      tasks.push_back(spindle::spawn([&, i] {
        e.wait();
        order.push_back(i);
      }));
    spindle::this_fiber::yield();
    CHECK(order.empty());
    e.set();
    CHECK(order.empty());  // readied, not yet run
    for (auto& t : tasks) t.join();
    CHECK(order == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  });
}

TEST_CASE("event: waiters woken by set return even if clear runs before they do") {
  spindle::run([] {
    spindle::Event e;
    int woken = 0;
    std::vector<spindle::Task<void>> tasks;
    for (int i = 0; i < 3; ++i)
      tasks.push_back(spindle::spawn([&] {
        e.wait();
        ++woken;
      }));
    spindle::this_fiber::yield();
    e.set();
    e.clear();
    for (auto& t : tasks) t.join();
    CHECK(woken == 3);
    CHECK_FALSE(e.is_set());
    // A wait after the clear parks again.
    auto late = spindle::spawn([&] { return e.wait_for(1ms); });
    CHECK_FALSE(late.join());
  });
}

TEST_CASE("event: wait_for returns false exactly at its deadline and true when set in time (manual clock)") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Event e;
    const auto t0 = spindle::now();
    CHECK_FALSE(e.wait_for(250ms));
    CHECK(spindle::now() - t0 == 250ms);
    CHECK_FALSE(e.wait_until(t0));  // in the past
    auto setter = spindle::spawn([&] {
      spindle::this_fiber::sleep_for(100ms);
      e.set();
    });
    CHECK(e.wait_for(1s));
    CHECK(spindle::now() - t0 == 350ms);
    setter.join();
    spindle::this_fiber::sleep_for(5s);  // no timer left behind
    CHECK(spindle::now() - t0 == 5350ms);
  });
}

TEST_CASE(
    "event: a Timeout scope throws TimeoutError from wait; cancel throws Cancelled; the event is unchanged") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Event e;
    {
      spindle::Timeout scope(100ms);
      CHECK_THROWS_AS(e.wait(), spindle::TimeoutError);
      CHECK(scope.expired());
    }
    {
      // The scope's earlier deadline throws; the call's own gives false.
      spindle::Timeout scope(100ms);
      CHECK_THROWS_AS((void)e.wait_for(1s), spindle::TimeoutError);
    }
    {
      spindle::Timeout scope(1s);
      CHECK_FALSE(e.wait_for(100ms));
    }
    auto t = spindle::spawn([&] { e.wait(); });
    spindle::this_fiber::yield();
    t.cancel();
    CHECK_THROWS_AS(t.join(), spindle::Cancelled);
    CHECK_FALSE(e.is_set());
    // The cancelled waiter left the list: set() has nobody to wake and a
    // new waiter still works.
    auto u = spindle::spawn([&] { e.wait(); });
    spindle::this_fiber::yield();
    e.set();
    u.join();
  });
}

TEST_CASE("event: race: a waiter cancelled as set() wakes it throws Cancelled; the others still return") {
  spindle::run([] {
    spindle::Event e;
    std::vector<std::string> log;
    auto w1 = spindle::spawn([&] {
      e.wait();
      log.push_back("w1");
    });
    auto w2 = spindle::spawn([&] {
      e.wait();
      log.push_back("w2");
    });
    spindle::this_fiber::yield();
    w1.cancel();  // readied as cancelled, not yet run
    e.set();      // hands the wake to w1 and w2
    CHECK_THROWS_AS(w1.join(), spindle::Cancelled);
    w2.join();
    CHECK(log == std::vector<std::string>{"w2"});
    CHECK(e.is_set());
  });
}

TEST_CASE("event: race: wait_for whose own deadline passes in the instant of set() returns true") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Event e;
    auto w = spindle::spawn([&] { return e.wait_for(1s); });
    // Our timer for +1s comes before w's: at +1s we run first and set the
    // event while w is readied as timed out.
    spindle::this_fiber::sleep_for(1s);
    e.set();
    CHECK(w.join());
  });
}

TEST_CASE("event: race: a waiter whose Timeout scope expires in the instant of set() throws TimeoutError") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Event e;
    auto w = spindle::spawn([&] {
      spindle::Timeout scope(1s);
      e.wait();
    });
    spindle::this_fiber::sleep_for(1s);
    e.set();
    CHECK_THROWS_AS(w.join(), spindle::TimeoutError);
  });
}

// ------------------------------------------------------------ cross-thread

TEST_CASE("event: set from a plain OS thread wakes a parked fiber (many rounds, both orders)") {
  std::mt19937 rng(12345);
  for (int round = 0; round < 300; ++round) {
    const auto delay = std::chrono::microseconds(rng() % 200);
    spindle::Event e;
    std::thread setter;
    spindle::run([&] {
      setter = std::thread([&] {
        spin_for(delay);
        e.set();
      });
      spindle::Timeout scope(kPatience);
      e.wait();
      CHECK(e.is_set());
    });
    setter.join();
  }
}

TEST_CASE("event: set from a plain OS thread reaches several fibers waiting with deadlines") {
  for (int round = 0; round < 100; ++round) {
    spindle::Event e;
    std::atomic<int> parked{0};
    std::thread setter;
    spindle::run([&] {
      std::vector<spindle::Task<bool>> waiters;
      for (int i = 0; i < 5; ++i)
        waiters.push_back(spindle::spawn([&] {
          ++parked;
          return e.wait_for(kPatience);
        }));
      spindle::this_fiber::yield();
      CHECK(parked.load() == 5);
      setter = std::thread([&] { e.set(); });
      for (auto& w : waiters) CHECK(w.join());
    });
    setter.join();
  }
}

TEST_CASE("event: set from a fiber of another thread's scheduler wakes a parked fiber") {
  for (int round = 0; round < 100; ++round) {
    spindle::Event ping, pong;
    std::thread other([&] {
      spindle::run([&] {
        spindle::Timeout scope(kPatience);
        ping.wait();
        pong.set();
      });
    });
    spindle::run([&] {
      spindle::Timeout scope(kPatience);
      ping.set();
      pong.wait();
    });
    other.join();
    CHECK(pong.is_set());
  }
}

TEST_CASE("event: a cross-thread set racing a fiber's timeout and cancellation leaves nothing behind") {
  // The fiber gives up (timeout or cancel) at about the time the thread
  // sets; whichever wins, the fiber must finish and free its record with no
  // wake for it still queued (ASan and TSan builds catch a stale one).
  std::mt19937 rng(777);
  int set_seen = 0, gave_up = 0;
  for (int round = 0; round < 300; ++round) {
    const auto delay = std::chrono::microseconds(rng() % 100);
    const bool cancel = rng() % 2 == 0;
    spindle::Event e;
    std::thread setter;
    spindle::run([&] {
      auto w = spindle::spawn([&] {
        spindle::Timeout scope(kPatience);
        return e.wait_for(std::chrono::microseconds(50));
      });
      setter = std::thread([&] {
        spin_for(delay);
        e.set();
      });
      if (cancel) {
        spindle::this_fiber::sleep_for(std::chrono::microseconds(rng() % 100));
        w.cancel();
      }
      try {
        if (w.join())
          ++set_seen;
        else
          ++gave_up;
      } catch (const spindle::Cancelled&) {
        ++gave_up;
      }
      // Many fibers created and ended afterwards reuse the records.
      for (int i = 0; i < 4; ++i) spindle::spawn([] { spindle::this_fiber::yield(); }).join();
    });
    setter.join();
  }
  CHECK(set_seen + gave_up == 300);
}
