// spindle::Queue, LifoQueue, PriorityQueue: item order, FIFO hand-off on
// both sides, the non-blocking calls and their errors, task_done/join,
// shutdown (with waiters on both sides), timed calls, the races where a
// getter or putter is interrupted as the hand-off chooses it, and plain OS
// threads (and other schedulers) putting into a queue fibers get from.
#include <doctest/doctest.h>
#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;

namespace {

constexpr auto kPatience = 20s;

template <class E, class F>
std::string error_text(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  FAIL("the expected exception was not thrown");
  return {};
}

}  // namespace

// ------------------------------------------------------------ basics

TEST_CASE("queue: FIFO order; size, empty, full and maxsize") {
  spindle::run([] {
    spindle::Queue<int> q(3);
    CHECK(q.maxsize() == 3);
    CHECK(q.empty());
    CHECK_FALSE(q.full());
    q.put(1);
    q.put(2);
    q.put(3);
    CHECK(q.size() == 3);
    CHECK(q.full());
    CHECK(q.get() == 1);
    CHECK(q.get() == 2);
    CHECK_FALSE(q.full());
    CHECK(q.get() == 3);
    CHECK(q.empty());
  });
}

TEST_CASE("queue: maxsize 0 is unbounded") {
  spindle::run([] {
    spindle::Queue<int> q;
    CHECK(q.maxsize() == 0);
    for (int i = 0; i < 10000; ++i) q.put(i);
    CHECK(q.size() == 10000);
    CHECK_FALSE(q.full());
    for (int i = 0; i < 10000; ++i) CHECK(q.get() == i);
  });
}

TEST_CASE("queue: put and get with room or items are not suspension points") {
  spindle::run([] {
    spindle::Queue<int> q(2);
    bool other_ran = false;
    auto t = spindle::spawn([&] { other_ran = true; });
    q.put(1);
    CHECK(q.get() == 1);
    q.task_done();
    q.join();  // nothing unfinished
    CHECK_FALSE(other_ran);
    t.join();
  });
}

TEST_CASE("queue: FIFO order survives the store growing while its items wrap around") {
  spindle::run([] {
    spindle::Queue<std::string> q;
    int next_in = 0, next_out = 0;
    // Put and get in uneven bursts so the ring's head moves around as it grows.
    for (int burst = 1; burst <= 40; ++burst) {
      for (int i = 0; i < burst * 3; ++i) q.put(std::to_string(next_in++));
      for (int i = 0; i < burst * 2; ++i) CHECK(q.get() == std::to_string(next_out++));
    }
    while (!q.empty()) CHECK(q.get() == std::to_string(next_out++));
    CHECK(next_out == next_in);
  });
}

TEST_CASE("queue: items need not be default-constructible or copyable") {
  struct Item {
    explicit Item(int v) : value(std::make_unique<int>(v)) {}
    std::unique_ptr<int> value;
  };
  spindle::run([] {
    spindle::Queue<Item> q(2);
    spindle::LifoQueue<Item> l;
    auto consumer = spindle::spawn([&] {
      int sum = 0;
      for (int i = 0; i < 50; ++i) sum += *q.get().value;
      return sum;
    });
    for (int i = 1; i <= 50; ++i) q.put(Item(i));
    CHECK(consumer.join() == 1275);
    l.put(Item(1));
    l.put(Item(2));
    CHECK(*l.get().value == 2);
    CHECK(*l.try_get()->value == 1);
  });
}

TEST_CASE("lifo queue: last in, first out") {
  spindle::run([] {
    spindle::LifoQueue<std::string> q;
    for (auto s : {"a", "b", "c"}) q.put(s);
    CHECK(q.get() == "c");
    q.put("d");
    CHECK(q.get() == "d");
    CHECK(q.get() == "b");
    CHECK(q.get() == "a");
    CHECK_THROWS_AS(q.get_nowait(), spindle::QueueEmpty);
  });
}

