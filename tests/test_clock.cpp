// ManualClock and spindle::now(): paused time with auto-advance, a clock
// that only moves when a fiber moves it, and the real clock outside run().
//
// A broken clock tends to hang rather than fail (a due timer nobody fires),
// so the cases that could hang run their scheduler on a helper thread and
// fail after a generous bound instead.
#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;

namespace {

// Runs `body` on its own thread; false when it did not finish within `limit`
// (the thread is then abandoned, still blocked, and the process exits with
// it: a hang becomes a failure instead of a Meson timeout).
bool finishes_within(std::chrono::seconds limit, std::function<void()> body) {
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
  };
  auto shared = std::make_shared<Shared>();
  std::thread t([shared, body = std::move(body)] {
    body();
    std::lock_guard lock(shared->mu);
    shared->done = true;
    shared->cv.notify_all();
  });
  std::unique_lock lock(shared->mu);
  if (shared->cv.wait_for(lock, limit, [&] { return shared->done; })) {
    lock.unlock();
    t.join();
    return true;
  }
  t.detach();
  return false;
}

}  // namespace

TEST_CASE("clock: spindle::now() outside run is the real monotonic clock") {
  const auto a = spindle::Clock::now();
  const auto n = spindle::now();
  const auto b = spindle::Clock::now();
  CHECK(a <= n);
  CHECK(n <= b);
}

TEST_CASE("clock: a ManualClock starts where told, only moves forward, and drives now() inside run") {
  spindle::ManualClock def;
  CHECK(def.now() == spindle::TimePoint{} + 1h);
  CHECK(def.auto_advance());

  const spindle::TimePoint start = spindle::TimePoint{} + 100h;
  spindle::ManualClock clock(start);
  CHECK(clock.now() == start);
  clock.advance(5s);
  CHECK(clock.now() == start + 5s);
  clock.set(start + 1s);  // backwards: ignored
  CHECK(clock.now() == start + 5s);
  clock.set(start + 7s);
  CHECK(clock.now() == start + 7s);

  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    CHECK(spindle::now() == start + 7s);
    clock.advance(1s);
    CHECK(spindle::now() == start + 8s);
    auto t = spindle::spawn([&] { return spindle::now(); });
    CHECK(t.join() == start + 8s);
  });
  // Outside run, now() is the real clock again.
  const auto real = spindle::now();
  CHECK(real != clock.now());
}

TEST_CASE("clock: auto-advance jumps to the next timer only when nothing is runnable") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    const auto t0 = spindle::now();
    std::vector<spindle::Duration> seen_by_yielder;
    spindle::Duration sleeper_woke{};
    auto sleeper = spindle::spawn([&] {
      spindle::this_fiber::sleep_for(1s);
      sleeper_woke = spindle::now() - t0;
    });
    auto yielder = spindle::spawn([&] {
      for (int i = 0; i < 5000; ++i) {
        seen_by_yielder.push_back(spindle::now() - t0);
        spindle::this_fiber::yield();
      }
    });
    yielder.join();
    // Time stood still while someone could run.
    for (auto d : seen_by_yielder) REQUIRE(d == spindle::Duration::zero());
    sleeper.join();
    CHECK(sleeper_woke == 1s);
    CHECK(spindle::now() - t0 == 1s);
  });
}

TEST_CASE("clock: a Timeout scope follows the manual clock") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    const auto t0 = spindle::now();
    spindle::Timeout scope(90min);
    CHECK(scope.deadline() == t0 + 90min);
    CHECK_THROWS_AS(spindle::this_fiber::sleep_for(2h), spindle::TimeoutError);
    CHECK(spindle::now() - t0 == 90min);
  });
}

TEST_CASE("clock: without auto-advance, a sleeper wakes once a fiber advances the clock past its deadline") {
  const bool finished = finishes_within(30s, [] {
    spindle::ManualClock clock(spindle::TimePoint{} + 1h, /*auto_advance=*/false);
    spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
      const auto t0 = spindle::now();
      bool woke = false;
      auto sleeper = spindle::spawn([&] {
        spindle::this_fiber::sleep_for(1s);
        woke = true;
        CHECK(spindle::now() - t0 == 1s);
      });
      spindle::this_fiber::yield();  // the sleeper parks
      clock.advance(999ms);
      for (int i = 0; i < 3000; ++i) spindle::this_fiber::yield();  // polls now and then
      CHECK_FALSE(woke);
      clock.advance(1ms);
      // The timer is due: the next park of this fiber must fire it rather
      // than block the thread waiting for I/O that will never come.
      sleeper.join();
      CHECK(woke);
    });
  });
  CHECK_MESSAGE(finished, "the scheduler blocked with a due timer (manual clock, auto_advance off)");
}

