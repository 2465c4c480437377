// Scheduler: one per thread, created by spindle::run.
//
// It owns the run queue (FIFO, intrusive through Fiber::next), the timer
// heap, the poller, the fd slot table, the stack pool and the cross-thread
// wake list. Fibers switch to each other directly: a fiber that parks or
// yields picks the next runnable fiber and jumps straight to it. When
// nothing is runnable, the parking fiber itself runs the idle step on its own
// stack: poller.wait() with the time to the nearest timer. That idle step is
// the only place the thread blocks.
//
// The thread's original context (the one that called run) is the "main"
// fiber: it has no stack of its own to manage and parks like any other fiber
// while the program runs.
//
// Fairness: every kPollInterval switches the scheduler also polls without
// blocking (I/O, timers, cross-thread wakes), so fibers that yield in a loop
// delay I/O and timers by at most that many switches (~10 us of switching).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <vector>

#include <spindle/detail/assert.hpp>
#include <spindle/detail/fiber.hpp>
#include <spindle/run.hpp>

#include "platform/poller.hpp"
#include "runtime/io_slot.hpp"
#include "runtime/stack.hpp"
#include "runtime/timer.hpp"

// The TLS model of the scheduler pointer (Scheduler::tls_current_). Not
// under UBSan: its null check of a TLS address tests the flags of the `add`
// in the initial-exec sequence, which the linker's relaxation to local-exec
// turns into a `lea` that sets none, so the check reads stale flags and
// reports a null pointer that is not there.
#if defined(SPINDLE_UBSAN)
#define SPINDLE_TLS_MODEL
#else
#define SPINDLE_TLS_MODEL [[gnu::tls_model("initial-exec")]]
#endif

// x86-64: the switch makes MXCSR's exception flags the thread's (see
// runtime/context.cpp). Elsewhere the FP state is left to Boost.Context.
#if defined(__x86_64__)
#define SPINDLE_SHARE_FP_FLAGS 1
#else
#define SPINDLE_SHARE_FP_FLAGS 0
#endif

namespace spindle::detail {

class Scheduler {
 public:
  static constexpr std::uint32_t kPollInterval = 1024;  // a power of two
  static constexpr std::size_t kSideStackSize = 64 * 1024;

