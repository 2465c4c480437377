// Wake-up: two OS threads ping-ponging a byte over two pipes with blocking
// read() and write(), the peer of wake_spindle's spindle_pipe.
//
//   threads_pipe_1core  both threads pinned to one CPU: each hop is a write
//                       that wakes the reader blocked in read(), and a
//                       kernel context switch to it on the same CPU.
//   threads_pipe_2core  pinned to two CPUs: each hop is a cross-CPU wake-up
//                       (an IPI, and on a VM often a halted vCPU to resume).
//
// The unit is one round trip (two wakes). The partner thread is created per
// run; the clock starts once it has announced it is about to read, so the
// thread's creation is left out.
#include "bench.hpp"

#include <atomic>
#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include <fcntl.h>
#include <unistd.h>

namespace {

// Throws the errno of a failed call; `what` names the call and its key
// argument, as the runtime's own errors do.
[[noreturn]] void fail(const std::string& what) {
  throw std::system_error(errno, std::system_category(), what);
}

void read_byte(int fd) {
  char c;
  for (;;) {
    ssize_t n = ::read(fd, &c, 1);
    if (n == 1) return;
    if (n == 0) throw std::runtime_error("wake bench: unexpected end of file");
    if (errno != EINTR) fail(fmt::format("read(fd={})", fd));
  }
}

void write_byte(int fd) {
  char c = 'x';
  while (::write(fd, &c, 1) != 1) {
    if (errno != EINTR) fail(fmt::format("write(fd={})", fd));
  }
}

// n round trips; the partner thread runs on partner_cpu.
double run_pair(std::uint64_t n, int partner_cpu, bench::PinResult& partner_pin) {
  int p1[2], p2[2];
  if (::pipe2(p1, O_CLOEXEC) != 0) fail("pipe2");
  if (::pipe2(p2, O_CLOEXEC) != 0) fail("pipe2");
  std::atomic<bool> ready{false};
  std::thread partner([&] {
    partner_pin = bench::pin_current_thread(partner_cpu);
    ready.store(true, std::memory_order_release);
    for (std::uint64_t i = 0; i < n; ++i) {
      read_byte(p1[0]);
      write_byte(p2[1]);
    }
  });
  while (!ready.load(std::memory_order_acquire)) std::this_thread::yield();
  auto start = bench::Clock::now();
  for (std::uint64_t i = 0; i < n; ++i) {
    write_byte(p1[1]);
    read_byte(p2[0]);
  }
  auto stop = bench::Clock::now();
  partner.join();
  for (int fd : {p1[0], p1[1], p2[0], p2[1]}) ::close(fd);
  return bench::elapsed_ns(start, stop);
}

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("wake", argc, argv);
  int main_cpu = bench::primary_cpu();

  // One short probe run per case learns whether the partner's pinning took,
  // so the note can say so for both threads.
  auto measure = [&](std::string_view name, int partner_cpu) {
    auto pin = bench::pin_current_thread(main_cpu);
    bench::PinResult partner_pin;
    run_pair(1, partner_cpu, partner_pin);
    runner.time(name,
                {.unit = "ns/roundtrip",
                 .note = fmt::format("{} partner_{} wakes_per_op=2", pin.note(), partner_pin.note())},
                [&](std::uint64_t n) { return run_pair(n, partner_cpu, partner_pin); });
  };

  if (runner.wants("threads_pipe_1core")) measure("threads_pipe_1core", main_cpu);
  if (runner.wants("threads_pipe_2core")) {
    if (auto other = bench::secondary_cpu()) {
      measure("threads_pipe_2core", *other);
    } else {
      runner.skipped("threads_pipe_2core", "only one CPU available");
    }
  }
  return runner.finish();
}
