// Timeout scopes (asyncio.timeout) and their interplay with Shield.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <system_error>
#include <utility>

#include <spindle/spindle.hpp>

namespace {

using namespace std::chrono_literals;
namespace this_fiber = spindle::this_fiber;
using WallClock = std::chrono::steady_clock;

template <class F>
auto run_manual(F&& f) {
  spindle::ManualClock clock;
  return spindle::run(spindle::RunOptions{.clock = &clock}, std::forward<F>(f));
}

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

// Runs f, which must throw TimeoutError; returns its what().
template <class F>
std::string timeout_what(F&& f) {
  try {
    f();
  } catch (const spindle::TimeoutError& e) {
    return e.what();
  }
  FAIL("no TimeoutError");
  return {};
}

}  // namespace

TEST_CASE("Timeout: a sleep throws TimeoutError exactly at the deadline (manual clock)") {
  run_manual([] {
    const auto t0 = spindle::now();
    bool after = false;
    spindle::Timeout t(2s);
    CHECK(t.deadline() == t0 + 2s);
    CHECK_FALSE(t.expired());
    CHECK_THROWS_AS(
        [&] {
          this_fiber::sleep_for(1h);
          after = true;
        }(),
        spindle::TimeoutError);
    CHECK_FALSE(after);
    CHECK(spindle::now() - t0 == 2s);
    CHECK(t.expired());
  });
}

TEST_CASE("Timeout: with an absolute deadline") {
  run_manual([] {
    const auto t0 = spindle::now();
    spindle::Timeout t(t0 + 1500ms);
    CHECK_THROWS_AS(this_fiber::sleep_until(t0 + 1h), spindle::TimeoutError);
    CHECK(spindle::now() - t0 == 1500ms);
    CHECK(t.expired());
  });
}

TEST_CASE("Timeout: a call that finishes before the deadline is unaffected") {
  run_manual([] {
    const auto t0 = spindle::now();
    spindle::Timeout t(5s);
    this_fiber::sleep_for(2s);
    auto r = spindle::spawn([] {
               this_fiber::sleep_for(1s);
               return 4;
             }).join();
    CHECK(r == 4);
    CHECK(spindle::now() - t0 == 3s);
    CHECK_FALSE(t.expired());
  });
}

TEST_CASE("Timeout: real clock, the sleep is interrupted not early") {
  spindle::run([] {
    auto t0 = WallClock::now();
    {
      spindle::Timeout t(50ms);
      CHECK_THROWS_AS(this_fiber::sleep_for(10s), spindle::TimeoutError);
      CHECK(t.expired());
    }
    auto elapsed = WallClock::now() - t0;
    CHECK(elapsed >= 50ms);
    CHECK(elapsed < 50ms + 1500ms);
  });
}

TEST_CASE("Timeout: a deadline already past makes the first blocking call throw at once") {
  run_manual([] {
    const auto t0 = spindle::now();
    spindle::Timeout t(t0 - 1s);
    CHECK_THROWS_AS(this_fiber::sleep_for(1s), spindle::TimeoutError);
    CHECK(spindle::now() == t0);
    CHECK(t.expired());
  });
  run_manual([] {
    spindle::Timeout t(0s);
    CHECK_THROWS_AS(this_fiber::yield(), spindle::TimeoutError);
  });
}

TEST_CASE("Timeout: nested scopes, the earliest deadline wins and expired() names the scope that fired") {
  run_manual([] {
    const auto t0 = spindle::now();
    {
      spindle::Timeout outer(5s);
      spindle::Timeout inner(2s);
      CHECK_THROWS_AS(this_fiber::sleep_for(1h), spindle::TimeoutError);
      CHECK(spindle::now() - t0 == 2s);
      CHECK(inner.expired());
      CHECK_FALSE(outer.expired());
    }
    const auto t1 = spindle::now();
    {
      spindle::Timeout outer(2s);
      spindle::Timeout inner(5s);
      CHECK_THROWS_AS(this_fiber::sleep_for(1h), spindle::TimeoutError);
      CHECK(spindle::now() - t1 == 2s);
      CHECK(outer.expired());
      CHECK_FALSE(inner.expired());
    }
  });
}

TEST_CASE("Timeout: an inner TimeoutError caught inside the outer scope leaves the outer one running") {
  run_manual([] {
    const auto t0 = spindle::now();
    spindle::Timeout outer(10s);
    {
      spindle::Timeout inner(1s);
      CHECK_THROWS_AS(this_fiber::sleep_for(1h), spindle::TimeoutError);
      CHECK(inner.expired());
    }
    CHECK_FALSE(outer.expired());
    this_fiber::sleep_for(3s);  // within the outer deadline: fine
    CHECK(spindle::now() - t0 == 4s);
    CHECK_THROWS_AS(this_fiber::sleep_for(1h), spindle::TimeoutError);
    CHECK(spindle::now() - t0 == 10s);
    CHECK(outer.expired());
  });
}

