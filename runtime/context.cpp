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
// - The FP environment: jump_fcontext saves MXCSR and the x87 control word
//   of the context it leaves and loads those of the one it enters, and
//   make_fcontext records the creating thread's values, so the control
//   modes (rounding, FTZ/DAZ, exception masks, x87 precision) are per fiber
//   and a new fiber starts with its spawner's. MXCSR also holds the six
//   sticky exception flags, which any inexact division sets. Left alone, a
//   fiber that has raised one and a fiber that has not would make every
//   switch between them load a different MXCSR, and an `ldmxcsr` that
//   changes the value is slow: on the Intel VM here a 4 ns jump becomes
//   60 ns (bench: raw_fcontext_fpflags against spindle_pingpong_fpflags).
//   So the flags are made the thread's, as they are for threads, Go, libco
//   and Photon: switch_context notes, in the leaving fiber's record, the
//   MXCSR image the routine will load (offset 0 of an fcontext frame on
//   x86-64), and resumed() compares its flags with those the leaving
//   context saved; if they differ (rarely, once flags have spread) it loads
//   the leaving context's flags. Every context then carries the same flags
//   and the switch's load changes MXCSR only when a fiber changed its own
//   control modes. Comparing after the switch costs two loads; doing it
//   before would need a `stmxcsr`, which measured 1.5 ns a switch. Whether
//   the frame has that layout (fp_frame_layout_ok, once per scheduler) is
//   asked only on the rare path: with another layout the comparison reads
//   two other saved words, and when they differ the rare path finds the
//   sharing off and does nothing.
// - A fiber on a small stack (runtime/stack.hpp) has its canary checked on
//   the way out: one predictable branch for every other fiber.
// - ASan needs to be told about every stack change
//   (__sanitizer_start/finish_switch_fiber), and so does Valgrind about the
//   stacks themselves (VALGRIND_STACK_REGISTER, in runtime/stack.cpp).
//
// The other stack switch: the unwinder of small-stack fibers. libgcc's
// unwinder needs about 2 KiB of stack of its own (two register contexts and
// a frame state, plus the FDE search), more than a 2 KiB small stack has
// left at a park site, and cancelling a parked fiber throws there. This file
// therefore defines _Unwind_RaiseException, _Unwind_Resume and
// _Unwind_Resume_or_Rethrow, which the executable exports in place of
// libgcc_s's (libstdc++'s __cxa_throw and every landing pad call them), and
// forwards to libgcc_s's own: directly when the running fiber has an
// ordinary stack, and through call_on_stack, on the scheduler's side
// stack, when it has a small one. call_on_stack keeps an ordinary %rbp frame
// whose CFA is the fiber's stack pointer, so the unwinder walks from the
// side stack straight into the fiber's frames; when it finds a landing pad
// it installs that frame's registers, stack pointer included, and the pad
// runs on the fiber's stack. Nothing switches fibers while the unwinder
// runs, so one side stack per thread serves every small-stack fiber. The
// scheduler's idle step (the poller, timer expiry) runs there too, through
// call_on_side_stack; it never switches fibers either.
// The definitions are weak: a fully static link (libgcc_eh.a) keeps
// libgcc's own, dlsym(RTLD_NEXT) then finds nothing, and small stacks are
// refused with an error instead.
#include <cxxabi.h>
#include <dlfcn.h>
#include <unwind.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include <boost/context/detail/fcontext.hpp>

#include <spindle/detail/assert.hpp>

#include "runtime/scheduler.hpp"

#if defined(SPINDLE_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(SPINDLE_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

#if defined(SPINDLE_ASAN)
#define SPINDLE_NO_ASAN __attribute__((no_sanitize("address")))
#else
#define SPINDLE_NO_ASAN
#endif

