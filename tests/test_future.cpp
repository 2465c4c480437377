// Promise<T> / Future<T>: values, exceptions, misuse errors, and the wake of
// a parked fiber from the same fiber's thread, from a plain OS thread that
// never runs spindle, and from another thread's scheduler.
//
// Cross-thread cases loop many times with fresh state each round because the
// interesting bugs (a lost wake, a wake delivered twice, a wake that reaches
// a fiber after it ended) are races; every blocking call sits inside a
// Timeout scope so that a lost wake fails the case instead of hanging it.
#include <doctest/doctest.h>
#include <fmt/core.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;

namespace {

// Long enough that only a lost wake reaches it, even under valgrind.
constexpr auto kPatience = 20s;

struct Boom : std::runtime_error {
  explicit Boom(int v) : std::runtime_error("boom"), value(v) {}
  int value;
};

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

// Spins (with a yield of the OS thread) for about `d`; for racing threads.
void spin_for(std::chrono::nanoseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) std::this_thread::yield();
}

}  // namespace

// ------------------------------------------------------------- same thread

TEST_CASE("future: get returns the value set before anyone waits, without parking") {
  spindle::run([] {
    spindle::Promise<int> p;
    auto f = p.get_future();
    CHECK(f.valid());
    CHECK_FALSE(f.ready());
    p.set_value(42);
    CHECK(f.ready());
    bool other_ran = false;
    auto t = spindle::spawn([&] { other_ran = true; });
    // A ready future does not suspend, so the spawned fiber has not run yet.
    CHECK(f.get() == 42);
    CHECK_FALSE(other_ran);
    CHECK_FALSE(f.valid());
    t.join();
    CHECK(other_ran);
  });
}

TEST_CASE("future: get of a void future returns once set_value() was called") {
  spindle::run([] {
    spindle::Promise<void> p;
    auto f = p.get_future();
    auto t = spindle::spawn([&] { p.set_value(); });
    f.get();
    CHECK_FALSE(f.valid());
    t.join();
  });
}

TEST_CASE("future: a move-only value is moved out by get") {
  spindle::run([] {
    spindle::Promise<std::unique_ptr<int>> p;
    auto f = p.get_future();
    p.set_value(std::make_unique<int>(7));
    auto v = f.get();
    REQUIRE(v);
    CHECK(*v == 7);
  });
}

TEST_CASE("future: set_exception is rethrown by get, for value and void futures") {
  spindle::run([] {
    spindle::Promise<int> p;
    auto f = p.get_future();
    p.set_exception(std::make_exception_ptr(Boom(3)));
    try {
      (void)f.get();
      FAIL("get did not throw");
    } catch (const Boom& b) {
      CHECK(b.value == 3);
    }
    spindle::Promise<void> pv;
    auto fv = pv.get_future();
    auto t = spindle::spawn([&] { pv.set_exception(std::make_exception_ptr(Boom(4))); });
    CHECK_THROWS_AS(fv.get(), Boom);
    t.join();
  });
}

TEST_CASE("future: get parks until another fiber sets the value") {
  spindle::run([] {
    spindle::Promise<std::string> p;
    auto f = p.get_future();
    std::vector<std::string> log;
    auto setter = spindle::spawn([&] {
      log.push_back("setter start");
      for (int i = 0; i < 3; ++i) spindle::this_fiber::yield();
      log.push_back("set");
      p.set_value("hello");
      log.push_back("setter end");
    });
    log.push_back("get");
    CHECK(f.get() == "hello");
    log.push_back("got");
    setter.join();
    // The setter keeps running after set_value: the woken fiber is only
    // readied, it runs at the setter's next suspension point.
    CHECK(log == std::vector<std::string>{"get", "setter start", "set", "setter end", "got"});
  });
}