TEST_CASE("priority queue: smallest first by Compare, FIFO among equal items") {
  spindle::run([] {
    spindle::PriorityQueue<int> q;
    for (int v : {5, 1, 4, 1, 3, 9, 2}) q.put(v);
    std::vector<int> got;
    while (!q.empty()) got.push_back(q.get());
    CHECK(got == std::vector<int>{1, 1, 2, 3, 4, 5, 9});

    struct Job {
      int priority;
      std::string name;
    };
    auto by_priority = [](const Job& a, const Job& b) { return a.priority < b.priority; };
    spindle::PriorityQueue<Job, decltype(by_priority)> jobs;
    jobs.put(Job{2, "b1"});
    jobs.put(Job{1, "a1"});
    jobs.put(Job{2, "b2"});
    jobs.put(Job{1, "a2"});
    jobs.put(Job{2, "b3"});
    std::vector<std::string> names;
    while (!jobs.empty()) names.push_back(jobs.get().name);
    CHECK(names == std::vector<std::string>{"a1", "a2", "b1", "b2", "b3"});

    spindle::PriorityQueue<int, std::greater<int>> largest;
    for (int v : {3, 7, 5}) largest.put(v);
    CHECK(largest.get() == 7);
  });
}

TEST_CASE("queue: move-only items; a put that fails leaves the item with the caller") {
  spindle::run([] {
    spindle::Queue<std::unique_ptr<int>> q(1);
    auto p = std::make_unique<int>(1);
    CHECK(q.try_put(std::move(p)));
    CHECK(p == nullptr);
    auto r = std::make_unique<int>(2);
    CHECK_FALSE(q.try_put(std::move(r)));
    REQUIRE(r != nullptr);  // not moved from
    CHECK_THROWS_AS(q.put_nowait(std::move(r)), spindle::QueueFull);
    REQUIRE(r != nullptr);
    CHECK_FALSE(q.try_put_for(std::move(r), 1ms));
    REQUIRE(r != nullptr);
    CHECK(*q.get() == 1);
    q.put(std::move(r));
    CHECK(*q.get() == 2);
  });
}

TEST_CASE(
    "queue: try_put/try_get return false/empty; put_nowait/get_nowait throw QueueFull/QueueEmpty; any "
    "thread") {
  spindle::Queue<int> q(1);
  CHECK_FALSE(q.try_get().has_value());
  CHECK(error_text<spindle::QueueEmpty>([&] { (void)q.get_nowait(); }).find("spindle::Queue::get_nowait") !=
        std::string::npos);
  CHECK(q.try_put(1));
  CHECK_FALSE(q.try_put(2));
  CHECK(error_text<spindle::QueueFull>([&] { q.put_nowait(3); }).find("spindle::Queue::put_nowait") !=
        std::string::npos);
  CHECK(q.size() == 1);
  std::thread([&] { CHECK(q.try_get() == 1); }).join();
  std::thread([&] { q.put_nowait(4); }).join();
  CHECK(q.get_nowait() == 4);
  spindle::LifoQueue<int> l;
  CHECK(error_text<spindle::QueueEmpty>([&] {
          (void)l.get_nowait();
        }).find("spindle::LifoQueue::get_nowait") != std::string::npos);
}

TEST_CASE("queue: get of an empty queue outside a fiber throws std::logic_error naming the call") {
  spindle::Queue<int> q;
  CHECK(error_text<std::logic_error>([&] { (void)q.get(); }).find("spindle::Queue::get") !=
        std::string::npos);
  CHECK_THROWS_AS((void)q.try_get_for(1ms), std::logic_error);
  q.put(1);
  CHECK(error_text<std::logic_error>([&] { q.join(); }).find("spindle::Queue::join") != std::string::npos);
  CHECK(q.get() == 1);  // an item is there: no fiber needed
}

// ------------------------------------------------------------ waiting, FIFO

TEST_CASE(
    "queue: getters park while empty and are served FIFO; put hands the item straight to the longest "
    "getter") {
  spindle::run([] {
    spindle::Queue<int> q;
    std::vector<std::pair<int, int>> got;  // (getter, item)
    std::vector<spindle::Task<void>> getters;
    for (int g = 0; g < 4; ++g) getters.push_back(spindle::spawn([&, g] { got.emplace_back(g, q.get()); }));
    spindle::this_fiber::yield();
    for (int i = 10; i < 14; ++i) q.put(i);
    CHECK(q.empty());  // all four went straight to the getters
    for (auto& t : getters) t.join();
    CHECK(got == std::vector<std::pair<int, int>>{{0, 10}, {1, 11}, {2, 12}, {3, 13}});
  });
}