TEST_CASE("Timeout: an inner later scope does not extend an outer earlier one") {
  run_manual([] {
    const auto t0 = spindle::now();
    spindle::Timeout outer(1s);
    this_fiber::sleep_for(500ms);
    spindle::Timeout inner(10s);
    CHECK(inner.deadline() == t0 + 500ms + 10s);
    CHECK_THROWS_AS(this_fiber::sleep_for(1h), spindle::TimeoutError);
    CHECK(spindle::now() - t0 == 1s);
    CHECK(outer.expired());
    CHECK_FALSE(inner.expired());
  });
}

TEST_CASE("Timeout: after the scope closes, blocking calls work again") {
  run_manual([] {
    const auto t0 = spindle::now();
    {
      spindle::Timeout t(1s);
      CHECK_THROWS_AS(this_fiber::sleep_for(1h), spindle::TimeoutError);
      // Still inside the expired scope: every blocking call throws at once.
      CHECK_THROWS_AS(this_fiber::yield(), spindle::TimeoutError);
      CHECK_THROWS_AS(this_fiber::sleep_for(1ms), spindle::TimeoutError);
    }
    this_fiber::sleep_for(5s);
    this_fiber::yield();
    CHECK(spindle::spawn([] { return 1; }).join() == 1);
    CHECK(spindle::now() - t0 == 6s);
  });
}

TEST_CASE("Timeout: applies to join") {
  run_manual([] {
    const auto t0 = spindle::now();
    auto slow = spindle::spawn([] {
      this_fiber::sleep_for(10s);
      return 1;
    });
    {
      spindle::Timeout t(2s);
      CHECK_THROWS_AS(slow.join(), spindle::TimeoutError);
      CHECK(t.expired());
    }
    CHECK(spindle::now() - t0 == 2s);
    // The joined task was not cancelled by the joiner's timeout, and the
    // failed join did not consume it.
    CHECK_FALSE(slow.done());
    CHECK(slow.join() == 1);
    CHECK(spindle::now() - t0 == 10s);
  });
}

TEST_CASE("Timeout: applies to Future::get") {
  run_manual([] {
    const auto t0 = spindle::now();
    spindle::Promise<int> p;
    auto f = p.get_future();
    {
      spindle::Timeout t(3s);
      CHECK_THROWS_AS(f.get(), spindle::TimeoutError);
    }
    CHECK(spindle::now() - t0 == 3s);
    CHECK(f.valid());
    p.set_value(5);
    CHECK(f.get() == 5);
  });
}

TEST_CASE("Timeout: applies to wait_readable") {
  run_manual([] {
    Pipe p;
    const auto t0 = spindle::now();
    {
      spindle::Timeout t(4s);
      CHECK_THROWS_AS(spindle::wait_readable(p.r), spindle::TimeoutError);
      CHECK(t.expired());
    }
    CHECK(spindle::now() - t0 == 4s);
    // The timed-out wait left nothing behind: a later wait works.
    REQUIRE(::write(p.w, "k", 1) == 1);
    spindle::wait_readable(p.r);
    char c = 0;
    CHECK(::read(p.r, &c, 1) == 1);
    CHECK(c == 'k');
  });
}

TEST_CASE("Timeout: applies to yield after the deadline") {
  spindle::ManualClock clock(spindle::TimePoint{} + 1h, /*auto_advance=*/false);
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Timeout t(1s);
    this_fiber::yield();  // before the deadline: fine
    clock.advance(999ms);
    this_fiber::yield();
    clock.advance(1ms);
    CHECK_THROWS_AS(this_fiber::yield(), spindle::TimeoutError);
    CHECK(t.expired());
  });
}

TEST_CASE("Timeout: applies to gather, TaskGroup::join and wait_for, which clean up their tasks") {
  run_manual([] {
    int unwound = 0;
    struct Counter {
      int& n;
      ~Counter() { ++n; }
    };
    auto sleeper = [&] {
      Counter c{unwound};
      this_fiber::sleep_for(1h);
    };
    const auto t0 = spindle::now();
    {
      spindle::Timeout t(1s);
      auto a = spindle::spawn(sleeper);
      auto b = spindle::spawn(sleeper);
      CHECK_THROWS_AS(spindle::gather(a, b), spindle::TimeoutError);
      CHECK(unwound == 2);  // gather cancelled and waited for both
    }
    {
      spindle::Timeout t(1s);
      CHECK_THROWS_AS(
          [&] {
            spindle::TaskGroup g;
            g.spawn(sleeper);
            g.join();
          }(),
          spindle::TimeoutError);
      CHECK(unwound == 3);
    }
    {
      spindle::Timeout t(1s);
      CHECK_THROWS_AS(spindle::wait_for(spindle::spawn(sleeper), 1h), spindle::TimeoutError);
      CHECK(unwound == 4);
      CHECK(t.expired());
    }
    CHECK(spindle::now() - t0 == 3s);
  });
}

