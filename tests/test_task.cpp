// spawn(), Task and TaskRef; gather, gather_settled and wait_for; TaskGroup.
#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <spindle/spindle.hpp>

namespace {

using namespace std::chrono_literals;
namespace this_fiber = spindle::this_fiber;

// Every test runs on a manual clock: sleeps take no real time and the
// order of events is exact.
template <class F>
auto run_manual(F&& f) {
  spindle::ManualClock clock;
  return spindle::run(spindle::RunOptions{.clock = &clock}, std::forward<F>(f));
}

struct Counter {
  int& n;
  ~Counter() { ++n; }
};

struct MyError : std::runtime_error {
  int code;
  MyError(const std::string& w, int c) : std::runtime_error(w), code(c) {}
};

// Runs `body`; if Cancelled leaves it, records that and lets it go on.
template <class F>
auto note_cancel(bool& cancelled, F body) {
  return [&cancelled, body = std::move(body)]() mutable {
    try {
      return body();
    } catch (const spindle::Cancelled&) {
      cancelled = true;
      throw;
    }
  };
}

template <class E, class F>
E expect_throw(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  FAIL("no exception of the expected type");
  throw std::logic_error("unreachable");
}

}  // namespace

// ------------------------------------------------------------ spawn

TEST_CASE("spawn: passes arguments by value and returns the result") {
  run_manual([] {
    auto t = spindle::spawn(
        [](int a, const std::string& s, std::unique_ptr<int> p) { return s + std::to_string(a + *p); }, 40,
        std::string("answer="), std::make_unique<int>(2));
    CHECK(t.join() == "answer=42");

    // Arguments are copied at spawn: later changes are not seen.
    int x = 1;
    auto by_value = spindle::spawn([](int v) { return v; }, x);
    x = 2;
    CHECK(by_value.join() == 1);

    // std::ref passes a reference on purpose.
    int y = 0;
    spindle::spawn([](int& r) { r = 9; }, std::ref(y)).join();
    CHECK(y == 9);
  });
}

TEST_CASE("spawn: a void task joins to void") {
  run_manual([] {
    bool ran = false;
    auto t = spindle::spawn([&] { ran = true; });
    static_assert(std::is_same_v<decltype(t), spindle::Task<void>>);
    static_assert(std::is_void_v<decltype(t.join())>);
    CHECK_FALSE(t.done());
    t.join();
    CHECK(ran);
    CHECK(t.done());
    CHECK_FALSE(t.cancelled());
  });
}

TEST_CASE("spawn: a move-only result is moved out by join") {
  run_manual([] {
    auto t = spindle::spawn([] {
      this_fiber::sleep_for(1ms);
      return std::make_unique<std::string>("moved");
    });
    std::unique_ptr<std::string> r = t.join();
    REQUIRE(r);
    CHECK(*r == "moved");
  });
}

TEST_CASE("spawn: SpawnOptions name shows in this_fiber::name() and Task::name()") {
  run_manual([] {
    std::string inside;
    auto t = spindle::spawn(spindle::SpawnOptions{.name = "worker-7"}, [&] { inside = this_fiber::name(); });
    CHECK(t.name() == "worker-7");
    t.join();
    CHECK(inside == "worker-7");
    CHECK(t.name() == "worker-7");  // still there after the fiber ended
  });
}

TEST_CASE("spawn: the default name is fiber-<id>, in the fiber and on the Task") {
  run_manual([] {
    std::string inside;
    std::uint64_t id_inside = 0;
    auto t = spindle::spawn([&] {
      inside = this_fiber::name();
      id_inside = this_fiber::id();
    });
    t.join();
    CHECK(id_inside == t.id());
    CHECK(inside == "fiber-" + std::to_string(t.id()));
    CHECK(t.name() == inside);
  });
}

TEST_CASE("spawn: ids are unique and this_fiber::id matches Task::id") {
  run_manual([] {
    std::set<std::uint64_t> ids;
    ids.insert(this_fiber::id());
    std::vector<spindle::Task<std::uint64_t>> tasks;
    for (int i = 0; i < 100; ++i) tasks.push_back(spindle::spawn([] { return this_fiber::id(); }));
    for (auto& t : tasks) {
      auto id = t.id();
      CHECK(t.join() == id);
      CHECK(id != 0);
      ids.insert(id);
    }
    // Pooled stacks and records are reused, ids are not.
    for (int i = 0; i < 100; ++i) ids.insert(spindle::spawn([] { return this_fiber::id(); }).join());
    CHECK(ids.size() == 201);
  });
}