TEST_CASE("queue: putters park while full and are served FIFO; items keep their order") {
  spindle::run([] {
    spindle::Queue<int> q(2);
    q.put(0);
    q.put(1);
    std::vector<spindle::Task<void>> putters;
    for (int p = 2; p < 6; ++p) putters.push_back(spindle::spawn([&, p] { q.put(p); }));
    spindle::this_fiber::yield();
    CHECK(q.full());
    std::vector<int> got;
    for (int i = 0; i < 6; ++i) got.push_back(q.get());
    for (auto& t : putters) t.join();
    CHECK(got == std::vector<int>{0, 1, 2, 3, 4, 5});
    CHECK(q.empty());
  });
}

TEST_CASE("queue: a place freed while putters wait is theirs: a newcomer cannot overtake them") {
  spindle::run([] {
    spindle::Queue<int> q(1);
    q.put(1);
    auto putter = spindle::spawn([&] { q.put(2); });
    spindle::this_fiber::yield();
    CHECK(q.get() == 1);  // frees the place, reserved for the parked putter
    CHECK(q.full());
    CHECK_FALSE(q.try_put(3));
    putter.join();
    CHECK(q.get() == 2);
    CHECK(q.try_put(3));
  });
}

TEST_CASE("queue: an item handed to a getter that has not run yet still counts against maxsize") {
  spindle::run([] {
    spindle::Queue<int> q(1);
    auto getter = spindle::spawn([&] { return q.get(); });
    spindle::this_fiber::yield();
    q.put(1);  // handed to the parked getter
    CHECK(q.size() == 0);
    CHECK(q.full());
    CHECK_FALSE(q.try_put(2));
    CHECK(getter.join() == 1);
    CHECK_FALSE(q.full());
    CHECK(q.try_put(2));
  });
}

// ------------------------------------------------------------ task_done / join

TEST_CASE("queue: join parks until every item put has been marked done") {
  spindle::run([] {
    spindle::Queue<int> q;
    std::vector<int> done;
    for (int i = 0; i < 5; ++i) q.put(i);
    auto worker = spindle::spawn([&] {
      for (int i = 0; i < 5; ++i) {
        int v = q.get();
        spindle::this_fiber::sleep_for(1ms);
        done.push_back(v);
        q.task_done();
      }
    });
    q.join();
    CHECK(done.size() == 5);
    worker.join();
    q.join();  // nothing unfinished: returns at once
    CHECK_THROWS_AS(q.task_done(), std::invalid_argument);
  });
}

TEST_CASE("queue: several joiners all wake when the last task is done; cancel interrupts a join") {
  spindle::run([] {
    spindle::Queue<int> q;
    q.put(1);
    int woke = 0;
    std::vector<spindle::Task<void>> joiners;
    for (int i = 0; i < 3; ++i)
      joiners.push_back(spindle::spawn([&] {
        q.join();
        ++woke;
      }));
    auto cancelled = spindle::spawn([&] { q.join(); });
    spindle::this_fiber::yield();
    cancelled.cancel();
    CHECK_THROWS_AS(cancelled.join(), spindle::Cancelled);
    (void)q.get();
    q.task_done();
    for (auto& j : joiners) j.join();
    CHECK(woke == 3);
  });
}

TEST_CASE("queue: task_done from a plain OS thread wakes a joining fiber") {
  spindle::Queue<int> q;
  q.put(1);
  std::thread worker;
  spindle::run([&] {
    worker = std::thread([&] {
      (void)q.get_nowait();
      std::this_thread::sleep_for(1ms);
      q.task_done();
    });
    spindle::Timeout scope(kPatience);
    q.join();
  });
  worker.join();
}

// ------------------------------------------------------------ shutdown

TEST_CASE("queue: after shutdown, puts throw QueueShutDown; gets drain what is left, then throw it") {
  spindle::run([] {
    spindle::Queue<int> q;
    q.put(1);
    q.put(2);
    q.shutdown();
    CHECK(q.is_shut_down());
    CHECK(error_text<spindle::QueueShutDown>([&] { q.put(3); }).find("spindle::Queue::put") !=
          std::string::npos);
    CHECK_THROWS_AS(q.put_nowait(3), spindle::QueueShutDown);
    CHECK_THROWS_AS((void)q.try_put(3), spindle::QueueShutDown);
    CHECK(q.size() == 2);
    CHECK(q.get() == 1);
    CHECK(q.try_get() == 2);
    CHECK_THROWS_AS((void)q.get(), spindle::QueueShutDown);
    CHECK_THROWS_AS((void)q.try_get(), spindle::QueueShutDown);
    CHECK_THROWS_AS((void)q.get_nowait(), spindle::QueueShutDown);
    CHECK_THROWS_AS((void)q.try_get_for(1s), spindle::QueueShutDown);
    q.shutdown();  // again: nothing changes
  });
}

