// Promise<T> / Future<T>: a value handed from one party to a fiber.
//
// Future::get() parks the calling fiber until the value (or an exception)
// is set. Promise::set_value / set_exception may be called from any thread,
// including plain OS threads that do not run spindle: the waiting fiber is
// then woken through its scheduler's poller wake. A promise destroyed unset
// makes get() throw std::system_error(spindle::errc::broken_promise).
//
//   Thread rules: Promise members, any thread (one at a time per promise);
//   Future::get/wait*, a fiber; Future::ready/valid, any thread.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>

#include <spindle/clock.hpp>
#include <spindle/detail/fiber.hpp>
#include <spindle/error.hpp>

namespace spindle {

namespace detail {

// The non-template half of the shared state; `mu` guards everything.
struct FutureCore {
  std::mutex mu;
  bool ready = false;
  bool retrieved = false;
  std::exception_ptr error;
  WaitList waiters;

  // Parks until ready; false when the own deadline passed first.
  bool wait_until(std::int64_t deadline_ns, const char* call);
  // Under `mu`: marks ready and wakes every waiter, on any scheduler.
  void wake_all_locked() noexcept;
  [[noreturn]] static void throw_satisfied(const char* call);
};

template <class T>
struct FutureState : FutureCore {
  std::optional<T> value;
};
template <>
struct FutureState<void> : FutureCore {};

}  // namespace detail

template <class T>
class Future {
 public:
  Future() = default;
  explicit Future(std::shared_ptr<detail::FutureState<T>> s) noexcept : s_(std::move(s)) {}

  bool valid() const noexcept { return s_ != nullptr; }
  bool ready() const {
    if (!s_) return false;
    std::lock_guard lock(s_->mu);
    return s_->ready;
  }

  void wait() const { state("spindle::Future::wait")->wait_until(detail::kNoDeadline, "spindle::Future::wait"); }
  bool wait_until(TimePoint deadline) const {
    return state("spindle::Future::wait_until")->wait_until(detail::to_ns(deadline), "spindle::Future::wait_until");
  }
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) const {
    return wait_until(detail::deadline_after(spindle::now(), d));
  }

  // Parks until set; returns the value or rethrows. The future is then
  // empty (valid() == false), as with std::future.
  T get() {
    state("spindle::Future::get")->wait_until(detail::kNoDeadline, "spindle::Future::get");
    // Keep the state alive past emptying the future: the promise may be gone.
    std::shared_ptr<detail::FutureState<T>> s = std::move(s_);
    std::lock_guard lock(s->mu);
    if (s->error) std::rethrow_exception(s->error);
    if constexpr (!std::is_void_v<T>) return std::move(*s->value);
  }

 private:
  detail::FutureState<T>* state(const char* call) const {
    if (!s_) throw std::system_error(make_error_code(errc::no_state), call);
    return s_.get();
  }
  std::shared_ptr<detail::FutureState<T>> s_;
};

template <class T>
class Promise {
 public:
  Promise() : s_(std::make_shared<detail::FutureState<T>>()) {}
  Promise(Promise&&) noexcept = default;
  Promise& operator=(Promise&& o) noexcept {
    if (this != &o) {
      abandon();
      s_ = std::move(o.s_);
    }
    return *this;
  }
  ~Promise() { abandon(); }

  Future<T> get_future() {
    if (!s_) throw std::system_error(make_error_code(errc::no_state), "spindle::Promise::get_future");
    std::lock_guard lock(s_->mu);
    if (s_->retrieved)
      throw std::system_error(make_error_code(errc::future_already_retrieved), "spindle::Promise::get_future");
    s_->retrieved = true;
    return Future<T>(s_);
  }

  template <class... V>
  void set_value(V&&... v) {
    complete("spindle::Promise::set_value", [&](detail::FutureState<T>& s) {
      if constexpr (!std::is_void_v<T>) s.value.emplace(std::forward<V>(v)...);
    });
  }

  void set_exception(std::exception_ptr e) {
    complete("spindle::Promise::set_exception", [&](detail::FutureState<T>& s) { s.error = std::move(e); });
  }

 private:
  template <class Set>
  void complete(const char* call, Set&& set) {
    if (!s_) throw std::system_error(make_error_code(errc::no_state), call);
    std::lock_guard lock(s_->mu);
    if (s_->ready) detail::FutureCore::throw_satisfied(call);
    set(*s_);
    s_->wake_all_locked();
  }

  void abandon() noexcept {
    if (!s_) return;
    std::lock_guard lock(s_->mu);
    if (!s_->ready) {
      s_->error = std::make_exception_ptr(
          std::system_error(make_error_code(errc::broken_promise), "spindle::Promise destroyed unset"));
      s_->wake_all_locked();
    }
  }

  std::shared_ptr<detail::FutureState<T>> s_;
};

}  // namespace spindle
