// Switch: two OS threads handing off through a futex.
//
// What a fiber switch replaces: a thread blocks in futex(FUTEX_WAIT) and
// the other one wakes it with FUTEX_WAKE. No spinning, so every hand-off
// goes through the kernel scheduler. Two results:
//   threads_futex_1core — both threads pinned to one CPU: each hand-off is
//                          a kernel context switch on that CPU;
//   threads_futex_2core — pinned to two CPUs: each hand-off is a cross-CPU
//                          wake-up (an IPI, and on a VM often a halted vCPU
//                          to resume).
// One switch is one hand-off.
#include "bench.hpp"

#include <atomic>
#include <cstdint>
#include <thread>

#include <linux/futex.h>
#include <sys/syscall.h>

namespace {

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr,
          0);
}

void futex_wake(std::atomic<std::uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

// Whose turn it is: 0 (the measuring thread) or 1 (the partner).
struct Baton {
  std::atomic<std::uint32_t> turn{0};

  void wait_for_turn(std::uint32_t self) {
    for (;;) {
      std::uint32_t t = turn.load(std::memory_order_acquire);
      if (t == self) return;
      futex_wait(turn, t);
    }
  }
  void hand_to(std::uint32_t other) {
    turn.store(other, std::memory_order_release);
    futex_wake(turn);
  }
};

// n hand-offs, n/2 each way. The measuring thread is the caller; the
// partner is created per run and excluded from the time as far as possible:
// the clock starts once the partner has announced it is about to wait.
double run_pair(std::uint64_t n, int partner_cpu, bench::PinResult& partner_pin) {
  Baton baton;
  std::atomic<bool> ready{false};
  std::thread partner([&] {
    partner_pin = bench::pin_current_thread(partner_cpu);
    ready.store(true, std::memory_order_release);
    for (std::uint64_t i = 0; i < n / 2; ++i) {
      baton.wait_for_turn(1);
      baton.hand_to(0);
    }
  });
  while (!ready.load(std::memory_order_acquire)) std::this_thread::yield();
  auto start = bench::Clock::now();
  for (std::uint64_t i = 0; i < n / 2; ++i) {
    baton.wait_for_turn(0);
    baton.hand_to(1);
  }
  baton.wait_for_turn(0);
  auto stop = bench::Clock::now();
  partner.join();
  return bench::elapsed_ns(start, stop);
}

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("switch", argc, argv);
  int main_cpu = bench::primary_cpu();

  // One short probe run per case learns whether the partner's pinning took,
  // so the note can say so for both threads.
  auto measure = [&](std::string_view name, int partner_cpu) {
    auto pin = bench::pin_current_thread(main_cpu);
    bench::PinResult partner_pin;
    run_pair(2, partner_cpu, partner_pin);
    runner.time(name,
                {.unit = "ns/switch",
                 .granularity = 2,
                 .note = fmt::format("{} partner_{}", pin.note(), partner_pin.note())},
                [&](std::uint64_t n) { return run_pair(n, partner_cpu, partner_pin); });
  };

  if (runner.wants("threads_futex_1core")) measure("threads_futex_1core", main_cpu);
  if (runner.wants("threads_futex_2core")) {
    if (auto other = bench::secondary_cpu()) {
      measure("threads_futex_2core", *other);
    } else {
      runner.skipped("threads_futex_2core", "only one CPU available");
    }
  }
  return runner.finish();
}
