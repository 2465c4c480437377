// Allocation of fiber records.
//
// Every spawn allocates one record (Fiber + result + function) and every
// finished, released task frees one, typically of the same few sizes. A
// per-thread free list per 64-byte size class serves them without touching
// malloc's locks or bins. Each list keeps at most kMaxFree blocks; the rest
// go back to malloc, so a burst of a million fibers does not pin its memory.
// Blocks may be freed on another thread (a Task handle moved there): they
// then join that thread's lists, which is harmless.
//
// ASan builds skip the pool so that use-after-free of a record is caught.
#include <cstddef>
#include <new>
#include <utility>

#include <spindle/detail/fiber.hpp>

namespace spindle::detail {

#if !defined(SPINDLE_ASAN)
namespace {

constexpr std::size_t kGrain = 64;
constexpr std::size_t kClasses = 32;  // records up to 2 KiB are pooled
constexpr std::size_t kMaxFree = 4096;

struct FreeBlock {
  FreeBlock* next;
};

struct Pool {
  FreeBlock* head[kClasses] = {};
  std::size_t count[kClasses] = {};
  ~Pool() {
    for (FreeBlock* b : head)
      while (b) ::operator delete(std::exchange(b, b->next));
  }
};

thread_local Pool pool;

}  // namespace

void* Fiber::operator new(std::size_t size) {
  const std::size_t c = (size + kGrain - 1) / kGrain;
  if (c >= kClasses) return ::operator new(size);
  Pool& p = pool;
  if (FreeBlock* b = p.head[c]) {
    p.head[c] = b->next;
    --p.count[c];
    return b;
  }
  return ::operator new(c * kGrain);
}

void Fiber::operator delete(void* ptr, std::size_t size) noexcept {
  const std::size_t c = (size + kGrain - 1) / kGrain;
  if (c < kClasses) {
    Pool& p = pool;
    if (p.count[c] < kMaxFree) {
      auto* b = static_cast<FreeBlock*>(ptr);
      b->next = p.head[c];
      p.head[c] = b;
      ++p.count[c];
      return;
    }
  }
  ::operator delete(ptr);
}
#else
void* Fiber::operator new(std::size_t size) { return ::operator new(size); }
void Fiber::operator delete(void* ptr, std::size_t) noexcept { ::operator delete(ptr); }
#endif

}  // namespace spindle::detail