TEST_CASE("queue: shutdown with waiters on both sides: parked getters and putters throw QueueShutDown") {
  spindle::run([] {
    spindle::Queue<int> q(1);
    std::vector<std::string> log;
    auto g1 = spindle::spawn([&] { return q.get(); });
    spindle::this_fiber::yield();  // g1 parks
    // Runnable before g1 is handed item 1, so they run before it: g2 finds
    // the queue empty and parks, p2 finds it full (item 1, on its way to g1,
    // still counts against maxsize 1) and parks, and s shuts the queue down
    // while both wait.
    auto g2 = spindle::spawn([&] {
      try {
        (void)q.get();
      } catch (const spindle::QueueShutDown&) {
        log.push_back("g2 shut down");
      }
    });
    auto p2 = spindle::spawn([&] {
      try {
        q.put(2);
      } catch (const spindle::QueueShutDown&) {
        log.push_back("p2 shut down");
      }
    });
    auto s = spindle::spawn([&] {
      log.push_back(fmt::format("shutdown: full={} empty={}", q.full(), q.empty()));
      q.shutdown();
    });
    q.put(1);  // handed to g1
    g2.join();
    p2.join();
    s.join();
    CHECK(log == std::vector<std::string>{"shutdown: full=true empty=true", "g2 shut down", "p2 shut down"});
    CHECK(g1.join() == 1);  // already handed over: still delivered
  });
}

TEST_CASE("queue: shutdown(immediate) discards the queued items and counts them done for join") {
  spindle::run([] {
    spindle::Queue<int> q(10);
    for (int i = 0; i < 5; ++i) q.put(i);
    CHECK(q.get() == 0);  // one taken, not yet done
    auto joiner = spindle::spawn([&] { q.join(); });
    spindle::this_fiber::yield();
    q.shutdown(true);
    CHECK(q.size() == 0);
    CHECK_THROWS_AS((void)q.get(), spindle::QueueShutDown);
    CHECK_FALSE(joiner.done());  // item 0 is still unfinished
    q.task_done();
    joiner.join();
  });
}

TEST_CASE("queue: a plain thread blocked in put is released by shutdown with QueueShutDown") {
  spindle::Queue<int> q(1);
  q.put_nowait(0);
  std::atomic<bool> threw{false};
  std::thread producer([&] {
    try {
      q.put(1);
    } catch (const spindle::QueueShutDown&) {
      threw = true;
    }
  });
  while (!q.full() || q.size() != 1) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(5ms);  // give the producer time to block
  q.shutdown();
  producer.join();
  CHECK(threw.load());
  CHECK(q.size() == 1);
}

// ------------------------------------------------------------ timed calls

TEST_CASE("queue: try_get_for and try_put_for time out exactly at the deadline (manual clock)") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Queue<int> q(1);
    const auto t0 = spindle::now();
    CHECK_FALSE(q.try_get_for(100ms).has_value());
    CHECK(spindle::now() - t0 == 100ms);
    q.put(1);
    CHECK_FALSE(q.try_put_for(2, 200ms));
    CHECK(spindle::now() - t0 == 300ms);
    CHECK_FALSE(q.try_put_until(2, t0));  // in the past
    auto getter = spindle::spawn([&] {
      spindle::this_fiber::sleep_for(50ms);
      return q.get();
    });
    CHECK(q.try_put_for(2, 1s));
    CHECK(spindle::now() - t0 == 350ms);
    CHECK(getter.join() == 1);
    CHECK(q.try_get_until(spindle::now() + 1s) == 2);
    spindle::this_fiber::sleep_for(2s);  // no timer left behind
    CHECK(spindle::now() - t0 == 2350ms);
  });
}

TEST_CASE("queue: a Timeout scope or cancel interrupts parked get and put; nothing is lost") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Queue<int> q(1);
    {
      spindle::Timeout scope(10ms);
      CHECK_THROWS_AS((void)q.get(), spindle::TimeoutError);
    }
    q.put(1);
    {
      spindle::Timeout scope(10ms);
      CHECK_THROWS_AS(q.put(2), spindle::TimeoutError);
    }
    auto p = spindle::spawn([&] { q.put(3); });
    spindle::this_fiber::yield();
    p.cancel();
    CHECK_THROWS_AS(p.join(), spindle::Cancelled);
    CHECK(q.get() == 1);
    CHECK(q.empty());
    CHECK(q.try_put(4));
  });
}

