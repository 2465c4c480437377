// run_blocking: a blocking function on a thread pool, like asyncio.to_thread.
//
//   std::string text = spindle::run_blocking(compress, std::cref(input));
//   auto rows = spindle::run_blocking([&] { return db.query(sql); });
//
// Runs f(args...) on a thread of a process-wide pool, parks the calling
// fiber until f has finished, then returns f's value or rethrows its
// exception. Other fibers of the scheduler keep running meanwhile.
//
// Arguments are not copied: f and args are used in place, by reference, on
// the pool thread, exactly as a direct call would use them. That is safe
// because the call never returns before f has (see cancellation below); it
// also means the caller's other fibers must not touch those objects while
// f runs. The result type is f's return type without references and cv
// qualifiers: a reference result is returned as a copy.
//
// Cancellation and Timeout scopes: f cannot be interrupted, and it may hold
// references into the caller's frame, so the call does not leave early.
// When the fiber is cancelled, or a Timeout scope around the call expires,
// while f runs, the fiber goes on waiting for f inside a Shield (further
// cancellation is deferred) and then throws Cancelled or TimeoutError;
// f's value or exception is discarded. A cancellation or expired scope
// already due when run_blocking is called throws at once, without running
// f. So a Timeout scope bounds how long the caller waits only as far as f
// itself is bounded; give slow jobs their own deadline.
//
// The pool: at most blocking_threads() threads (default max(4, 2 x
// std::thread::hardware_concurrency())), created lazily when a job finds
// no idle thread. Jobs wait in one unbounded FIFO queue when every thread is
// busy. Pool threads block every asynchronous signal (all but SIGSEGV,
// SIGBUS, SIGFPE, SIGILL, SIGTRAP and SIGSYS, which a fault raises on the
// faulting thread), so a signal meant for the scheduler threads' signal
// handling is never delivered to them. The pool is never torn down: at
// process exit its idle threads end with the process, and its state is
// deliberately never destroyed, so no static destructor can run into a
// live pool thread. A job still running at exit is abandoned, as with a
// detached thread.
//
// Threads: run_blocking needs a fiber (std::logic_error naming the call
// outside spindle::run, consistent with every other blocking call); any
// number of schedulers on any number of threads may use the pool at once.
// f must not call spindle's blocking API itself: pool threads run no
// scheduler, so such calls throw std::logic_error.
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

#include <spindle/future.hpp>
#include <spindle/timeout.hpp>

namespace spindle {

// Sets the pool's thread limit (n >= 1, else std::invalid_argument). May be
// called at any time from any thread: raising it starts threads for queued
// jobs at once; lowering it lets surplus threads end after their current
// job. Best called once, before the first run_blocking.
void set_blocking_threads(std::size_t n);
// The current thread limit.
std::size_t blocking_threads() noexcept;

namespace detail {

// A queued job. It lives in the caller's frame: the caller waits until the
// job has made its state ready, and the pool thread touches the job only
// before that.
struct BlockingJob {
  BlockingJob* next = nullptr;
  void (*run)(BlockingJob*) noexcept = nullptr;
};

// Appends the job to the pool's queue, starting a thread if none is idle
// and the limit allows. Throws std::system_error naming pthread_create when
// the pool has no thread at all and none can be started.
void blocking_submit(BlockingJob* job);

template <class R, class Call>
struct BlockingCall final : BlockingJob {
  Call* call;
  // Shared with the pool thread, which may still hold it for an instant
  // after the caller has resumed.
  std::shared_ptr<FutureState<R>> state = std::make_shared<FutureState<R>>();

  explicit BlockingCall(Call& c) : call(&c) { this->run = &run_impl; }

  static void run_impl(BlockingJob* job) noexcept {
    auto* self = static_cast<BlockingCall*>(job);
    // Once the state is ready the caller may return and free `self`, so
    // take what is needed from it first.
    std::shared_ptr<FutureState<R>> state = self->state;
    Call& call = *self->call;
    // The outcome is written before the lock is taken; the waiter reads it
    // only after seeing `ready` under that lock.
    try {
      if constexpr (std::is_void_v<R>) {
        call();
      } else {
        state->value.emplace(call());
      }
    } catch (...) {
      state->error = std::current_exception();
    }
    std::lock_guard lock(state->mu);
    state->wake_all_locked();
  }
};

inline constexpr const char* kRunBlocking = "spindle::run_blocking";

// Parks until the job is done and returns its outcome. If the wait is
// interrupted (Cancelled, TimeoutError), waits on shielded until the job is
// done, discards its outcome and rethrows the interruption.
template <class R>
R blocking_wait(FutureState<R>& state) {
  try {
    state.wait_until(kNoDeadline, kRunBlocking);
  } catch (...) {
    {
      Shield shield;
      state.wait_until(kNoDeadline, kRunBlocking);
    }
    // Drop a value here, on the caller's thread, where it was meant to be
    // used; f's own failure is superseded by the interruption. The pool
    // thread has let go of the lock (wait_until retakes it), so nothing
    // touches the state concurrently.
    if constexpr (!std::is_void_v<R>) state.value.reset();
    state.error = nullptr;
    throw;
  }
  if (state.error) std::rethrow_exception(state.error);
  if constexpr (!std::is_void_v<R>) return std::move(*state.value);
}

}  // namespace detail

template <class F, class... Args>
using blocking_result_t = std::remove_cvref_t<std::invoke_result_t<F, Args...>>;

template <class F, class... Args>
blocking_result_t<F, Args...> run_blocking(F&& f, Args&&... args) {
  using R = blocking_result_t<F, Args...>;
  // Throws outside a fiber, and for a cancellation or an expired Timeout
  // scope already due, before anything is queued.
  (void)detail::enter_wait(detail::kRunBlocking);
  auto call = [&]() -> R { return std::invoke(std::forward<F>(f), std::forward<Args>(args)...); };
  detail::BlockingCall<R, decltype(call)> job(call);
  detail::blocking_submit(&job);
  return detail::blocking_wait(*job.state);
}

}  // namespace spindle
