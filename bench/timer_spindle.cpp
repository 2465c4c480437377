// Timers: spindle. bench/timer_asio.cpp and bench/timer_go.go run the same
// add+cancel batch and the same expiration load on Boost.Asio and Go.
//
// A spindle timer is not an object of its own: it is the deadline of a
// parked fiber, one entry of the scheduler's 4-ary heap (runtime/timer.hpp),
// added when a wait with a deadline parks and removed when something else
// readies the fiber first. A Timeout scope adds nothing by itself (it only
// lowers the deadline of the waits made inside it), so the public-API cases
// below add and cancel through waits.
//
// add + cancel
//   spindle_heap_add_cancel_N   the heap alone: add N entries (deadlines 1 h
//                               plus a random part of a second, one fiber
//                               record each), then cancel them all in a
//                               random order; N pending at the peak. ns per
//                               add+cancel. N is 1M with --full and 100k in
//                               short mode: every repetition is at least one
//                               whole batch, and seven 1M batches of each
//                               peer would not fit the short suite's budget.
//   spindle_wait_add_cancel_N   the same batch through the public API, as
//                               the Asio and Go peers make theirs: N fibers,
//                               fiber i parked in Event::wait_until(the
//                               batch's deadline i). A timed batch sets the
//                               N events in the batch's cancel order (each
//                               set readies its fiber and removes its
//                               deadline), then every fiber runs, clears its
//                               event and parks again with the same deadline
//                               (the add of the next batch). ns per
//                               add+cancel, two switches and one clock read
//                               included; N pending at the peak. The fibers
//                               are spawned once per case, outside the time.
//   spindle_event_wait          public API baseline: two fibers ping-pong
//                               over two Events with wait(), no deadline.
//   spindle_event_wait_for      the same with wait_for(1h): every wait parks
//                               with a deadline (heap add) and is readied by
//                               set() before it (heap remove). The difference
//                               from spindle_event_wait is what a deadline
//                               that does not fire costs, clock read included.
//   spindle_event_wait_for_10k  the same while 10,000 other fibers sleep with
//                               deadlines spread over 30 to 90 minutes, so
//                               the new 1 h deadline lands inside a deep heap.
// expirations
//   spindle_heap_expire_N       the heap alone: add N entries, then expire
//                               them all in deadline order (N as above).
//   spindle_expire_manual_10k   10,000 fibers each sleeping in a loop, with
//                               periods staggered from 1 to 100 us, on a
//                               ManualClock with auto-advance: when every
//                               fiber sleeps, the clock jumps to the earliest
//                               deadline. No real waiting, so the figure is
//                               the CPU cost of one expiration: heap pop,
//                               ready, switch to the fiber, its next
//                               sleep_for (clock read, heap add, park).
//   spindle_expire_10k          the same on the real clock. Ten thousand
//                               fibers sleeping at most 100 us each ask for
//                               far more expirations per second than one CPU
//                               can handle, so the run is saturated and again
//                               measures the cost per expiration, now with
//                               real clock reads and the idle step included.
// The sleepers of the expiration cases are spawned once per case and sleep
// in a loop until it ends; a timed run counts n expirations of that steady
// state, so spawning and the first touch of 10,000 fresh stacks stay out.
#include "bench.hpp"

#include <spindle/spindle.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

#include "runtime/timer.hpp"

