// The hooks' per-fd table: what the application believes about each fd.
//
// The hooks make sockets and pipes non-blocking in the kernel so a fiber can
// park instead of blocking its thread, while the application keeps seeing
// the fd the way it set it up. One entry per fd number, process-wide (fds
// are), in chunks of 1024 entries that are mapped on first use and never
// freed, so a lookup is two loads and needs no lock; entries are atomics
// because any thread may call any hook on any fd.
//
// Entry bits:
//   kind           unknown: never looked at (the zero state of a new chunk
//                  and of a closed fd); other: passed straight through
//                  (regular files, ttys, eventfds, epoll fds, stdin, stdout
//                  and stderr); socket; fifo (pipes and FIFOs).
//   user_nonblock  the application asked for O_NONBLOCK (SOCK_NONBLOCK,
//                  fcntl(F_SETFL), ioctl(FIONBIO)): calls on the fd return
//                  EAGAIN, as the kernel would, and never park.
//   forced         the hooks set O_NONBLOCK in the kernel while the
//                  application believes the fd blocks: a call that meets
//                  EAGAIN parks the fiber (or, outside a fiber, waits in
//                  ppoll) and retries, and fcntl(F_GETFL) hides the flag.
// plus the SO_RCVTIMEO and SO_SNDTIMEO values (ns, 0 = none) that the
// application set, which bound those waits.
//
// An entry is reset when the hooks see the fd created (socket, accept,
// pipe, dup, ...) or closed (close, dup2 over it). An fd closed behind the
// hooks' back (a raw syscall, fclose of an fdopen'd socket) leaves a stale
// entry for its number until the next hooked creation or close of it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace spindle::hooks {

enum class FdKind : std::uint32_t { unknown = 0, other = 1, socket = 2, fifo = 3 };

inline constexpr std::uint32_t kKindMask = 3;
inline constexpr std::uint32_t kUserNonblock = 4;
inline constexpr std::uint32_t kForced = 8;

inline FdKind kind_of(std::uint32_t bits) noexcept { return static_cast<FdKind>(bits & kKindMask); }
inline std::uint32_t bits_for(FdKind kind, bool user_nonblock, bool forced) noexcept {
  return static_cast<std::uint32_t>(kind) | (user_nonblock ? kUserNonblock : 0) | (forced ? kForced : 0);
}

struct FdEntry {
  std::atomic<std::uint32_t> bits{0};
  std::atomic<std::int64_t> recv_timeout_ns{0};
  std::atomic<std::int64_t> send_timeout_ns{0};
};

inline constexpr int kChunkBits = 10;
inline constexpr std::size_t kChunkSize = std::size_t{1} << kChunkBits;
inline constexpr std::size_t kMaxChunks = 4096;

// The chunks (fd_table.cpp); constant-initialised, so the hooks work before
// (and after) any static constructor of the program runs.
extern std::atomic<FdEntry*> fd_chunks[kMaxChunks];

// The entry of fd, mapping its chunk if needed; nullptr for a negative fd,
// one beyond the table (4 Mi fds) or when the chunk cannot be mapped. Safe
// in a signal handler (the chunk comes from mmap, not malloc).
FdEntry* fd_entry(int fd) noexcept;

// The entry of fd if its chunk exists; never maps anything. Inline: every
// hooked call on a fiber looks its fd up.
inline FdEntry* fd_entry_if_any(int fd) noexcept {
  const auto n = static_cast<std::size_t>(static_cast<unsigned>(fd));
  if (fd < 0 || (n >> kChunkBits) >= kMaxChunks) return nullptr;
  FdEntry* chunk = fd_chunks[n >> kChunkBits].load(std::memory_order_acquire);
  return chunk ? &chunk[n & (kChunkSize - 1)] : nullptr;
}

// The entry's bits, 0 (unknown) when there is none.
inline std::uint32_t fd_bits(int fd) noexcept {
  FdEntry* e = fd_entry_if_any(fd);
  return e ? e->bits.load(std::memory_order_acquire) : 0;
}

// A new fd from a hooked creator: kind and mode as created, no timeouts.
void fd_created(int fd, FdKind kind, bool user_nonblock, bool forced) noexcept;
// fd is being closed (or replaced by dup2): back to unknown, no timeouts.
void fd_clear(int fd) noexcept;
// `to` now shares `from`'s open file description (dup, dup2, F_DUPFD).
void fd_copy(int from, int to) noexcept;

}  // namespace spindle::hooks
