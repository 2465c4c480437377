// spawn() and Task<T>: a fiber running a function, and its handle.
//
//   auto t = spindle::spawn(f, args...);                 // Task<R>
//   auto t = spindle::spawn({.name = "worker", .stack_size = 256 << 10}, f);
//   R r = t.join();      // parks until f returns; rethrows f's exception
//
// Like std::jthread, a Task destroyed while its fiber still runs cancels the
// fiber and waits until it has unwound, unless detach() was called. Tasks
// are move-only; TaskRef<T> is a copyable handle that never cancels (what
// TaskGroup::spawn returns). Handles and the fiber belong to one scheduler
// thread; only that thread may use them.
//
// The default stack is kDefaultStackSize (64 KiB; 256 KiB in ASan builds)
// of virtual memory, of which a parked fiber typically touches one page,
// with a guard page below it.
//
// Small stacks: a stack_size below the page size (kSmallStackSize = 2 KiB,
// Go's initial goroutine stack) packs stacks back to back with no guard
// page, so a parked fiber costs about 2.3 KiB instead of 4.3 KiB. Overflow
// is caught by a canary below the stack, checked at every switch out of the
// fiber (the process ends with the fiber named). For shallow fibers only:
// a handler parked on a socket or a timer fits; formatting, deep library
// calls or large local buffers do not. The errors spindle's own socket,
// stream and wait calls throw (a reset, a Timeout, an EOF) are built off
// the small stack, and catching them fits; an error the handler formats
// itself (fmt::format and a std::system_error take about 1.5 KiB) does not,
// nor does resolving a name. Sizes are rounded up to 256 bytes
// (minimum 1 KiB); ASan builds multiply them by four.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <spindle/detail/assert.hpp>
#include <spindle/detail/fiber.hpp>
#include <spindle/error.hpp>

namespace spindle {

#if defined(SPINDLE_ASAN)
inline constexpr std::size_t kDefaultStackSize = 256 * 1024;
#else
inline constexpr std::size_t kDefaultStackSize = 64 * 1024;
#endif
inline constexpr std::size_t kSmallStackSize = 2048;

struct SpawnOptions {
  // Shown by this_fiber::name() and in crash reports. The {} keeps
  // SpawnOptions{.stack_size = N} free of -Wmissing-field-initializers.
  std::string name{};
  // Bytes; 0 = the run's default. Rounded up to pages, or, below a page, to
  // a small stack (see kSmallStackSize above).
  std::size_t stack_size = 0;
};

namespace detail {

template <class T>
struct ResultSlot {
  std::optional<T> value;
};
template <>
struct ResultSlot<void> {};

template <class T>
struct TaskState : Fiber {
  ResultSlot<T> result;
  bool joined = false;
};

// The concrete record: Fiber bookkeeping, the result, and the function,
// which is destroyed on the fiber as soon as it returns so that what it
// captured is released when the work ends, not when the handle does.
template <class T, class Fn>
struct TaskImpl final : TaskState<T> {
  std::optional<Fn> fn;

  explicit TaskImpl(Fn&& f) : fn(std::move(f)) {
    this->body = &run;
    this->destroy = &destroy_impl;
  }

  static void run(Fiber* f) noexcept {
    auto* self = static_cast<TaskImpl*>(f);
    try {
      // A task cancelled before it ever ran never runs its body.
      if (self->cancel_requested) {
        self->cancel_requested = false;
        self->refresh_attention();
        throw Cancelled{};
      }
      if constexpr (std::is_void_v<T>) {
        std::invoke(std::move(*self->fn));
      } else {
        self->result.value.emplace(std::invoke(std::move(*self->fn)));
      }
    } catch (const Cancelled&) {
      self->cancelled_exit = true;
      self->error = std::current_exception();
    } catch (...) {
      self->error = std::current_exception();
    }
    self->fn.reset();
  }

  static void destroy_impl(Fiber* f) noexcept { delete static_cast<TaskImpl*>(f); }
};

// Gives the record a stack, an id and a place in the run queue; the caller
// holds one reference, the running fiber another. Throws std::logic_error
// outside run() and std::system_error when no stack can be mapped.
void start_fiber(Fiber* f, std::string&& name, std::size_t stack_size);
std::string fiber_name(const Fiber* f);

// Parks until `target` is done or the deadline passes (false). Honours
// cancellation and Timeout scopes; `call` names the public call in errors.
bool wait_done(Fiber* target, std::int64_t deadline_ns, const char* call);
// Same, but neither cancellation nor Timeout scopes can end it.
void wait_done_shielded(Fiber* target) noexcept;

template <class T>
class TaskBase {
 public:
  bool valid() const noexcept { return s_ != nullptr; }
  bool done() const noexcept { return s_ && s_->state == FiberState::done; }
  // True when the fiber ended because it was cancelled.
  bool cancelled() const noexcept { return done() && s_->cancelled_exit; }
  // The name given at spawn, or "fiber-<id>"; empty for an empty handle.
  std::string name() const { return s_ ? fiber_name(s_) : std::string{}; }
  std::uint64_t id() const noexcept { return s_ ? s_->id : 0; }

