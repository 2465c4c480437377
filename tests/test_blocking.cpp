// spindle::run_blocking: values and exceptions come back, the pool bounds
// concurrency, other fibers run meanwhile, and cancellation and Timeout
// scopes wait for the job before they throw.
#include <doctest/doctest.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;

namespace {

using Ms = std::chrono::duration<double, std::milli>;

double ms_since(std::chrono::steady_clock::time_point t0) {
  return Ms(std::chrono::steady_clock::now() - t0).count();
}

// Restores the pool's limit when a case that changed it ends.
struct LimitGuard {
  std::size_t saved = spindle::blocking_threads();
  ~LimitGuard() { spindle::set_blocking_threads(saved); }
};

}  // namespace

TEST_CASE("run_blocking: returns the function's value, with arguments used in place") {
  spindle::run([] {
    CHECK(spindle::run_blocking([] { return 6 * 7; }) == 42);
    CHECK(spindle::run_blocking([](int a, const std::string& b) { return b + std::to_string(a); }, 5,
                                std::string("x")) == "x5");
    // A reference argument is the caller's object, not a copy.
    std::vector<int> v;
    spindle::run_blocking([](std::vector<int>& out) { out.push_back(1); }, v);
    CHECK(v.size() == 1);
    // Move-only results come back by move.
    auto p = spindle::run_blocking([] { return std::make_unique<int>(9); });
    REQUIRE(p);
    CHECK(*p == 9);
    // A reference result is returned as a copy.
    static std::string shared = "kept";
    std::string copy = spindle::run_blocking([]() -> const std::string& { return shared; });
    CHECK(copy == "kept");
  });
}

TEST_CASE("run_blocking: the job runs on another thread") {
  spindle::run([] {
    const auto caller = std::this_thread::get_id();
    const auto worker = spindle::run_blocking([] { return std::this_thread::get_id(); });
    CHECK(worker != caller);
  });
}

TEST_CASE("run_blocking: rethrows the function's exception") {
  spindle::run([] {
    CHECK_THROWS_WITH_AS(spindle::run_blocking([]() -> int { throw std::runtime_error("boom in the pool"); }),
                         "boom in the pool", std::runtime_error);
    // The pool is still fine afterwards.
    CHECK(spindle::run_blocking([] { return 1; }) == 1);
  });
}

TEST_CASE("run_blocking: outside a fiber throws std::logic_error naming the call") {
  bool ran = false;
  CHECK_THROWS_WITH_AS(spindle::run_blocking([&] { ran = true; }),
                       doctest::Contains("spindle::run_blocking"), std::logic_error);
  CHECK_FALSE(ran);
}