  explicit Scheduler(const RunOptions& options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  static Scheduler* current() noexcept { return tls_current_; }
  Fiber* running() const noexcept { return running_; }
  Fiber* main_fiber() noexcept { return &main_; }

  // --- fiber lifecycle ---
  void start(Fiber* f, std::string&& name, std::size_t stack_size);
  // Entered on a new fiber's stack by the context trampoline; never returns.
  [[noreturn]] void fiber_main(Fiber* self) noexcept;
  // Called on the context that took over from a dead fiber.
  void reclaim(Fiber* dead) noexcept;
  // run(): wait for the root, then cancel and wait for all the rest.
  void finish_run(Fiber* root) noexcept;

  // --- park / ready ---
  WakeReason park(Fiber* f, std::int64_t deadline_ns) noexcept;
  void ready(Fiber* f, WakeReason r) noexcept;
  void yield(Fiber* f) noexcept;
  void yield_slow(Fiber* f) noexcept;
  void request_cancel(Fiber* f) noexcept;
  // Any thread: ready `f` if it is still in the park numbered `seq`.
  void post_remote(Fiber* f, std::uint32_t seq) noexcept;
  void drain_remote() noexcept;

  // --- fds ---
  // The slot of `fd`, registering the fd with the poller on first use
  // (errors name `call` and the fd). Inline for the case of every wait after
  // the first: a registered fd.
  IoSlot& slot_for(int fd, const char* call) {
    const std::size_t chunk = static_cast<std::size_t>(fd) / kSlotChunk;  // fd < 0: huge
    if (chunk < slots_.size() && slots_[chunk]) [[likely]] {
      IoSlot& s = slots_[chunk][static_cast<std::size_t>(fd) % kSlotChunk];
      if (s.registered) [[likely]]
        return s;
    }
    return register_fd(fd, call);
  }
  void forget(int fd) noexcept;

  // --- event sources that are not fds (signals, child exits) ---
  // A slot to hand to the poller's add_signal / add_process. Source slots come
  // from their own pool, are never freed while the scheduler runs (a late
  // kernel event may still name one) and count as watched, so a busy run
  // queue still polls for them. Release only after the poller forgot every
  // source registered with the slot: release bumps seq, so events already
  // queued for it drop, and readies a fiber still parked on it with `closed`.
  IoSlot& acquire_source_slot();
  void release_source_slot(IoSlot& slot) noexcept;
  // Calls f(poller) for the registrations that are not fds, off a small
  // stack (see off_small_stack).
  template <class F>
  decltype(auto) with_poller(F&& f) {
    return off_small_stack([&]() -> decltype(auto) { return f(poller_); });
  }
  // Runs f() on the side stack when the running fiber's stack is small.
  // Every call into the poller from a fiber's path goes through here: a
  // backend may use what stack it likes (the kqueue emulation in the tests
  // takes locks and fstats an fd inside kevent()), and only the side stack
  // has it to spare. An exception from f() unwinds from the side stack
  // straight into the fiber's frames (runtime/context.cpp).
  template <class F>
  auto off_small_stack(F&& f) -> decltype(f()) {
    if (!running_->small_stack) [[likely]]
      return f();
    using R = decltype(f());
    if constexpr (std::is_void_v<R>) {
      call_on_side_stack([](void* p) { (*static_cast<std::remove_reference_t<F>*>(p))(); }, &f);
    } else {
      std::optional<R> result;
      auto call = [&] { result.emplace(f()); };
      call_on_side_stack([](void* p) { (*static_cast<decltype(call)*>(p))(); }, &call);
      return std::move(*result);
    }
  }

  std::int64_t now() const noexcept;
  std::size_t live_fibers() const noexcept { return live_; }
  const StackPool& stacks() const noexcept { return stacks_; }
  // Where the unwinder and the idle step run for small-stack fibers
  // (runtime/context.cpp); mapped with the first small stack.
  const Stack& side_stack() const noexcept { return side_stack_; }
  // Whether the switch makes MXCSR's exception flags the thread's
  // (runtime/context.cpp).
  bool share_fp_flags() const noexcept { return share_fp_flags_; }

 private:
  friend void switch_unchecked(Scheduler* s, Fiber* from, Fiber* to) noexcept;  // runtime/context.cpp
  friend void resumed(void* fctx, void* data) noexcept;

  void push(Fiber* f) noexcept {
    f->next = nullptr;
    if (tail_)
      tail_->next = f;
    else
      head_ = f;
    tail_ = f;
  }
  Fiber* pop() noexcept {
    Fiber* f = head_;
    head_ = f->next;
    if (!head_) tail_ = nullptr;
    return f;
  }
  Fiber* next_runnable() noexcept;
  Fiber* next_runnable_slow() noexcept;
  void switch_to(Fiber* from, Fiber* to) noexcept;
  void poll(bool may_block) noexcept;
  // poll() from a fiber's path: on the side stack when the fiber's own
  // stack is small (the poller, the timer heap and ReadyList growth need
  // more than 2 KiB, the kqueue backend most of all).
  void poll_from_fiber(bool may_block) noexcept;
  void dispatch_io() noexcept;
  void expire_timers() noexcept;

  // constinit: no thread_local init-function check at every use in other
  // files. initial-exec (SPINDLE_TLS_MODEL): one %fs-relative load instead
  // of the general dynamic model's sequence (the library is built
  // position-independent); the price is that a shared library holding
  // spindle must be loaded at start-up, or dlopen'ed while the static TLS
  // reserve still has room.
  SPINDLE_TLS_MODEL static constinit thread_local Scheduler* tls_current_;

  Fiber main_;
  Fiber* running_ = &main_;
  Fiber* head_ = nullptr;
  Fiber* tail_ = nullptr;
  // Switches left before the next fairness poll: a count down, so that the
  // hot path is one decrement and one branch.
  std::uint32_t poll_budget_ = kPollInterval;

  ManualClock* clock_;
  std::size_t default_stack_;
  std::uint64_t next_id_ = 0;
  std::uint64_t finish_seq_ = 0;  // stamps joiners' nodes in order of completion
  std::size_t live_ = 0;
  Fiber* all_head_ = nullptr;
  bool main_waits_for_exit_ = false;
  EhState* eh_globals_;
  bool share_fp_flags_;  // fp_frame_layout_ok(); read when the flags differ

  TimerHeap timers_;
  StackPool stacks_;
  Stack side_stack_;
  platform::Poller poller_;
  ReadyList events_;
  // Registered fds plus source slots in use: while non-zero, the fairness
  // poll in next_runnable() asks the kernel too.
  std::size_t watched_fds_ = 0;
  static constexpr std::size_t kSlotChunk = 1024;
  std::vector<std::unique_ptr<IoSlot[]>> slots_;
  IoSlot& register_fd(int fd, const char* call);  // slot_for's first use of an fd
  static constexpr std::size_t kSourceChunk = 64;
  std::vector<std::unique_ptr<IoSlot[]>> source_chunks_;
  std::vector<IoSlot*> free_sources_;

  // Cross-thread wakes; remote_mu_ guards remote_.
  struct RemoteWake {
    Fiber* fiber;
    std::uint32_t seq;
  };
  std::mutex remote_mu_;
  std::vector<RemoteWake> remote_;
  std::vector<RemoteWake> remote_spare_;
  std::atomic<bool> remote_pending_{false};

  // sigaltstack owned for the overflow handler, if this thread had none.
  void* altstack_ = nullptr;
};

// What a slot wait is for, in error messages: {"fd", 7} prints "fd=7".
struct SlotName {
  const char* key;
  long long value;
};

// Parks the running fiber `f` (past enter_wait) on one direction of `slot`
// until the poller reports it, unless an edge is already recorded there (it
// is consumed and `ready` returned at once). Returns why the fiber resumed,
// its entry in the slot withdrawn; throws nothing, so the caller can undo
// its own registrations before leave_wait. Two fibers parked on one
// direction of a slot is a bug (assert).
WakeReason park_on_slot(Fiber* f, IoSlot& slot, bool write, SlotName name) noexcept;

// wait_readable, except that it returns at once once the poller has
// reported a hangup for fd: for a reader that knows the socket is drained
// and waits for the next edge first, when the peer's FIN may already have
// been reported (and consumed) with the data it just read.
void wait_readable_unless_closed(int fd, const char* call);

// park_on_slot, then leave_wait: the body of wait_readable/wait_writable and
// of waits on source slots. A slot forgotten or released meanwhile throws
// std::system_error(EBADF) "CALL(KEY=VALUE): KEY was forgotten while waiting".
void wait_slot(Fiber* f, IoSlot& slot, bool write, const char* call, SlotName name);

// runtime/context.cpp: the only code that switches stacks.
void init_context(Fiber* f) noexcept;
// `s` is from's and to's scheduler (the running one), passed in a register.
void switch_context(Scheduler* s, Fiber* from, Fiber* to) noexcept;
EhState* thread_eh_globals() noexcept;
bool fp_frame_layout_ok() noexcept;

// runtime/overflow.cpp
void install_overflow_handler();
// Prints "spindle: stack overflow in fiber 'name' (id N, stack S bytes): how;
// ..." and aborts. Async-signal-safe: the SIGSEGV handler calls it too.
[[noreturn]] void report_overflow(const Fiber* f, const char* how) noexcept;
// Looks up the unwinder's entry points that runtime/context.cpp redirects
// for small stacks; called before the first small stack is handed out, on
// an ordinary stack.
void prepare_small_stack_unwinding();
// Calls fn(arg) on the scheduler's side stack when the running fiber has a
// small stack and is not already there; otherwise calls it directly.
void call_on_side_stack(void (*fn)(void*), void* arg);

// Builds and throws an error on the side stack when the running fiber has a
// small stack (elsewhere, right here). Formatting a message (fmt's 500-byte
// inline buffer), std::system_error's strerror text and the exception's
// allocation take about 1.5 KiB: a 2 KiB stack parked deep in a read has
// not got it, and a reset connection or an expired Timeout is an ordinary
// event for the shallow handlers small stacks are for. The exception then
// unwinds from the side stack into the fiber's frames (runtime/context.cpp).
// `raise` must throw. Used by the errors of waits, Timeouts, socket I/O and
// the stream and pipe readers; setup calls, Process and DNS errors are
// still built where they are raised (task.hpp says what fits).
template <class F>
[[noreturn]] void raise_off_small_stack(F&& raise) {
  call_on_side_stack([](void* p) { (*static_cast<std::remove_reference_t<F>*>(p))(); }, &raise);
  assert_fail(__FILE__, __LINE__, "raise() throws", "raise_off_small_stack: the error builder returned");
}

void* install_thread_altstack();
void remove_thread_altstack(void* altstack) noexcept;

}  // namespace spindle::detail
