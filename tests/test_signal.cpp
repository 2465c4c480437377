// spindle::wait_signal: deliveries from fibers and from other threads,
// broadcast to several waiters, signal sets, Timeout and cancellation, and
// the thread's signal mask before, during and after a watch.
//
// Every signal these cases raise is either watched at that moment or
// blocked by the case itself, so none can take its default action (which
// would end the test binary). A plain thread that sends a signal blocks it
// first, and for the rest of its life: the kernel would otherwise deliver a
// process-directed signal to that thread instead of letting the scheduler's
// thread read it.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <spindle/signal.hpp>
#include <spindle/spindle.hpp>

using namespace std::chrono_literals;

namespace {

sigset_t thread_mask() {
  sigset_t m;
  REQUIRE(::pthread_sigmask(SIG_BLOCK, nullptr, &m) == 0);
  return m;
}

bool blocked(int signo) {
  const sigset_t m = thread_mask();
  return sigismember(&m, signo) == 1;
}

bool same_mask(const sigset_t& a, const sigset_t& b) {
  for (int s = 1; s < NSIG; ++s)
    if (sigismember(&a, s) != sigismember(&b, s)) return false;
  return true;
}

bool pending(int signo) {
  sigset_t p;
  REQUIRE(::sigpending(&p) == 0);
  return sigismember(&p, signo) == 1;
}

// Blocks `signals` in this thread for the scope, restoring the mask after.
class BlockSignals {
 public:
  explicit BlockSignals(std::initializer_list<int> signals) {
    sigset_t s;
    sigemptyset(&s);
    for (int signo : signals) sigaddset(&s, signo);
    REQUIRE(::pthread_sigmask(SIG_BLOCK, &s, &old_) == 0);
  }
  ~BlockSignals() { ::pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

 private:
  sigset_t old_;
};

// Lets waiters run to their park and the idle step poll the kernel.
void settle() {
  for (int i = 0; i < 3; ++i) spindle::this_fiber::yield();
  spindle::this_fiber::sleep_for(10ms);
}

}  // namespace

TEST_CASE("signal: a signal raised by another fiber wakes the waiter") {
  const sigset_t before = thread_mask();
  spindle::run([] {
    auto waiter = spindle::spawn([] { return spindle::wait_signal({SIGUSR1}); });
    settle();
    CHECK_FALSE(waiter.done());
    SUBCASE("raise") { REQUIRE(::raise(SIGUSR1) == 0); }
    SUBCASE("kill(getpid())") { REQUIRE(::kill(::getpid(), SIGUSR1) == 0); }
    CHECK(waiter.join() == SIGUSR1);
  });
  CHECK(same_mask(thread_mask(), before));
}

TEST_CASE("signal: a signal sent by another thread wakes the waiter") {
  const sigset_t before = thread_mask();
  spindle::run([] {
    std::atomic<bool> go{false};
    std::thread sender([&] {
      // Blocked for good: unblocking it again before the scheduler's thread
      // has read the signal would let the kernel deliver it here.
      sigset_t s;
      sigemptyset(&s);
      sigaddset(&s, SIGUSR1);
      ::pthread_sigmask(SIG_BLOCK, &s, nullptr);
      while (!go.load()) std::this_thread::sleep_for(1ms);
      ::kill(::getpid(), SIGUSR1);
    });
    auto waiter = spindle::spawn([] { return spindle::wait_signal({SIGUSR1}); });
    settle();
    go = true;
    const int got = waiter.join();
    sender.join();
    CHECK(got == SIGUSR1);
  });
  CHECK(same_mask(thread_mask(), before));
}

TEST_CASE("signal: a wait for two signals returns the one that arrived") {
  spindle::run([] {
    auto waiter = spindle::spawn([] { return spindle::wait_signal({SIGUSR1, SIGUSR2}); });
    settle();
    REQUIRE(::raise(SIGUSR2) == 0);
    CHECK(waiter.join() == SIGUSR2);
  });
}

TEST_CASE("signal: two signals delivered together are returned by two waits, lowest first") {
  // Blocked by the application, so the one the first wait leaves stays
  // pending after its watch ends, for the second wait to read.
  BlockSignals block({SIGUSR1, SIGUSR2});
  spindle::run([] {
    REQUIRE(::raise(SIGUSR2) == 0);
    REQUIRE(::raise(SIGUSR1) == 0);
    CHECK(spindle::wait_signal({SIGUSR2, SIGUSR1}) == SIGUSR1);
    CHECK(pending(SIGUSR2));
    CHECK(spindle::wait_signal({SIGUSR1, SIGUSR2}) == SIGUSR2);
    CHECK_FALSE(pending(SIGUSR1));
    CHECK_FALSE(pending(SIGUSR2));
  });
  // The application's own block is left in place.
  CHECK(blocked(SIGUSR1));
  CHECK(blocked(SIGUSR2));
}

TEST_CASE("signal: one delivery wakes every fiber waiting for that signal") {
  spindle::run([] {
    std::vector<spindle::Task<int>> waiters;
    waiters.push_back(spindle::spawn([] { return spindle::wait_signal({SIGUSR1}); }));
    waiters.push_back(spindle::spawn([] { return spindle::wait_signal({SIGUSR2, SIGUSR1}); }));
    waiters.push_back(spindle::spawn([] { return spindle::wait_signal({SIGUSR1}); }));
    // Not woken by a delivery of SIGUSR1: it waits for SIGUSR2 only.
    auto other = spindle::spawn([] { return spindle::wait_signal({SIGUSR2}); });
    settle();
    REQUIRE(::raise(SIGUSR1) == 0);
    for (auto& w : waiters) CHECK(w.join() == SIGUSR1);
    settle();
    CHECK_FALSE(other.done());
    REQUIRE(::raise(SIGUSR2) == 0);
    CHECK(other.join() == SIGUSR2);
  });
}

TEST_CASE("signal: a waiter that leaves hands the watch to the others") {
  spindle::run([] {
    // The first waiter parks on the poller's source; it times out and the
    // second must take over, or the delivery would go unnoticed.
    auto first = spindle::spawn([] {
      spindle::Timeout t(30ms);
      return spindle::wait_signal({SIGUSR1});
    });
    spindle::this_fiber::yield();
    auto second = spindle::spawn([] { return spindle::wait_signal({SIGUSR1}); });
    CHECK_THROWS_AS(first.join(), spindle::TimeoutError);
    settle();
    CHECK_FALSE(second.done());
    REQUIRE(::raise(SIGUSR1) == 0);
    CHECK(second.join() == SIGUSR1);
  });
}

TEST_CASE("signal: a signal arriving while watched but before the waiter parks is not lost") {
  spindle::run([] {
    auto first = spindle::spawn([] { return spindle::wait_signal({SIGUSR1}); });
    settle();
    // Pending in the kernel; the scheduler has not polled since.
    REQUIRE(::raise(SIGUSR1) == 0);
    auto second = spindle::spawn([] { return spindle::wait_signal({SIGUSR1}); });
    spindle::this_fiber::yield();
    // The second waiter read the delivery when it started, before it would
    // have parked, so it is done already; the first one heard it too.
    CHECK(second.done());
    CHECK(second.join() == SIGUSR1);
    CHECK(first.join() == SIGUSR1);
  });
}

TEST_CASE("signal: a Timeout ends the wait, not early, and leaves the mask as it was") {
  const sigset_t before = thread_mask();
  spindle::run([&] {
    const auto start = std::chrono::steady_clock::now();
    {
      spindle::Timeout t(50ms);
      CHECK_THROWS_AS(spindle::wait_signal({SIGUSR1}), spindle::TimeoutError);
      CHECK(t.expired());
    }
    const auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(elapsed >= 50ms);
    CHECK(elapsed < 5s);
    CHECK(same_mask(thread_mask(), before));
  });
}

TEST_CASE("signal: cancellation ends the wait and the watch") {
  const sigset_t before = thread_mask();
  spindle::run([&] {
    auto waiter = spindle::spawn([] { return spindle::wait_signal({SIGUSR1}); });
    settle();
    CHECK(blocked(SIGUSR1));
    waiter.cancel();
    CHECK_THROWS_AS(waiter.join(), spindle::Cancelled);
    CHECK(same_mask(thread_mask(), before));
  });
}

TEST_CASE("signal: the signal is blocked while watched and the original mask is back after the last waiter") {
  const sigset_t before = thread_mask();
  REQUIRE_FALSE(blocked(SIGUSR1));
  spindle::run([&] {
    auto a = spindle::spawn([] { return spindle::wait_signal({SIGUSR1, SIGUSR2}); });
    auto b = spindle::spawn([] { return spindle::wait_signal({SIGUSR1}); });
    settle();
    CHECK(blocked(SIGUSR1));
    CHECK(blocked(SIGUSR2));
    REQUIRE(::raise(SIGUSR1) == 0);
    CHECK(a.join() == SIGUSR1);
    CHECK(b.join() == SIGUSR1);
    CHECK(same_mask(thread_mask(), before));
    // A later wait watches again, and ends its watch again.
    auto c = spindle::spawn([] { return spindle::wait_signal({SIGUSR2}); });
    settle();
    CHECK(blocked(SIGUSR2));
    CHECK_FALSE(blocked(SIGUSR1));
    REQUIRE(::raise(SIGUSR2) == 0);
    CHECK(c.join() == SIGUSR2);
    CHECK(same_mask(thread_mask(), before));
  });
}

TEST_CASE("signal: SIGKILL, SIGSTOP, numbers out of range and an empty set are rejected") {
  spindle::run([] {
    auto check_einval = [](std::initializer_list<int> set, const std::string& text) {
      try {
        spindle::wait_signal(set);
        FAIL("no exception");
      } catch (const std::system_error& e) {
        CHECK(e.code() == std::errc::invalid_argument);
        CHECK(std::string(e.what()).find(text) != std::string::npos);
      }
    };
    check_einval({SIGKILL}, "spindle::wait_signal(signal=9)");
    check_einval({SIGUSR1, SIGSTOP}, "signal=19");
    check_einval({0}, "signal=0");
    check_einval({NSIG}, fmt::format("signal={}", NSIG));
    check_einval({}, "empty signal set");
  });
}

TEST_CASE("signal: wait_signal outside a fiber throws std::logic_error") {
  CHECK_THROWS_AS(spindle::wait_signal({SIGUSR1}), std::logic_error);
}