TEST_CASE("future: get after the promise was set and destroyed returns the value") {
  // The shared state outlives the promise; the future alone keeps it alive,
  // and get() must not use it after dropping that last reference.
  spindle::run([] {
    spindle::Future<std::string> f;
    {
      spindle::Promise<std::string> p;
      f = p.get_future();
      p.set_value(std::string(100, 'x'));
    }
    CHECK(f.get() == std::string(100, 'x'));

    spindle::Future<int> fe;
    {
      spindle::Promise<int> p;
      fe = p.get_future();
      p.set_exception(std::make_exception_ptr(Boom(5)));
    }
    CHECK_THROWS_AS(fe.get(), Boom);
  });
}

TEST_CASE("future: several fibers wait() on one future and all wake on set") {
  spindle::run([] {
    spindle::Promise<int> p;
    auto f = p.get_future();
    int woken = 0;
    std::vector<spindle::Task<void>> waiters;
    for (int i = 0; i < 10; ++i)
      waiters.push_back(spindle::spawn([&] {
        f.wait();
        CHECK(f.ready());
        ++woken;
      }));
    spindle::this_fiber::yield();  // let every waiter park
    CHECK(woken == 0);
    p.set_value(1);
    for (auto& w : waiters) w.join();
    CHECK(woken == 10);
    CHECK(f.get() == 1);
  });
}

// ------------------------------------------------------------------ errors

TEST_CASE("future: a promise destroyed unset makes get throw broken_promise") {
  spindle::run([] {
    SUBCASE("destroyed before get") {
      spindle::Future<int> f;
      {
        spindle::Promise<int> p;
        f = p.get_future();
      }
      CHECK(f.ready());
      auto e = catch_system_error([&] { (void)f.get(); });
      CHECK(e.code() == spindle::errc::broken_promise);
      CHECK(e.code().category() == spindle::error_category());
      CHECK(e.code().category().name() == std::string("spindle"));
    }
    SUBCASE("destroyed by another fiber while get is parked") {
      auto p = std::make_unique<spindle::Promise<void>>();
      auto f = p->get_future();
      auto t = spindle::spawn([&] {
        spindle::this_fiber::yield();
        p.reset();
      });
      auto e = catch_system_error([&] { f.get(); });
      CHECK(e.code() == spindle::errc::broken_promise);
      t.join();
    }
    SUBCASE("move-assigning over an unset promise breaks it") {
      spindle::Promise<int> p;
      auto f = p.get_future();
      p = spindle::Promise<int>();
      auto e = catch_system_error([&] { (void)f.get(); });
      CHECK(e.code() == spindle::errc::broken_promise);
      // The new promise in p works on its own.
      auto f2 = p.get_future();
      p.set_value(2);
      CHECK(f2.get() == 2);
    }
  });
}

TEST_CASE("future: a satisfied promise that is destroyed does not break its future") {
  spindle::run([] {
    spindle::Future<int> f;
    {
      spindle::Promise<int> p;
      f = p.get_future();
      p.set_value(9);
    }
    CHECK(f.get() == 9);
  });
}

TEST_CASE("future: get_future twice throws future_already_retrieved") {
  spindle::Promise<int> p;
  auto f = p.get_future();
  auto e = catch_system_error([&] { (void)p.get_future(); });
  CHECK(e.code() == spindle::errc::future_already_retrieved);
  CHECK(std::string(e.what()).find("get_future") != std::string::npos);
  // The first future still works.
  p.set_value(1);
  spindle::run([&] { CHECK(f.get() == 1); });
}

TEST_CASE("future: setting a promise twice throws promise_already_satisfied and keeps the first value") {
  spindle::Promise<int> p;
  auto f = p.get_future();
  p.set_value(1);
  auto e1 = catch_system_error([&] { p.set_value(2); });
  CHECK(e1.code() == spindle::errc::promise_already_satisfied);
  CHECK(std::string(e1.what()).find("set_value") != std::string::npos);
  auto e2 = catch_system_error([&] { p.set_exception(std::make_exception_ptr(Boom(1))); });
  CHECK(e2.code() == spindle::errc::promise_already_satisfied);
  CHECK(std::string(e2.what()).find("set_exception") != std::string::npos);
  spindle::run([&] { CHECK(f.get() == 1); });

  spindle::Promise<void> pv;
  pv.set_exception(std::make_exception_ptr(Boom(1)));
  CHECK(catch_system_error([&] { pv.set_value(); }).code() == spindle::errc::promise_already_satisfied);
}

