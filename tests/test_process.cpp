// spindle::Process: spawning with pipes, /dev/null and inherited streams,
// cwd and environment, exit codes and deaths by signal, communicate()
// without deadlock and with input the child never reads, Timeout and
// cancellation around wait(), the application's SIGCHLD handler left
// alone, many children at once, and no zombies left behind.
//
// The children are ordinary programs every Debian system has (sh, cat,
// echo, sleep). Every case waits for what it spawns, except where it tests
// the background reaper, so the last case can check that this process has
// no children left at all.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <spindle/process.hpp>
#include <spindle/signal.hpp>
#include <spindle/spindle.hpp>

#if defined(SPINDLE_HAVE_VALGRIND)
#include <valgrind/valgrind.h>
#endif

using namespace std::chrono_literals;
using spindle::Process;
using spindle::ProcessOptions;
using spindle::Stdio;

namespace {

bool on_valgrind() {
#if defined(SPINDLE_HAVE_VALGRIND)
  return RUNNING_ON_VALGRIND != 0;
#else
  return false;
#endif
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string read_all(spindle::net::PipeReader& r) {
  std::string out;
  char buf[4096];
  for (;;) {
    const std::size_t n = r.read_some(std::span<char>(buf));
    if (n == 0) return out;
    out.append(buf, n);
  }
}

// The hex mask of a /proc/PID/status line such as "SigBlk:", as printed by
// a child about itself.
unsigned long long status_mask(const std::string& status, const std::string& key) {
  const auto at = status.find(key);
  REQUIRE(at != std::string::npos);
  return std::strtoull(status.c_str() + at + key.size(), nullptr, 16);
}

unsigned long long bit(int signo) { return 1ull << (signo - 1); }

template <class F>
std::system_error catch_system_error(F&& f) {
  try {
    f();
  } catch (const std::system_error& e) {
    return e;
  }
  FAIL("no std::system_error was thrown");
  return std::system_error(std::error_code{});
}

// True once this process has no children, exited or running, within `limit`.
// WNOWAIT: looking must not reap, or the check would do the reaper's job.
bool no_children_within(std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    siginfo_t info{};
    if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD) return true;
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(10ms);
  }
}

}  // namespace

TEST_CASE("process: echo's output comes through the stdout pipe") {
  spindle::run([] {
    auto p = Process::spawn({"echo", "hello", "world"}, {.out = Stdio::pipe});
    CHECK(p.pid() > 0);
    CHECK(p.command() == "echo hello world");
    CHECK(read_all(p.stdout_pipe()) == "hello world\n");
    const auto status = p.wait();
    CHECK(status.success());
    CHECK(status.exited());
    CHECK(status.code() == 0);
    CHECK(status.to_string() == "exit code 0");
    // Waiting again returns the same status at once.
    CHECK(p.wait() == status);
    CHECK(p.status() == status);
  });
}

