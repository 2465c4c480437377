// Stack overflow reporting.
//
// Every fiber stack has a guard page below it (runtime/stack.hpp). Running
// into it raises SIGSEGV on a stack that has no room left, so the handler
// runs on an alternate signal stack, checks whether the faulting address is
// the running fiber's guard, and if so prints which fiber overflowed before
// ending the process. Any other fault goes to whoever handled SIGSEGV before
// us (ASan, a crash reporter) or to the default action.
//
// Small stacks have a canary instead of a guard (runtime/stack.hpp); the
// switch code checks it and reports through report_overflow as well.
//
// Only async-signal-safe calls are made here: write(2), sigaction, abort.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "platform/syscall.hpp"
#include "runtime/scheduler.hpp"

namespace spindle::detail {

namespace {

struct sigaction g_previous;
constexpr std::size_t kAltStackSize = 64 * 1024;

void put(const char* s, std::size_t n) noexcept {
  while (n > 0) {
    ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      return;
    }
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}
void put(const char* s) noexcept { put(s, std::strlen(s)); }
void put_number(std::uint64_t v) noexcept {
  char buf[24];
  int i = sizeof buf;
  do {
    buf[--i] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  put(buf + i, sizeof buf - static_cast<std::size_t>(i));
}

}  // namespace

void report_overflow(const Fiber* f, const char* how) noexcept {
  put("spindle: stack overflow in fiber '");
  if (f->name.empty()) {
    put("fiber-");
    put_number(f->id);
  } else {
    put(f->name.data(), f->name.size());
  }
  put("' (id ");
  put_number(f->id);
  put(", stack ");
  put_number(f->stack_size);
  put(" bytes): ");
  put(how);
  put("; spawn it with a larger SpawnOptions::stack_size\n");
  ::signal(SIGABRT, SIG_DFL);
  ::abort();
}

namespace {

void on_segv(int sig, siginfo_t* info, void* uctx) {
  Scheduler* s = Scheduler::current();
  Fiber* f = s ? s->running() : nullptr;
  if (f && f != s->main_fiber() && f->stack_base) {
    auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
    auto base = reinterpret_cast<std::uintptr_t>(f->stack_base);
    auto guard = static_cast<std::uintptr_t>(s->stacks().guard_size());
    if (addr < base && addr >= base - guard)
      // A small stack has no guard: this is an overflow that ran off the
      // start of its slab before the canary check could see it.
      report_overflow(f, f->small_stack ? "it ran off its small stack" : "it ran into its guard page");
  }
  // Not ours: hand the fault on.
  if (g_previous.sa_flags & SA_SIGINFO) {
    g_previous.sa_sigaction(sig, info, uctx);
  } else if (g_previous.sa_handler == SIG_DFL || g_previous.sa_handler == SIG_IGN) {
    // Returning re-executes the faulting instruction under the old action.
    ::sigaction(SIGSEGV, &g_previous, nullptr);
  } else {
    g_previous.sa_handler(sig);
  }
}

}  // namespace

// The first scheduler installs the handler over whatever was there. Later
// ones install it again only if SIGSEGV went back to the default action: a
// handler installed after ours (a test framework, a crash reporter) may
// restore the disposition it found, not ours, when it is done, and every
// later overflow would then be a bare segfault. A foreign handler still in
// place is left alone: it may chain to ours, and chaining back to it would
// loop.
void install_overflow_handler() {
  static std::mutex mu;
  static bool installed = false;
  std::lock_guard lock(mu);
  if (installed) {
    struct sigaction current {};
    if (::sigaction(SIGSEGV, nullptr, &current) != 0) platform::throw_system_error(errno, "sigaction(SIGSEGV)");
    if ((current.sa_flags & SA_SIGINFO) || current.sa_handler != SIG_DFL) return;
  }
  struct sigaction sa {};
  sa.sa_sigaction = &on_segv;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGSEGV, &sa, &g_previous) != 0) platform::throw_system_error(errno, "sigaction(SIGSEGV)");
  installed = true;
}

void* install_thread_altstack() {
  stack_t current{};
  if (::sigaltstack(nullptr, &current) == 0 && !(current.ss_flags & SS_DISABLE)) return nullptr;  // already has one
  void* mem = ::mmap(nullptr, kAltStackSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) platform::throw_system_error(errno, "mmap(signal stack)");
  stack_t ss{};
  ss.ss_sp = mem;
  ss.ss_size = kAltStackSize;
  if (::sigaltstack(&ss, nullptr) != 0) {
    int err = errno;
    ::munmap(mem, kAltStackSize);
    platform::throw_system_error(err, "sigaltstack");
  }
  return mem;
}

void remove_thread_altstack(void* altstack) noexcept {
  if (!altstack) return;
  stack_t ss{};
  ss.ss_flags = SS_DISABLE;
  ::sigaltstack(&ss, nullptr);
  ::munmap(altstack, kAltStackSize);
}

}  // namespace spindle::detail
