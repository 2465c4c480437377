// Switch: raw Boost.Context jump_fcontext ping-pong (bench/raw_pingpong.hpp),
// the reference every other switch figure is compared to, and the same
// ping-pong with the switch behind a call (raw_ontop_call, raw_jump_call):
// the least a runtime's yield can cost with this engine.
#include "bench.hpp"
#include "raw_pingpong.hpp"

#include <string_view>

namespace {

// One case: a fresh ping-pong on this thread, pinned, `body(pp, n)` making
// n switches.
template <class Body>
void time_case(bench::Runner& runner, std::string_view name, Body body) {
  auto pin = bench::pin_current_thread(bench::primary_cpu());
  bench::RawPingPong pp;
  runner.time(name, {.unit = "ns/switch", .granularity = 2, .note = pin.note()},
              [&](std::uint64_t n) { body(pp, n); });
}

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("switch", argc, argv);
  using PP = bench::RawPingPong;
  if (runner.wants("raw_fcontext"))
    time_case(runner, "raw_fcontext", [](PP& pp, std::uint64_t n) { pp.run(n); });
  if (runner.wants("raw_fcontext_fpflags"))
    time_case(runner, "raw_fcontext_fpflags", [](PP& pp, std::uint64_t n) { pp.run(n, true); });
  if (runner.wants("raw_ontop_call"))
    time_case(runner, "raw_ontop_call", [](PP& pp, std::uint64_t n) { pp.run_behind_call(n, PP::Via::ontop); });
  if (runner.wants("raw_jump_call"))
    time_case(runner, "raw_jump_call", [](PP& pp, std::uint64_t n) { pp.run_behind_call(n, PP::Via::jump); });
  return runner.finish();
}