TEST_CASE("run_blocking: other fibers keep running while a job blocks") {
  spindle::run([] {
    std::atomic<bool> job_done{false};
    int ticks = 0;
    auto ticker = spindle::spawn([&] {
      while (!job_done.load()) {
        ++ticks;
        spindle::this_fiber::sleep_for(5ms);
      }
    });
    const auto t0 = std::chrono::steady_clock::now();
    spindle::run_blocking([&] {
      ::usleep(100'000);
      job_done = true;
    });
    const double elapsed = ms_since(t0);
    ticker.join();
    CHECK(elapsed >= 100.0);
    CHECK(elapsed < 5000.0);
    // 100 ms of 5 ms sleeps: about 20 ticks; many fewer only if the
    // scheduler thread itself had been blocked.
    CHECK(ticks >= 5);
  });
}

TEST_CASE("run_blocking: concurrency is bounded by the pool size and excess jobs queue FIFO") {
  LimitGuard guard;
  constexpr std::size_t kLimit = 3;
  spindle::set_blocking_threads(kLimit);
  CHECK(spindle::blocking_threads() == kLimit);
  spindle::run([] {
    std::atomic<int> inside{0};
    std::atomic<int> max_inside{0};
    std::atomic<int> started{0};
    std::vector<int> start_order(12, -1);
    std::vector<spindle::Task<void>> tasks;
    for (int i = 0; i < 12; ++i) {
      tasks.push_back(spindle::spawn([&, i] {
        spindle::run_blocking([&] {
          start_order[static_cast<std::size_t>(i)] = started.fetch_add(1);
          const int now = inside.fetch_add(1) + 1;
          int seen = max_inside.load();
          while (now > seen && !max_inside.compare_exchange_weak(seen, now)) {
          }
          std::this_thread::sleep_for(30ms);
          inside.fetch_sub(1);
        });
      }));
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& t : tasks) t.join();
    const double elapsed = ms_since(t0);
    CHECK(max_inside.load() == static_cast<int>(kLimit));
    // 12 jobs of 30 ms, 3 at a time: at least 4 rounds.
    CHECK(elapsed >= 4 * 30.0);
    CHECK(elapsed < 10000.0);
    // The fibers submitted in spawn order; the queue is FIFO, so the last
    // three submitted cannot have started before the first three.
    for (int first = 0; first < 3; ++first)
      for (int last = 9; last < 12; ++last) CHECK(start_order[first] < start_order[last]);
  });
}

TEST_CASE("run_blocking: cancellation waits for the job, then throws Cancelled") {
  spindle::run([] {
    std::atomic<bool> job_finished{false};
    std::atomic<bool> job_started{false};
    bool returned_normally = false;
    auto t = spindle::spawn([&] {
      spindle::run_blocking([&] {
        job_started = true;
        std::this_thread::sleep_for(150ms);
        job_finished = true;
      });
      returned_normally = true;
    });
    while (!job_started.load()) spindle::this_fiber::sleep_for(1ms);
    const auto t0 = std::chrono::steady_clock::now();
    t.cancel();
    t.wait();
    const double elapsed = ms_since(t0);
    CHECK(t.cancelled());
    CHECK_FALSE(returned_normally);
    // The fiber ended only after the job did: nothing it captured dangled.
    CHECK(job_finished.load());
    CHECK(elapsed >= 100.0);
    CHECK(elapsed < 5000.0);
    CHECK_THROWS_AS(t.join(), spindle::Cancelled);
  });
}

TEST_CASE("run_blocking: a Timeout scope throws TimeoutError once the job has finished") {
  spindle::run([] {
    std::atomic<bool> job_finished{false};
    const auto t0 = std::chrono::steady_clock::now();
    bool timed_out = false;
    {
      spindle::Timeout scope(50ms);
      try {
        spindle::run_blocking([&] {
          std::this_thread::sleep_for(200ms);
          job_finished = true;
          return 1;
        });
      } catch (const spindle::TimeoutError& e) {
        timed_out = true;
        CHECK(std::string(e.what()).find("spindle::run_blocking: Timeout expired") != std::string::npos);
      }
      CHECK(scope.expired());
    }
    const double elapsed = ms_since(t0);
    CHECK(timed_out);
    CHECK(job_finished.load());
    CHECK(elapsed >= 200.0);
    CHECK(elapsed < 5000.0);
  });
}

TEST_CASE("run_blocking: a cancellation or expired scope already due does not run the job") {
  spindle::run([] {
    std::atomic<bool> ran{false};
    {
      spindle::Timeout scope(1ms);
      // No suspension point until run_blocking: the scope expires while the
      // thread sleeps, so the first one to see it is the call under test.
      std::this_thread::sleep_for(5ms);
      CHECK_THROWS_AS(spindle::run_blocking([&] { ran = true; }), spindle::TimeoutError);
    }
    auto t = spindle::spawn([&] { spindle::run_blocking([&] { ran = true; }); });
    t.cancel();
    t.wait();
    CHECK(t.cancelled());
    CHECK_FALSE(ran.load());
  });
}

TEST_CASE("run_blocking: schedulers on several threads share the pool at once") {
  constexpr int kThreads = 4;
  constexpr int kFibers = 8;
  std::atomic<int> total{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      spindle::run([&, t] {
        std::vector<spindle::Task<int>> tasks;
        for (int f = 0; f < kFibers; ++f)
          tasks.push_back(spindle::spawn([t, f] {
            int sum = 0;
            for (int k = 0; k < 5; ++k) sum += spindle::run_blocking([&] {
              std::this_thread::sleep_for(1ms);
              return t * 1000 + f * 10 + k;
            });
            return sum;
          }));
        for (int f = 0; f < kFibers; ++f) {
          const int expected = 5 * (t * 1000 + f * 10) + 10;
          CHECK(tasks[static_cast<std::size_t>(f)].join() == expected);
        }
        total.fetch_add(kFibers);
      });
    });
  }
  for (auto& th : threads) th.join();
  CHECK(total.load() == kThreads * kFibers);
}

TEST_CASE("run_blocking: pool threads block asynchronous signals") {
  spindle::run([] {
    auto blocked = spindle::run_blocking([] {
      sigset_t mask;
      ::pthread_sigmask(SIG_BLOCK, nullptr, &mask);
      return std::vector<int>{::sigismember(&mask, SIGINT), ::sigismember(&mask, SIGTERM),
                              ::sigismember(&mask, SIGCHLD), ::sigismember(&mask, SIGUSR1),
                              ::sigismember(&mask, SIGSEGV)};
    });
    CHECK(blocked == std::vector<int>{1, 1, 1, 1, 0});
  });
  // The caller's own mask is untouched by starting pool threads.
  sigset_t mine;
  ::pthread_sigmask(SIG_BLOCK, nullptr, &mine);
  CHECK(::sigismember(&mine, SIGINT) == 0);
}

TEST_CASE("run_blocking: set_blocking_threads rejects zero; lowering and raising the limit take effect") {
  LimitGuard guard;
  CHECK_THROWS_AS(spindle::set_blocking_threads(0), std::invalid_argument);
  spindle::set_blocking_threads(1);
  spindle::run([] {
    std::atomic<int> inside{0};
    std::atomic<int> max_inside{0};
    auto job = [&] {
      const int now = inside.fetch_add(1) + 1;
      int seen = max_inside.load();
      while (now > seen && !max_inside.compare_exchange_weak(seen, now)) {
      }
      std::this_thread::sleep_for(10ms);
      inside.fetch_sub(1);
    };
    {
      std::vector<spindle::Task<void>> tasks;
      for (int i = 0; i < 6; ++i) tasks.push_back(spindle::spawn([&] { spindle::run_blocking(job); }));
      for (auto& t : tasks) t.join();
    }
    CHECK(max_inside.load() == 1);
    spindle::set_blocking_threads(4);
    max_inside = 0;
    {
      std::vector<spindle::Task<void>> tasks;
      for (int i = 0; i < 8; ++i) tasks.push_back(spindle::spawn([&] { spindle::run_blocking(job); }));
      for (auto& t : tasks) t.join();
    }
    CHECK(max_inside.load() > 1);
    CHECK(max_inside.load() <= 4);
  });
}
