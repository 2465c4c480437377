// Cancellation: where Cancelled is thrown, what unwinding may do, Shield,
// and the asyncio rules for a fiber that catches Cancelled.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <spindle/spindle.hpp>

namespace {

using namespace std::chrono_literals;
namespace this_fiber = spindle::this_fiber;

static_assert(!std::is_base_of_v<std::exception, spindle::Cancelled>,
              "catch (const std::exception&) must not swallow cancellation");

template <class F>
auto run_manual(F&& f) {
  spindle::ManualClock clock;
  return spindle::run(spindle::RunOptions{.clock = &clock}, std::forward<F>(f));
}

struct Counter {
  int& n;
  ~Counter() { ++n; }
};

struct Pipe {
  int r = -1;
  int w = -1;
  Pipe() { REQUIRE(::pipe2(&r, O_NONBLOCK | O_CLOEXEC) == 0); }
  ~Pipe() {
    spindle::forget_fd(r);
    spindle::forget_fd(w);
    ::close(r);
    ::close(w);
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
};

// On a fiber: spawns a victim that blocks in `suspend`, cancels it once it is
// parked (or yielding) there, and checks that Cancelled came out of
// `suspend`, that nothing after it ran and that its destructors did.
template <class Suspend>
void check_cancelled_in_fiber(Suspend& suspend) {
  bool reached = false, caught = false, after = false;
  int unwound = 0;
  auto victim = spindle::spawn([&] {
    Counter c{unwound};
    reached = true;
    try {
      suspend();
    } catch (const spindle::Cancelled&) {
      caught = true;
      throw;
    }
    after = true;
  });
  while (!reached) this_fiber::yield();
  this_fiber::yield();  // it is parked (or yielding) inside suspend()
  CHECK_FALSE(victim.done());
  victim.cancel();
  CHECK_THROWS_AS(victim.join(), spindle::Cancelled);
  CHECK(caught);
  CHECK_FALSE(after);
  CHECK(unwound == 1);
  CHECK(victim.done());
  CHECK(victim.cancelled());
}

template <class Suspend>
void check_cancelled_at(Suspend suspend) {
  run_manual([&] { check_cancelled_in_fiber(suspend); });
}

}  // namespace

TEST_CASE("cancel: Cancelled is thrown at sleep") {
  check_cancelled_at([] { this_fiber::sleep_for(1h); });
  check_cancelled_at([] { this_fiber::sleep_until(spindle::now() + 1h); });
}

TEST_CASE("cancel: Cancelled is thrown at join") {
  run_manual([] {
    auto target = spindle::spawn([] { this_fiber::sleep_for(1h); });
    auto join = [&] { target.join(); };
    check_cancelled_in_fiber(join);
    auto wait = [&] { target.wait(); };
    check_cancelled_in_fiber(wait);
    // Cancelling the joiner does not cancel the task it waited for.
    CHECK_FALSE(target.done());
    target.cancel();
  });
}

TEST_CASE("cancel: Cancelled is thrown at Future::get") {
  spindle::Promise<int> promise;
  auto future = promise.get_future();
  check_cancelled_at([&] { future.get(); });
  // The future was not consumed by the interrupted get().
  CHECK(future.valid());
  promise.set_value(3);
  CHECK(future.ready());
}

TEST_CASE("cancel: Cancelled is thrown at an I/O wait") {
  Pipe p;
  check_cancelled_at([&] { spindle::wait_readable(p.r); });
  // The interrupted wait left no waiter behind: a new one may wait again.
  run_manual([&] {
    auto reader = spindle::spawn([&] {
      char c = 0;
      while (::read(p.r, &c, 1) != 1) spindle::wait_readable(p.r);
      return c;
    });
    this_fiber::yield();
    REQUIRE(::write(p.w, "z", 1) == 1);
    CHECK(reader.join() == 'z');
  });
}

TEST_CASE("cancel: Cancelled is thrown at yield") {
  check_cancelled_at([] {
    for (;;) this_fiber::yield();
  });
}

TEST_CASE("cancel: Cancelled is thrown at gather and TaskGroup::join") {
  run_manual([] {
    auto a = spindle::spawn([] { this_fiber::sleep_for(1h); });
    auto gather = [&] { spindle::gather(a); };
    check_cancelled_in_fiber(gather);
    // gather cancels what it gathers when it is interrupted.
    CHECK(a.cancelled());
  });
  check_cancelled_at([] {
    spindle::TaskGroup g;
    g.spawn([] { this_fiber::sleep_for(1h); });
    g.join();
  });
}

TEST_CASE("cancel: a fiber parked inside a catch block is cancelled cleanly") {
  run_manual([] {
    std::string seen;
    auto t = spindle::spawn([&] {
      try {
        throw std::runtime_error("handled");
      } catch (const std::runtime_error& e) {
        try {
          this_fiber::sleep_for(1h);
        } catch (const spindle::Cancelled&) {
          seen = e.what();  // the outer exception is still the one caught
          throw;
        }
      }
    });
    this_fiber::yield();
    t.cancel();
    CHECK_THROWS_AS(t.join(), spindle::Cancelled);
    CHECK(seen == "handled");
    CHECK(std::uncaught_exceptions() == 0);
    CHECK(std::current_exception() == nullptr);
  });
}

TEST_CASE("cancel: a task cancelled before it ever ran never runs its body") {
  run_manual([] {
    bool ran = false;
    auto token = std::make_shared<int>(0);
    std::weak_ptr<int> watch = token;
    auto t = spindle::spawn([&ran, token = std::move(token)] { ran = *token == 0; });
    t.cancel();
    CHECK_THROWS_AS(t.join(), spindle::Cancelled);
    CHECK_FALSE(ran);
    CHECK(t.cancelled());
    CHECK(watch.expired());  // what the function captured is released
  });
}

TEST_CASE("cancel: a fiber that cancels itself is interrupted at its next suspension point") {
  run_manual([] {
    bool after_cancel = false, after_sleep = false;
    std::optional<spindle::TaskRef<void>> self;
    auto t = spindle::spawn([&] {
      this_fiber::yield();
      self->cancel();
      after_cancel = true;  // cancel() itself does not throw
      this_fiber::sleep_for(1s);
      after_sleep = true;
    });
    self.emplace(t.ref());
    CHECK_THROWS_AS(t.join(), spindle::Cancelled);
    CHECK(after_cancel);
    CHECK_FALSE(after_sleep);
  });
}

TEST_CASE("cancel: cancel() on a finished task does nothing") {
  run_manual([] {
    auto t = spindle::spawn([] { return 1; });
    t.wait();
    t.cancel();
    CHECK_FALSE(t.cancelled());
    CHECK(t.join() == 1);
  });
}

TEST_CASE("cancel: destructors run during cancellation unwinding, innermost first") {
  run_manual([] {
    std::string order;
    struct Mark {
      std::string& out;
      char c;
      ~Mark() { out += c; }
    };
    auto t = spindle::spawn([&] {
      Mark a{order, 'a'};
      {
        Mark b{order, 'b'};
        [&] {
          Mark c{order, 'c'};
          this_fiber::sleep_for(1h);
        }();
      }
    });
    this_fiber::yield();
    t.cancel();
    CHECK_THROWS_AS(t.join(), spindle::Cancelled);
    CHECK(order == "cba");
  });
}

TEST_CASE("cancel: a destructor that sleeps while unwinding is not interrupted again") {
  run_manual([] {
    bool cleanup_done = false;
    spindle::Duration cleanup_took{};
    struct SlowCleanup {
      bool& done;
      spindle::Duration& took;
      ~SlowCleanup() {
        auto t0 = spindle::now();
        this_fiber::sleep_for(10s);
        took = spindle::now() - t0;
        done = true;
      }
    };
    auto t = spindle::spawn([&] {
      SlowCleanup s{cleanup_done, cleanup_took};
      this_fiber::sleep_for(1h);
    });
    this_fiber::sleep_for(1s);
    t.cancel();
    this_fiber::sleep_for(1s);  // t is sleeping in its destructor now
    CHECK_FALSE(cleanup_done);
    t.cancel();  // a second cancel must not cut the cleanup short
    CHECK_THROWS_AS(t.join(), spindle::Cancelled);
    CHECK(cleanup_done);
    CHECK(cleanup_took == 10s);
  });
}

TEST_CASE("cancel: a destructor that joins while unwinding is not interrupted again") {
  run_manual([] {
    bool helper_finished = false;
    bool joined_in_dtor = false;
    struct JoinsHelper {
      spindle::Task<void>& helper;
      bool& joined;
      ~JoinsHelper() {
        helper.join();
        joined = true;
      }
    };
    auto t = spindle::spawn([&] {
      auto helper = spindle::spawn([&] {
        spindle::Shield s;  // the helper itself must finish its work
        this_fiber::sleep_for(5s);
        helper_finished = true;
      });
      JoinsHelper j{helper, joined_in_dtor};
      this_fiber::sleep_for(1h);
    });
    this_fiber::sleep_for(1s);
    t.cancel();
    this_fiber::yield();
    t.cancel();
    CHECK_THROWS_AS(t.join(), spindle::Cancelled);
    CHECK(helper_finished);
    CHECK(joined_in_dtor);
  });
}

TEST_CASE("cancel: a Future::get in a destructor while unwinding is not interrupted") {
  run_manual([] {
    spindle::Promise<int> promise;
    int got = 0;
    struct WaitsForValue {
      spindle::Future<int> f;
      int& out;
      ~WaitsForValue() { out = f.get(); }
    };
    auto t = spindle::spawn([&] {
      WaitsForValue w{promise.get_future(), got};
      this_fiber::sleep_for(1h);
    });
    this_fiber::yield();
    t.cancel();
    this_fiber::yield();
    t.cancel();
    this_fiber::sleep_for(1s);
    CHECK_FALSE(t.done());
    promise.set_value(99);
    CHECK_THROWS_AS(t.join(), spindle::Cancelled);
    CHECK(got == 99);
  });
}

TEST_CASE("Shield: defers cancellation until it closes, then the next suspension point throws") {
  run_manual([] {
    bool shielded_sleep_done = false, after_shield = false, caught = false;
    spindle::TimePoint shield_closed{};
    auto t = spindle::spawn([&] {
      {
        spindle::Shield s;
        this_fiber::sleep_for(5s);  // a cancel arriving now is deferred
        this_fiber::yield();
        shielded_sleep_done = true;
      }
      shield_closed = spindle::now();
      after_shield = true;  // no suspension point between: runs
      try {
        this_fiber::yield();
      } catch (const spindle::Cancelled&) {
        caught = true;
        throw;
      }
    });
    const auto t0 = spindle::now();
    this_fiber::sleep_for(1s);
    t.cancel();
    CHECK_THROWS_AS(t.join(), spindle::Cancelled);
    CHECK(shielded_sleep_done);
    CHECK(after_shield);
    CHECK(caught);
    CHECK(shield_closed - t0 == 5s);
  });
}

TEST_CASE("Shield: nested shields defer until the outermost closes") {
  run_manual([] {
    int stage = 0;
    auto t = spindle::spawn([&] {
      spindle::Shield outer;
      {
        spindle::Shield inner;
        this_fiber::sleep_for(2s);
        stage = 1;
      }
      this_fiber::sleep_for(2s);  // still shielded by outer
      stage = 2;
    });
    this_fiber::sleep_for(1s);
    t.cancel();
    t.join();  // the body finished without a suspension point after the shield
    CHECK(stage == 2);
    CHECK_FALSE(t.cancelled());
  });
}

TEST_CASE("cancel: after catching Cancelled, a second cancel() is needed to interrupt again") {
  run_manual([] {
    bool caught_first = false, slept_after_catch = false, caught_second = false;
    auto t = spindle::spawn([&] {
      try {
        this_fiber::sleep_for(1h);
      } catch (const spindle::Cancelled&) {
        caught_first = true;  // swallowed, like catching CancelledError in asyncio
      }
      this_fiber::sleep_for(5s);  // not interrupted: the cancel was delivered once
      slept_after_catch = true;
      try {
        this_fiber::sleep_for(1h);
      } catch (const spindle::Cancelled&) {
        caught_second = true;
        throw;
      }
    });
    this_fiber::sleep_for(1s);
    t.cancel();
    this_fiber::sleep_for(1s);
    CHECK(caught_first);
    CHECK_FALSE(slept_after_catch);
    this_fiber::sleep_for(10s);
    CHECK(slept_after_catch);
    CHECK_FALSE(t.done());
    t.cancel();
    CHECK_THROWS_AS(t.join(), spindle::Cancelled);
    CHECK(caught_second);
  });
}

TEST_CASE("cancel: a task that swallows Cancelled and returns normally is not cancelled()") {
  run_manual([] {
    auto t = spindle::spawn([] {
      try {
        this_fiber::sleep_for(1h);
      } catch (const spindle::Cancelled&) {
        return -1;
      }
      return 0;
    });
    this_fiber::yield();
    t.cancel();
    CHECK(t.join() == -1);
    CHECK_FALSE(t.cancelled());
  });
}

TEST_CASE("Cancelled: catch (const std::exception&) does not swallow it") {
  run_manual([] {
    bool swallowed = false;
    auto t = spindle::spawn([&] {
      try {
        this_fiber::sleep_for(1h);
      } catch (const std::exception&) {
        swallowed = true;
      }
    });
    this_fiber::yield();
    t.cancel();
    CHECK_THROWS_AS(t.join(), spindle::Cancelled);
    CHECK_FALSE(swallowed);
    CHECK(std::string(spindle::Cancelled{}.what()) == "spindle::Cancelled");
  });
}