namespace {

using namespace std::chrono_literals;
using bench::Clock;

constexpr std::uint64_t kSleepers = 10'000;

// xorshift64*: the same sequence in timer_asio.cpp and timer_go.go, so the
// three implementations add and cancel the same deadlines in the same order.
struct Rng {
  std::uint64_t s = 0x9E3779B97F4A7C15ull;
  std::uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
};

// Offsets (ns) from a base deadline for a batch of timers, and the order
// in which the batch is cancelled (a Fisher-Yates shuffle).
struct Batch {
  std::vector<std::int64_t> offset_ns;
  std::vector<std::uint32_t> cancel_order;
  std::uint64_t size() const { return offset_ns.size(); }
};

Batch make_batch(std::uint32_t size) {
  Batch b;
  Rng rng;
  b.offset_ns.resize(size);
  for (auto& d : b.offset_ns) d = static_cast<std::int64_t>(rng.next() % 1'000'000'000);
  b.cancel_order.resize(size);
  for (std::uint32_t i = 0; i < size; ++i) b.cancel_order[i] = i;
  for (std::uint32_t i = size - 1; i > 0; --i)
    std::swap(b.cancel_order[i], b.cancel_order[rng.next() % (i + 1)]);
  return b;
}

// Sleeper i's period: 1 us to 100 us, spread by a multiplicative hash so
// neighbours differ (the same formula in the Asio and Go peers).
std::chrono::nanoseconds sleeper_period(std::uint64_t i) {
  return std::chrono::nanoseconds(1'000 + (i * 2'654'435'761ull) % 99'000);
}

double heap_add_cancel_batches(const Batch& b, spindle::detail::Fiber* fibers, std::uint64_t n) {
  using namespace spindle::detail;
  TimerHeap heap;
  const std::int64_t base = to_ns(Clock::now()) + std::chrono::nanoseconds(1h).count();
  auto start = Clock::now();
  for (std::uint64_t done = 0; done < n; done += b.size()) {
    for (std::uint64_t i = 0; i < b.size(); ++i) heap.add(&fibers[i], base + b.offset_ns[i]);
    for (std::uint32_t i : b.cancel_order) heap.remove(&fibers[i]);
  }
  auto stop = Clock::now();
  bench::do_not_optimize(heap.size());
  return bench::elapsed_ns(start, stop);
}

double heap_expire_batches(const Batch& b, spindle::detail::Fiber* fibers, std::uint64_t n) {
  using namespace spindle::detail;
  TimerHeap heap;
  const std::int64_t base = to_ns(Clock::now());
  std::uint64_t expired = 0;
  auto start = Clock::now();
  for (std::uint64_t done = 0; done < n; done += b.size()) {
    for (std::uint64_t i = 0; i < b.size(); ++i) heap.add(&fibers[i], base + b.offset_ns[i]);
    heap.expire(base + 1'000'000'000, [&](Fiber*) { ++expired; });
  }
  auto stop = Clock::now();
  if (expired != n) throw std::logic_error("heap_expire_batches: not every timer expired");
  return bench::elapsed_ns(start, stop);
}

// n waits, n / 2 per fiber; with_deadline picks wait_for(1h) over wait().
double event_waits(std::uint64_t n, bool with_deadline) {
  spindle::Event ping, pong;
  auto wait = [&](spindle::Event& e) {
    if (with_deadline) {
      if (!e.wait_for(1h)) throw std::logic_error("event_waits: a 1 h deadline passed");
    } else {
      e.wait();
    }
    e.clear();
  };
  Clock::time_point start, stop;
  auto a = spindle::spawn([&] {
    start = Clock::now();
    for (std::uint64_t i = 0; i < n / 2; ++i) {
      ping.set();
      wait(pong);
    }
    stop = Clock::now();
  });
  auto b = spindle::spawn([&] {
    for (std::uint64_t i = 0; i < n / 2; ++i) {
      wait(ping);
      pong.set();
    }
  });
  a.join();
  b.join();
  return bench::elapsed_ns(start, stop);
}

// The add+cancel batch through Event::wait_until (spindle_wait_add_cancel_N).
class WaitAddCancel {
 public:
  explicit WaitAddCancel(const Batch& b) : batch_(b), events_(b.size()) {
    const auto base = Clock::now() + 1h;
    waiters_.reserve(b.size());
    for (std::uint64_t i = 0; i < b.size(); ++i)
      waiters_.push_back(spindle::spawn([this, i, deadline = base + std::chrono::nanoseconds(b.offset_ns[i])] {
        for (;;) {
          if (!events_[i].wait_until(deadline)) throw std::logic_error("WaitAddCancel: a 1 h deadline passed");
          events_[i].clear();
          if (++returned_ == batch_.size()) done_.set();
        }
      }));
    spindle::this_fiber::yield();  // every waiter runs once and parks with its deadline
  }
  // As ExpireLoad's: cancel every waiter before the tasks wait for them.
  ~WaitAddCancel() {
    for (auto& t : waiters_) t.cancel();
  }
  WaitAddCancel(const WaitAddCancel&) = delete;
  WaitAddCancel& operator=(const WaitAddCancel&) = delete;

  double run(std::uint64_t n) {
    auto start = Clock::now();
    for (std::uint64_t done = 0; done < n; done += batch_.size()) {
      returned_ = 0;
      done_.clear();
      for (std::uint32_t i : batch_.cancel_order) events_[i].set();
      // The last waiter sets done_ and parks again before this fiber, which
      // it readied, runs: every deadline of the next batch is in place.
      done_.wait();
    }
    return bench::elapsed_ns(start, Clock::now());
  }

 private:
  const Batch& batch_;
  std::vector<spindle::Event> events_;
  std::uint64_t returned_ = 0;
  spindle::Event done_;
  std::vector<spindle::Task<void>> waiters_;  // last: destroyed first
};

// kSleepers fibers sleeping in a loop for as long as the case runs, so
// that each timed run sees the steady state: no spawns, no first touches of
// fresh stacks. A run sets the count and waits for the fiber whose
// expiration takes it to zero.
class ExpireLoad {
 public:
  ExpireLoad() {
    sleepers_.reserve(kSleepers);
    for (std::uint64_t i = 0; i < kSleepers; ++i)
      sleepers_.push_back(spindle::spawn([this, period = sleeper_period(i)] {
        for (;;) {
          spindle::this_fiber::sleep_for(period);
          if (left_ > 0 && --left_ == 0) {
            stop_ = Clock::now();
            done_.set();
          }
        }
      }));
  }
  // Cancels every sleeper before the tasks are destroyed. A task's
  // destructor cancels only its own fiber and then waits for it, behind
  // every other sleeper the clock has readied meanwhile: one by one, that
  // is ten thousand rounds of the whole load.
  ~ExpireLoad() {
    for (auto& t : sleepers_) t.cancel();
  }
  ExpireLoad(const ExpireLoad&) = delete;
  ExpireLoad& operator=(const ExpireLoad&) = delete;

  double run(std::uint64_t n) {
    done_.clear();
    left_ = n;
    auto start = Clock::now();
    done_.wait();
    return bench::elapsed_ns(start, stop_);
  }

 private:
  std::uint64_t left_ = 0;
  Clock::time_point stop_{};
  spindle::Event done_;
  // Declared last, so destroyed first: destroying a task cancels its fiber
  // and waits for it, while the members the sleepers use still exist.
  std::vector<spindle::Task<void>> sleepers_;
};

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("timer", argc, argv);
  auto pin = bench::pin_current_thread(bench::primary_cpu());
  const std::string note = pin.note();
  const std::uint32_t batch_size = runner.full() ? 1'000'000 : 100'000;
  const std::string label = bench::Runner::count_label(batch_size);
  const std::string heap_add_cancel_name = "spindle_heap_add_cancel_" + label;
  const std::string heap_expire_name = "spindle_heap_expire_" + label;
  // Asked once each: in --list mode wants() prints the name.
  const bool heap_add_cancel = runner.wants(heap_add_cancel_name);
  const std::string wait_add_cancel_name = "spindle_wait_add_cancel_" + label;
  const bool wait_add_cancel = runner.wants(wait_add_cancel_name);
  const bool event_wait = runner.wants("spindle_event_wait");
  const bool event_wait_for = runner.wants("spindle_event_wait_for");
  const bool event_wait_for_10k = runner.wants("spindle_event_wait_for_10k");
  const bool heap_expire = runner.wants(heap_expire_name);
  const bool expire_manual = runner.wants("spindle_expire_manual_10k");
  const bool expire_real = runner.wants("spindle_expire_10k");

  // The heap writes each entry's index into its fiber's record, so the
  // records are real Fiber objects, one after the other as in a slab.
  Batch batch;
  std::unique_ptr<spindle::detail::Fiber[]> fibers;
  if (heap_add_cancel || heap_expire || wait_add_cancel) {
    batch = make_batch(batch_size);
    fibers = std::make_unique<spindle::detail::Fiber[]>(batch_size);
  }
  const bench::Case heap_case{
      .unit = "ns/timer", .granularity = batch_size, .note = fmt::format("{} pending={}", note, batch_size)};
  const bench::Case expire_case{.unit = "ns/expiry", .note = note + " fibers=10000 period=1-100us"};

  if (heap_add_cancel)
    runner.time(heap_add_cancel_name, heap_case,
                [&](std::uint64_t n) { return heap_add_cancel_batches(batch, fibers.get(), n); });

  if (wait_add_cancel) {
    spindle::run([&] {
      WaitAddCancel load(batch);
      runner.time(wait_add_cancel_name, heap_case, [&](std::uint64_t n) { return load.run(n); });
    });
  }

  if (event_wait || event_wait_for || event_wait_for_10k) {
    spindle::run([&] {
      const bench::Case c{.unit = "ns/wait", .granularity = 2, .note = note};
      if (event_wait)
        runner.time("spindle_event_wait", c, [](std::uint64_t n) { return event_waits(n, false); });
      if (event_wait_for)
        runner.time("spindle_event_wait_for", c, [](std::uint64_t n) { return event_waits(n, true); });
      if (event_wait_for_10k) {
        Rng rng;
        const auto spread = static_cast<std::uint64_t>(std::chrono::nanoseconds(1h).count());
        std::vector<spindle::Task<void>> sleepers;
        sleepers.reserve(kSleepers);
        for (std::uint64_t i = 0; i < kSleepers; ++i) {
          auto d = 30min + std::chrono::nanoseconds(rng.next() % spread);
          sleepers.push_back(spindle::spawn([d] { spindle::this_fiber::sleep_for(d); }));
        }
        spindle::this_fiber::yield();  // every sleeper runs once and parks with its deadline
        runner.time("spindle_event_wait_for_10k",
                    {.unit = "ns/wait", .granularity = 2, .note = note + " pending=10000"},
                    [](std::uint64_t n) { return event_waits(n, true); });
        // Destroying the tasks cancels the sleepers and waits for them.
      }
    });
  }

  if (heap_expire)
    runner.time(heap_expire_name, heap_case,
                [&](std::uint64_t n) { return heap_expire_batches(batch, fibers.get(), n); });

  if (expire_manual) {
    spindle::ManualClock clock;
    spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
      ExpireLoad load;
      runner.time("spindle_expire_manual_10k",
                  {.unit = "ns/expiry", .note = expire_case.note + " clock=manual"},
                  [&](std::uint64_t n) { return load.run(n); });
    });
  }
  if (expire_real) {
    spindle::run([&] {
      ExpireLoad load;
      runner.time("spindle_expire_10k", expire_case, [&](std::uint64_t n) { return load.run(n); });
    });
  }
  return runner.finish();
}