// ------------------------------------------------------------ join

TEST_CASE("join: joining twice throws std::system_error with errc::task_already_joined") {
  run_manual([] {
    auto t = spindle::spawn([] { return 1; });
    CHECK(t.join() == 1);
    auto e = expect_throw<std::system_error>([&] { t.join(); });
    CHECK(e.code() == spindle::errc::task_already_joined);
    CHECK(e.code().category() == spindle::error_category());
    CHECK(std::string(e.what()).find("spindle::Task::join") != std::string::npos);
  });
}

TEST_CASE("join: a moved-from Task throws errc::no_state") {
  run_manual([] {
    auto t = spindle::spawn([] { return 1; });
    auto u = std::move(t);
    CHECK_FALSE(t.valid());
    CHECK(u.valid());
    auto e = expect_throw<std::system_error>([&] { t.join(); });
    CHECK(e.code() == spindle::errc::no_state);
    CHECK(u.join() == 1);
    spindle::Task<int> empty;
    CHECK(expect_throw<std::system_error>([&] { empty.join(); }).code() == spindle::errc::no_state);
    CHECK_FALSE(empty.done());
    empty.cancel();  // harmless on an empty handle
  });
}

TEST_CASE("join: a fiber joining itself throws resource_deadlock_would_occur") {
  run_manual([] {
    std::optional<spindle::Task<void>> self;
    std::error_code code;
    std::string what;
    self.emplace(spindle::spawn([&] {
      this_fiber::yield();  // `self` is set by now
      try {
        self->join();
      } catch (const std::system_error& e) {
        code = e.code();
        what = e.what();
      }
    }));
    self->wait();
    CHECK(code == std::errc::resource_deadlock_would_occur);
    CHECK(what.find("spindle::Task::join") != std::string::npos);
    self->join();  // the failed self-join did not consume the join
  });
}

TEST_CASE("join: an exception leaving a fiber reaches join()") {
  run_manual([] {
    auto t = spindle::spawn([]() -> int {
      this_fiber::sleep_for(1s);
      throw MyError("bad thing", 17);
    });
    auto e = expect_throw<MyError>([&] { t.join(); });
    CHECK(std::string(e.what()) == "bad thing");
    CHECK(e.code == 17);
    CHECK(t.done());
    CHECK_FALSE(t.cancelled());
    CHECK(t.error() != nullptr);

    // Non-std exceptions too.
    auto u = spindle::spawn([] { throw 5; });
    CHECK(expect_throw<int>([&] { u.join(); }) == 5);
  });
}

TEST_CASE("join: wait() and wait_for() observe completion without consuming the result") {
  run_manual([] {
    auto t = spindle::spawn([] {
      this_fiber::sleep_for(10s);
      return 3;
    });
    CHECK_FALSE(t.wait_for(5s));
    CHECK_FALSE(t.done());
    CHECK(t.wait_for(10s));
    CHECK(t.done());
    t.wait();
    CHECK(t.join() == 3);
  });
}

// ------------------------------------------------------------ lifetime

TEST_CASE("Task: destroyed while running cancels the fiber and waits until it has unwound") {
  run_manual([] {
    int destroyed = 0;
    bool cancelled = false;
    bool finished = false;
    const auto t0 = spindle::now();
    {
      auto t = spindle::spawn(note_cancel(cancelled, [&] {
        Counter c{destroyed};
        this_fiber::sleep_for(1h);
        finished = true;
      }));
      this_fiber::yield();  // let it park
      CHECK(destroyed == 0);
    }  // ~Task
    CHECK(destroyed == 1);
    CHECK(cancelled);
    CHECK_FALSE(finished);
    CHECK(spindle::now() == t0);  // nobody waited for the hour

    // A task that never ran is cancelled before its body starts.
    bool ran = false;
    {
      auto t = spindle::spawn([&] { ran = true; });
    }
    CHECK_FALSE(ran);

    // Move-assigning over a running task does the same to the old one.
    int destroyed2 = 0;
    auto a = spindle::spawn([&] {
      Counter c{destroyed2};
      this_fiber::sleep_for(1h);
    });
    this_fiber::yield();
    a = spindle::spawn([] {});
    CHECK(destroyed2 == 1);
    a.join();
  });
}