TEST_CASE("future: calls on empty futures and moved-from promises throw no_state") {
  spindle::Future<int> empty;
  CHECK_FALSE(empty.valid());
  CHECK_FALSE(empty.ready());
  spindle::run([&] {
    auto e = catch_system_error([&] { (void)empty.get(); });
    CHECK(e.code() == spindle::errc::no_state);
    CHECK(std::string(e.what()).find("spindle::Future::get") != std::string::npos);
    CHECK(catch_system_error([&] { empty.wait(); }).code() == spindle::errc::no_state);
    CHECK(catch_system_error([&] { (void)empty.wait_for(1ms); }).code() == spindle::errc::no_state);

    // A consumed future is empty too.
    spindle::Promise<int> p;
    auto f = p.get_future();
    p.set_value(1);
    CHECK(f.get() == 1);
    CHECK(catch_system_error([&] { (void)f.get(); }).code() == spindle::errc::no_state);
  });

  spindle::Promise<int> p;
  spindle::Promise<int> q = std::move(p);
  CHECK(catch_system_error([&] { (void)p.get_future(); }).code() == spindle::errc::no_state);
  CHECK(catch_system_error([&] { p.set_value(1); }).code() == spindle::errc::no_state);
  CHECK(catch_system_error([&] { p.set_exception(nullptr); }).code() == spindle::errc::no_state);
}

TEST_CASE("future: the error category is \"spindle\" and its messages are meaningful") {
  const auto& cat = spindle::error_category();
  CHECK(std::string(cat.name()) == "spindle");
  CHECK(&cat == &spindle::error_category());
  auto msg = [&](spindle::errc e) { return std::error_code(e).message(); };
  CHECK(msg(spindle::errc::broken_promise).find("broken promise") != std::string::npos);
  CHECK(msg(spindle::errc::future_already_retrieved).find("already retrieved") != std::string::npos);
  CHECK(msg(spindle::errc::promise_already_satisfied).find("already satisfied") != std::string::npos);
  CHECK(msg(spindle::errc::no_state).find("no state") != std::string::npos);
  CHECK(msg(spindle::errc::task_already_joined).find("already joined") != std::string::npos);
  CHECK_FALSE(cat.message(999).empty());
  // Codes compare by category, not just by number.
  std::error_code ec = spindle::errc::broken_promise;
  CHECK(ec.value() == 1);
  CHECK(ec != std::error_code(1, std::generic_category()));
  // The what() of a thrown error carries the category's message.
  spindle::Future<int> f;
  {
    spindle::Promise<int> p;
    f = p.get_future();
  }
  spindle::run([&] {
    auto e = catch_system_error([&] { (void)f.get(); });
    CHECK(std::string(e.what()).find("broken promise") != std::string::npos);
  });
}

TEST_CASE("future: get of an unset future outside a fiber throws std::logic_error naming the call") {
  spindle::Promise<int> p;
  auto f = p.get_future();
  try {
    (void)f.get();
    FAIL("get did not throw");
  } catch (const std::logic_error& e) {
    CHECK(std::string(e.what()).find("spindle::Future::get") != std::string::npos);
  }
  // The failed call left the future usable.
  CHECK(f.valid());
  p.set_value(3);
  CHECK(f.get() == 3);  // ready: needs no fiber
}

// ---------------------------------------------------------- timed waits

