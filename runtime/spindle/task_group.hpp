// TaskGroup: structured concurrency, like asyncio.TaskGroup.
//
//   {
//     spindle::TaskGroup g;
//     auto a = g.spawn(fetch, "a");
//     auto b = g.spawn(fetch, "b");
//     g.join();                      // or let the scope end
//     use(a.join(), b.join());       // results are kept by the TaskRefs
//   }
//
// The first child to fail (with anything but Cancelled) cancels the others;
// join() waits for all of them and rethrows that failure. If the group's
// scope ends without join(), the destructor joins (and may throw); if the
// scope is left by an exception, the children are cancelled and waited for
// and their failures are dropped in favour of the exception in flight.
// Unlike asyncio, a child's failure does not interrupt the parent's own
// code inside the scope; it surfaces at join() or at the scope's end.
#pragma once

#include <exception>
#include <vector>

#include <spindle/task.hpp>

namespace spindle {

namespace detail {
struct GroupCore {
  std::vector<Fiber*> children;  // each holds a reference
  std::size_t running = 0;
  std::exception_ptr first_error;
  bool failed = false;
  WaitList waiters;
};
void group_attach(GroupCore& g, Fiber* child) noexcept;
void group_join(GroupCore& g, const char* call);
void group_cancel(GroupCore& g) noexcept;
void group_abandon(GroupCore& g) noexcept;  // cancel, wait shielded
void group_release(GroupCore& g) noexcept;
}  // namespace detail

class TaskGroup {
 public:
  TaskGroup() : uncaught_(std::uncaught_exceptions()) {}
  ~TaskGroup() noexcept(false) {
    if (!joined_) {
      if (std::uncaught_exceptions() > uncaught_) {
        detail::group_abandon(core_);
      } else {
        joined_ = true;
        try {
          detail::group_join(core_, "spindle::TaskGroup::~TaskGroup");
        } catch (...) {
          detail::group_release(core_);
          throw;
        }
      }
    }
    detail::group_release(core_);
  }
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;

  template <class F, class... Args>
  TaskRef<spawn_result_t<F, Args...>> spawn(SpawnOptions options, F&& f, Args&&... args) {
    auto task = spindle::spawn(std::move(options), std::forward<F>(f), std::forward<Args>(args)...);
    TaskRef<spawn_result_t<F, Args...>> ref = task.ref();
    detail::group_attach(core_, task.fiber());
    task.detach();
    return ref;
  }
  template <class F, class... Args>
    requires(!std::is_same_v<std::decay_t<F>, SpawnOptions>)
  TaskRef<spawn_result_t<F, Args...>> spawn(F&& f, Args&&... args) {
    return spawn(SpawnOptions{}, std::forward<F>(f), std::forward<Args>(args)...);
  }

  // Waits for every child; rethrows the first failure.
  void join() {
    joined_ = true;
    detail::group_join(core_, "spindle::TaskGroup::join");
  }
  void cancel() noexcept { detail::group_cancel(core_); }
  std::size_t size() const noexcept { return core_.children.size(); }
  std::size_t running() const noexcept { return core_.running; }

 private:
  detail::GroupCore core_;
  int uncaught_;
  bool joined_ = false;
};

}  // namespace spindle
