// What a fiber can ask about and do to itself.
//
// Every call here is a suspension point: a pending cancellation throws
// Cancelled, an expired Timeout scope throws TimeoutError. Called outside a
// fiber (no spindle::run on this thread) they throw std::logic_error.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <spindle/clock.hpp>

namespace spindle::this_fiber {

// Lets every other runnable fiber run once, then continues (FIFO).
void yield();

// Parks until `deadline` on the scheduler's clock; never returns early.
void sleep_until(TimePoint deadline);

template <class Rep, class Period>
void sleep_for(std::chrono::duration<Rep, Period> d) {
  if (d <= d.zero()) {
    yield();  // like asyncio.sleep(0): a scheduling point, not a timer
    return;
  }
  sleep_until(detail::deadline_after(spindle::now(), d));
}

// The name given at spawn, or "fiber-<id>".
std::string name();
// Unique per process while the program runs; 0 is no fiber.
std::uint64_t id() noexcept;

}  // namespace spindle::this_fiber