TEST_CASE("process: communicate round-trips 1 MiB through cat without deadlock") {
  spindle::run([] {
    std::string input(1 << 20, '\0');
    for (std::size_t i = 0; i < input.size(); ++i) input[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
    // cat writes back while it still reads: with a 64 KiB pipe each way,
    // writing all the input before reading would block both sides.
    auto p = Process::spawn({"cat"}, {.in = Stdio::pipe, .out = Stdio::pipe, .err = Stdio::pipe});
    auto [status, out, err] = p.communicate(input);
    CHECK(status.success());
    CHECK(out.size() == input.size());
    CHECK(out == input);
    CHECK(err.empty());
    CHECK_FALSE(p.stdin_pipe().is_open());
    CHECK_FALSE(p.stdout_pipe().is_open());
    // Done already: no more input, and the same status again.
    CHECK_THROWS_AS(p.communicate("more"), std::logic_error);
    CHECK(p.communicate().status == status);
  });
}

TEST_CASE("process: exit codes and deaths by signal are reported") {
  spindle::run([] {
    SUBCASE("exit code") {
      auto p = Process::spawn({"sh", "-c", "exit 3"});
      const auto s = p.wait();
      CHECK(s.exited());
      CHECK_FALSE(s.success());
      CHECK(s.code() == 3);
      CHECK(s.signal() == 0);
      CHECK(s.to_string() == "exit code 3");
    }
    SUBCASE("killed by a signal it sent itself") {
      auto p = Process::spawn({"sh", "-c", "kill -TERM $$; sleep 5"});
      const auto s = p.wait();
      CHECK(s.signaled());
      CHECK(s.signal() == SIGTERM);
      CHECK(s.code() == -1);
      CHECK(s.to_string() == "killed by signal 15 (SIGTERM)");
    }
    SUBCASE("terminate() and kill()") {
      auto p = Process::spawn({"sleep", "10"});
      p.terminate();
      CHECK(p.wait().signal() == SIGTERM);
      auto q = Process::spawn({"sleep", "10"});
      q.kill();
      CHECK(q.wait().signal() == SIGKILL);
      // Reaped: signalling again does nothing (the pid may be reused).
      CHECK_NOTHROW(q.kill());
      CHECK_NOTHROW(q.send_signal(SIGTERM));
    }
  });
}

TEST_CASE("process: cwd and env are honoured") {
  spindle::run([] {
    char tmp[] = "/tmp/spindle-process-XXXXXX";
    REQUIRE(::mkdtemp(tmp) != nullptr);
    char real[PATH_MAX];
    REQUIRE(::realpath(tmp, real) != nullptr);
    SUBCASE("added to the inherited environment") {
      ::setenv("SPINDLE_TEST_INHERITED", "kept", 1);
      auto p = Process::spawn({"sh", "-c", "pwd; echo $X; echo $SPINDLE_TEST_INHERITED"},
                              {.out = Stdio::pipe, .cwd = tmp, .env = {{"X", "first"}, {"X", "hello"}}});
      auto r = p.communicate();
      CHECK(r.status.success());
      CHECK(r.out == fmt::format("{}\nhello\nkept\n", real));
      ::unsetenv("SPINDLE_TEST_INHERITED");
    }
    SUBCASE("replacing the environment") {
      ::setenv("SPINDLE_TEST_INHERITED", "kept", 1);
      auto p = Process::spawn({"sh", "-c", "echo \"[$X][$SPINDLE_TEST_INHERITED]\""},
                              {.out = Stdio::pipe, .env = {{"X", "only"}}, .inherit_env = false});
      CHECK(p.communicate().out == "[only][]\n");
      ::unsetenv("SPINDLE_TEST_INHERITED");
    }
    ::rmdir(tmp);
  });
}

TEST_CASE("process: a command that cannot be started is an error naming it") {
  spindle::run([] {
    CHECK_THROWS_AS(Process::spawn({}), std::invalid_argument);
    CHECK_THROWS_AS(Process::spawn({"true"}, {.out = Stdio::to_stdout}), std::invalid_argument);
    if (on_valgrind()) {
      // valgrind runs glibc's vfork-like clone as a fork, so the child's
      // exec error never reaches posix_spawn: the child exits with 127.
      CHECK(Process::spawn({"spindle-no-such-command"}).wait().code() == 127);
      return;
    }
    auto e = catch_system_error([] { Process::spawn({"spindle-no-such-command", "x"}); });
    CHECK(e.code() == std::errc::no_such_file_or_directory);
    CHECK(contains(e.what(), "posix_spawn(\"spindle-no-such-command x\")"));

    e = catch_system_error([] { Process::spawn({"pwd"}, {.cwd = "/nonexistent/spindle"}); });
    CHECK(e.code() == std::errc::no_such_file_or_directory);
    CHECK(contains(e.what(), "posix_spawn(\"pwd\", cwd=\"/nonexistent/spindle\")"));
  });
}

TEST_CASE("process: Stdio::null gives EOF on stdin and discards output") {
  spindle::run([] {
    auto p = Process::spawn({"sh", "-c", "if read x; then echo got; else echo eof; fi; echo noise >&2"},
                            {.in = Stdio::null, .out = Stdio::pipe, .err = Stdio::null});
    auto r = p.communicate();
    CHECK(r.status.success());
    CHECK(r.out == "eof\n");
    CHECK(r.err.empty());
    CHECK_THROWS_AS(p.stdin_pipe(), std::logic_error);
    CHECK_THROWS_AS(p.stderr_pipe(), std::logic_error);
    CHECK_THROWS_AS(p.communicate("input"), std::logic_error);
  });
}

TEST_CASE("process: communicate with 1 MiB of input to a child that never reads it returns the status, without SIGPIPE") {
  struct sigaction old_action {};
  REQUIRE(::sigaction(SIGPIPE, nullptr, &old_action) == 0);
  REQUIRE((old_action.sa_handler == SIG_DFL));  // a SIGPIPE would kill the test
  spindle::run([] {
    const std::string input(1 << 20, 'i');  // 16 pipe buffers
    SUBCASE("true") {
      auto p = Process::spawn({"true"}, {.in = Stdio::pipe, .out = Stdio::pipe, .err = Stdio::pipe});
      auto r = p.communicate(input);
      CHECK(r.status.success());
      CHECK(r.out.empty());
      CHECK(r.err.empty());
      CHECK_FALSE(p.stdin_pipe().is_open());
    }
    SUBCASE("an exit code other than 0 comes through") {
      auto p = Process::spawn({"sh", "-c", "exit 5"}, {.in = Stdio::pipe});
      CHECK(p.communicate(input).status.code() == 5);
    }
    SUBCASE("a child that reads 10 bytes and exits") {
      auto p = Process::spawn({"head", "-c", "10"}, {.in = Stdio::pipe, .out = Stdio::pipe});
      auto r = p.communicate(input);
      CHECK(r.status.success());
      CHECK(r.out == std::string(10, 'i'));
    }
    // The SIGPIPE each failed write raised was consumed, and the thread's
    // mask is as it was.
    sigset_t pending, mask;
    REQUIRE(::sigpending(&pending) == 0);
    CHECK_FALSE(sigismember(&pending, SIGPIPE));
    REQUIRE(::pthread_sigmask(SIG_BLOCK, nullptr, &mask) == 0);
    CHECK_FALSE(sigismember(&mask, SIGPIPE));
  });
}

namespace {

std::atomic<int> sigchld_seen{0};

void count_sigchld(int, siginfo_t*, void*) { sigchld_seen.fetch_add(1, std::memory_order_relaxed); }

// Installs count_sigchld for SIGCHLD for the scope, then restores the old
// disposition.
class SigchldHandler {
 public:
  SigchldHandler() {
    struct sigaction mine {};
    mine.sa_sigaction = count_sigchld;
    mine.sa_flags = kFlags;
    sigemptyset(&mine.sa_mask);
    REQUIRE(::sigaction(SIGCHLD, &mine, &saved_) == 0);
  }
  ~SigchldHandler() { ::sigaction(SIGCHLD, &saved_, nullptr); }
  static constexpr int kFlags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;

  // Still ours, exactly as installed?
  static void check_installed() {
    struct sigaction now {};
    REQUIRE(::sigaction(SIGCHLD, nullptr, &now) == 0);
    CHECK((now.sa_flags & kFlags) == kFlags);
    CHECK((now.sa_handler != SIG_DFL && now.sa_handler != SIG_IGN));
    CHECK((now.sa_sigaction == &count_sigchld));
  }

 private:
  struct sigaction saved_ {};
};

// readlink(2) of a /proc/self/fd entry; empty if that fd is not open.
std::string fd_target(int fd) {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink(fmt::format("/proc/self/fd/{}", fd).c_str(), buf, sizeof(buf));
  return n < 0 ? std::string() : std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace

TEST_CASE("process: the application's SIGCHLD handler is left installed and keeps running") {
  SigchldHandler handler;
  sigchld_seen = 0;
  spindle::run([] {
    auto p = Process::spawn({"true"});
    CHECK(p.wait().success());
    SigchldHandler::check_installed();
    auto q = Process::spawn({"sh", "-c", "echo hi"}, {.out = Stdio::pipe});
    CHECK(q.communicate().out == "hi\n");
    // Dropped unwaited: the background reaper (its own thread and
    // scheduler) reaps it, and must not touch the handler either.
    { auto r = Process::spawn({"true"}); }
    CHECK(no_children_within(5s));
    SigchldHandler::check_installed();
    // The handler is not only in place but still called: each child's exit
    // sent SIGCHLD (standard signals may merge, so at least one).
    for (int i = 0; i < 200 && sigchld_seen.load() == 0; ++i) spindle::this_fiber::sleep_for(10ms);
    CHECK(sigchld_seen.load() >= 1);
  });
  SigchldHandler::check_installed();  // and after the scheduler has gone
}

TEST_CASE("process: Stdio::null is /dev/null and Stdio::inherit is the parent's own descriptor") {
  // A shell that writes to stderr what its fds 0 and 1 are. It reports on
  // its own fds (/proc/$$), read before any ">&2" applies: `readlink
  // /proc/self/fd/1 >&2` would name the stderr pipe.
  static const std::vector<std::string> kReportStdinStdout = {
      "sh", "-c", "i=$(readlink /proc/$$/fd/0); o=$(readlink /proc/$$/fd/1); echo \"$i\" >&2; echo \"$o\" >&2"};
  spindle::run([] {
    SUBCASE("null stdin and stdout") {
      auto p = Process::spawn(kReportStdinStdout, {.in = Stdio::null, .out = Stdio::null, .err = Stdio::pipe});
      auto r = p.communicate();
      CHECK(r.status.success());
      CHECK(r.err == "/dev/null\n/dev/null\n");
      CHECK(r.out.empty());
    }
    SUBCASE("null stderr") {
      auto p = Process::spawn({"sh", "-c", "readlink /proc/$$/fd/2"}, {.out = Stdio::pipe, .err = Stdio::null});
      CHECK(p.communicate().out == "/dev/null\n");
    }
    SUBCASE("inherited stdin and stdout") {
      const std::string in = fd_target(0), out = fd_target(1);
      if (in.empty() || out.empty()) {
        MESSAGE("skipped: this process runs with fd 0 or 1 closed");
        return;
      }
      auto p = Process::spawn(kReportStdinStdout, {.err = Stdio::pipe});  // in, out: Stdio::inherit (default)
      auto r = p.communicate();
      CHECK(r.status.success());
      CHECK(r.err == in + "\n" + out + "\n");
    }
    SUBCASE("inherited stdout while the parent's fd 1 is a file") {
      // Whatever runs the tests, fd 1 becomes a known file for a moment, so
      // inherit cannot pass by pointing to the same thing as null would.
      char path[] = "/tmp/spindle-process-stdout-XXXXXX";
      const int file = ::mkstemp(path);
      REQUIRE(file >= 0);
      char real[PATH_MAX];
      REQUIRE(::realpath(path, real) != nullptr);
      std::fflush(stdout);
      const int saved = ::dup(STDOUT_FILENO);
      REQUIRE(saved >= 0);
      REQUIRE(::dup2(file, STDOUT_FILENO) == STDOUT_FILENO);
      std::string parent_sees, child_err;
      bool ok = false;
      try {
        parent_sees = fd_target(1);
        auto p = Process::spawn({"sh", "-c", "echo to-inherited-stdout; o=$(readlink /proc/$$/fd/1); echo \"$o\" >&2"},
                                {.out = Stdio::inherit, .err = Stdio::pipe});
        auto r = p.communicate();
        ok = r.status.success();
        child_err = r.err;
      } catch (...) {
        ::dup2(saved, STDOUT_FILENO);
        ::close(saved);
        throw;
      }
      ::dup2(saved, STDOUT_FILENO);
      ::close(saved);
      CHECK(ok);
      CHECK(parent_sees == real);
      CHECK(child_err == parent_sees + "\n");
      char buf[256];
      const ssize_t n = ::pread(file, buf, sizeof(buf), 0);
      CHECK(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0) == "to-inherited-stdout\n");
      ::close(file);
      ::unlink(path);
    }
  });
}

TEST_CASE("process: stdout and stderr pipes are separate, and to_stdout merges them") {
  spindle::run([] {
    auto p = Process::spawn({"sh", "-c", "echo out; echo err >&2; exit 4"},
                            {.out = Stdio::pipe, .err = Stdio::pipe});
    auto r = p.communicate();
    CHECK(r.status.code() == 4);
    CHECK(r.out == "out\n");
    CHECK(r.err == "err\n");

    auto q = Process::spawn({"sh", "-c", "echo out; echo err >&2"}, {.out = Stdio::pipe, .err = Stdio::to_stdout});
    CHECK(q.communicate().out == "out\nerr\n");
  });
}

TEST_CASE("process: a Timeout around wait throws, leaves the child running, then kill and wait work") {
  spindle::run([] {
    auto p = Process::spawn({"sleep", "10"});
    const auto start = std::chrono::steady_clock::now();
    {
      spindle::Timeout t(100ms);
      CHECK_THROWS_AS(p.wait(), spindle::TimeoutError);
    }
    const auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(elapsed >= 100ms);
    CHECK(elapsed < 5s);
    CHECK_FALSE(p.try_wait().has_value());
    CHECK(::kill(p.pid(), 0) == 0);  // still there
    p.kill();
    const auto s = p.wait();
    CHECK(s.signal() == SIGKILL);
    CHECK(s.to_string() == "killed by signal 9 (SIGKILL)");
    CHECK(std::chrono::steady_clock::now() - start < 5s);
  });
}

TEST_CASE("process: a Timeout around communicate throws and the child stays waitable") {
  spindle::run([] {
    auto p = Process::spawn({"sh", "-c", "echo started; exec sleep 10"}, {.in = Stdio::pipe, .out = Stdio::pipe});
    {
      spindle::Timeout t(100ms);
      CHECK_THROWS_AS(p.communicate(), spindle::TimeoutError);
    }
    p.kill();
    CHECK(p.wait().signal() == SIGKILL);
  });
}

TEST_CASE("process: cancelling a waiting fiber leaves the child waitable") {
  spindle::run([] {
    auto p = Process::spawn({"sleep", "10"});
    auto waiter = spindle::spawn([&] { return p.wait(); });
    spindle::this_fiber::sleep_for(20ms);
    CHECK_FALSE(waiter.done());
    waiter.cancel();
    CHECK_THROWS_AS(waiter.join(), spindle::Cancelled);
    p.terminate();
    CHECK(p.wait().signal() == SIGTERM);
  });
}

TEST_CASE("process: other fibers keep running while one waits") {
  spindle::run([] {
    int ticks = 0;
    bool done = false;
    auto ticker = spindle::spawn([&] {
      while (!done) {
        spindle::this_fiber::sleep_for(10ms);
        ++ticks;
      }
    });
    auto p = Process::spawn({"sleep", "0.3"});
    const auto start = std::chrono::steady_clock::now();
    CHECK(p.wait().success());
    CHECK(std::chrono::steady_clock::now() - start >= 250ms);
    done = true;
    ticker.join();
    CHECK(ticks >= 10);
  });
}

TEST_CASE("process: try_wait does not park and several fibers may wait for one child") {
  spindle::run([] {
    auto p = Process::spawn({"sh", "-c", "sleep 0.1; exit 7"});
    CHECK_FALSE(p.try_wait().has_value());
    auto a = spindle::spawn([&] { return p.wait(); });
    auto b = spindle::spawn([&] { return p.wait(); });
    CHECK(a.join().code() == 7);
    CHECK(b.join().code() == 7);
    CHECK(p.try_wait()->code() == 7);
  });
}

TEST_CASE("process: 50 children run concurrently") {
  spindle::run([] {
    constexpr int kCount = 50;
    std::vector<spindle::Task<std::string>> tasks;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kCount; ++i) {
      tasks.push_back(spindle::spawn([i] {
        auto p = Process::spawn({"sh", "-c", "sleep 0.2; echo $1", "sh", std::to_string(i)}, {.out = Stdio::pipe});
        auto r = p.communicate();
        REQUIRE(r.status.success());
        return r.out;
      }));
    }
    auto outputs = spindle::gather(tasks);
    for (int i = 0; i < kCount; ++i) CHECK(outputs[static_cast<std::size_t>(i)] == fmt::format("{}\n", i));
    // 50 sleeps of 0.2 s one after the other would take 10 s. (Under
    // valgrind each spawn copies the whole emulated process.)
    if (!on_valgrind()) CHECK(std::chrono::steady_clock::now() - start < 5s);
  });
}

TEST_CASE("process: the child inherits only fds 0, 1 and 2") {
  spindle::run([] {
    // Deliberately without O_CLOEXEC, as code outside spindle might open it.
    const int leaked = ::open("/dev/null", O_RDONLY);
    REQUIRE(leaked > 2);
    auto p = Process::spawn({"sh", "-c", fmt::format("[ -e /proc/self/fd/{} ] && echo open || echo closed", leaked)},
                            {.out = Stdio::pipe});
    CHECK(p.communicate().out == "closed\n");
    ::close(leaked);
  });
}

TEST_CASE("process: the child starts without spindle's signal watches and with SIGPIPE at default") {
  spindle::run([] {
    struct sigaction ignore{}, old{};
    ignore.sa_handler = SIG_IGN;
    REQUIRE(::sigaction(SIGPIPE, &ignore, &old) == 0);
    auto watcher = spindle::spawn([] { return spindle::wait_signal({SIGUSR1}); });
    spindle::this_fiber::yield();
    auto p = Process::spawn({"cat", "/proc/self/status"}, {.out = Stdio::pipe});
    const std::string status = p.communicate().out;
    CHECK((status_mask(status, "SigBlk:") & bit(SIGUSR1)) == 0);
    CHECK((status_mask(status, "SigIgn:") & bit(SIGPIPE)) == 0);
    watcher.cancel();
    CHECK_THROWS_AS(watcher.join(), spindle::Cancelled);
    ::sigaction(SIGPIPE, &old, nullptr);
  });
}

TEST_CASE("process: a Process destroyed unwaited is reaped in the background, no zombies remain") {
  {
    spindle::Process outlives_run;
    spindle::run([&] {
      // Exits soon, while nobody waits.
      { auto p = Process::spawn({"sh", "-c", "exit 0"}); }
      // Still running when destroyed; kill_on_destroy ends it.
      { auto p = Process::spawn({"sleep", "10"}, {.kill_on_destroy = true}); }
      // Still running when its scheduler ends and when it is destroyed.
      outlives_run = Process::spawn({"sleep", "0.2"});
      // Moving onto a live Process gives up the old child in the same way.
      auto q = Process::spawn({"sh", "-c", "exit 1"});
      q = Process::spawn({"sh", "-c", "exit 2"});
      CHECK(q.wait().code() == 2);
    });
  }
  CHECK(no_children_within(5s));
}

TEST_CASE("process: outside a fiber, wait throws std::logic_error and try_wait works") {
  Process p;
  spindle::run([&] { p = Process::spawn({"sleep", "10"}); });
  try {
    p.wait();
    FAIL("no exception");
  } catch (const std::logic_error& e) {
    CHECK(contains(e.what(), "spindle::Process::wait"));
  }
  p.kill();
  std::optional<spindle::ExitStatus> s;
  for (int i = 0; i < 500 && !s; ++i) {
    std::this_thread::sleep_for(10ms);
    s = p.try_wait();
  }
  REQUIRE(s.has_value());
  CHECK(s->signal() == SIGKILL);
}

TEST_CASE("process: calls on an empty Process throw std::logic_error") {
  spindle::Process p;
  CHECK(p.pid() == -1);
  CHECK_THROWS_AS(p.try_wait(), std::logic_error);
  CHECK_THROWS_AS(p.kill(), std::logic_error);
  spindle::run([&] { CHECK_THROWS_AS(p.wait(), std::logic_error); });
}