TEST_CASE("future: wait_for returns false on timeout, exactly at the deadline (manual clock)") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Promise<int> p;
    auto f = p.get_future();
    const auto t0 = spindle::now();
    CHECK_FALSE(f.wait_for(250ms));
    CHECK(spindle::now() - t0 == 250ms);
    CHECK_FALSE(f.wait_until(t0 + 100ms));  // in the past
    CHECK(spindle::now() - t0 == 250ms);
    CHECK(f.valid());
    p.set_value(5);
    CHECK(f.wait_for(1h));
    CHECK(spindle::now() - t0 == 250ms);  // ready: no wait at all
    CHECK(f.get() == 5);
  });
}

TEST_CASE("future: wait_for returns true as soon as another fiber sets the value (manual clock)") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Promise<void> p;
    auto f = p.get_future();
    const auto t0 = spindle::now();
    auto setter = spindle::spawn([&] {
      spindle::this_fiber::sleep_for(300ms);
      p.set_value();
    });
    CHECK(f.wait_for(1s));
    CHECK(spindle::now() - t0 == 300ms);
    // No timer was left behind: a long sleep is exact.
    spindle::this_fiber::sleep_for(2s);
    CHECK(spindle::now() - t0 == 2300ms);
    setter.join();
  });
}

TEST_CASE("future: wait_for with the real clock is not early") {
  spindle::run([] {
    spindle::Promise<int> p;
    auto f = p.get_future();
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(f.wait_for(20ms));
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took >= 20ms);
    CHECK(took < 20ms + 5s);
  });
}

TEST_CASE("future: a Timeout scope earlier than wait_for's own deadline throws TimeoutError") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Promise<int> p;
    auto f = p.get_future();
    const auto t0 = spindle::now();
    {
      spindle::Timeout scope(100ms);
      CHECK_THROWS_AS((void)f.wait_for(1s), spindle::TimeoutError);
      CHECK(scope.expired());
    }
    CHECK(spindle::now() - t0 == 100ms);
    // Its own earlier deadline is a plain false.
    {
      spindle::Timeout scope(1s);
      CHECK_FALSE(f.wait_for(100ms));
      CHECK_FALSE(scope.expired());
    }
    p.set_value(1);
    CHECK(f.get() == 1);
  });
}

TEST_CASE("future: a fiber cancelled while parked in get throws Cancelled and the future stays usable") {
  spindle::run([] {
    spindle::Promise<int> p;
    auto f = p.get_future();
    bool cancelled = false;
    auto t = spindle::spawn([&] {
      try {
        f.wait();
      } catch (const spindle::Cancelled&) {
        cancelled = true;
        throw;
      }
    });
    spindle::this_fiber::yield();
    t.cancel();
    t.wait();
    CHECK(cancelled);
    CHECK(t.cancelled());
    p.set_value(8);
    CHECK(f.get() == 8);
  });
}

// ------------------------------------------------------- across threads

TEST_CASE("future: set_value from a plain std::thread wakes the parked fiber (1,000 rounds)") {
  spindle::run([] {
    std::mt19937 rng(12345);
    int parked_rounds = 0;
    for (int i = 0; i < 1000; ++i) {
      spindle::Promise<int> p;
      auto f = p.get_future();
      std::atomic<bool> waiting{false};
      const int delay_us = static_cast<int>(rng() % 4) * 20;  // 0, 20, 40, 60 us
      std::thread producer([&, i] {
        while (!waiting.load(std::memory_order_acquire)) std::this_thread::yield();
        spin_for(std::chrono::microseconds(delay_us));
        p.set_value(i);
      });
      waiting.store(true, std::memory_order_release);
      if (!f.ready()) ++parked_rounds;
      int v = -1;
      {
        spindle::Timeout scope(kPatience);
        v = f.get();
      }
      CHECK(v == i);
      producer.join();
    }
    MESSAGE(parked_rounds << " of 1000 rounds found the future unset before get");
  });
}

