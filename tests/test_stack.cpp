// Fiber stacks: the requested size is usable, an overflow is reported by
// name (in a child process), and parked fibers do not cost a mapping each.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <spindle/spindle.hpp>

#include "runtime/scheduler.hpp"

#if defined(SPINDLE_HAVE_VALGRIND)
#include <valgrind/valgrind.h>
#endif

namespace {

using namespace std::chrono_literals;
namespace this_fiber = spindle::this_fiber;

bool on_valgrind() {
#if defined(SPINDLE_HAVE_VALGRIND)
  return RUNNING_ON_VALGRIND != 0;
#else
  return false;
#endif
}

// The stack pointer's distance below `top`, read from the frame address so
// that ASan's fake stacks (locals moved to the heap) do not fool it.
std::size_t used_below(const char* top) {
  return static_cast<std::size_t>(top - static_cast<const char*>(__builtin_frame_address(0)));
}

// Recurses until `target` bytes of stack are in use; returns the depth. The
// volatile buffer and the use after the call keep every frame real (no tail
// call, no folding).
[[gnu::noinline]] int recurse_to(const char* top, std::size_t target, int depth) {
  volatile char buf[512];
  buf[0] = 1;
  buf[sizeof buf - 1] = static_cast<char>(depth);
  if (used_below(top) >= target) return depth;
  int r = recurse_to(top, target, depth + 1);
  return r + buf[0] - 1;
}

// Never stops in practice: the bound is opaque to the compiler, which
// therefore can neither remove the recursion nor warn that it is infinite.
volatile int g_no_limit = INT_MAX;

[[gnu::noinline]] int recurse_forever(int depth) {
  volatile char buf[256];
  buf[0] = static_cast<char>(depth);
  if (depth >= g_no_limit) return buf[0];
  int r = recurse_forever(depth + 1);
  return r + buf[0];
}

std::size_t maps_count() {
  std::ifstream maps("/proc/self/maps");
  std::size_t lines = 0;
  std::string line;
  while (std::getline(maps, line)) ++lines;
  return lines;
}

struct ChildResult {
  int status = 0;
  std::string err;
};

// Runs `body` in a forked child with its stderr captured; the child exits 0
// if body returns, 3 if it throws, and is killed by SIGALRM if it hangs.
template <class F>
ChildResult run_in_child(F&& body) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], STDERR_FILENO);
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    // doctest's crash handlers belong to the parent's test run. Dropping
    // them also checks that run() puts the overflow handler back once
    // SIGSEGV has returned to its default action, as after a handler that
    // restored what it had found.
    ::signal(SIGSEGV, SIG_DFL);
    ::signal(SIGABRT, SIG_DFL);
    ::signal(SIGBUS, SIG_DFL);
    rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::alarm(60);
    try {
      body();
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  ChildResult r;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0) {
      r.err.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  ::close(fds[0]);
  REQUIRE(::waitpid(pid, &r.status, 0) == pid);
  return r;
}

}  // namespace