TEST_CASE("Task: detach lets the fiber run on") {
  bool finished = false;
  run_manual([&] {
    bool started = false;
    {
      auto t = spindle::spawn([&] {
        started = true;
        this_fiber::sleep_for(5s);
        finished = true;
      });
      t.detach();
      CHECK_FALSE(t.valid());
    }
    this_fiber::sleep_for(6s);
    CHECK(started);
    CHECK(finished);
  });
  CHECK(finished);
}

TEST_CASE("TaskRef: copies share the task and never cancel it") {
  run_manual([] {
    std::optional<spindle::Task<int>> t;
    t.emplace(spindle::spawn([] {
      this_fiber::sleep_for(1s);
      return 11;
    }));
    spindle::TaskRef<int> r1 = t->ref();
    {
      spindle::TaskRef<int> r2 = r1;  // copy
      spindle::TaskRef<int> r3;
      r3 = r2;  // copy assignment
      CHECK(r3.id() == t->id());
      CHECK(r3.name() == t->name());
    }  // copies dropped: no cancellation
    t->detach();
    t.reset();
    CHECK_FALSE(r1.done());
    CHECK(r1.join() == 11);  // the ref keeps the result alive
    CHECK_FALSE(r1.cancelled());
    auto e = expect_throw<std::system_error>([&] { r1.join(); });
    CHECK(e.code() == spindle::errc::task_already_joined);
  });
}

// ------------------------------------------------------------ gather

TEST_CASE("gather: a tuple of results from tasks of different types, void as std::monostate") {
  run_manual([] {
    auto [a, b, c] = spindle::gather(spindle::spawn([] {
                                       this_fiber::sleep_for(3s);
                                       return 1;
                                     }),
                                     spindle::spawn([] {
                                       this_fiber::sleep_for(1s);
                                       return std::string("two");
                                     }),
                                     spindle::spawn([] { this_fiber::sleep_for(2s); }));
    CHECK(a == 1);
    CHECK(b == "two");
    static_assert(std::is_same_v<decltype(c), std::monostate>);
    // Lvalue tasks as well; gathering waits for the slowest (3 s in total).
    auto x = spindle::spawn([] { return 5; });
    auto y = spindle::spawn([] { return std::make_unique<int>(6); });
    auto [vx, vy] = spindle::gather(x, y);
    CHECK(vx == 5);
    CHECK(*vy == 6);
  });
}

TEST_CASE("gather: a vector of tasks gives a vector of results in order") {
  run_manual([] {
    const auto t0 = spindle::now();
    std::vector<spindle::Task<int>> tasks;
    for (int i = 0; i < 10; ++i)
      tasks.push_back(spindle::spawn([i] {
        this_fiber::sleep_for(std::chrono::seconds(10 - i));
        return i * i;
      }));
    std::vector<int> r = spindle::gather(tasks);
    CHECK(r == std::vector<int>{0, 1, 4, 9, 16, 25, 36, 49, 64, 81});
    CHECK(spindle::now() - t0 == 10s);

    std::vector<spindle::Task<void>> voids;
    int n = 0;
    for (int i = 0; i < 3; ++i) voids.push_back(spindle::spawn([&] { ++n; }));
    auto v = spindle::gather(voids);
    CHECK(v.size() == 3);
    CHECK(n == 3);

    std::vector<spindle::Task<int>> none;
    CHECK(spindle::gather(none).empty());
  });
}