TEST_CASE("future: a plain thread destroying the promise (set or unset) wakes the parked fiber") {
  spindle::run([] {
    for (int i = 0; i < 200; ++i) {
      auto p = std::make_unique<spindle::Promise<int>>();
      auto f = p->get_future();
      const bool set = i % 2 == 0;
      std::thread producer([&] {
        spin_for(std::chrono::microseconds(i % 7 * 10));
        if (set) p->set_value(i);
        p.reset();
      });
      spindle::Timeout scope(kPatience);
      if (set) {
        CHECK(f.get() == i);
      } else {
        auto e = catch_system_error([&] { (void)f.get(); });
        CHECK(e.code() == spindle::errc::broken_promise);
      }
      producer.join();
    }
  });
}

TEST_CASE("future: set_exception from a plain thread is rethrown by the woken fiber") {
  spindle::run([] {
    for (int i = 0; i < 100; ++i) {
      spindle::Promise<void> p;
      auto f = p.get_future();
      std::thread producer([&] {
        spin_for(std::chrono::microseconds(i % 5 * 10));
        p.set_exception(std::make_exception_ptr(Boom(i)));
      });
      spindle::Timeout scope(kPatience);
      try {
        f.get();
        FAIL("no exception");
      } catch (const Boom& b) {
        CHECK(b.value == i);
      }
      producer.join();
    }
  });
}

TEST_CASE("future: one producer thread wakes 1,000 fibers each parked on its own promise") {
  constexpr int kFibers = 1000;
  spindle::run([] {
    std::vector<spindle::Promise<int>> promises(kFibers);
    std::vector<int> got(kFibers, -1);
    std::vector<spindle::Task<void>> fibers;
    fibers.reserve(kFibers);
    for (int i = 0; i < kFibers; ++i)
      fibers.push_back(spindle::spawn([&got, f = promises[i].get_future(), i]() mutable {
        spindle::Timeout scope(kPatience);
        got[i] = f.get();
      }));
    spindle::this_fiber::yield();  // every fiber has parked in get()
    std::atomic<bool> go{false};
    std::thread producer([&] {
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      // Reverse order, in bursts, so some wakes coalesce and some don't.
      for (int i = kFibers - 1; i >= 0; --i) {
        promises[i].set_value(i * 3);
        if (i % 100 == 0) spin_for(50us);
      }
    });
    go.store(true, std::memory_order_release);
    for (auto& t : fibers) t.join();
    producer.join();
    for (int i = 0; i < kFibers; ++i) CHECK(got[i] == i * 3);
  });
}

TEST_CASE("future: several fibers wait() on one future set by a plain thread") {
  spindle::run([] {
    for (int round = 0; round < 100; ++round) {
      spindle::Promise<int> p;
      auto f = p.get_future();
      int woken = 0;
      std::vector<spindle::Task<void>> waiters;
      for (int i = 0; i < 5; ++i)
        waiters.push_back(spindle::spawn([&] {
          spindle::Timeout scope(kPatience);
          f.wait();
          ++woken;
        }));
      std::thread producer([&] {
        spin_for(std::chrono::microseconds(round % 4 * 15));
        p.set_value(round);
      });
      for (auto& w : waiters) w.join();
      producer.join();
      CHECK(woken == 5);
      CHECK(f.get() == round);
    }
  });
}

