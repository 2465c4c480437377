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
// Reuse. A released stack goes back to its size's free list still resident
// (a warm stack costs no page faults); beyond kWarmStacks free stacks of a
// size, released stacks are returned to the kernel with MADV_DONTNEED (the
// guard survives it). Everything is unmapped when the pool is destroyed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace spindle::detail {

struct Stack {
  void* base = nullptr;  // lowest usable byte
  std::size_t size = 0;  // usable bytes; the stack starts at base + size
};

class StackPool {
 public:
  static constexpr std::size_t kWarmStacks = 1024;
  static constexpr std::size_t kGuardPages = 4;

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
    std::size_t size;
    std::size_t next_slab = 16;
    std::vector<void*> free;  // usable bases
  };
  struct Slab {
    void* addr;
    std::size_t len;
    std::vector<unsigned> valgrind_ids;
  };

  void grow(SizeClass& c);
  void install_guard(void* page);

  std::size_t page_;
  bool madvise_guards_ = true;
  bool trimming_ = true;
  std::vector<SizeClass> classes_;
  std::vector<Slab> slabs_;
};

}  // namespace spindle::detail
