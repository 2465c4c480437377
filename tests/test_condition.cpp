// spindle::Condition: the std::condition_variable shape over spindle::Lock,
// FIFO notification, timed waits, misuse errors, reacquiring the lock when
// the wait is cancelled or times out, and the races where the fiber chosen
// by notify_one() is interrupted in the same instant.
#include <doctest/doctest.h>
#include <fmt/core.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;

TEST_CASE("condition: wait releases the lock while parked and holds it again when it returns") {
  spindle::run([] {
    spindle::Lock lock;
    spindle::Condition cond;
    bool ready = false;
    auto waiter = spindle::spawn([&] {
      std::unique_lock lk(lock);
      cond.wait(lk, [&] { return ready; });
      CHECK(lk.owns_lock());
      CHECK(lock.locked());
      return 1;
    });
    spindle::this_fiber::yield();  // the waiter parks in wait, lock released
    CHECK_FALSE(lock.locked());
    {
      std::scoped_lock guard(lock);
      ready = true;
      cond.notify_one();
      spindle::this_fiber::yield();  // the waiter runs, but must wait for the lock
    }
    CHECK(waiter.join() == 1);
    CHECK_FALSE(lock.locked());
  });
}

TEST_CASE("condition: notify_one wakes the longest waiter; notify_all wakes all, FIFO") {
  spindle::run([] {
    spindle::Lock lock;
    spindle::Condition cond;
    std::vector<int> order;
    std::vector<spindle::Task<void>> tasks;
    for (int i = 0; i < 5; ++i)
      tasks.push_back(spindle::spawn([&, i] {
        std::unique_lock lk(lock);
        cond.wait(lk);
        order.push_back(i);
      }));
    spindle::this_fiber::yield();
    cond.notify_one();
    spindle::this_fiber::yield();
    CHECK(order == std::vector<int>{0});
    cond.notify_one();
    cond.notify_one();
    spindle::this_fiber::yield();
    CHECK(order == std::vector<int>{0, 1, 2});
    cond.notify_all();
    for (auto& t : tasks) t.join();
    CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
  });
}

TEST_CASE("condition: a producer/consumer pair over a bounded buffer") {
  spindle::run([] {
    spindle::Lock lock;
    spindle::Condition not_empty, not_full;
    std::deque<int> buffer;
    constexpr std::size_t kCap = 3;
    std::vector<int> got;
    auto consumer = spindle::spawn([&] {
      for (int i = 0; i < 50; ++i) {
        std::unique_lock lk(lock);
        not_empty.wait(lk, [&] { return !buffer.empty(); });
        got.push_back(buffer.front());
        buffer.pop_front();
        not_full.notify_one();
      }
    });
    for (int i = 0; i < 50; ++i) {
      std::unique_lock lk(lock);
      not_full.wait(lk, [&] { return buffer.size() < kCap; });
      buffer.push_back(i);
      not_empty.notify_one();
    }
    consumer.join();
    REQUIRE(got.size() == 50);
    for (int i = 0; i < 50; ++i) CHECK(got[i] == i);
  });
}

TEST_CASE("condition: notify with nobody waiting does nothing, on any thread") {
  spindle::Condition cond;
  cond.notify_one();
  cond.notify_all();
  std::thread([&] { cond.notify_all(); }).join();
  spindle::run([&] {
    cond.notify_one();
    spindle::Lock lock;
    std::unique_lock lk(lock);
    CHECK(cond.wait_for(lk, 1ms) == std::cv_status::timeout);  // the earlier notify was not kept
  });
}

TEST_CASE(
    "condition: wait_for/wait_until return timeout exactly at the deadline with the lock held (manual "
    "clock)") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Lock lock;
    spindle::Condition cond;
    std::unique_lock lk(lock);
    const auto t0 = spindle::now();
    CHECK(cond.wait_for(lk, 200ms) == std::cv_status::timeout);
    CHECK(spindle::now() - t0 == 200ms);
    CHECK(lk.owns_lock());
    CHECK(lock.locked());
    CHECK(cond.wait_until(lk, t0 + 300ms) == std::cv_status::timeout);
    CHECK(spindle::now() - t0 == 300ms);

    // With a predicate: its value at the deadline.
    int calls = 0;
    CHECK_FALSE(cond.wait_for(lk, 100ms, [&] { return ++calls > 100; }));
    CHECK(spindle::now() - t0 == 400ms);
    CHECK(calls == 2);  // before waiting and at the deadline

    bool flag = false;
    auto setter = spindle::spawn([&] {
      spindle::this_fiber::sleep_for(50ms);
      std::scoped_lock guard(lock);
      flag = true;
      cond.notify_all();
    });
    CHECK(cond.wait_until(lk, spindle::now() + 1s, [&] { return flag; }));
    CHECK(spindle::now() - t0 == 450ms);
    lk.unlock();
    setter.join();
    spindle::this_fiber::sleep_for(2s);  // no timer left behind
    CHECK(spindle::now() - t0 == 2450ms);
  });
}