TEST_CASE("future: timed-out waits racing a cross-thread set never lose or repeat the value") {
  // Each round: a fiber polls the future with tiny timeouts while a plain
  // thread sets it at a random moment, so the set often lands between the
  // timer firing and the fiber resuming. The fiber then ends at once; a
  // remote wake still queued for it would touch freed memory (ASan) and a
  // lost one would hang the final get (the Timeout scope turns that into a
  // failure).
  const std::uint32_t seed = 20240611;
  CAPTURE(seed);
  spindle::run([&] {
    std::mt19937 rng(seed);
    int timeouts = 0;
    int got_by_poller = 0;
    for (int round = 0; round < 2000; ++round) {
      CAPTURE(round);
      spindle::Promise<int> p;
      auto f = p.get_future();
      const int delay_ns = static_cast<int>(rng() % 60'000);
      const int poll_ns = 1 + static_cast<int>(rng() % 20'000);
      int delivered = 0;
      std::thread producer([&] {
        spin_for(std::chrono::nanoseconds(delay_ns));
        p.set_value(round);
      });
      auto poller = spindle::spawn([&] {
        for (;;) {
          if (f.wait_for(std::chrono::nanoseconds(poll_ns))) {
            CHECK(f.ready());
            ++delivered;
            ++got_by_poller;
            return;
          }
          ++timeouts;
          if (rng() % 8 == 0) return;  // give up early; main fetches it
        }
      });
      poller.join();
      {
        spindle::Timeout scope(kPatience);
        CHECK(f.get() == round);
      }
      producer.join();
      CHECK(delivered <= 1);
      // Something else parks right after: a stale wake must not disturb it.
      spindle::this_fiber::yield();
    }
    MESSAGE(timeouts << " timed-out waits, " << got_by_poller << " of 2000 values seen by the polling fiber");
  });
}

TEST_CASE("future: a fiber on another thread's scheduler sets the value (and the reverse)") {
  // Both sides run spindle: the wake goes from one scheduler to the other
  // through the poller's wake, not through a plain OS thread.
  for (int round = 0; round < 200; ++round) {
    spindle::Promise<int> to_b;
    spindle::Promise<int> to_a;
    auto fa = to_a.get_future();
    auto fb = to_b.get_future();
    int b_got = -1;
    std::thread b([&] {
      spindle::run([&] {
        spindle::Timeout scope(kPatience);
        b_got = fb.get();
        spindle::this_fiber::yield();
        to_a.set_value(b_got + 1);
      });
    });
    int a_got = -1;
    spindle::run([&] {
      spindle::this_fiber::sleep_for(std::chrono::microseconds(round % 3 * 20));
      to_b.set_value(round);
      spindle::Timeout scope(kPatience);
      a_got = fa.get();
    });
    b.join();
    CHECK(b_got == round);
    CHECK(a_got == round + 1);
  }
}

TEST_CASE("future: a cross-thread set interrupts the idle step's timed wait for a far timer") {
  spindle::run([] {
    // A long sleeper makes the idle step block with a 10 s timeout; the set
    // must end that block through the poller's wake, not when it expires.
    auto sleeper = spindle::spawn([] { spindle::this_fiber::sleep_for(10s); });
    spindle::Promise<int> p;
    auto f = p.get_future();
    std::thread producer([&] {
      std::this_thread::sleep_for(10ms);
      p.set_value(1);
    });
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(f.get() == 1);
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took < 5s);
    producer.join();
    CHECK_FALSE(sleeper.done());
    sleeper.cancel();
    sleeper.wait();
    CHECK(sleeper.cancelled());
  });
}

TEST_CASE("future: fibers on two schedulers wait on one future set by a third thread") {
  for (int round = 0; round < 50; ++round) {
    spindle::Promise<int> p;
    auto f = p.get_future();
    std::atomic<int> parked{0};
    int got_a = 0;
    int got_b = 0;
    auto waiter = [&](int& got) {
      spindle::run([&] {
        auto t = spindle::spawn([&] {
          spindle::Timeout scope(kPatience);
          ++parked;
          f.wait();
          got = 1;
        });
        t.join();
      });
    };
    std::thread a([&] { waiter(got_a); });
    std::thread b([&] { waiter(got_b); });
    while (parked.load() < 2) std::this_thread::yield();
    spin_for(std::chrono::microseconds(round % 3 * 30));
    p.set_value(round);
    a.join();
    b.join();
    CHECK(got_a == 1);
    CHECK(got_b == 1);
    spindle::run([&] { CHECK(f.get() == round); });
  }
}