TEST_CASE("gather: the first failure is rethrown and the other tasks are cancelled") {
  run_manual([] {
    bool slow_cancelled = false, slower_cancelled = false;
    int unwound = 0;
    const auto t0 = spindle::now();
    auto slow = spindle::spawn(note_cancel(slow_cancelled, [&] {
      Counter c{unwound};
      this_fiber::sleep_for(10s);
      return 1;
    }));
    auto failing = spindle::spawn([]() -> int {
      this_fiber::sleep_for(1s);
      throw MyError("gather failure", 1);
    });
    auto slower = spindle::spawn(note_cancel(slower_cancelled, [&] {
      Counter c{unwound};
      this_fiber::sleep_for(20s);
    }));
    auto e = expect_throw<MyError>([&] { spindle::gather(slow, failing, slower); });
    CHECK(std::string(e.what()) == "gather failure");
    CHECK(spindle::now() - t0 == 1s);
    // The others were cancelled and have finished unwinding.
    CHECK(slow_cancelled);
    CHECK(slower_cancelled);
    CHECK(unwound == 2);
    CHECK(slow.cancelled());
    CHECK(slower.cancelled());
  });
}

TEST_CASE("gather: the failure first in time wins over one that comes later in the argument list order") {
  run_manual([] {
    // a fails second (after a yield), b fails first; both are done by the
    // time the gathering fiber runs again.
    auto a = spindle::spawn([] {
      this_fiber::yield();
      throw MyError("a", 1);
    });
    auto b = spindle::spawn([] { throw MyError("b", 2); });
    auto e = expect_throw<MyError>([&] { spindle::gather(a, b); });
    CHECK(e.code == 2);
  });
}

TEST_CASE("gather: a cancelled gatherer cancels and waits for every task") {
  run_manual([] {
    int unwound = 0;
    auto outer = spindle::spawn([&] {
      auto a = spindle::spawn([&] {
        Counter c{unwound};
        this_fiber::sleep_for(1h);
      });
      auto b = spindle::spawn([&] {
        Counter c{unwound};
        this_fiber::sleep_for(2h);
      });
      spindle::gather(a, b);
    });
    this_fiber::sleep_for(1s);
    outer.cancel();
    CHECK_THROWS_AS(outer.join(), spindle::Cancelled);
    CHECK(unwound == 2);
  });
}

TEST_CASE("gather_settled: returns every outcome") {
  run_manual([] {
    auto [ok, bad, nothing] = spindle::gather_settled(spindle::spawn([] {
                                                        this_fiber::sleep_for(2s);
                                                        return 7;
                                                      }),
                                                      spindle::spawn([]() -> std::string {
                                                        this_fiber::sleep_for(1s);
                                                        throw MyError("settled", 3);
                                                      }),
                                                      spindle::spawn([] { this_fiber::sleep_for(3s); }));
    REQUIRE(ok.has_value());
    CHECK(ok.value() == 7);
    CHECK(ok.error() == nullptr);
    CHECK_FALSE(bad.has_value());
    CHECK_FALSE(static_cast<bool>(bad));
    REQUIRE(bad.error() != nullptr);
    CHECK_THROWS_AS(bad.value(), MyError);
    CHECK(nothing.has_value());

    std::vector<spindle::Task<int>> tasks;
    tasks.push_back(spindle::spawn([] { return 1; }));
    tasks.push_back(spindle::spawn([]() -> int { throw 2; }));
    tasks.push_back(spindle::spawn([] {
      this_fiber::sleep_for(1s);
      return 3;
    }));
    auto outcomes = spindle::gather_settled(tasks);
    REQUIRE(outcomes.size() == 3);
    CHECK(outcomes[0].value() == 1);
    CHECK_THROWS_AS(outcomes[1].value(), int);
    CHECK(outcomes[2].value() == 3);  // not cancelled by the failure of another
  });
}

// ------------------------------------------------------------ wait_for

TEST_CASE("wait_for: returns the result when the task finishes in time") {
  run_manual([] {
    const auto t0 = spindle::now();
    auto t = spindle::spawn([] {
      this_fiber::sleep_for(1s);
      return 42;
    });
    CHECK(spindle::wait_for(t, 2s) == 42);
    CHECK(spindle::now() - t0 == 1s);
    CHECK(spindle::wait_for(spindle::spawn([] { return std::string("rv"); }), 1s) == "rv");
    // Its exception passes through.
    auto bad = spindle::spawn([]() -> int { throw MyError("inner", 4); });
    CHECK_THROWS_AS(spindle::wait_for(bad, 1s), MyError);
  });
}

