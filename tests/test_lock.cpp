// spindle::Lock: mutual exclusion, FIFO hand-off without barging, the std
// lock adaptors, ownership errors, timed locking, and the races where a
// waiter is cancelled or times out at the moment unlock() hands it the lock.
//
// The races are arranged deterministically with the scheduler, not with
// sleeps: cancel() readies a parked fiber at once but it runs only at the
// canceller's next suspension point, so "cancel, then unlock" hands the lock
// to a fiber that will resume cancelled. For timeouts, a manual clock and
// the timer heap's FIFO order for equal deadlines decide who runs first.
#include <doctest/doctest.h>
#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;

namespace {

template <class F>
std::system_error catch_system_error(F&& f) {
  try {
    f();
  } catch (const std::system_error& e) {
    return e;
  }
  FAIL("no std::system_error was thrown");
  return std::system_error(std::error_code{});
}

template <class F>
std::string logic_error_text(F&& f) {
  try {
    f();
  } catch (const std::logic_error& e) {
    return e.what();
  }
  FAIL("no std::logic_error was thrown");
  return {};
}

}  // namespace

TEST_CASE("lock: lock and unlock of a free lock; locked() tells") {
  spindle::run([] {
    spindle::Lock lock;
    CHECK_FALSE(lock.locked());
    lock.lock();
    CHECK(lock.locked());
    lock.unlock();
    CHECK_FALSE(lock.locked());
  });
}

TEST_CASE("lock: taking a free lock is not a suspension point: a pending cancel is not delivered there") {
  spindle::run([] {
    spindle::Lock lock;
    std::vector<std::string> log;
    spindle::Task<void> a;
    a = spindle::spawn([&] {
      // b cancels us while we are runnable: that takes effect at our next
      // suspension point, which taking a free lock is not (as in asyncio).
      spindle::this_fiber::yield();
      lock.lock();
      log.push_back("locked");
      lock.unlock();
      spindle::this_fiber::yield();
      log.push_back("not reached");
    });
    auto b = spindle::spawn([&] { a.cancel(); });
    a.wait();
    b.join();
    CHECK(a.cancelled());
    CHECK(log == std::vector<std::string>{"locked"});
    CHECK_FALSE(lock.locked());
  });
}

TEST_CASE("lock: works with std::scoped_lock, std::unique_lock and std::lock") {
  spindle::run([] {
    spindle::Lock a, b;
    {
      std::scoped_lock both(a, b);
      CHECK(a.locked());
      CHECK(b.locked());
    }
    CHECK_FALSE(a.locked());
    CHECK_FALSE(b.locked());
    {
      std::unique_lock lk(a);
      CHECK(lk.owns_lock());
      lk.unlock();
      CHECK_FALSE(a.locked());
      CHECK(lk.try_lock());
      CHECK(a.locked());
    }
    CHECK_FALSE(a.locked());
    {
      std::unique_lock lk(a, std::try_to_lock);
      CHECK(lk.owns_lock());
      auto t = spindle::spawn([&] {
        std::unique_lock other(a, std::try_to_lock);
        return other.owns_lock();
      });
      CHECK_FALSE(t.join());
    }
    CHECK_FALSE(a.locked());
  });
}

TEST_CASE("lock: try_lock fails while another fiber holds the lock and never parks") {
  spindle::run([] {
    spindle::Lock lock;
    CHECK(lock.try_lock());
    CHECK_FALSE(lock.try_lock());  // the owner too: no recursion
    auto t = spindle::spawn([&] { return lock.try_lock(); });
    CHECK_FALSE(t.join());
    lock.unlock();
    auto u = spindle::spawn([&] {
      bool got = lock.try_lock();
      if (got) lock.unlock();
      return got;
    });
    CHECK(u.join());
  });
}

TEST_CASE("lock: a critical section that parks keeps the others out") {
  spindle::run([] {
    spindle::Lock lock;
    int inside = 0, max_inside = 0, done = 0;
    std::vector<spindle::Task<void>> tasks;
    for (int i = 0; i < 20; ++i)
      tasks.push_back(spindle::spawn([&] {
        for (int k = 0; k < 10; ++k) {
          std::scoped_lock guard(lock);
          ++inside;
          max_inside = std::max(max_inside, inside);
          spindle::this_fiber::yield();
          spindle::this_fiber::sleep_for(0ms);
          --inside;
          ++done;
        }
      }));
    for (auto& t : tasks) t.join();
    CHECK(max_inside == 1);
    CHECK(done == 200);
    CHECK_FALSE(lock.locked());
  });
}

