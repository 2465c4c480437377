// The raw Boost.Context ping-pong: the reference every switch figure is
// compared to (switch_raw_fcontext), and the partner of spindle's ping-pong
// in the alternated measurement (switch_spindle).
//
// Two contexts, the caller's and one on an mmap'd stack, hand control back
// and forth with the bare assembly primitive spindle itself is built on.
// Nothing is saved or checked beyond what jump_fcontext does. One switch is
// one jump_fcontext call.
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

 private:
  [[noreturn]] static void partner(boost::context::detail::transfer_t t) {
    // Bounce straight back, forever; the caller decides when to stop and
    // simply never resumes us again.
    for (;;) t = boost::context::detail::jump_fcontext(t.fctx, nullptr);
  }
  void* top() const { return static_cast<char*>(base_) + kStackSize; }

  void* base_;
#if SPINDLE_BENCH_HAVE_VALGRIND
  unsigned valgrind_id_ = 0;
#endif
};

}  // namespace bench
