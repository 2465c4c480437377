#include "runtime/stack.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "platform/syscall.hpp"

#if defined(SPINDLE_HAVE_VALGRIND)
#include <valgrind/valgrind.h>
#endif
#if defined(SPINDLE_ASAN)
#include <sanitizer/asan_interface.h>
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102  // Linux 6.13, include/uapi/asm-generic/mman-common.h
#endif

namespace spindle::detail {

namespace {
constexpr std::size_t kMaxSlab = 1024;
}

StackPool::StackPool() : page_(static_cast<std::size_t>(::sysconf(_SC_PAGESIZE))) {}

StackPool::~StackPool() {
  for (auto& slab : slabs_) {
#if defined(SPINDLE_HAVE_VALGRIND)
    for (unsigned id : slab.valgrind_ids) VALGRIND_STACK_DEREGISTER(id);
#endif
    ::munmap(slab.addr, slab.len);
  }
}

Stack StackPool::acquire(std::size_t size) {
  size = (size + page_ - 1) / page_ * page_;
  if (size < 2 * page_) size = 2 * page_;
  SizeClass* c = nullptr;
  for (auto& k : classes_)
    if (k.size == size) c = &k;
  if (!c) {
    c = &classes_.emplace_back();
    c->size = size;
  }
  if (c->free.empty()) grow(*c);
  void* base = c->free.back();
  c->free.pop_back();
#if defined(SPINDLE_ASAN)
  // The previous fiber's frames left redzones poisoned on this memory.
  ASAN_UNPOISON_MEMORY_REGION(base, size);
#endif
  return {base, size};
}

void StackPool::release(Stack s) noexcept {
  for (auto& c : classes_) {
    if (c.size != s.size) continue;
    if (trimming_ && c.free.size() >= kWarmStacks) ::madvise(s.base, s.size, MADV_DONTNEED);
    c.free.push_back(s.base);
    return;
  }
}

void StackPool::install_guard(void* page) {
  const std::size_t len = guard_size();
  if (madvise_guards_) {
    if (::madvise(page, len, MADV_GUARD_INSTALL) == 0) return;
    if (errno != EINVAL) platform::throw_system_error(errno, "madvise(MADV_GUARD_INSTALL, fiber stack guard)");
    madvise_guards_ = false;  // kernel older than 6.13
  }
  if (::mprotect(page, len, PROT_NONE) != 0)
    platform::throw_system_error(
        errno, "mprotect(PROT_NONE, fiber stack guard): vm.max_map_count reached and the kernel "
               "has no MADV_GUARD_INSTALL");
}

void StackPool::grow(SizeClass& c) {
  const std::size_t n = c.next_slab;
  const std::size_t stride = c.size + guard_size();
  const std::size_t len = n * stride;
  void* addr = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (addr == MAP_FAILED)
    platform::throw_system_error(errno, fmt::format("mmap(fiber stacks, {} x {} bytes)", n, c.size));
  Slab slab{addr, len, {}};
  auto* p = static_cast<char*>(addr);
  try {
    for (std::size_t i = 0; i < n; ++i) install_guard(p + i * stride);
  } catch (...) {
    ::munmap(addr, len);
    throw;
  }
  // Hand out the lowest stack first: free.back() is the next one.
  for (std::size_t i = n; i-- > 0;) {
    char* base = p + i * stride + guard_size();
    c.free.push_back(base);
#if defined(SPINDLE_HAVE_VALGRIND)
    if (RUNNING_ON_VALGRIND) slab.valgrind_ids.push_back(VALGRIND_STACK_REGISTER(base, base + c.size));
#endif
  }
  slabs_.push_back(std::move(slab));
  c.next_slab = n * 2 < kMaxSlab ? n * 2 : kMaxSlab;
}

}  // namespace spindle::detail