TEST_CASE("clock: without auto-advance, a due timer is fired while the advancing fiber keeps yielding") {
  // clock.hpp: "Moving the clock readies timers that fall due at the next
  // scheduling point (the caller's next suspension, or its next yield)."
  const bool finished = finishes_within(30s, [] {
    spindle::ManualClock clock(spindle::TimePoint{} + 1h, /*auto_advance=*/false);
    spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
      bool woke = false;
      auto sleeper = spindle::spawn([&] {
        spindle::this_fiber::sleep_for(1s);
        woke = true;
      });
      spindle::this_fiber::yield();
      clock.advance(1s);
      spindle::this_fiber::yield();
      spindle::this_fiber::yield();  // the sleeper, readied at the first, has run by the second
      CHECK(woke);
      // However long it takes, it must happen while this fiber only yields.
      for (int i = 0; i < 5000 && !woke; ++i) spindle::this_fiber::yield();
      CHECK(woke);
      sleeper.join();
    });
  });
  CHECK(finished);
}

TEST_CASE("clock: runs on two threads with their own manual clocks are independent") {
  spindle::ManualClock c1(spindle::TimePoint{} + 1h);
  spindle::ManualClock c2(spindle::TimePoint{} + 5h);
  spindle::Duration d1{}, d2{};
  std::thread other([&] {
    spindle::run(spindle::RunOptions{.clock = &c2}, [&] {
      const auto t0 = spindle::now();
      CHECK(t0 == spindle::TimePoint{} + 5h);
      spindle::this_fiber::sleep_for(3s);
      d2 = spindle::now() - t0;
    });
  });
  spindle::run(spindle::RunOptions{.clock = &c1}, [&] {
    const auto t0 = spindle::now();
    CHECK(t0 == spindle::TimePoint{} + 1h);
    spindle::this_fiber::sleep_for(7s);
    d1 = spindle::now() - t0;
  });
  other.join();
  CHECK(d1 == 7s);
  CHECK(d2 == 3s);
  CHECK(c1.now() == spindle::TimePoint{} + 1h + 7s);
  CHECK(c2.now() == spindle::TimePoint{} + 5h + 3s);
}

TEST_CASE("clock: a duration too long for the clock means forever, not a deadline in the past") {
  using spindle::TimePoint;
  using spindle::detail::deadline_after;
  const TimePoint t{std::chrono::hours(1)};
  CHECK(deadline_after(t, std::chrono::hours::max()) == TimePoint::max());
  CHECK(deadline_after(t, std::chrono::nanoseconds::max()) == TimePoint::max());
  CHECK(deadline_after(t, std::chrono::hours(3'000'000)) == TimePoint::max());  // ~342 years
  CHECK(deadline_after(t, std::chrono::duration<double>(1e300)) == TimePoint::max());
  CHECK(deadline_after(t, std::chrono::hours::min()) == TimePoint::min());
  CHECK(deadline_after(t, 1500ms) == t + 1500ms);
  CHECK(deadline_after(t, -2s) == t - 2s);
  CHECK(deadline_after(t, std::chrono::duration<double, std::nano>(1.5)) == t + 2ns);  // rounded up

  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    const auto t0 = spindle::now();
    // Each "forever" wait is ended by a cancel after 1 s of manual time;
    // with a wrapped deadline it would have ended at once.
    auto canceller = [&](spindle::Task<void>& t) {
      return spindle::spawn([&t] {
        spindle::this_fiber::sleep_for(1s);
        t.cancel();
      });
    };
    auto sleeper = spindle::spawn([] { spindle::this_fiber::sleep_for(std::chrono::hours::max()); });
    auto c1 = canceller(sleeper);
    sleeper.wait();
    CHECK(sleeper.cancelled());
    CHECK(spindle::now() - t0 == 1s);

    spindle::Promise<int> p;
    auto f = p.get_future();
    auto future_waiter = spindle::spawn([&] { (void)f.wait_for(std::chrono::hours(3'000'000)); });
    auto c2 = canceller(future_waiter);
    future_waiter.wait();
    CHECK(future_waiter.cancelled());
    CHECK(spindle::now() - t0 == 2s);

    auto scoped = spindle::spawn([] {
      spindle::Timeout scope(std::chrono::hours::max());
      CHECK(scope.deadline() == spindle::TimePoint::max());
      spindle::this_fiber::sleep_for(std::chrono::hours(1));  // the scope does not fire
    });
    scoped.join();
    CHECK(spindle::now() - t0 == 1h + 2s);

    auto long_task = spindle::spawn([] { spindle::this_fiber::sleep_for(5s); });
    CHECK(long_task.wait_for(std::chrono::hours::max()));
    CHECK(spindle::now() - t0 == 1h + 7s);
    CHECK(spindle::wait_for([] { return 3; }, std::chrono::hours::max()) == 3);

    // Hugely negative durations are plain timeouts.
    CHECK_FALSE(f.wait_for(std::chrono::hours::min()));
    {
      spindle::Timeout scope(std::chrono::hours::min());
      CHECK_THROWS_AS(spindle::this_fiber::yield(), spindle::TimeoutError);
    }
    CHECK(spindle::now() - t0 == 1h + 7s);
    p.set_value(1);
    c1.join();
    c2.join();
  });
}
