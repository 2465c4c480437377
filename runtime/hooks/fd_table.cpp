#include "runtime/hooks/fd_table.hpp"

#include <sys/mman.h>

#include <cstddef>
#include <new>
#include <type_traits>

namespace spindle::hooks {

constinit std::atomic<FdEntry*> fd_chunks[kMaxChunks] = {};

namespace {

// Zero-filled pages are a valid chunk of unknown entries: the atomics are
// lock-free and their zero bit pattern is the value 0.
static_assert(std::atomic<std::uint32_t>::is_always_lock_free &&
              std::atomic<std::int64_t>::is_always_lock_free);
static_assert(std::is_trivially_destructible_v<FdEntry>);

FdEntry* map_chunk(std::size_t index) noexcept {
  void* mem = ::mmap(nullptr, kChunkSize * sizeof(FdEntry), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return nullptr;
  auto* fresh = new (mem) FdEntry[kChunkSize];
  FdEntry* expected = nullptr;
  if (fd_chunks[index].compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) return fresh;
  // Another thread mapped it first; its chunk is the one everybody uses.
  ::munmap(mem, kChunkSize * sizeof(FdEntry));
  return expected;
}

}  // namespace

FdEntry* fd_entry(int fd) noexcept {
  if (fd < 0) return nullptr;
  const auto n = static_cast<std::size_t>(fd);
  const std::size_t index = n >> kChunkBits;
  if (index >= kMaxChunks) return nullptr;
  FdEntry* chunk = fd_chunks[index].load(std::memory_order_acquire);
  if (!chunk) chunk = map_chunk(index);
  return chunk ? &chunk[n & (kChunkSize - 1)] : nullptr;
}

void fd_created(int fd, FdKind kind, bool user_nonblock, bool forced) noexcept {
  FdEntry* e = fd_entry(fd);
  if (!e) return;
  e->recv_timeout_ns.store(0, std::memory_order_relaxed);
  e->send_timeout_ns.store(0, std::memory_order_relaxed);
  e->bits.store(bits_for(kind, user_nonblock, forced), std::memory_order_release);
}

void fd_clear(int fd) noexcept {
  FdEntry* e = fd_entry_if_any(fd);
  if (!e) return;
  e->bits.store(0, std::memory_order_release);
  e->recv_timeout_ns.store(0, std::memory_order_relaxed);
  e->send_timeout_ns.store(0, std::memory_order_relaxed);
}

void fd_copy(int from, int to) noexcept {
  FdEntry* src = fd_entry_if_any(from);
  if (!src) {
    fd_clear(to);
    return;
  }
  FdEntry* dst = fd_entry(to);
  if (!dst) return;
  dst->recv_timeout_ns.store(src->recv_timeout_ns.load(std::memory_order_relaxed), std::memory_order_relaxed);
  dst->send_timeout_ns.store(src->send_timeout_ns.load(std::memory_order_relaxed), std::memory_order_relaxed);
  dst->bits.store(src->bits.load(std::memory_order_acquire), std::memory_order_release);
}

}  // namespace spindle::hooks