// ------------------------------------------------------------ races

TEST_CASE("queue: race: a getter cancelled as put() hands it an item gives it to the next getter") {
  spindle::run([] {
    spindle::Queue<int> q;
    auto g1 = spindle::spawn([&] { return q.get(); });
    auto g2 = spindle::spawn([&] { return q.get(); });
    spindle::this_fiber::yield();
    g1.cancel();  // readied as cancelled, not yet run
    q.put(7);     // handed to g1
    CHECK_THROWS_AS(g1.join(), spindle::Cancelled);
    CHECK(g2.join() == 7);
    CHECK(q.empty());
  });
}

TEST_CASE(
    "queue: race: a getter cancelled as it is handed an item, with nobody behind it, puts it back at the "
    "head") {
  spindle::run([] {
    spindle::Queue<int> q(3);
    auto g = spindle::spawn([&] { return q.get(); });
    spindle::this_fiber::yield();
    g.cancel();
    q.put(1);  // handed to g
    q.put(2);  // queued behind it
    CHECK_THROWS_AS(g.join(), spindle::Cancelled);
    CHECK(q.size() == 2);
    CHECK(q.get() == 1);  // back at the head: FIFO order kept
    CHECK(q.get() == 2);
    // The bound stayed exact throughout: three places, all free again.
    CHECK(q.try_put(3));
    CHECK(q.try_put(4));
    CHECK(q.try_put(5));
    CHECK_FALSE(q.try_put(6));
  });
}

TEST_CASE("queue: race: a LIFO getter gives an item back on top; a priority getter by priority") {
  spindle::run([] {
    spindle::LifoQueue<int> l;
    auto g = spindle::spawn([&] { return l.get(); });
    spindle::this_fiber::yield();
    g.cancel();
    l.put(1);
    l.put(2);
    CHECK_THROWS_AS(g.join(), spindle::Cancelled);
    CHECK(l.get() == 1);  // it was the top when handed over
    CHECK(l.get() == 2);

    spindle::PriorityQueue<int> p;
    auto h = spindle::spawn([&] { return p.get(); });
    spindle::this_fiber::yield();
    h.cancel();
    p.put(5);
    p.put(5);
    p.put(3);
    CHECK_THROWS_AS(h.join(), spindle::Cancelled);
    CHECK(p.get() == 3);
    CHECK(p.get() == 5);
    CHECK(p.get() == 5);
    CHECK(p.empty());
  });
}

TEST_CASE(
    "queue: race: try_get_for whose deadline passes as it is handed an item returns empty and gives it "
    "back") {
  spindle::ManualClock clock;
  spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    spindle::Queue<int> q;
    auto g1 = spindle::spawn([&] { return q.try_get_for(1s); });
    auto g2 = spindle::spawn([&] { return q.get(); });
    spindle::this_fiber::sleep_for(1s);  // our timer fires before g1's
    q.put(9);
    CHECK_FALSE(g1.join().has_value());
    CHECK(g2.join() == 9);
  });
}

TEST_CASE(
    "queue: race: a putter cancelled as a place is reserved for it passes the place to the next putter") {
  spindle::run([] {
    spindle::Queue<int> q(1);
    q.put(0);
    auto p1 = spindle::spawn([&] { q.put(1); });
    auto p2 = spindle::spawn([&] { q.put(2); });
    spindle::this_fiber::yield();
    p1.cancel();
    CHECK(q.get() == 0);  // reserves the place for p1
    CHECK_THROWS_AS(p1.join(), spindle::Cancelled);
    p2.join();
    CHECK(q.get() == 2);  // item 1 was never put
    CHECK(q.empty());
    q.task_done();
    q.task_done();
    CHECK_THROWS_AS(q.task_done(), std::invalid_argument);  // exactly two items were put
  });
}

TEST_CASE(
    "queue: race: a putter cancelled as a place is reserved for it, with nobody behind it, leaves the place "
    "free") {
  spindle::run([] {
    spindle::Queue<int> q(1);
    q.put(0);
    auto p = spindle::spawn([&] { q.put(1); });
    spindle::this_fiber::yield();
    p.cancel();
    CHECK(q.get() == 0);
    CHECK(q.full());  // reserved for p, which has not run
    CHECK_THROWS_AS(p.join(), spindle::Cancelled);
    CHECK_FALSE(q.full());
    CHECK(q.empty());
    CHECK(q.try_put(5));
  });
}

