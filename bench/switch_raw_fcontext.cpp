// Switch: raw Boost.Context jump_fcontext ping-pong.
//
// The reference every other switch figure is compared to: two contexts, the
// main one and one on an mmap'd stack, handing control back and forth with
// the bare assembly primitive spindle itself is built on. Nothing is saved
// or checked beyond what jump_fcontext does. One switch is one
// jump_fcontext call.
#include "bench.hpp"

#include <boost/context/detail/fcontext.hpp>

#include <stdexcept>
#include <string_view>

#include <sys/mman.h>

namespace ctx = boost::context::detail;

namespace {

constexpr std::size_t kStackSize = 64 * 1024;

[[noreturn]] void partner(ctx::transfer_t t) {
  // Bounce straight back, forever; the main side decides when to stop and
  // simply never resumes us again.
  for (;;) t = ctx::jump_fcontext(t.fctx, nullptr);
}

class Stack {
 public:
  Stack() {
    base_ = mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base_ == MAP_FAILED) throw std::runtime_error("mmap(stack)");
#if SPINDLE_BENCH_HAVE_VALGRIND
    valgrind_id_ = VALGRIND_STACK_REGISTER(top(), base_);
#endif
  }
  ~Stack() {
#if SPINDLE_BENCH_HAVE_VALGRIND
    VALGRIND_STACK_DEREGISTER(valgrind_id_);
#endif
    munmap(base_, kStackSize);
  }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  void* top() const { return static_cast<char*>(base_) + kStackSize; }

 private:
  void* base_;
#if SPINDLE_BENCH_HAVE_VALGRIND
  unsigned valgrind_id_ = 0;
#endif
};

// Times the ping-pong. With raise_flag this side raises the inexact flag
// before the loop and the partner does not, so every jump loads a different
// MXCSR (what spindle's switch avoids, runtime/context.cpp).
void time_pingpong(bench::Runner& runner, std::string_view name, bool raise_flag) {
  auto pin = bench::pin_current_thread(bench::primary_cpu());
  Stack stack;
  runner.time(name, {.unit = "ns/switch", .granularity = 2, .note = pin.note()}, [&](std::uint64_t n) {
    // A fresh partner per run (the last one is abandoned in its loop):
    // make_fcontext records this side's MXCSR, exception flags included, so
    // both sides start with the same value.
    ctx::fcontext_t peer = ctx::make_fcontext(stack.top(), kStackSize, partner);
    if (raise_flag) bench::raise_inexact();
    for (std::uint64_t i = 0; i < n; i += 2) {
      peer = ctx::jump_fcontext(peer, nullptr).fctx;
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("switch", argc, argv);
  if (runner.wants("raw_fcontext")) time_pingpong(runner, "raw_fcontext", false);
  if (runner.wants("raw_fcontext_fpflags")) time_pingpong(runner, "raw_fcontext_fpflags", true);
  return runner.finish();
}
