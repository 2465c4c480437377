// The raw Boost.Context ping-pong: the reference every switch figure is
// compared to (switch_raw_fcontext), and the partner of spindle's ping-pong
// in the alternated measurement (switch_spindle).
//
// Two contexts, the caller's and one on an mmap'd stack, hand control back
// and forth with the bare assembly primitive spindle itself is built on.
// Nothing is saved or checked beyond what jump_fcontext does. One switch is
// one jump_fcontext call.
//
// run_behind_call() is the same ping-pong as a runtime must make it: the
// switch sits in a function of its own (a runtime's yield), called from the
// same loop in both contexts, and a switched-in context returns from that
// function to its caller. How it returns matters more than anything else a
// runtime adds:
// - Via::jump: jump_fcontext enters the other context with an indirect
//   `jmp`, so the return address our `call` pushed on the CPU's return-stack
//   predictor is never popped, and the resumed side's `ret` is predicted one
//   entry off, as is every return after it.
// - Via::ontop: ontop_fcontext runs a minimal function on top of the other
//   context (it records where the caller stopped) whose `ret` pops exactly
//   the entry our `call` pushed, at the same call site on both sides, so
//   every return is predicted. This is what spindle's switch does
//   (runtime/context.cpp), and so the least a switch behind a call can cost
//   with this engine: spindle's yield adds its run queue and bookkeeping to it.
#pragma once

#include "bench.hpp"

#include <boost/context/detail/fcontext.hpp>

#include <cstdint>
#include <stdexcept>

#include <sys/mman.h>

namespace bench {

class RawPingPong {
 public:
  static constexpr std::size_t kStackSize = 64 * 1024;
  enum class Via { jump, ontop };

  RawPingPong() {
    base_ = mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base_ == MAP_FAILED) throw std::runtime_error("mmap(stack)");
#if SPINDLE_BENCH_HAVE_VALGRIND
    valgrind_id_ = VALGRIND_STACK_REGISTER(top(), base_);
#endif
  }
  ~RawPingPong() {
#if SPINDLE_BENCH_HAVE_VALGRIND
    VALGRIND_STACK_DEREGISTER(valgrind_id_);
#endif
    munmap(base_, kStackSize);
  }
  RawPingPong(const RawPingPong&) = delete;
  RawPingPong& operator=(const RawPingPong&) = delete;

  // n switches (n even). With raise_flag this side raises the inexact flag
  // before the loop and the partner does not, so every jump loads a
  // different MXCSR (what spindle's switch avoids, runtime/context.cpp).
  void run(std::uint64_t n, bool raise_flag = false) {
    namespace ctx = boost::context::detail;
    // A fresh partner per run (the last one is abandoned in its loop):
    // make_fcontext records this side's MXCSR, exception flags included, so
    // both sides start with the same value.
    ctx::fcontext_t peer = ctx::make_fcontext(top(), kStackSize, partner);
    if (raise_flag) raise_inexact();
    for (std::uint64_t i = 0; i < n; i += 2) {
      peer = ctx::jump_fcontext(peer, nullptr).fctx;
    }
  }

  // n switches (n even), each made inside switch_once(), called from loop().
  void run_behind_call(std::uint64_t n, Via via) {
    namespace ctx = boost::context::detail;
    via_ = via;
    peer_ = ctx::make_fcontext(top(), kStackSize, call_partner);
    peer_ = ctx::jump_fcontext(peer_, this).fctx;  // the partner starts and comes back
    loop(this, n / 2);
  }

 private:
  // noexcept twins of Boost's declarations (the routines are assembly and
  // never throw), so that switch_once ends in a jump, as spindle's does.
  using Transfer = boost::context::detail::transfer_t;
  static Transfer jump(void* to, void* vp) noexcept __asm__("jump_fcontext");
  static Transfer ontop(void* to, void* vp, Transfer (*fn)(Transfer)) noexcept __asm__("ontop_fcontext");

  // Runs on the context switched to; records where the switching side stopped.
  static Transfer record_peer(Transfer t) noexcept {
    static_cast<RawPingPong*>(t.data)->peer_ = t.fctx;
    return t;
  }
  // noipa: no clone specialised for one caller, so that both contexts run
  // the very same instructions and return to the same addresses.
  [[gnu::noipa]] static void switch_once(RawPingPong* self) noexcept {
    if (self->via_ == Via::ontop)
      ontop(self->peer_, self, record_peer);
    else
      self->peer_ = jump(self->peer_, self).fctx;
  }
  [[gnu::noipa]] static void loop(RawPingPong* self, std::uint64_t rounds) noexcept {
    for (std::uint64_t i = 0; i < rounds; ++i) switch_once(self);
  }
  [[noreturn]] static void call_partner(Transfer t) noexcept {
    auto* self = static_cast<RawPingPong*>(t.data);
    self->peer_ = t.fctx;
    // Forever, like partner(): the caller simply stops resuming it.
    for (;;) loop(self, UINT64_MAX);
  }

  [[noreturn]] static void partner(boost::context::detail::transfer_t t) {
    // Bounce straight back, forever; the caller decides when to stop and
    // simply never resumes us again.
    for (;;) t = boost::context::detail::jump_fcontext(t.fctx, nullptr);
  }
  void* top() const { return static_cast<char*>(base_) + kStackSize; }

  void* base_;
  void* peer_ = nullptr;
  Via via_ = Via::ontop;
#if SPINDLE_BENCH_HAVE_VALGRIND
  unsigned valgrind_id_ = 0;
#endif
};

}  // namespace bench
