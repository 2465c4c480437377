// spindle::Process: spawning with pipes, /dev/null and inherited streams,
// cwd and environment, exit codes and deaths by signal, communicate()
// without deadlock, Timeout and cancellation around wait(), many children
// at once, and no zombies left behind.
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

#include <chrono>
#include <climits>
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