// Boost declares its switch routines without noexcept, and a call from a
// noexcept function to one that may throw needs a frame of its own (for
// std::terminate), which rules out a tail call. The routines are assembly
// and never throw: these second declarations of the same symbols say so, and
// let switch_context end in a jump instead of a call and a return.
extern "C" boost::context::detail::transfer_t spindle_jump_fcontext(boost::context::detail::fcontext_t to,
                                                                    void* vp) noexcept __asm__("jump_fcontext");
// Also, the function ontop_fcontext runs is declared here as returning
// nothing: what it returns becomes the value of the switching side's
// ontop_fcontext call, and switch_context discards that, so on_resume need
// not set up a return value on every switch.
extern "C" void spindle_ontop_fcontext(boost::context::detail::fcontext_t to, void* vp,
                                       void (*fn)(boost::context::detail::transfer_t)) noexcept
    __asm__("ontop_fcontext");

namespace spindle::detail {

namespace bctx = boost::context::detail;

EhState* thread_eh_globals() noexcept {
  // libstdc++'s __cxa_eh_globals is {__cxa_exception* caughtExceptions;
  // unsigned int uncaughtExceptions;}, padded to 16 bytes on LP64.
  static_assert(sizeof(EhState) == 16);
  return reinterpret_cast<EhState*>(abi::__cxa_get_globals());
}

#if SPINDLE_SHARE_FP_FLAGS
namespace {
constexpr std::uint32_t kMxcsrFlags = 0x3f;  // IE DE ZE OE UE PE: sticky status

std::uint32_t read_mxcsr() noexcept {
  std::uint32_t v;
  asm volatile("stmxcsr %0" : "=m"(v));
  return v;
}

// Reads the MXCSR image at offset 0 of a parked context's frame. The frame
// lies on that context's own stack, below anything ASan tracks as live.
SPINDLE_NO_ASAN inline std::uint32_t saved_mxcsr(const void* frame) noexcept {
  return *static_cast<const std::uint32_t*>(frame);
}

// Rare: the context just resumed loaded flags that differ from those of the
// context that left. The leaving context's flags are the thread's now.
// Takes the fiber, not its scheduler, so that the common path loads neither.
[[gnu::noinline, gnu::cold]] void adopt_fp_flags(const Fiber* prev, std::uint32_t loaded,
                                                 std::uint32_t left) noexcept {
  if (!prev->sched->share_fp_flags()) return;  // not an MXCSR image: Boost's frame differs
  const std::uint32_t v = (loaded & ~kMxcsrFlags) | (left & kMxcsrFlags);
  asm volatile("ldmxcsr %0" : : "m"(v));
}
}  // namespace
#endif

// Runs on the context that was just resumed; `data` is the fiber it took
// over from, `fctx` where that fiber stopped. The caller then reclaims that
// fiber if it has ended (reclaim_left), now that nobody runs on its stack.
[[gnu::always_inline]] inline void resumed(void* fctx, void* data) noexcept {
  Fiber* prev = static_cast<Fiber*>(data);
  [[maybe_unused]] Scheduler* s = prev->sched;
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
#if SPINDLE_SHARE_FP_FLAGS
  const std::uint32_t left = saved_mxcsr(fctx), loaded = prev->incoming_mxcsr;
  if (__builtin_expect(((left ^ loaded) & kMxcsrFlags) != 0, false)) adopt_fp_flags(prev, loaded, left);
#endif
}

namespace {
// Out of line, so that on_resume tail-calls it and needs no frame.
[[gnu::noinline]] void reclaim_left(Fiber* prev) noexcept {
#if defined(SPINDLE_TSAN)
  __tsan_destroy_fiber(prev->tsan_fiber);
  prev->tsan_fiber = nullptr;
#endif
  prev->sched->reclaim(prev);
}

void on_resume(bctx::transfer_t t) noexcept {
  resumed(t.fctx, t.data);
  if (static_cast<Fiber*>(t.data)->state == FiberState::done) [[unlikely]]
    return reclaim_left(static_cast<Fiber*>(t.data));
}

[[noreturn]] void trampoline(bctx::transfer_t t) noexcept {
  // Read first: reclaim_left frees a detached fiber we took over from.
  Scheduler* s = static_cast<Fiber*>(t.data)->sched;
  resumed(t.fctx, t.data);
  if (static_cast<Fiber*>(t.data)->state == FiberState::done) reclaim_left(static_cast<Fiber*>(t.data));
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

#if SPINDLE_SHARE_FP_FLAGS

bool fp_frame_layout_ok() noexcept {
  // make_fcontext writes the frame that jump_fcontext and ontop_fcontext
  // read back: MXCSR at offset 0, the x87 control word at offset 4. A Boost
  // built differently (BOOST_USE_TSX saves neither) fails this, and the
  // flags are then left per fiber.
  alignas(16) unsigned char probe[256];
  bctx::fcontext_t c = bctx::make_fcontext(probe + sizeof probe, sizeof probe, nullptr);
  std::uint32_t mxcsr = 0;
  std::uint16_t fcw = 0, want_fcw = 0;
  std::memcpy(&mxcsr, c, sizeof mxcsr);
  std::memcpy(&fcw, static_cast<unsigned char*>(c) + 4, sizeof fcw);
  asm volatile("fnstcw %0" : "=m"(want_fcw));
  return mxcsr == read_mxcsr() && fcw == want_fcw;
}
#else
bool fp_frame_layout_ok() noexcept { return false; }
#endif

[[gnu::always_inline]] inline void switch_unchecked(Scheduler* s, Fiber* from, Fiber* to) noexcept {
  void* const ctx = to->ctx;  // loaded once: the stores below may alias it
#if SPINDLE_SHARE_FP_FLAGS
  // What the switch routine is about to load; resumed() compares it with
  // what the leaving context saved. Read now, while the target's frame is
  // still intact (the resumed code pushes its own frames over it).
  from->incoming_mxcsr = saved_mxcsr(ctx);
#endif
  // Copied as 16-byte blocks (pointer, count, padding): two SSE moves a side.
  EhState* g = s->eh_globals_;
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
    spindle_jump_fcontext(ctx, from);  // the trampoline runs resumed()
  } else {
    spindle_ontop_fcontext(ctx, from, &on_resume);
  }
}

namespace {
// A small stack has a canary, not a guard: check it before anything else
// runs, in particular the neighbour whose stack an overflow runs into. A
// function of its own: with the check (and its Valgrind client request, a
// block on the stack) inline, switch_context would need a frame, and every
// switch would pay for it.
[[gnu::noinline]] void switch_from_small_stack(Scheduler* s, Fiber* from, Fiber* to) noexcept {
  if (!canary_intact(from->stack_base)) report_overflow(from, "its canary was overwritten");
  switch_unchecked(s, from, to);
}
}  // namespace

void switch_context(Scheduler* s, Fiber* from, Fiber* to) noexcept {
  if (__builtin_expect(from->small_stack, false)) return switch_from_small_stack(s, from, to);
  switch_unchecked(s, from, to);
}

#if SPINDLE_SMALL_STACKS
namespace {

// Calls fn(arg) with the stack pointer at `top` (16-byte aligned) and
// returns what fn returns.
extern "C" std::uintptr_t spindle_call_on_stack(void* arg, void* fn, void* top);
asm(R"(
  .text
  .p2align 4
  .type spindle_call_on_stack,@function
spindle_call_on_stack:
  .cfi_startproc
  pushq %rbp
  .cfi_def_cfa_offset 16
  .cfi_offset %rbp, -16
  movq %rsp, %rbp
  .cfi_def_cfa_register %rbp
  movq %rdx, %rsp
  callq *%rsi
  movq %rbp, %rsp
  popq %rbp
  .cfi_def_cfa %rsp, 8
  ret
  .cfi_endproc
  .size spindle_call_on_stack, .-spindle_call_on_stack
)");

using RaiseFn = _Unwind_Reason_Code (*)(_Unwind_Exception*);
using ResumeFn = void (*)(_Unwind_Exception*);

// libgcc_s's entry points; looked up before the first small stack exists
// (dlsym itself would not fit on one) or, failing that, on first use.
struct Unwinder {
  RaiseFn raise = nullptr;
  ResumeFn resume = nullptr;
  RaiseFn resume_or_rethrow = nullptr;
};
Unwinder g_unwinder;

template <class Fn>
Fn next_symbol(const char* name) noexcept {
  return reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, name));
}

void resolve_unwinder() noexcept {
  // Idempotent and race-free enough: every thread stores the same values.
  if (__atomic_load_n(&g_unwinder.raise, __ATOMIC_ACQUIRE)) return;
  g_unwinder.resume = next_symbol<ResumeFn>("_Unwind_Resume");
  g_unwinder.resume_or_rethrow = next_symbol<RaiseFn>("_Unwind_Resume_or_Rethrow");
  __atomic_store_n(&g_unwinder.raise, next_symbol<RaiseFn>("_Unwind_RaiseException"), __ATOMIC_RELEASE);
}

// The side stack's top when the running fiber has a small stack and is not
// already running on the side stack; nullptr otherwise.
void* side_top() noexcept {
  Scheduler* s = Scheduler::current();
  if (!s) return nullptr;
  Fiber* f = s->running();
  if (!f->small_stack) return nullptr;
  const Stack& u = s->side_stack();
  auto* sp = static_cast<char*>(__builtin_frame_address(0));
  auto* base = static_cast<char*>(u.base);
  if (sp >= base && sp < base + u.size) return nullptr;
  return base + u.size;
}

}  // namespace

