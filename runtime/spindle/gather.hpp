// gather, gather_settled and wait_for: waiting on several tasks, or on one
// with a time limit, the asyncio way.
//
//   auto [a, b] = spindle::gather(spawn(f), spawn(g));   // tuple of results
//   std::vector<int> v = spindle::gather(tasks);          // vector<Task<int>>&
//
// gather: if one task fails, the others are cancelled and waited for, and
// the first failure (in time) is rethrown. If the gathering fiber is itself
// cancelled or times out, every task is cancelled and waited for first.
// gather_settled waits for all and returns each outcome (asyncio's
// return_exceptions=True). void tasks give std::monostate.
// wait_for(task, d): the result, or the task is cancelled, waited for until
// it has unwound, and TimeoutError is thrown.
#pragma once

#include <array>
#include <chrono>
#include <exception>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include <spindle/task.hpp>

namespace spindle {

template <class T>
using value_or_monostate_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

// The outcome of a task: its value or the exception it ended with.
template <class T>
class Outcome {
 public:
  using value_type = value_or_monostate_t<T>;
  explicit Outcome(value_type v) : v_(std::move(v)) {}
  explicit Outcome(std::exception_ptr e) : v_(std::move(e)) {}

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }
  // The value, or rethrows the exception.
  value_type& value() & {
    if (!has_value()) std::rethrow_exception(std::get<1>(v_));
    return std::get<0>(v_);
  }
  value_type&& value() && { return std::move(value()); }
  std::exception_ptr error() const noexcept { return has_value() ? nullptr : std::get<1>(v_); }

 private:
  std::variant<value_type, std::exception_ptr> v_;
};

namespace detail {

// Waits until every fiber is done. Unless `settled`, the first failure
// cancels the others, waits for them and is rethrown. An interruption of the
// caller (cancel, Timeout) cancels all, waits for them, and is rethrown.
void gather_wait(Fiber* const* fibers, std::size_t n, bool settled, const char* call);

template <class T>
value_or_monostate_t<T> join_value(Task<T>& t) {
  if constexpr (std::is_void_v<T>) {
    t.join();
    return {};
  } else {
    return t.join();
  }
}

template <class T>
Outcome<T> take_outcome(Task<T>& t) {
  try {
    return Outcome<T>(join_value(t));
  } catch (...) {
    return Outcome<T>(std::current_exception());
  }
}

template <class X>
struct task_value;
template <class T>
struct task_value<Task<T>> {
  using type = T;
};
template <class X>
using task_value_t = typename task_value<std::remove_cvref_t<X>>::type;

}  // namespace detail

template <class... Ts>
std::tuple<value_or_monostate_t<detail::task_value_t<Ts>>...> gather(Ts&&... tasks) {
  std::array<detail::Fiber*, sizeof...(Ts)> fibers{tasks.fiber()...};
  detail::gather_wait(fibers.data(), fibers.size(), false, "spindle::gather");
  return {detail::join_value(tasks)...};
}

template <class T>
std::vector<value_or_monostate_t<T>> gather(std::vector<Task<T>>& tasks) {
  std::vector<detail::Fiber*> fibers;
  fibers.reserve(tasks.size());
  for (auto& t : tasks) fibers.push_back(t.fiber());
  detail::gather_wait(fibers.data(), fibers.size(), false, "spindle::gather");
  std::vector<value_or_monostate_t<T>> out;
  out.reserve(tasks.size());
  for (auto& t : tasks) out.push_back(detail::join_value(t));
  return out;
}

template <class... Ts>
std::tuple<Outcome<detail::task_value_t<Ts>>...> gather_settled(Ts&&... tasks) {
  std::array<detail::Fiber*, sizeof...(Ts)> fibers{tasks.fiber()...};
  detail::gather_wait(fibers.data(), fibers.size(), true, "spindle::gather_settled");
  return {detail::take_outcome(tasks)...};
}

template <class T>
std::vector<Outcome<T>> gather_settled(std::vector<Task<T>>& tasks) {
  std::vector<detail::Fiber*> fibers;
  fibers.reserve(tasks.size());
  for (auto& t : tasks) fibers.push_back(t.fiber());
  detail::gather_wait(fibers.data(), fibers.size(), true, "spindle::gather_settled");
  std::vector<Outcome<T>> out;
  out.reserve(tasks.size());
  for (auto& t : tasks) out.push_back(detail::take_outcome(t));
  return out;
}

template <class T, class Rep, class Period>
T wait_for(Task<T>& task, std::chrono::duration<Rep, Period> timeout) {
  bool finished = false;
  try {
    finished = task.wait_for(timeout);
  } catch (...) {
    task.cancel();
    detail::wait_done_shielded(task.fiber());
    throw;
  }
  if (!finished) {
    task.cancel();
    detail::wait_done_shielded(task.fiber());
    throw TimeoutError("spindle::wait_for: the task did not finish in time");
  }
  return task.join();
}

template <class T, class Rep, class Period>
T wait_for(Task<T>&& task, std::chrono::duration<Rep, Period> timeout) {
  Task<T> owned = std::move(task);
  return wait_for(owned, timeout);
}

// Runs f on a new fiber and waits for it at most `timeout`.
template <class F, class Rep, class Period>
  requires std::is_invocable_v<std::decay_t<F>>
auto wait_for(F&& f, std::chrono::duration<Rep, Period> timeout) {
  auto task = spawn(std::forward<F>(f));
  return wait_for(task, timeout);
}

}  // namespace spindle
