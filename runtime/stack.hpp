// Fiber stacks: mmap'd, guarded, pooled.
//
// Layout. Stacks of one size are carved out of slabs: one anonymous
// MAP_NORESERVE mapping holding n stacks, each preceded by a one-page guard
// (stacks grow down, so the guard sits below the lowest usable byte). Slabs
// grow geometrically (16 stacks, then 32, ... up to 1024), so a million
// stacks cost about a thousand mappings, not a million.
//
// Guards are kGuardPages pages (16 KiB), so that a frame of up to that size
// that skips the stack's end still lands in the guard, not in the
// neighbour's stack; the library itself is built with
// -fstack-clash-protection, which probes larger frames page by page.
//
// vm.max_map_count (65530 by default) counts mappings, and a
// PROT_NONE page in the middle of a mapping splits it in three: per-stack
// mprotect guards would cap a process near 32,000 fibers. On Linux >= 6.13
// the guard is installed with madvise(MADV_GUARD_INSTALL), which marks the
// page in the page tables without splitting the mapping, so every stack is
// guarded at no mapping cost. On older kernels the pool falls back to
// mprotect(PROT_NONE) and, when that hits the mapping limit, throws
// std::system_error naming the call rather than hand out an unguarded stack.
// A touch of any guard page raises SIGSEGV, which the overflow handler
// (runtime/overflow.cpp) reports with the fiber's name and id.
//
// Small stacks. A size below one page asks for a small stack: sizes are
// rounded to 256 bytes and stacks are packed back to back in slabs without
// guards, so a parked fiber costs its stack size, not a page (Go's goroutines
// start at 2 KiB; kSmallStackSize is the same). A page-granular guard cannot
// sit between two of them; instead the lowest kCanaryBytes of each hold a
// canary, and the switch code checks it every time a small-stack fiber
// switches out (runtime/context.cpp). An overflow writes the canary before
// it reaches the neighbour below, and the check runs before the neighbour
// can resume, so the process ends with the fiber named (report_overflow)
// instead of running on a corrupted stack. What it cannot see: a frame that
// spans the canary without writing it (a large uninitialised array). Small
// stacks suit fibers that stay shallow (a handler that parks on a socket or
// a timer); the runtime builds the errors such a handler meets on the side
// stack too (raise_off_small_stack, runtime/scheduler.hpp).
//
// C++ exceptions: the unwinder alone needs about 2 KiB of stack (its frame
// state and two register contexts), more than a small stack has to spare,
// and cancellation is an exception. So while a small-stack fiber runs, the
// unwinder's entry points run on a per-thread side stack instead (see
// runtime/context.cpp); only the landing pads (destructors, catch blocks)
// run on the fiber's own stack. Where that is not available
// (SPINDLE_SMALL_STACKS == 0: not x86-64 ELF, or a sanitizer build) a small
// size gives an ordinary guarded stack of kSmallFallback bytes: what was
// asked for is a fiber with shallow frames, and instrumented frames are
// not shallow.
//
// Reuse. A released stack goes back to its size's free list still resident
// (a warm stack costs no page faults); beyond kWarmStacks free stacks of a
// size, released stacks are returned to the kernel with MADV_DONTNEED (the
// guard survives it). Everything is unmapped when the pool is destroyed.
#pragma once

// Small stacks need the unwinder to run elsewhere (runtime/context.cpp),
// which is implemented for the libgcc unwinder on x86-64 ELF. Sanitizer
// builds intercept the unwinder themselves and get ordinary stacks instead.
#if defined(__x86_64__) && defined(__ELF__) && !defined(__APPLE__) && !defined(SPINDLE_ASAN) && \
    !defined(SPINDLE_TSAN)
#define SPINDLE_SMALL_STACKS 1
#else
#define SPINDLE_SMALL_STACKS 0
#endif

#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(SPINDLE_HAVE_VALGRIND)
#include <valgrind/memcheck.h>
#endif

