// Switch: C++20 stackless coroutines, symmetric transfer ping-pong.
//
// Two coroutines hand control to each other by returning the peer's handle
// from await_suspend, which the compiler turns into a tail call to the
// peer's resume function: no stack switch, no scheduler. This is the floor
// for "a transfer of control" in C++, but the coroutines are stackless: they
// cannot suspend from inside a nested plain call, which is what a fiber is
// for. One switch is one transfer.
#include "bench.hpp"

#include <algorithm>
#include <coroutine>
#include <exception>
#include <utility>

namespace {

struct PingPong;

// A coroutine that starts suspended and is destroyed by its owner.
struct Coro {
  struct promise_type {
    Coro get_return_object() { return Coro{std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
  explicit Coro(std::coroutine_handle<promise_type> h) : handle(h) {}
  Coro(Coro&& other) noexcept : handle(std::exchange(other.handle, {})) {}
  Coro(const Coro&) = delete;
  Coro& operator=(const Coro&) = delete;
  ~Coro() {
    if (handle) handle.destroy();
  }
  std::coroutine_handle<promise_type> handle;
};

struct PingPong {
  std::coroutine_handle<> side[2];
  std::uint64_t remaining = 0;  // transfers left in this run
};

// Suspends the current side and transfers to the other one, or back to
// whoever called resume() once the run's transfers are used up.
struct TransferTo {
  PingPong& game;
  int peer;
  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<>) const noexcept {
    if (game.remaining == 0) return std::noop_coroutine();
    --game.remaining;
    return game.side[peer];
  }
  void await_resume() const noexcept {}
};

Coro player(PingPong& game, int self) {
  for (;;) co_await TransferTo{game, 1 - self};
}

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("switch", argc, argv);
  if (runner.wants("coroutine")) {
    auto pin = bench::pin_current_thread(bench::primary_cpu());
    PingPong game;
    Coro a = player(game, 0);
    Coro b = player(game, 1);
    game.side[0] = a.handle;
    game.side[1] = b.handle;
    // Resuming a side runs until `remaining` transfers have happened, then
    // the last await_suspend returns noop_coroutine() and resume() returns.
    // Chunks of kChunk transfers bound the stack when the compiler does not
    // turn the transfer into a tail call (GCC below -O2 does not); the one
    // extra resume per chunk costs about 0.1%.
    constexpr std::uint64_t kChunk = 1024;
    runner.time("coroutine", {.unit = "ns/switch", .note = pin.note()}, [&](std::uint64_t n) {
      for (std::uint64_t left = n; left > 0;) {
        game.remaining = std::min(left, kChunk);
        left -= game.remaining;
        game.side[0].resume();
      }
    });
  }
  return runner.finish();
}