TEST_CASE("wait_for: on timeout cancels the task, waits for it to unwind and throws TimeoutError") {
  run_manual([] {
    int unwound = 0;
    bool cancelled = false;
    const auto t0 = spindle::now();
    auto t = spindle::spawn(note_cancel(cancelled, [&] {
      Counter c{unwound};
      this_fiber::sleep_for(1h);
      return 1;
    }));
    auto e = expect_throw<spindle::TimeoutError>([&] { spindle::wait_for(t, 2s); });
    CHECK(unwound == 1);  // visible right after, no extra wait needed
    CHECK(cancelled);
    CHECK(t.done());
    CHECK(t.cancelled());
    CHECK(spindle::now() - t0 == 2s);
    CHECK(e.code() == std::errc::timed_out);
    const std::system_error& as_system = e;
    CHECK(as_system.code() == std::make_error_code(std::errc::timed_out));
    CHECK(std::string(e.what()).find("spindle::wait_for") != std::string::npos);
  });
}

TEST_CASE("wait_for: a task whose unwinding parks is waited for until it is done") {
  run_manual([] {
    bool cleanup_done = false;
    struct SlowCleanup {
      bool& done;
      ~SlowCleanup() {
        this_fiber::sleep_for(3s);  // not interrupted while unwinding
        done = true;
      }
    };
    const auto t0 = spindle::now();
    auto t = spindle::spawn([&] {
      SlowCleanup s{cleanup_done};
      this_fiber::sleep_for(1h);
    });
    CHECK_THROWS_AS(spindle::wait_for(t, 1s), spindle::TimeoutError);
    CHECK(cleanup_done);
    CHECK(spindle::now() - t0 == 4s);
  });
}

TEST_CASE("wait_for: with a callable") {
  run_manual([] {
    CHECK(spindle::wait_for(
              [] {
                this_fiber::sleep_for(1s);
                return 8;
              },
              5s) == 8);
    int unwound = 0;
    CHECK_THROWS_AS(spindle::wait_for(
                        [&] {
                          Counter c{unwound};
                          this_fiber::sleep_for(10s);
                        },
                        5s),
                    spindle::TimeoutError);
    CHECK(unwound == 1);
  });
}

TEST_CASE("wait_for: a cancelled caller cancels the task and waits for it") {
  run_manual([] {
    int unwound = 0;
    bool inner_cancelled = false;
    auto caller = spindle::spawn([&] {
      auto t = spindle::spawn(note_cancel(inner_cancelled, [&] {
        Counter c{unwound};
        this_fiber::sleep_for(1h);
        return 0;
      }));
      return spindle::wait_for(t, 10h);
    });
    this_fiber::sleep_for(1s);
    caller.cancel();
    CHECK_THROWS_AS(caller.join(), spindle::Cancelled);
    CHECK(inner_cancelled);
    CHECK(unwound == 1);
  });
}

// ------------------------------------------------------------ TaskGroup

TEST_CASE("TaskGroup: join waits for every child") {
  run_manual([] {
    const auto t0 = spindle::now();
    spindle::TaskGroup g;
    auto a = g.spawn([] {
      this_fiber::sleep_for(1s);
      return 1;
    });
    auto b = g.spawn(spindle::SpawnOptions{.name = "b"}, [] {
      this_fiber::sleep_for(3s);
      return 2;
    });
    auto c = g.spawn([](int x) { return x; }, 3);
    CHECK(g.size() == 3);
    g.join();
    CHECK(spindle::now() - t0 == 3s);
    CHECK(g.running() == 0);
    CHECK(a.done());
    CHECK(b.name() == "b");
    CHECK(a.join() + b.join() + c.join() == 6);
  });
}