TEST_CASE(
    "condition: wait without holding the lock throws operation_not_permitted; outside a fiber logic_error") {
  spindle::run([] {
    spindle::Lock lock;
    spindle::Condition cond;
    std::unique_lock lk(lock, std::defer_lock);
    try {
      cond.wait(lk);
      FAIL("wait did not throw");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::operation_not_permitted);
      CHECK(std::string(e.what()).find("spindle::Condition::wait") != std::string::npos);
    }
    std::unique_lock<spindle::Lock> empty;
    CHECK_THROWS_AS(cond.wait(empty), std::system_error);
    // Held by another fiber: not ours to release.
    lock.lock();
    auto t = spindle::spawn([&] {
      std::unique_lock adopted(lock, std::adopt_lock);  // a lie about ownership
      try {
        (void)cond.wait_for(adopted, 1ms);
        FAIL("wait_for did not throw");
      } catch (const std::system_error& e) {
        CHECK(e.code() == std::errc::operation_not_permitted);
      }
      adopted.release();
    });
    t.join();
    CHECK(lock.locked());
    lock.unlock();
  });
  spindle::Lock lock;
  spindle::Condition cond;
  std::unique_lock<spindle::Lock> lk(lock, std::defer_lock);
  try {
    cond.wait(lk);
    FAIL("wait did not throw");
  } catch (const std::logic_error& e) {
    CHECK(std::string(e.what()).find("outside a fiber") != std::string::npos);
  }
}

TEST_CASE("condition: a cancelled wait throws Cancelled with the lock held again") {
  spindle::run([] {
    spindle::Lock lock;
    spindle::Condition cond;
    bool held_in_handler = false;
    auto waiter = spindle::spawn([&] {
      std::unique_lock lk(lock);
      try {
        cond.wait(lk);
      } catch (const spindle::Cancelled&) {
        held_in_handler = lk.owns_lock() && lock.locked();
        throw;
      }
    });
    spindle::this_fiber::yield();
    waiter.cancel();
    CHECK_THROWS_AS(waiter.join(), spindle::Cancelled);
    CHECK(held_in_handler);
    CHECK_FALSE(lock.locked());  // the unique_lock released it while unwinding
  });
}

TEST_CASE(
    "condition: reacquiring the lock after a cancelled wait is not interrupted: it waits for the holder") {
  spindle::run([] {
    spindle::Lock lock;
    spindle::Condition cond;
    std::vector<std::string> log;
    auto waiter = spindle::spawn([&] {
      std::unique_lock lk(lock);
      try {
        cond.wait(lk);
      } catch (const spindle::Cancelled&) {
        log.push_back(lk.owns_lock() ? "cancelled, lock held" : "cancelled, lock not held");
        throw;
      }
    });
    spindle::this_fiber::yield();
    lock.lock();
    waiter.cancel();
    for (int i = 0; i < 5; ++i) spindle::this_fiber::yield();
    CHECK(log.empty());  // still waiting for the lock we hold
    CHECK_FALSE(waiter.done());
    log.push_back("unlock");
    lock.unlock();
    CHECK_THROWS_AS(waiter.join(), spindle::Cancelled);
    CHECK(log == std::vector<std::string>{"unlock", "cancelled, lock held"});
  });
}

TEST_CASE("condition: a Timeout scope throws TimeoutError from wait with the lock held again") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Lock lock;
    spindle::Condition cond;
    std::unique_lock lk(lock);
    {
      spindle::Timeout scope(100ms);
      CHECK_THROWS_AS(cond.wait(lk), spindle::TimeoutError);
      CHECK(scope.expired());
    }
    CHECK(lk.owns_lock());
    CHECK(lock.locked());
  });
}

TEST_CASE(
    "condition: race: the waiter notify_one() chose is cancelled in the same instant: the next waiter gets "
    "the notification") {
  spindle::run([] {
    spindle::Lock lock;
    spindle::Condition cond;
    std::vector<std::string> log;
    auto make = [&](std::string name) {
      return spindle::spawn([&, name] {
        std::unique_lock lk(lock);
        cond.wait(lk);
        log.push_back(name);
      });
    };
    auto w1 = make("w1");
    auto w2 = make("w2");
    auto w3 = make("w3");
    spindle::this_fiber::yield();
    w1.cancel();        // readied as cancelled, not yet run
    cond.notify_one();  // chooses w1
    CHECK_THROWS_AS(w1.join(), spindle::Cancelled);
    w2.join();  // woken by the notification w1 passed on
    CHECK(log == std::vector<std::string>{"w2"});
    CHECK_FALSE(w3.done());  // still waiting: only one notification
    cond.notify_one();
    w3.join();
    CHECK(log == std::vector<std::string>{"w2", "w3"});
  });
}

TEST_CASE(
    "condition: race: wait_for whose own deadline passes as notify_one() chooses it passes the notification "
    "on") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Lock lock;
    spindle::Condition cond;
    auto w1 = spindle::spawn([&] {
      std::unique_lock lk(lock);
      return cond.wait_for(lk, 1s);
    });
    auto w2 = spindle::spawn([&] {
      std::unique_lock lk(lock);
      return cond.wait_for(lk, 1h);
    });
    spindle::this_fiber::sleep_for(1s);  // our timer fires before w1's
    cond.notify_one();
    CHECK(w1.join() == std::cv_status::timeout);
    CHECK(w2.join() == std::cv_status::no_timeout);
  });
}

TEST_CASE("condition: notify from another thread while fibers wait throws std::logic_error") {
  spindle::Condition cond;
  std::atomic<int> stage{0};
  std::thread notifier([&] {
    while (stage.load() != 1) std::this_thread::sleep_for(1ms);
    try {
      cond.notify_one();
    } catch (const std::logic_error& e) {
      if (std::string(e.what()).find("spindle::Condition::notify_one") != std::string::npos) stage = 2;
    }
    if (stage.load() != 2) stage = 3;
  });
  spindle::run([&] {
    spindle::Lock lock;
    std::unique_lock lk(lock);
    auto poker = spindle::spawn([&] {
      stage = 1;
      while (stage.load() == 1) std::this_thread::sleep_for(1ms);  // blocks this thread on purpose
      std::scoped_lock guard(lock);
      cond.notify_all();
    });
    cond.wait(lk);
    poker.join();
  });
  notifier.join();
  CHECK(stage.load() == 2);
}
