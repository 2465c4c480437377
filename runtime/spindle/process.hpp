// Child processes driven from fibers, like asyncio.create_subprocess_exec.
//
//   auto p = spindle::Process::spawn({"sh", "-c", "echo hi; exit 3"},
//                                    {.out = spindle::Stdio::pipe});
//   auto [status, out, err] = p.communicate();   // out == "hi\n"
//   status.code();                                 // 3
//
// Spawning: posix_spawnp(3) (glibc: a vfork-like clone that reports exec
// failures, such as a command that does not exist, as its own error; under
// valgrind, which runs that clone as a fork, they show as exit code 127
// instead). The parent thread pauses only until the child has called exec. argv[0] is
// looked up in the PATH of the parent's environment when it has no slash.
// The child inherits only fds 0, 1 and 2 (everything spindle opens is
// close-on-exec, and on glibc 2.34+ every other fd is closed in the child as
// well), starts with the signal mask the thread had before any
// spindle::wait_signal watch, and with SIGPIPE and the watched signals at
// their default action (as Python's restore_signals does).
//
// Waiting: wait() parks the fiber until the child exits and reaps it
// (waitpid). No SIGCHLD handler is installed and the application's SIGCHLD
// disposition is left alone; on Linux the poller watches a pidfd. The
// application must not reap spindle's children itself (waitpid(-1), or
// SIGCHLD set to SIG_IGN, which makes the kernel reap them): wait() then
// fails with ECHILD. Several fibers may wait for one Process; they take
// turns and all get the status.
//
// Timeouts and cancellation: wait() and communicate() honour Timeout scopes
// and cancellation. A Timeout throws TimeoutError and leaves the child
// running and waitable: call kill() and wait() again if it should not
// outlive the timeout. After an interrupted communicate(), the pipes'
// positions are unknown (part of the input may have been written, part of
// the output read and dropped).
//
// No zombies: a Process destroyed before its child was reaped hands the
// child to a background reaper thread of the runtime, which reaps it when it
// exits, whether or not a scheduler still runs then. With kill_on_destroy
// the child is sent SIGKILL first. A Process must not be destroyed or moved
// while a fiber waits for it.
//
// Errors are std::system_error naming the call and the command, e.g.
// `posix_spawn("nosuchcmd"): No such file or directory`. Misuse (an empty
// argv, input for a stdin that is not a pipe) throws std::invalid_argument /
// std::logic_error.
#pragma once

#include <csignal>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sys/types.h>

#include <spindle/net/pipe.hpp>

namespace spindle {

namespace detail {
struct ProcessState;
}

// What a child's stdin, stdout or stderr is connected to.
enum class Stdio {
  inherit,    // the parent's fd 0, 1 or 2
  null,       // /dev/null
  pipe,       // a pipe; the parent's end is Process::stdin_pipe() etc.
  to_stdout,  // stderr only: wherever the child's stdout goes
};

struct ProcessOptions {
  Stdio in = Stdio::inherit;
  Stdio out = Stdio::inherit;
  Stdio err = Stdio::inherit;
  // The child's working directory; empty: the parent's.
  std::string cwd{};
  // Variables for the child, "NAME" -> "value". With inherit_env (the
  // default) they are added to a copy of the parent's environment,
  // replacing variables of the same name; without it they are the whole
  // environment.
  std::vector<std::pair<std::string, std::string>> env{};
  bool inherit_env = true;
  // Destroying the Process before the child was reaped sends it SIGKILL
  // (otherwise it keeps running and is reaped in the background).
  bool kill_on_destroy = false;
};

// How a child ended: an exit code, or the signal that killed it.
class ExitStatus {
 public:
  // From a waitpid(2) status.
  static ExitStatus from_wait_status(int status) noexcept { return ExitStatus(status); }

  bool exited() const noexcept;
  bool signaled() const noexcept { return !exited(); }
  // Exit code 0.
  bool success() const noexcept { return exited() && code() == 0; }
  // The exit code; -1 when the child was killed by a signal.
  int code() const noexcept;
  // The signal that killed the child; 0 when it exited.
  int signal() const noexcept;
  bool core_dumped() const noexcept;
  // "exit code 3", "killed by signal 9 (SIGKILL)".
  std::string to_string() const;
  int raw() const noexcept { return raw_; }

  bool operator==(const ExitStatus&) const = default;

 private:
  explicit ExitStatus(int raw) noexcept : raw_(raw) {}
  int raw_;
};

// What communicate() collected.
struct ProcessOutput {
  ExitStatus status;
  std::string out;  // empty unless stdout was a pipe
  std::string err;  // empty unless stderr was a pipe
};

class Process {
 public:
  // Starts argv[0] with arguments argv[1..]. Throws std::system_error
  // `posix_spawn("cmd")` when the command cannot be started (not found, not
  // executable, cwd missing), and std::invalid_argument for an empty argv.
  static Process spawn(std::vector<std::string> argv, ProcessOptions options = {});

  Process() noexcept;
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  ~Process();

  // The child's pid (still reported after it was reaped).
  pid_t pid() const noexcept;
  // The command line, for messages: "sh -c 'exit 3'".
  const std::string& command() const noexcept;

  // Parks until the child has exited, reaps it and returns its status; at
  // once once reaped.
  ExitStatus wait();
  // The status if the child has exited (reaping it), without parking.
  std::optional<ExitStatus> try_wait();
  // Once reaped: the status.
  std::optional<ExitStatus> status() const noexcept;

  // Sends a signal; does nothing once the child was reaped (its pid may
  // belong to another process by then).
  void send_signal(int signo);
  void kill() { send_signal(SIGKILL); }
  void terminate() { send_signal(SIGTERM); }

  // Writes `input` to stdin (then closes it) while reading stdout and
  // stderr to their ends, concurrently, then waits for the child. Needs
  // Stdio::pipe for stdin when input is not empty; outputs that are not
  // pipes come back empty. A child that exits without reading its input is
  // not an error (EPIPE is ignored). Afterwards the pipe ends are closed.
  ProcessOutput communicate(std::string input = {});

  // The parent's pipe ends; throw std::logic_error unless that stream was
  // spawned with Stdio::pipe.
  net::PipeWriter& stdin_pipe();
  net::PipeReader& stdout_pipe();
  net::PipeReader& stderr_pipe();

 private:
  explicit Process(std::unique_ptr<detail::ProcessState> state) noexcept;
  detail::ProcessState& state(const char* call) const;

  std::unique_ptr<detail::ProcessState> state_;
};

}  // namespace spindle