TEST_CASE("TaskGroup: the first failure cancels the rest and is rethrown after they finish") {
  run_manual([] {
    int unwound = 0;
    bool a_cancelled = false, b_cancelled = false;
    bool cleanup_done = false;
    struct SlowCleanup {
      bool& done;
      ~SlowCleanup() {
        this_fiber::sleep_for(5s);
        done = true;
      }
    };
    const auto t0 = spindle::now();
    spindle::TaskGroup g;
    auto a = g.spawn(note_cancel(a_cancelled, [&] {
      Counter c{unwound};
      this_fiber::sleep_for(1h);
    }));
    g.spawn([]() {
      this_fiber::sleep_for(2s);
      throw MyError("group failure", 9);
    });
    g.spawn([]() {
      this_fiber::sleep_for(3s);
      throw MyError("second failure", 10);
    });
    auto b = g.spawn(note_cancel(b_cancelled, [&] {
      SlowCleanup s{cleanup_done};
      this_fiber::sleep_for(1h);
    }));
    auto e = expect_throw<MyError>([&] { g.join(); });
    CHECK(e.code == 9);
    CHECK(a_cancelled);
    CHECK(b_cancelled);
    CHECK(unwound == 1);
    CHECK(cleanup_done);  // rethrown only after every child finished
    CHECK(spindle::now() - t0 == 7s);
    CHECK(a.cancelled());
    CHECK(g.running() == 0);
  });
}

TEST_CASE("TaskGroup: the scope's end without join joins, and rethrows a failure") {
  run_manual([] {
    const auto t0 = spindle::now();
    int finished = 0;
    {
      spindle::TaskGroup g;
      g.spawn([&] {
        this_fiber::sleep_for(2s);
        ++finished;
      });
      g.spawn([&] {
        this_fiber::sleep_for(4s);
        ++finished;
      });
    }
    CHECK(finished == 2);
    CHECK(spindle::now() - t0 == 4s);

    bool threw = false;
    try {
      spindle::TaskGroup g;
      g.spawn([]() { throw MyError("from scope end", 1); });
    } catch (const MyError& e) {
      threw = std::string(e.what()) == "from scope end";
    }
    CHECK(threw);
  });
}

TEST_CASE("TaskGroup: a scope left by an exception cancels the children") {
  run_manual([] {
    int unwound = 0;
    bool child_cancelled = false;
    bool child_finished = false;
    const auto t0 = spindle::now();
    try {
      spindle::TaskGroup g;
      g.spawn(note_cancel(child_cancelled, [&] {
        Counter c{unwound};
        this_fiber::sleep_for(1h);
        child_finished = true;
      }));
      g.spawn([]() {
        this_fiber::sleep_for(1s);
        throw MyError("child failure dropped", 2);
      });
      this_fiber::sleep_for(2s);
      throw std::runtime_error("parent failure");
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()) == "parent failure");  // not the child's MyError
    }
    CHECK(child_cancelled);
    CHECK_FALSE(child_finished);
    CHECK(unwound == 1);
    CHECK(spindle::now() - t0 == 2s);
  });
}

TEST_CASE("TaskGroup: a child spawned after a failure is cancelled") {
  run_manual([] {
    bool late_ran = false;
    spindle::TaskGroup g;
    g.spawn([]() { throw MyError("early", 1); });
    this_fiber::yield();  // the child fails
    auto late = g.spawn([&] { late_ran = true; });
    CHECK_THROWS_AS(g.join(), MyError);
    CHECK_FALSE(late_ran);
    CHECK(late.cancelled());
  });
}

TEST_CASE("TaskGroup: a child that is cancelled on its own is not a failure") {
  run_manual([] {
    spindle::TaskGroup g;
    auto victim = g.spawn([] { this_fiber::sleep_for(1h); });
    auto other = g.spawn([] {
      this_fiber::sleep_for(2s);
      return 5;
    });
    this_fiber::sleep_for(1s);
    victim.cancel();
    g.join();  // no exception: Cancelled does not fail the group
    CHECK(victim.cancelled());
    CHECK(other.join() == 5);
  });
}

TEST_CASE("TaskGroup: a cancelled parent cancels the children and waits for them") {
  run_manual([] {
    int unwound = 0;
    auto parent = spindle::spawn([&] {
      spindle::TaskGroup g;
      g.spawn([&] {
        Counter c{unwound};
        this_fiber::sleep_for(1h);
      });
      g.spawn([&] {
        Counter c{unwound};
        this_fiber::sleep_for(2h);
      });
      g.join();
    });
    this_fiber::sleep_for(1s);
    parent.cancel();
    CHECK_THROWS_AS(parent.join(), spindle::Cancelled);
    CHECK(unwound == 2);
  });
}
