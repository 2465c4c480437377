// The one place that switches stacks.
//
// Boost.Context's fcontext (make_fcontext, jump_fcontext, ontop_fcontext:
// hand-written assembly) does the switch. Every switch passes the fiber
// being left as the transfer data; the context that resumes stores the left
// fiber's new fcontext and, if that fiber has ended, reclaims its stack, now
// that nobody runs on it.
//
// Why ontop_fcontext and not jump_fcontext for resuming: jump_fcontext
// enters the other context with an indirect `jmp`, so the return address
// that the caller's `call` pushed on the CPU's return-stack predictor is
// never popped, and every `ret` the resumed fiber then executes is predicted
// one entry off: a mispredicted return per frame on the way back to user
// code (measured: 29 ns instead of 13 ns per switch with two call levels).
// ontop_fcontext enters the other context by running `on_resume` on top of
// it, and that function's `ret` consumes exactly the entry our `call`
// pushed, at the same call site in both fibers, so the predictor stays
// aligned. A fiber that has never run has no such frame yet and is entered
// once with jump_fcontext, through `trampoline`.
//
// What a switch carries besides registers:
// - The C++ exception globals (__cxa_eh_globals: the caught-exception stack
//   and the uncaught count) are per thread in libstdc++; with fibers they
//   must be per fiber, or a fiber parked in a catch block would see another
//   fiber's exception on `throw;`. They are swapped here, two words a side.
// - The FP environment is left to jump_fcontext, which saves MXCSR and the
//   x87 control word of the context it leaves and loads those of the one it
//   enters. make_fcontext records the creating thread's values, so a new
//   fiber starts with exactly the spawner's settings and the load never
//   changes MXCSR unless some fiber changed it (a differing MXCSR costs tens
//   of ns per switch).
// - ASan needs to be told about every stack change
//   (__sanitizer_start/finish_switch_fiber), and so does Valgrind about the
//   stacks themselves (VALGRIND_STACK_REGISTER, in runtime/stack.cpp).
#include <cxxabi.h>

#include <cstring>

#include <boost/context/detail/fcontext.hpp>

#include <spindle/detail/assert.hpp>

#include "runtime/scheduler.hpp"

#if defined(SPINDLE_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(SPINDLE_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

namespace spindle::detail {

namespace bctx = boost::context::detail;

EhState* thread_eh_globals() noexcept {
  // libstdc++'s __cxa_eh_globals is {__cxa_exception* caughtExceptions;
  // unsigned int uncaughtExceptions;}, padded to 16 bytes on LP64.
  static_assert(sizeof(EhState) == 16);
  return reinterpret_cast<EhState*>(abi::__cxa_get_globals());
}

// Runs on the context that was just resumed; `data` is the fiber it took
// over from, `fctx` where that fiber stopped.
[[gnu::always_inline]] inline void resumed(void* fctx, void* data) noexcept {
  Fiber* prev = static_cast<Fiber*>(data);
  Scheduler* s = prev->sched;
#if defined(SPINDLE_ASAN)
  const void* bottom = nullptr;
  std::size_t size = 0;
  __sanitizer_finish_switch_fiber(s->running_->asan_fake_stack, &bottom, &size);
  // The thread's own stack is only known to ASan; learn it on first leave.
  if (prev == &s->main_ && prev->stack_base == nullptr) {
    prev->stack_base = const_cast<void*>(bottom);
    prev->stack_size = size;
  }
#endif
  prev->ctx = fctx;
  if (prev->state == FiberState::done) {
#if defined(SPINDLE_TSAN)
    __tsan_destroy_fiber(prev->tsan_fiber);
    prev->tsan_fiber = nullptr;
#endif
    s->reclaim(prev);
  }
}

namespace {
bctx::transfer_t on_resume(bctx::transfer_t t) noexcept {
  resumed(t.fctx, t.data);
  return t;
}

[[noreturn]] void trampoline(bctx::transfer_t t) noexcept {
  // Read before resumed(): it may reclaim the fiber we took over from, and
  // a detached one is freed right there.
  Scheduler* s = static_cast<Fiber*>(t.data)->sched;
  resumed(t.fctx, t.data);
  s->fiber_main(s->running());
}
}  // namespace

void init_context(Fiber* f) noexcept {
  void* top = static_cast<char*>(f->stack_base) + f->stack_size;
  f->ctx = bctx::make_fcontext(top, f->stack_size, &trampoline);
  f->fresh = true;
#if defined(SPINDLE_TSAN)
  f->tsan_fiber = __tsan_create_fiber(0);
#endif
}

void switch_context(Fiber* from, Fiber* to) noexcept {
  // Copied as 16-byte blocks (pointer, count, padding): two SSE moves a side.
  EhState* g = from->sched->eh_globals_;
  std::memcpy(&from->eh, g, sizeof(EhState));
  std::memcpy(g, &to->eh, sizeof(EhState));
#if defined(SPINDLE_ASAN)
  // A dead fiber passes nullptr so ASan frees its fake stack.
  __sanitizer_start_switch_fiber(from->state == FiberState::done ? nullptr : &from->asan_fake_stack,
                                 to->stack_base, to->stack_size);
#endif
#if defined(SPINDLE_TSAN)
  // The thread's own context is known to TSan already; learn it on first leave.
  if (!from->tsan_fiber) from->tsan_fiber = __tsan_get_current_fiber();
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
  if (__builtin_expect(to->fresh, false)) {
    to->fresh = false;
    bctx::jump_fcontext(to->ctx, from);  // the trampoline runs resumed()
  } else {
    bctx::ontop_fcontext(to->ctx, from, &on_resume);
  }
}

}  // namespace spindle::detail
