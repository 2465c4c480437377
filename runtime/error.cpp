#include <spindle/error.hpp>

namespace spindle {

namespace {
class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "spindle"; }
  std::string message(int code) const override {
    switch (static_cast<errc>(code)) {
      case errc::broken_promise: return "broken promise: the promise was destroyed unset";
      case errc::future_already_retrieved: return "the future was already retrieved";
      case errc::promise_already_satisfied: return "the promise was already satisfied";
      case errc::no_state: return "no state: the handle is empty (moved from, or already consumed)";
      case errc::task_already_joined: return "the task was already joined";
    }
    return "unknown spindle error";
  }
};
}  // namespace

const std::error_category& error_category() noexcept {
  static const Category category;
  return category;
}

}  // namespace spindle