namespace spindle::detail {

struct Stack {
  void* base = nullptr;  // lowest usable byte
  std::size_t size = 0;  // usable bytes; the stack starts at base + size
  bool small = false;    // canary below base instead of a guard
};

// The canary of a small stack: the kCanaryBytes below its base, eight
// words, all checked, so that a frame that writes only part of itself (a
// buffer's ends, a return address) still lands on one.
inline constexpr std::size_t kCanaryBytes = 64;
inline constexpr std::uint64_t kCanary = 0x21454c444e495053;  // "SPINDLE!"

inline void write_canary(void* base) noexcept {
  auto* w = static_cast<std::uint64_t*>(base) - kCanaryBytes / 8;
#if defined(SPINDLE_HAVE_VALGRIND)
  // Memcheck marks a stack's memory inaccessible below the lowest stack
  // pointer it saw there, and the canary lies at the bottom of the range
  // registered for the stack: writing it from another fiber would be
  // reported as an invalid write.
  VALGRIND_MAKE_MEM_UNDEFINED(w, kCanaryBytes);
#endif
  for (std::size_t i = 0; i < kCanaryBytes / 8; ++i) w[i] = kCanary + i;
}

inline bool canary_intact(const void* base) noexcept {
  const auto* w = static_cast<const std::uint64_t*>(base) - kCanaryBytes / 8;
#if defined(SPINDLE_HAVE_VALGRIND)
  // The same for the check (a no-op sequence of a few instructions natively,
  // on the small-stack branch only): memcheck's view of where this stack's
  // pointer has been must not make our own guard word unreadable.
  VALGRIND_MAKE_MEM_DEFINED(w, kCanaryBytes);
#endif
  std::uint64_t diff = 0;
  for (std::size_t i = 0; i < kCanaryBytes / 8; ++i) diff |= w[i] ^ (kCanary + i);
  return diff == 0;
}

// Throws std::system_error(errc::not_supported) naming the first lazily bound
// object unless LD_BIND_NOW is set or every loaded object is bound at
// start-up: a lazy binding resolved on a small stack would overflow it.
void require_immediate_binding(std::size_t size);

class StackPool {
 public:
  static constexpr std::size_t kWarmStacks = 1024;
  static constexpr std::size_t kGuardPages = 4;
  static constexpr std::size_t kSmallGrain = 256;
  static constexpr std::size_t kMinSmall = 1024;
  // A small request where small stacks are unavailable (see above).
  static constexpr std::size_t kSmallFallback = 64 * 1024;

  StackPool();
  ~StackPool();
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;

  // Throws std::system_error("mmap(fiber stacks, ...)") when out of memory.
  Stack acquire(std::size_t size);
  void release(Stack s) noexcept;

  std::size_t page_size() const noexcept { return page_; }
  std::size_t guard_size() const noexcept { return kGuardPages * page_; }
  // While false, released stacks stay resident whatever their number: set
  // when the scheduler is shutting down, since the slabs are about to be
  // unmapped whole and a madvise per stack would only slow that down.
  void set_trimming(bool on) noexcept { trimming_ = on; }
  // How guards are installed: "madvise", "mprotect".
  const char* guard_kind() const noexcept { return madvise_guards_ ? "madvise" : "mprotect"; }

 private:
  struct SizeClass {
    std::size_t size;  // usable bytes
    bool small = false;
    std::size_t next_slab = 16;
    std::vector<void*> free;  // usable bases
  };
  struct Slab {
    void* addr;
    std::size_t len;
    std::vector<unsigned> valgrind_ids;
  };

  void grow(SizeClass& c);
  void grow_small(SizeClass& c);
  void install_guard(void* page);

  std::size_t page_;
  bool madvise_guards_ = true;
  bool trimming_ = true;
  std::vector<SizeClass> classes_;
  std::vector<Slab> slabs_;
};

}  // namespace spindle::detail
