// Timers: Boost.Asio (header-only, Boost 1.74), the callback-timer peer of
// bench/timer_spindle.cpp, on one io_context run by this thread alone
// (concurrency hint 1, the usual single-threaded setting).
//
//   asio_add_cancel_N   N steady_timers (constructed once, outside the
//                       time): expires_at(now + 1 h + a random part of a
//                       second) and async_wait on each, then cancel() each
//                       in a random order, then io_context::run() to drain
//                       the N completions. Asio's cancel does not drop the
//                       wait: it completes it with operation_aborted and the
//                       handler must run, so the drain is part of the cost.
//                       The deadlines and the cancel order are those of
//                       spindle_heap_add_cancel_N; N is 1M with --full and
//                       100k in short mode. ns per add+cancel.
//   asio_expire_10k     10,000 timers, each re-armed with expires_after(its
//                       period) + async_wait from its own handler, periods
//                       staggered from 1 to 100 us as for spindle_expire_10k.
//                       The deadlines fall due faster than one CPU handles
//                       them, so the run is saturated and measures the cost
//                       per expiration. The timers are armed once per case
//                       and keep re-arming; a timed run counts n
//                       expirations of that steady state.
#include "bench.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using bench::Clock;

constexpr std::uint64_t kSleepers = 10'000;

// xorshift64*: the same sequence as in timer_spindle.cpp and timer_go.go.
struct Rng {
  std::uint64_t s = 0x9E3779B97F4A7C15ull;
  std::uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
};

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

std::chrono::nanoseconds sleeper_period(std::uint64_t i) {
  return std::chrono::nanoseconds(1'000 + (i * 2'654'435'761ull) % 99'000);
}

double add_cancel_batches(const Batch& b, asio::io_context& io, std::vector<asio::steady_timer>& timers,
                          std::uint64_t n) {
  std::uint64_t aborted = 0;
  auto on_done = [&aborted](const boost::system::error_code& ec) {
    if (ec == asio::error::operation_aborted) ++aborted;
  };
  const auto base = asio::steady_timer::clock_type::now() + 1h;
  auto start = Clock::now();
  for (std::uint64_t done = 0; done < n; done += b.size()) {
    for (std::uint64_t i = 0; i < b.size(); ++i) {
      timers[i].expires_at(base + std::chrono::nanoseconds(b.offset_ns[i]));
      timers[i].async_wait(on_done);
    }
    for (std::uint32_t i : b.cancel_order) timers[i].cancel();
    io.run();
    io.restart();
  }
  auto stop = Clock::now();
  if (aborted != n) throw std::logic_error("asio_add_cancel: a wait was not cancelled");
  return bench::elapsed_ns(start, stop);
}

// kSleepers timers, each re-armed from its own handler for as long as the
// case runs, so that each timed run sees the steady state (as in
// timer_spindle.cpp). A run sets the count and runs the io_context until
// the handler that takes the count to zero stops it; handlers already due
// stay queued for the next run.
class ExpireLoad {
 public:
  explicit ExpireLoad(asio::io_context& io) : io_(io) {
    sleepers_.reserve(kSleepers);
    for (std::uint64_t i = 0; i < kSleepers; ++i) {
      sleepers_.push_back(std::make_unique<Sleeper>(io, sleeper_period(i)));
      arm(*sleepers_.back());
    }
  }
  ~ExpireLoad() {
    quit_ = true;
    for (auto& s : sleepers_) s->timer.cancel();
    io_.restart();
    io_.run();
  }
  ExpireLoad(const ExpireLoad&) = delete;
  ExpireLoad& operator=(const ExpireLoad&) = delete;

  double run(std::uint64_t n) {
    left_ = n;
    io_.restart();
    auto start = Clock::now();
    io_.run();
    return bench::elapsed_ns(start, stop_);
  }

 private:
  struct Sleeper {
    Sleeper(asio::io_context& io, std::chrono::nanoseconds p) : timer(io), period(p) {}
    asio::steady_timer timer;
    std::chrono::nanoseconds period;
  };

  void arm(Sleeper& s) {
    s.timer.expires_after(s.period);
    s.timer.async_wait([this, &s](const boost::system::error_code& ec) {
      if (ec || quit_) return;
      if (left_ > 0 && --left_ == 0) {
        stop_ = Clock::now();
        io_.stop();
      }
      arm(s);
    });
  }

  asio::io_context& io_;
  std::uint64_t left_ = 0;
  bool quit_ = false;
  Clock::time_point stop_{};
  std::vector<std::unique_ptr<Sleeper>> sleepers_;
};

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("timer", argc, argv);
  auto pin = bench::pin_current_thread(bench::primary_cpu());
  const std::string note = pin.note();
  asio::io_context io(1);

  const std::uint32_t batch_size = runner.full() ? 1'000'000 : 100'000;
  const std::string add_cancel_name = "asio_add_cancel_" + bench::Runner::count_label(batch_size);
  if (runner.wants(add_cancel_name)) {
    const Batch batch = make_batch(batch_size);
    std::vector<asio::steady_timer> timers;
    timers.reserve(batch_size);
    for (std::uint32_t i = 0; i < batch_size; ++i) timers.emplace_back(io);
    runner.time(add_cancel_name,
                {.unit = "ns/timer",
                 .granularity = batch_size,
                 .note = fmt::format("{} pending={}", note, batch_size)},
                [&](std::uint64_t n) { return add_cancel_batches(batch, io, timers, n); });
  }
  if (runner.wants("asio_expire_10k")) {
    ExpireLoad load(io);
    runner.time("asio_expire_10k", {.unit = "ns/expiry", .note = note + " timers=10000 period=1-100us"},
                [&](std::uint64_t n) { return load.run(n); });
  }
  return runner.finish();
}