TEST_CASE("lock: waiters get the lock in FIFO order") {
  spindle::run([] {
    spindle::Lock lock;
    std::vector<int> order;
    lock.lock();
    std::vector<spindle::Task<void>> tasks;
    for (int i = 0; i < 8; ++i)
      tasks.push_back(spindle::spawn([&, i] {
        std::scoped_lock guard(lock);
        order.push_back(i);
      }));
    spindle::this_fiber::yield();  // all eight park in lock(), in spawn order
    lock.unlock();
    for (auto& t : tasks) t.join();
    CHECK(order == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7});
  });
}

TEST_CASE("lock: hand-off: a fiber that unlocks and relocks cannot overtake a waiter") {
  spindle::run([] {
    spindle::Lock lock;
    std::vector<std::string> log;
    lock.lock();
    auto waiter = spindle::spawn([&] {
      lock.lock();
      log.push_back("waiter");
      lock.unlock();
    });
    spindle::this_fiber::yield();  // the waiter parks
    lock.unlock();                 // hands the lock to the waiter...
    CHECK(lock.locked());          // ...which owns it before it has even run
    lock.lock();                   // so this parks behind it
    log.push_back("main");
    lock.unlock();
    waiter.join();
    CHECK(log == std::vector<std::string>{"waiter", "main"});
  });
}

TEST_CASE("lock: unlock by a fiber that does not hold the lock throws operation_not_permitted") {
  spindle::run([] {
    spindle::Lock lock;
    auto e = catch_system_error([&] { lock.unlock(); });
    CHECK(e.code() == std::errc::operation_not_permitted);
    CHECK(std::string(e.what()).find("spindle::Lock::unlock") != std::string::npos);

    lock.lock();
    auto t = spindle::spawn([&] {
      auto e2 = catch_system_error([&] { lock.unlock(); });
      CHECK(e2.code() == std::errc::operation_not_permitted);
      CHECK(std::string(e2.what()).find("does not hold") != std::string::npos);
    });
    t.join();
    CHECK(lock.locked());  // nothing changed
    lock.unlock();
  });
}

TEST_CASE("lock: lock() by the owner throws resource_deadlock_would_occur instead of hanging") {
  spindle::run([] {
    spindle::Lock lock;
    lock.lock();
    CHECK(catch_system_error([&] { lock.lock(); }).code() == std::errc::resource_deadlock_would_occur);
    CHECK(catch_system_error([&] { (void)lock.try_lock_for(1s); }).code() ==
          std::errc::resource_deadlock_would_occur);
    lock.unlock();
  });
}

TEST_CASE("lock: lock, try_lock and unlock outside a fiber throw std::logic_error naming the call") {
  spindle::Lock lock;
  CHECK(logic_error_text([&] { lock.lock(); }).find("spindle::Lock::lock") != std::string::npos);
  CHECK(logic_error_text([&] { (void)lock.try_lock(); }).find("spindle::Lock::try_lock") !=
        std::string::npos);
  CHECK(logic_error_text([&] { lock.unlock(); }).find("spindle::Lock::unlock") != std::string::npos);
  CHECK(logic_error_text([&] { (void)lock.try_lock_for(1ms); }).find("outside a fiber") != std::string::npos);
  CHECK_FALSE(lock.locked());
}

TEST_CASE("lock: a waiter cancelled while parked leaves the queue; the lock goes to the next") {
  spindle::run([] {
    spindle::Lock lock;
    std::vector<std::string> log;
    lock.lock();
    auto w1 = spindle::spawn([&] {
      lock.lock();
      log.push_back("w1");
      lock.unlock();
    });
    auto w2 = spindle::spawn([&] {
      lock.lock();
      log.push_back("w2");
      lock.unlock();
    });
    spindle::this_fiber::yield();
    w1.cancel();
    w1.wait();  // w1 has left the queue
    CHECK(w1.cancelled());
    CHECK(lock.locked());
    lock.unlock();
    w2.join();
    CHECK(log == std::vector<std::string>{"w2"});
    CHECK_FALSE(lock.locked());
  });
}

TEST_CASE("lock: race: a waiter cancelled as unlock() hands it the lock passes it on to the next waiter") {
  spindle::run([] {
    spindle::Lock lock;
    std::vector<std::string> log;
    lock.lock();
    auto w1 = spindle::spawn([&] {
      try {
        lock.lock();
        log.push_back("w1 locked");
        lock.unlock();
      } catch (const spindle::Cancelled&) {
        log.push_back("w1 cancelled");
        throw;
      }
    });
    auto w2 = spindle::spawn([&] {
      lock.lock();
      log.push_back("w2 locked");
      spindle::this_fiber::yield();
      lock.unlock();
    });
    spindle::this_fiber::yield();  // w1 then w2 park in lock()
    w1.cancel();                   // w1 is readied as cancelled but has not run
    lock.unlock();                 // and is now handed the lock
    w1.wait();                     // w1 resumes first, passes the lock on; w2 then runs before us
    CHECK(w1.cancelled());
    CHECK(log == std::vector<std::string>{"w1 cancelled", "w2 locked"});
    CHECK(lock.locked());  // w2's: it yields while holding it
    CHECK_FALSE(lock.try_lock());
    w2.join();
    CHECK(log == std::vector<std::string>{"w1 cancelled", "w2 locked"});
    CHECK_FALSE(lock.locked());
  });
}