TEST_CASE("stack: SpawnOptions.stack_size is honoured, most of 1 MiB is usable") {
  spindle::run([] {
    constexpr std::size_t kMiB = 1 << 20;
    auto t = spindle::spawn(spindle::SpawnOptions{.name = "big", .stack_size = kMiB}, [] {
      const char* top = static_cast<const char*>(__builtin_frame_address(0));
      int depth = recurse_to(top, 900 * 1024, 0);
      return std::make_pair(depth, used_below(top));
    });
    REQUIRE(t.fiber() != nullptr);
    CHECK(t.fiber()->stack_size >= kMiB);
    auto [depth, used] = t.join();
    CHECK(depth > 100);
    MESSAGE("recursed " << depth << " frames on a 1 MiB stack");
    CHECK(used < kMiB);

    // The default size, and a size that is not a multiple of the page size.
    auto d = spindle::spawn([] {});
    CHECK(d.fiber()->stack_size == spindle::kDefaultStackSize);
    auto odd = spindle::spawn(spindle::SpawnOptions{.name = {}, .stack_size = 100'001}, [] {});
    CHECK(odd.fiber()->stack_size >= 100'001);
    CHECK(odd.fiber()->stack_size % static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)) == 0);
    d.join();
    odd.join();
  });
}

TEST_CASE("stack: RunOptions.default_stack_size applies to spawns that do not say") {
  spindle::run(spindle::RunOptions{.default_stack_size = 512 * 1024}, [] {
    auto t = spindle::spawn([] {
      const char* top = static_cast<const char*>(__builtin_frame_address(0));
      return recurse_to(top, 400 * 1024, 0);
    });
    CHECK(t.fiber()->stack_size == 512 * 1024);
    CHECK(t.join() > 0);
  });
}

TEST_CASE("stack: an overflow ends the process with a message naming the fiber") {
  if (on_valgrind()) {
    // Valgrind emulates signal delivery and fiber stacks; whether the guard
    // fault reaches our handler depends on its version (3.19 does deliver
    // it), so the death tests do not rely on it.
    MESSAGE("skipped under valgrind");
    return;
  }
  // The overflowing fiber is the 40th stack of its size, deep in the second
  // slab: every stack has its guard, not just the first of a mapping.
  ChildResult r = run_in_child([] {
    spindle::run([] {
      std::vector<spindle::Task<void>> parked;
      for (int i = 0; i < 39; ++i)
        parked.push_back(spindle::spawn(spindle::SpawnOptions{.name = {}, .stack_size = 64 * 1024},
                                        [] { this_fiber::sleep_for(1h); }));
      this_fiber::yield();
      spindle::spawn(spindle::SpawnOptions{.name = "deep", .stack_size = 64 * 1024}, [] {
        recurse_forever(0);
      }).join();
    });
  });
  INFO("child stderr: " << r.err);
  CHECK_FALSE((WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0));
  // ASan builds expect the same. ASan installs its SIGSEGV handler at
  // start-up and the first run() installs spindle's over it (chaining to it
  // for faults that are not overflows), so spindle's report comes first; in
  // this child SIGSEGV was reset to the default and run() installed it anew.
  CHECK(WIFSIGNALED(r.status));
  if (WIFSIGNALED(r.status)) CHECK(WTERMSIG(r.status) == SIGABRT);
  CHECK(r.err.find("stack overflow in fiber 'deep'") != std::string::npos);
  CHECK(r.err.find("id ") != std::string::npos);
}

TEST_CASE("stack: an overflow in an unnamed fiber names it fiber-<id>") {
  if (on_valgrind()) {
    MESSAGE("skipped under valgrind");
    return;
  }
  ChildResult r =
      run_in_child([] { spindle::run([] { spindle::spawn([] { recurse_forever(0); }).join(); }); });
  INFO("child stderr: " << r.err);
  CHECK(WIFSIGNALED(r.status));
  if (WIFSIGNALED(r.status)) CHECK(WTERMSIG(r.status) == SIGABRT);
  CHECK(r.err.find("stack overflow in fiber 'fiber-") != std::string::npos);
}

TEST_CASE("stack: a segfault that is not an overflow is not reported as one") {
  if (on_valgrind()) {
    MESSAGE("skipped under valgrind");
    return;
  }
  ChildResult r = run_in_child([] {
    spindle::run([] {
      spindle::spawn(spindle::SpawnOptions{.name = "wild"}, [] {
        volatile std::uintptr_t wild = 16;  // opaque to the compiler
        *reinterpret_cast<volatile int*>(wild) = 1;
      }).join();
    });
  });
  INFO("child stderr: " << r.err);
  CHECK_FALSE((WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0));
  CHECK(r.err.find("stack overflow") == std::string::npos);
  // Handed on to the previous disposition (the default here): a plain SIGSEGV.
  CHECK(WIFSIGNALED(r.status));
  if (WIFSIGNALED(r.status)) CHECK(WTERMSIG(r.status) == SIGSEGV);
}

TEST_CASE("stack: 50,000 sleeping fibers work and /proc/self/maps stays far below vm.max_map_count") {
  // Valgrind searches its list of registered stacks on every switch; a
  // tenth of the fibers is enough to check the layout there.
  const int n = on_valgrind() ? 5'000 : 50'000;
  spindle::ManualClock clock;
  const std::size_t before = maps_count();
  std::size_t during = 0;
  std::string guard_kind;
  int woke = spindle::run(spindle::RunOptions{.clock = &clock}, [&] {
    int woke = 0;
    std::vector<spindle::Task<void>> tasks;
    tasks.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
      tasks.push_back(spindle::spawn([&woke] {
        this_fiber::sleep_for(1s);
        ++woke;
      }));
    this_fiber::yield();  // every one of them runs and parks before the root again
    during = maps_count();
    guard_kind = spindle::detail::Scheduler::current()->stacks().guard_kind();
    CHECK(woke == 0);
    for (auto& t : tasks) t.join();
    return woke;
  });
  CHECK(woke == n);
  MESSAGE(n << " parked fibers: /proc/self/maps " << before << " -> " << during << " lines, guards by "
            << guard_kind);
  CHECK(during < 65530 / 8);
  CHECK(static_cast<long>(during) - static_cast<long>(before) < n / 10);
}
