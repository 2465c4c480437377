// Switch: boost::context::fiber resume ping-pong.
//
// The typed, move-only wrapper over the same jump_fcontext: each resume()
// consumes a fiber handle and returns the peer's. Against raw_fcontext this
// shows what the wrapper's bookkeeping costs. One switch is one resume().
#include "bench.hpp"

#include <boost/context/fiber.hpp>
#include <boost/context/fixedsize_stack.hpp>

namespace bc = boost::context;

int main(int argc, char** argv) {
  bench::Runner runner("switch", argc, argv);
  if (runner.wants("context_fiber")) {
    auto pin = bench::pin_current_thread(bench::primary_cpu());
    // The partner bounces control back until the main side stops resuming
    // it; the final resume with stop set lets it return, so the fiber ends
    // cleanly and its stack is freed.
    bool stop = false;
    bc::fiber peer{std::allocator_arg, bc::fixedsize_stack(64 * 1024), [&stop](bc::fiber&& main) {
                     while (!stop) main = std::move(main).resume();
                     return std::move(main);
                   }};
    runner.time("context_fiber", {.unit = "ns/switch", .granularity = 2, .note = pin.note()},
                [&](std::uint64_t n) {
                  for (std::uint64_t i = 0; i < n; i += 2) peer = std::move(peer).resume();
                });
    stop = true;
    peer = std::move(peer).resume();
  }
  return runner.finish();
}
