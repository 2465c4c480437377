#include "runtime/stack.hpp"

#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <system_error>

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
  bool small = SPINDLE_SMALL_STACKS && size < page_;
  if (small) {
    // The canary takes kCanaryBytes of the slot; the rest is usable.
    size = std::max(size, kMinSmall);
    size = (size + kSmallGrain - 1) / kSmallGrain * kSmallGrain;
    small = size < page_;
    if (small) size -= kCanaryBytes;
  }
  if (!SPINDLE_SMALL_STACKS && size < page_) size = kSmallFallback;
  if (!small) {
    size = (size + page_ - 1) / page_ * page_;
    if (size < 2 * page_) size = 2 * page_;
  }
  SizeClass* c = nullptr;
  for (auto& k : classes_)
    if (k.size == size && k.small == small) c = &k;
  if (!c) {
    c = &classes_.emplace_back();
    c->size = size;
    c->small = small;
  }
  if (c->free.empty()) {
    if (small)
      grow_small(*c);
    else
      grow(*c);
  }
  void* base = c->free.back();
  c->free.pop_back();
#if defined(SPINDLE_ASAN)
  // The previous fiber's frames left redzones poisoned on this memory.
  ASAN_UNPOISON_MEMORY_REGION(base, size);
#endif
  if (small) {
    // Written at every acquire: an overflow that the check missed (a frame
    // that skipped it) must not leave the next owner a broken canary.
    write_canary(base);
  }
  return {base, size, small};
}

void StackPool::release(Stack s) noexcept {
  for (auto& c : classes_) {
    if (c.size != s.size || c.small != s.small) continue;
    // Small stacks share pages with their neighbours: never trimmed.
    if (trimming_ && !c.small && c.free.size() >= kWarmStacks) ::madvise(s.base, s.size, MADV_DONTNEED);
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

#if SPINDLE_SMALL_STACKS
namespace {
// The first shared object (or "the executable") whose PLT is bound lazily,
// or "" if none is.
std::string lazily_bound_object() {
  std::string found;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* out) -> int {
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          if (info->dlpi_phdr[i].p_type != PT_DYNAMIC) continue;
          const auto* dyn = reinterpret_cast<const ElfW(Dyn)*>(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
          bool plt = false, now = false;
          for (; dyn->d_tag != DT_NULL; ++dyn) {
            if (dyn->d_tag == DT_JMPREL) plt = true;
            if (dyn->d_tag == DT_BIND_NOW) now = true;
            if (dyn->d_tag == DT_FLAGS && (dyn->d_un.d_val & DF_BIND_NOW)) now = true;
            if (dyn->d_tag == DT_FLAGS_1 && (dyn->d_un.d_val & DF_1_NOW)) now = true;
          }
          if (plt && !now) {
            const char* name = info->dlpi_name;
            *static_cast<std::string*>(out) = name && *name ? name : "the executable";
            return 1;
          }
        }
        return 0;
      },
      &found);
  return found;
}
}  // namespace
#endif

void require_immediate_binding(std::size_t size) {
#if SPINDLE_SMALL_STACKS
  // The dynamic linker resolves a lazily bound function on the stack of its
  // first caller and saves the vector registers there first (xsave: about
  // 3 KiB with AVX-512), which no small stack survives. The scan is made
  // once: what is loaded at the first small stack is what counts.
  const char* env = std::getenv("LD_BIND_NOW");
  if (env && *env) return;
  static const std::string lazy = lazily_bound_object();
  if (!lazy.empty())
    throw std::system_error(
        std::make_error_code(std::errc::not_supported),
        fmt::format("spindle::spawn(stack_size={}): small stacks need every function bound at start-up, and {} "
                    "is bound lazily; run with LD_BIND_NOW=1 (or link every object with -Wl,-z,now)",
                    size, lazy));
#else
  (void)size;
#endif
}

void StackPool::grow_small(SizeClass& c) {
  // Smaller stacks come in larger numbers: slabs of at least 64 KiB.
  const std::size_t stride = c.size + kCanaryBytes;
  std::size_t n = c.next_slab;
  while (n * stride < 16 * page_) n *= 2;
  const std::size_t len = (n * stride + page_ - 1) / page_ * page_;
  void* addr = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (addr == MAP_FAILED)
    platform::throw_system_error(errno, fmt::format("mmap(small fiber stacks, {} x {} bytes)", n, stride));
  Slab slab{addr, len, {}};
  auto* p = static_cast<char*>(addr);
  for (std::size_t i = n; i-- > 0;) {
    char* base = p + i * stride + kCanaryBytes;
    c.free.push_back(base);
#if defined(SPINDLE_HAVE_VALGRIND)
    // The canary is registered as part of the stack: it is written and read
    // as ordinary memory, not through the stack pointer.
    if (RUNNING_ON_VALGRIND) slab.valgrind_ids.push_back(VALGRIND_STACK_REGISTER(base - kCanaryBytes, base + c.size));
#endif
  }
  slabs_.push_back(std::move(slab));
  c.next_slab = n * 2 < kMaxSlab ? n * 2 : kMaxSlab;
}

}  // namespace spindle::detail