  // Asks the fiber to stop: Cancelled is thrown at its next suspension point
  // (at once if it is parked). Does nothing once the fiber is done.
  void cancel() noexcept {
    if (s_ && s_->state != FiberState::done) request_cancel(s_);
  }

  // Parks until the fiber is done, without taking its result.
  void wait() const {
    check_valid("spindle::Task::wait");
    wait_done(s_, kNoDeadline, "spindle::Task::wait");
  }
  bool wait_until(TimePoint deadline) const {
    check_valid("spindle::Task::wait_until");
    return wait_done(s_, to_ns(deadline), "spindle::Task::wait_until");
  }
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) const {
    return wait_until(deadline_after(spindle::now(), d));
  }

  // Parks until the fiber is done; returns its result or rethrows its
  // exception (Cancelled if it was cancelled). One join per task.
  T join() {
    check_valid("spindle::Task::join");
    if (s_->joined) throw std::system_error(make_error_code(errc::task_already_joined), "spindle::Task::join");
    wait_done(s_, kNoDeadline, "spindle::Task::join");
    s_->joined = true;
    if (s_->error) std::rethrow_exception(s_->error);
    if constexpr (!std::is_void_v<T>) {
      return std::move(*s_->result.value);
    }
  }

  // For gather(): the exception the task ended with, if any.
  std::exception_ptr error() const noexcept { return done() ? s_->error : nullptr; }
  Fiber* fiber() const noexcept { return s_; }

 protected:
  TaskBase() = default;
  explicit TaskBase(TaskState<T>* s) noexcept : s_(s) {}

  void check_valid(const char* call) const {
    if (!s_) throw std::system_error(make_error_code(errc::no_state), call);
  }

  TaskState<T>* s_ = nullptr;
};

}  // namespace detail

template <class T>
class TaskRef;

template <class T>
class Task : public detail::TaskBase<T> {
 public:
  Task() = default;
  explicit Task(detail::TaskState<T>* s) noexcept : detail::TaskBase<T>(s) {}
  Task(Task&& o) noexcept : detail::TaskBase<T>(std::exchange(o.s_, nullptr)) {}
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      reset();
      this->s_ = std::exchange(o.s_, nullptr);
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() { reset(); }

  // Lets the fiber run on its own; the handle becomes empty.
  void detach() noexcept {
    if (!this->s_) return;
    this->s_->detached = true;
    detail::release_fiber(std::exchange(this->s_, nullptr));
  }

  TaskRef<T> ref() const noexcept;

 private:
  void reset() noexcept {
    auto* s = std::exchange(this->s_, nullptr);
    if (!s) return;
    if (s->state != detail::FiberState::done) {
      detail::request_cancel(s);
      detail::wait_done_shielded(s);
    }
    detail::release_fiber(s);
  }
};

template <class T>
class TaskRef : public detail::TaskBase<T> {
 public:
  TaskRef() = default;
  explicit TaskRef(detail::TaskState<T>* s) noexcept : detail::TaskBase<T>(s) {
    if (s) ++s->refs;
  }
  TaskRef(const TaskRef& o) noexcept : TaskRef(o.s_) {}
  TaskRef(TaskRef&& o) noexcept : detail::TaskBase<T>(std::exchange(o.s_, nullptr)) {}
  TaskRef& operator=(TaskRef o) noexcept {
    std::swap(this->s_, o.s_);
    return *this;
  }
  ~TaskRef() {
    if (this->s_) detail::release_fiber(this->s_);
  }
};

template <class T>
TaskRef<T> Task<T>::ref() const noexcept {
  return TaskRef<T>(this->s_);
}

template <class F, class... Args>
using spawn_result_t = std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>;

template <class F, class... Args>
Task<spawn_result_t<F, Args...>> spawn(SpawnOptions options, F&& f, Args&&... args) {
  using R = spawn_result_t<F, Args...>;
  auto call = [fn = std::forward<F>(f), ... a = std::forward<Args>(args)]() mutable -> R {
    return std::invoke(std::move(fn), std::move(a)...);
  };
  auto* state = new detail::TaskImpl<R, decltype(call)>(std::move(call));
  try {
    detail::start_fiber(state, std::move(options.name), options.stack_size);
  } catch (...) {
    delete state;
    throw;
  }
  return Task<R>(state);
}

template <class F, class... Args>
  requires(!std::is_same_v<std::decay_t<F>, SpawnOptions>)
Task<spawn_result_t<F, Args...>> spawn(F&& f, Args&&... args) {
  return spawn(SpawnOptions{}, std::forward<F>(f), std::forward<Args>(args)...);
}

}  // namespace spindle
