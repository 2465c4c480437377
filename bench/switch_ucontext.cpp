// Switch: glibc swapcontext ping-pong.
//
// The portable POSIX way. swapcontext saves and restores the signal mask,
// which costs an rt_sigprocmask system call on every switch; that, not the
// register shuffle, is what this figure mostly measures. One switch is one
// swapcontext call.
#include "bench.hpp"

#include <stdexcept>
#include <vector>

#include <ucontext.h>

namespace {

ucontext_t main_ctx, peer_ctx;

[[noreturn]] void partner() {
  for (;;) swapcontext(&peer_ctx, &main_ctx);
}

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("switch", argc, argv);
  if (runner.wants("ucontext")) {
    auto pin = bench::pin_current_thread(bench::primary_cpu());
    std::vector<char> stack(64 * 1024);
    if (getcontext(&peer_ctx) != 0) throw std::runtime_error("getcontext");
    peer_ctx.uc_stack.ss_sp = stack.data();
    peer_ctx.uc_stack.ss_size = stack.size();
    peer_ctx.uc_link = nullptr;
    makecontext(&peer_ctx, partner, 0);
    runner.time("ucontext", {.unit = "ns/switch", .granularity = 2, .note = pin.note()},
                [&](std::uint64_t n) {
                  for (std::uint64_t i = 0; i < n; i += 2) swapcontext(&main_ctx, &peer_ctx);
                });
  }
  return runner.finish();
}