TEST_CASE("Shield: hides an outer Timeout until it closes") {
  run_manual([] {
    const auto t0 = spindle::now();
    spindle::Timeout t(1s);
    {
      spindle::Shield s;
      this_fiber::sleep_for(5s);  // past the outer deadline, not interrupted
      this_fiber::yield();
    }
    CHECK(spindle::now() - t0 == 5s);
    CHECK_FALSE(t.expired());
    CHECK_THROWS_AS(this_fiber::yield(), spindle::TimeoutError);  // due at once
    CHECK(t.expired());
  });
}

TEST_CASE("Shield: a Timeout inside a Shield still fires") {
  run_manual([] {
    const auto t0 = spindle::now();
    spindle::Timeout outer(10s);
    {
      spindle::Shield s;
      spindle::Timeout inner(2s);
      CHECK_THROWS_AS(this_fiber::sleep_for(1h), spindle::TimeoutError);
      CHECK(inner.expired());
    }
    CHECK(spindle::now() - t0 == 2s);
    CHECK_FALSE(outer.expired());
    this_fiber::sleep_for(1s);
  });
}

TEST_CASE(
    "Shield: a Timeout inside a Shield fires at its own deadline even when a hidden outer one is earlier") {
  run_manual([] {
    const auto t0 = spindle::now();
    spindle::Timeout outer(1s);
    {
      spindle::Shield s;
      spindle::Timeout inner(3s);
      CHECK_THROWS_AS(this_fiber::sleep_for(1h), spindle::TimeoutError);
      CHECK(spindle::now() - t0 == 3s);
      CHECK(inner.expired());
      // The hidden outer scope did not make this call throw.
      CHECK_FALSE(outer.expired());
    }
  });
}

TEST_CASE("Timeout: destructors that park while a TimeoutError unwinds are not cut short") {
  run_manual([] {
    bool cleanup_done = false;
    struct SlowCleanup {
      bool& done;
      ~SlowCleanup() {
        this_fiber::sleep_for(5s);
        done = true;
      }
    };
    const auto t0 = spindle::now();
    spindle::Timeout t(1s);
    CHECK_THROWS_AS(
        [&] {
          SlowCleanup s{cleanup_done};
          this_fiber::sleep_for(1h);
        }(),
        spindle::TimeoutError);
    CHECK(cleanup_done);
    CHECK(spindle::now() - t0 == 6s);
  });
}

// While a fiber unwinds, the Timeout scopes outside the running destructor
// are suspended, but one the destructor itself opens (to bound a graceful
// shutdown) applies.
TEST_CASE("Timeout: a Timeout opened inside a destructor during unwinding still fires") {
  run_manual([] {
    bool timed_out = false;
    struct BoundedCleanup {
      bool& timed_out;
      ~BoundedCleanup() {
        try {
          spindle::Timeout t(1s);
          this_fiber::sleep_for(1h);  // e.g. waiting for a peer's goodbye
        } catch (const spindle::TimeoutError&) {
          timed_out = true;
        }
      }
    };
    const auto t0 = spindle::now();
    auto task = spindle::spawn([&] {
      BoundedCleanup c{timed_out};
      this_fiber::sleep_for(1h);
    });
    this_fiber::yield();
    task.cancel();
    CHECK_THROWS_AS(task.join(), spindle::Cancelled);
    CHECK(timed_out);
    CHECK(spindle::now() - t0 == 1s);
  });
}

TEST_CASE("TimeoutError: a std::system_error with errc::timed_out whose what() names the call") {
  static_assert(std::is_base_of_v<std::system_error, spindle::TimeoutError>);
  run_manual([] {
    spindle::Promise<void> p;
    auto f = p.get_future();
    auto t = spindle::spawn([] { this_fiber::sleep_for(1h); });
    Pipe pipe;
    spindle::Timeout scope(1s);
    std::string what = timeout_what([] { this_fiber::sleep_for(1h); });
    CHECK(what.find("spindle::this_fiber::sleep") != std::string::npos);
    CHECK(timeout_what([] { this_fiber::yield(); }).find("spindle::this_fiber::yield") != std::string::npos);
    CHECK(timeout_what([&] { t.join(); }).find("spindle::Task::join") != std::string::npos);
    CHECK(timeout_what([&] { f.get(); }).find("spindle::Future::get") != std::string::npos);
    CHECK(timeout_what([&] { spindle::wait_readable(pipe.r); }).find("spindle::wait_readable") !=
          std::string::npos);
    try {
      this_fiber::sleep_for(1s);
      FAIL("no TimeoutError");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::timed_out);
      CHECK(e.code() == std::make_error_code(std::errc::timed_out));
    }
    t.cancel();
  });
}
