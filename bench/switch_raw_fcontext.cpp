// Switch: raw Boost.Context jump_fcontext ping-pong (bench/raw_pingpong.hpp),
// the reference every other switch figure is compared to, and the same
// ping-pong with the switch behind a call (raw_ontop_call, raw_jump_call):
// the least a runtime's yield can cost with this engine.
#include "bench.hpp"
#include "raw_pingpong.hpp"

#include <string_view>

namespace {

void time_pingpong(bench::Runner& runner, std::string_view name, bool raise_flag) {
  auto pin = bench::pin_current_thread(bench::primary_cpu());
  bench::RawPingPong pp;
  runner.time(name, {.unit = "ns/switch", .granularity = 2, .note = pin.note()},
              [&](std::uint64_t n) { pp.run(n, raise_flag); });
}

void time_behind_call(bench::Runner& runner, std::string_view name, bench::RawPingPong::Via via) {
  auto pin = bench::pin_current_thread(bench::primary_cpu());
  bench::RawPingPong pp;
  runner.time(name, {.unit = "ns/switch", .granularity = 2, .note = pin.note()},
              [&](std::uint64_t n) { pp.run_behind_call(n, via); });
}

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("switch", argc, argv);
  if (runner.wants("raw_fcontext")) time_pingpong(runner, "raw_fcontext", false);
  if (runner.wants("raw_fcontext_fpflags")) time_pingpong(runner, "raw_fcontext_fpflags", true);
  using Via = bench::RawPingPong::Via;
  if (runner.wants("raw_ontop_call")) time_behind_call(runner, "raw_ontop_call", Via::ontop);
  if (runner.wants("raw_jump_call")) time_behind_call(runner, "raw_jump_call", Via::jump);
  return runner.finish();
}