TEST_CASE(
    "lock: race: a waiter cancelled as it is handed the lock, with nobody behind it, leaves the lock free") {
  spindle::run([] {
    spindle::Lock lock;
    lock.lock();
    auto w = spindle::spawn([&] { lock.lock(); });
    spindle::this_fiber::yield();
    w.cancel();
    lock.unlock();
    CHECK(lock.locked());  // handed to w, which has not run yet
    w.wait();
    CHECK(w.cancelled());
    CHECK_FALSE(lock.locked());
    CHECK(lock.try_lock());
    lock.unlock();
  });
}

TEST_CASE("lock: race: a waiter whose Timeout scope expires as it is handed the lock passes it on") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Lock lock;
    std::vector<std::string> log;
    lock.lock();
    auto w1 = spindle::spawn([&] {
      spindle::Timeout scope(1s);
      try {
        lock.lock();
        log.push_back("w1 locked");
        lock.unlock();
      } catch (const spindle::TimeoutError&) {
        log.push_back("w1 timed out");
      }
    });
    auto w2 = spindle::spawn([&] {
      lock.lock();
      log.push_back("w2 locked");
      lock.unlock();
    });
    // Our timer for +1s is added before w1's (it parks after us), so at +1s
    // we run first and unlock while w1 is readied as timed out.
    spindle::this_fiber::sleep_for(1s);
    lock.unlock();
    w1.join();
    w2.join();
    CHECK(log == std::vector<std::string>{"w1 timed out", "w2 locked"});
    CHECK_FALSE(lock.locked());
  });
}

TEST_CASE(
    "lock: race: try_lock_for whose own deadline passes as it is handed the lock returns false and passes it "
    "on") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Lock lock;
    lock.lock();
    auto w1 = spindle::spawn([&] { return lock.try_lock_for(1s); });
    auto w2 = spindle::spawn([&] {
      lock.lock();
      lock.unlock();
      return true;
    });
    spindle::this_fiber::sleep_for(1s);
    lock.unlock();
    CHECK_FALSE(w1.join());
    CHECK(w2.join());
    CHECK_FALSE(lock.locked());
  });
}

TEST_CASE(
    "lock: try_lock_for times out exactly at its deadline and succeeds when unlocked in time (manual "
    "clock)") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Lock lock;
    lock.lock();
    const auto t0 = spindle::now();
    auto t = spindle::spawn([&] { return lock.try_lock_for(250ms); });
    CHECK_FALSE(t.join());
    CHECK(spindle::now() - t0 == 250ms);
    CHECK(lock.locked());

    auto u = spindle::spawn([&] {
      bool got = lock.try_lock_until(spindle::now() + 1s);
      if (got) lock.unlock();
      return got;
    });
    spindle::this_fiber::sleep_for(100ms);
    lock.unlock();
    CHECK(u.join());
    CHECK(spindle::now() - t0 == 350ms);
    // No timer left behind by the waiter that got the lock.
    spindle::this_fiber::sleep_for(5s);
    CHECK(spindle::now() - t0 == 5350ms);
  });
}

TEST_CASE("lock: a Timeout scope interrupts a parked lock() with TimeoutError; cancellation with Cancelled") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Lock lock;
    lock.lock();
    auto t = spindle::spawn([&] {
      spindle::Timeout scope(100ms);
      CHECK_THROWS_AS(lock.lock(), spindle::TimeoutError);
      CHECK(scope.expired());
    });
    t.join();
    auto c = spindle::spawn([&] { lock.lock(); });
    spindle::this_fiber::yield();
    c.cancel();
    CHECK_THROWS_AS(c.join(), spindle::Cancelled);
    lock.unlock();
    CHECK_FALSE(lock.locked());
  });
}

TEST_CASE("lock: waiting for a lock held by a fiber of another thread's scheduler throws std::logic_error") {
  spindle::Lock lock;
  std::atomic<int> stage{0};
  std::thread other([&] {
    spindle::run([&] {
      lock.lock();
      stage = 1;
      while (stage.load() != 2) std::this_thread::sleep_for(1ms);
      lock.unlock();
    });
  });
  while (stage.load() != 1) std::this_thread::sleep_for(1ms);
  spindle::run(
      [&] { CHECK(logic_error_text([&] { lock.lock(); }).find("another thread") != std::string::npos); });
  stage = 2;
  other.join();
  CHECK_FALSE(lock.locked());
}