TEST_CASE(
    "queue: race: a getter handed an item, then cancelled, after shutdown(immediate): the item is discarded "
    "and done") {
  spindle::run([] {
    spindle::Queue<int> q;
    auto g = spindle::spawn([&] { return q.get(); });
    spindle::this_fiber::yield();
    g.cancel();
    q.put(1);  // handed to g
    q.shutdown(true);
    CHECK_THROWS_AS(g.join(), spindle::Cancelled);
    CHECK(q.size() == 0);
    q.join();  // the given-back item counted as done
  });
}

// ------------------------------------------------------------ cross-thread

TEST_CASE(
    "queue: a plain thread producer feeds fibers through a bounded queue; every item arrives exactly once") {
  constexpr int kItems = 20000;
  spindle::Queue<int> q(8);
  std::vector<int> seen(kItems, 0);
  std::thread producer;
  spindle::run([&] {
    producer = std::thread([&] {
      for (int i = 0; i < kItems; ++i) q.put(i);  // blocks the thread while full
      q.shutdown();
    });
    std::vector<spindle::Task<void>> consumers;
    for (int c = 0; c < 3; ++c)
      consumers.push_back(spindle::spawn([&] {
        spindle::Timeout scope(kPatience);
        int last = -1;
        try {
          for (;;) {
            int v = q.get();
            CHECK(v > last);  // one producer: each consumer sees increasing items
            last = v;
            ++seen[v];
            q.task_done();
          }
        } catch (const spindle::QueueShutDown&) {
        }
      }));
    for (auto& c : consumers) c.join();
  });
  producer.join();
  CHECK(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
}

TEST_CASE("queue: several plain threads and a fiber of another scheduler put into one queue") {
  constexpr int kPerProducer = 5000;
  constexpr int kThreads = 3;
  spindle::Queue<int> q(16);
  std::vector<int> seen((kThreads + 1) * kPerProducer, 0);
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t)
    producers.emplace_back([&, t] {
      for (int i = 0; i < kPerProducer; ++i) q.put(t * kPerProducer + i);
    });
  producers.emplace_back([&] {
    spindle::run([&] {
      for (int i = 0; i < kPerProducer; ++i) q.put(kThreads * kPerProducer + i);
    });
  });
  spindle::run([&] {
    spindle::Timeout scope(kPatience);
    for (std::size_t n = 0; n < seen.size(); ++n) ++seen[q.get()];
  });
  for (auto& p : producers) p.join();
  CHECK(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
  CHECK(q.empty());
}

TEST_CASE("queue: a plain thread's try_put_for gives up at its deadline when no fiber makes room") {
  spindle::Queue<int> q(1);
  q.put_nowait(1);
  const auto t0 = std::chrono::steady_clock::now();
  bool put = true;
  std::thread([&] { put = q.try_put_for(2, 20ms); }).join();
  CHECK_FALSE(put);
  CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
  CHECK(q.size() == 1);
  CHECK(q.try_put_for(3, 0ms) == false);
}

TEST_CASE("queue: cross-thread puts racing getters' timeouts and cancels deliver every item exactly once") {
  std::mt19937 rng(31337);
  for (int round = 0; round < 200; ++round) {
    spindle::Queue<int> q(2);
    const int items = 1 + static_cast<int>(rng() % 6);
    std::vector<int> seen(items, 0);
    std::atomic<bool> produced{false};
    std::thread producer;
    spindle::run([&] {
      std::vector<spindle::Task<void>> getters;
      for (int i = 0; i < 4; ++i)
        getters.push_back(spindle::spawn([&] {
          while (auto v = q.try_get_for(std::chrono::microseconds(rng() % 100))) ++seen[*v];
        }));
      producer = std::thread([&] {
        for (int i = 0; i < items; ++i) q.put(i);
        produced = true;
      });
      if (rng() % 2) getters[rng() % 4].cancel();
      for (auto& g : getters) {
        try {
          g.join();
        } catch (const spindle::Cancelled&) {
        }
      }
      // What the getters did not take is still queued, or still coming:
      // the producer may be blocked on the full queue, so keep taking.
      while (!produced.load()) {
        while (auto v = q.try_get()) ++seen[*v];
        spindle::this_fiber::sleep_for(std::chrono::microseconds(10));
      }
      producer.join();
      while (auto v = q.try_get()) ++seen[*v];
    });
    CHECK(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
  }
}