void call_on_side_stack(void (*fn)(void*), void* arg) {
  if (void* top = side_top())
    spindle_call_on_stack(arg, reinterpret_cast<void*>(fn), top);
  else
    fn(arg);
}

void prepare_small_stack_unwinding() {
  resolve_unwinder();
  if (!g_unwinder.raise || !g_unwinder.resume || !g_unwinder.resume_or_rethrow)
    throw std::system_error(ENOSYS, std::generic_category(),
                            "dlsym(RTLD_NEXT, _Unwind_RaiseException): the unwinder is not in a shared "
                            "library (static libgcc?), so small fiber stacks are unavailable");
}
#else
void call_on_side_stack(void (*fn)(void*), void* arg) { fn(arg); }
void prepare_small_stack_unwinding() {}
#endif

}  // namespace spindle::detail

#if SPINDLE_SMALL_STACKS
using spindle::detail::g_unwinder;
using spindle::detail::resolve_unwinder;
using spindle::detail::spindle_call_on_stack;
using spindle::detail::side_top;

extern "C" [[gnu::weak]] _Unwind_Reason_Code _Unwind_RaiseException(_Unwind_Exception* e) {
  resolve_unwinder();
  if (void* top = side_top())
    return static_cast<_Unwind_Reason_Code>(spindle_call_on_stack(e, reinterpret_cast<void*>(g_unwinder.raise), top));
  return g_unwinder.raise(e);
}

extern "C" [[gnu::weak]] _Unwind_Reason_Code _Unwind_Resume_or_Rethrow(_Unwind_Exception* e) {
  resolve_unwinder();
  if (void* top = side_top())
    return static_cast<_Unwind_Reason_Code>(
        spindle_call_on_stack(e, reinterpret_cast<void*>(g_unwinder.resume_or_rethrow), top));
  return g_unwinder.resume_or_rethrow(e);
}

extern "C" [[gnu::weak]] void _Unwind_Resume(_Unwind_Exception* e) {
  resolve_unwinder();
  if (void* top = side_top()) spindle_call_on_stack(e, reinterpret_cast<void*>(g_unwinder.resume), top);
  g_unwinder.resume(e);
  __builtin_unreachable();
}
#endif
