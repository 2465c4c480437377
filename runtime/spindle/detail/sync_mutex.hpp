// SyncMutex: the mutex of the primitives other threads may touch (Event,
// Semaphore, the queues).
//
// Most of those primitives are only ever used by the fibers of one thread,
// and for them a std::mutex is the main cost: two atomic read-modify-writes
// per operation, about 7 ns here, most of a queue put or get. SyncMutex is
// biased towards the first thread that locks it: that thread locks and
// unlocks with plain loads and stores. The first time any other thread
// locks it, the bias is revoked for good and every thread, the former owner
// included, uses the std::mutex inside from then on.
//
// Revocation is the asymmetric Dekker handshake (as in liburcu): the owner
// announces itself with a store, then checks the bias with a load, and
// orders the two only against the compiler; the revoker withdraws the bias
// with a store, then runs membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED),
// which makes every thread of the process execute a full memory barrier,
// and only then reads the owner's announcement. Either the owner sees the
// bias gone and backs off, or the revoker sees the owner inside and waits
// for its unlock. Critical sections never span a park (the primitives
// unlock before parking), so that wait is short.
//
// Where membarrier(2) is missing (not Linux, kernels before 4.14, sandboxes
// that filter it) and in TSan builds (TSan cannot see the barrier), no bias
// is ever granted: SyncMutex is a std::mutex with one extra load.
#pragma once

#include <atomic>
#include <mutex>

namespace spindle::detail {

class SyncMutex {
 public:
  SyncMutex() = default;
  SyncMutex(const SyncMutex&) = delete;
  SyncMutex& operator=(const SyncMutex&) = delete;

  void lock() {
    const void* me = thread_token();
    if (bias_.load(std::memory_order_relaxed) == me) [[likely]] {
      owner_inside_.store(true, std::memory_order_relaxed);
      // Keeps the compiler from moving the store below the load; the
      // processor's half of the ordering comes from the revoker's
      // membarrier(). Acquire keeps the critical section below the check.
      std::atomic_signal_fence(std::memory_order_seq_cst);
      if (bias_.load(std::memory_order_acquire) == me) [[likely]] {
        biased_hold_ = true;
        return;
      }
      owner_inside_.store(false, std::memory_order_release);
    }
    lock_slow(me);
  }

  void unlock() {
    if (biased_hold_) {
      biased_hold_ = false;
      owner_inside_.store(false, std::memory_order_release);
      return;
    }
    mu_.unlock();
  }

 private:
  // Unique per thread while it lives: the address of a thread_local.
  static const void* thread_token() noexcept {
    static thread_local char token;
    return &token;
  }
  void lock_slow(const void* me);

  // nullptr: nobody locked yet; a thread's token: biased to that thread;
  // kShared (runtime/sync.cpp): revoked, or never to be biased.
  std::atomic<const void*> bias_{nullptr};
  std::atomic<bool> owner_inside_{false};  // the bias owner is inside, unlocked
  std::atomic<bool> revoked_{false};       // the revocation handshake is complete
  bool biased_hold_ = false;               // this hold took the biased path; owner only
  std::mutex mu_;                          // once the bias is gone
};

}  // namespace spindle::detail
