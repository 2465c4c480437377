// Hooks for sleeping: sleep, usleep, nanosleep, clock_nanosleep (and so
// std::this_thread::sleep_for, which calls nanosleep). On a fiber they
// park on spindle's timer; elsewhere they are the kernel's.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <limits>

#include <spindle/this_fiber.hpp>

#include "runtime/hooks/hooks.hpp"
#include "runtime/hooks/real.hpp"

namespace spindle::hooks {

namespace {

constexpr std::int64_t kNsPerSec = 1'000'000'000;

bool valid(const timespec* ts) noexcept {
  return ts && ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < kNsPerSec;
}

std::int64_t to_ns(const timespec& ts) noexcept {
  if (ts.tv_sec >= std::numeric_limits<std::int64_t>::max() / kNsPerSec - 1) return detail::kNoDeadline;
  return static_cast<std::int64_t>(ts.tv_sec) * kNsPerSec + ts.tv_nsec;
}

timespec from_ns(std::int64_t ns) noexcept {
  return {static_cast<time_t>(ns / kNsPerSec), static_cast<long>(ns % kNsPerSec)};
}

// Parks the fiber for ns nanoseconds (0: lets the others run once, like
// sleep_for(0)). Returns 0 or an errno value, with the time left in *rem.
int fiber_sleep(std::int64_t ns, timespec* rem) noexcept {
  if (ns <= 0) return run_wait(detail::kNoDeadline, [] { this_fiber::yield(); });
  const std::int64_t deadline = fiber_deadline_after(ns);
  const int err = run_wait(detail::kNoDeadline, [deadline] {
    this_fiber::sleep_until(TimePoint(std::chrono::nanoseconds(deadline)));
  });
  if (err && rem) *rem = from_ns(std::max<std::int64_t>(0, deadline - detail::now_ns()));
  return err;
}

}  // namespace

int hook_clock_nanosleep(clockid_t clock, int flags, const timespec* req, timespec* rem) noexcept {
  const bool ours = clock == CLOCK_REALTIME || clock == CLOCK_MONOTONIC || clock == CLOCK_BOOTTIME;
  if (!ours || !current_fiber()) return real::clock_nanosleep(clock, flags, req, rem);
  if (!valid(req)) return EINVAL;
  std::int64_t ns = to_ns(*req);
  if (flags & TIMER_ABSTIME) {
    timespec now;
    ::clock_gettime(clock, &now);
    ns = ns == detail::kNoDeadline ? ns : ns - to_ns(now);
    // The time left is reported only for relative sleeps.
    rem = nullptr;
  }
  return fiber_sleep(ns, rem);
}

int hook_nanosleep(const timespec* req, timespec* rem) noexcept {
  // glibc's nanosleep measures CLOCK_REALTIME, relative.
  const int err = hook_clock_nanosleep(CLOCK_REALTIME, 0, req, rem);
  if (err == 0) return 0;
  errno = err;
  return -1;
}

}  // namespace spindle::hooks

using namespace spindle::hooks;

extern "C" {

int nanosleep(const timespec* req, timespec* rem) { return hook_nanosleep(req, rem); }

int clock_nanosleep(clockid_t clock, int flags, const timespec* req, timespec* rem) {
  return hook_clock_nanosleep(clock, flags, req, rem);
}

int usleep(useconds_t us) {
  const timespec req{static_cast<time_t>(us / 1'000'000), static_cast<long>(us % 1'000'000) * 1000};
  return hook_nanosleep(&req, nullptr);
}

// Returns the whole seconds not slept, rounded up, so that an interrupted
// sleep never reports 0.
unsigned int sleep(unsigned int seconds) {
  const timespec req{static_cast<time_t>(seconds), 0};
  timespec rem{0, 0};
  if (hook_nanosleep(&req, &rem) == 0) return 0;
  return static_cast<unsigned int>(rem.tv_sec) + (rem.tv_nsec > 0 ? 1 : 0);
}

}  // extern "C"
