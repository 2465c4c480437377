// spindle::Process: posix_spawn, waits on the poller's child-exit source,
// communicate() over spindle::net pipes, and a background reaper for
// children whose Process went away unwaited.
//
// Waiting: the poller's add_process reports a source slot readable once the
// child has exited; the fiber parks on that slot (detail::wait_slot) and
// then reaps with waitpid(pid, WNOHANG), so no SIGCHLD handler is needed and
// the application's SIGCHLD disposition is never touched. The watch and the
// slot live only as long as one wait() call, so a wait ended by a Timeout
// leaves nothing registered. Where the poller cannot watch children (Linux
// before 5.3 has no pidfd_open, old seccomp profiles deny it) the wait polls
// waitpid with a growing sleep instead.
//
// The reaper: a Process destroyed before its child was reaped must not leave
// a zombie, and its child may outlive the scheduler that started it. So its
// state moves to one process-wide thread that runs its own spindle scheduler
// and waits for each such child on a fiber, with the same code as wait().
#include <spindle/process.hpp>

#include <fcntl.h>
#include <fmt/format.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <thread>

#include <spindle/detail/assert.hpp>
#include <spindle/detail/fiber.hpp>
#include <spindle/lock.hpp>
#include <spindle/queue.hpp>
#include <spindle/run.hpp>
#include <spindle/signal.hpp>
#include <spindle/task_group.hpp>

#include "platform/syscall.hpp"
#include "runtime/scheduler.hpp"

namespace spindle {

namespace detail {

struct ProcessState {
  pid_t pid = -1;
  std::string command;
  std::optional<int> raw_status;  // set once reaped
  bool kill_on_destroy = false;
  // Serialises the fibers that wait for this child: one at a time parks on
  // the child-exit source, the others queue here and find the status set.
  Lock wait_lock;
  std::optional<net::PipeWriter> in;
  std::optional<net::PipeReader> out;
  std::optional<net::PipeReader> err;
};

}  // namespace detail

namespace {

using detail::Fiber;
using detail::IoSlot;
using detail::ProcessState;
using detail::Scheduler;
using detail::WakeReason;
using platform::throw_system_error;
using namespace std::chrono_literals;

// ------------------------------------------------------------ messages

// A command line as a shell would read it back: words with spaces or
// quotes are single-quoted.
std::string quote_command(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) {
    if (!out.empty()) out += ' ';
    const bool plain = !a.empty() && a.find_first_of(" \t\n'\"\\$`;&|<>()*?[]{}~#!") == std::string::npos;
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char c : a) {
      if (c == '\'')
        out += "'\\''";
      else
        out += c;
    }
    out += '\'';
  }
  return out;
}

const char* signal_name(int signo) noexcept {
  switch (signo) {
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGILL: return "SIGILL";
    case SIGTRAP: return "SIGTRAP";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGUSR1: return "SIGUSR1";
    case SIGSEGV: return "SIGSEGV";
    case SIGUSR2: return "SIGUSR2";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    case SIGTERM: return "SIGTERM";
    case SIGCHLD: return "SIGCHLD";
    case SIGCONT: return "SIGCONT";
    case SIGSTOP: return "SIGSTOP";
    case SIGTSTP: return "SIGTSTP";
    case SIGXCPU: return "SIGXCPU";
    case SIGXFSZ: return "SIGXFSZ";
    default: return nullptr;
  }
}

// ------------------------------------------------------------- waiting

// waitpid(pid, WNOHANG): records and returns true once the child has been
// reaped, false while it runs.
bool reap_nohang(ProcessState& st) {
  if (st.raw_status) return true;
  int status = 0;
  const pid_t r = platform::retry_eintr([&] { return ::waitpid(st.pid, &status, WNOHANG); });
  if (r == st.pid) {
    st.raw_status = status;
    return true;
  }
  if (r == 0) return false;
  throw_system_error(errno, fmt::format("waitpid(pid={}, \"{}\")", st.pid, st.command));
}

// Without a child-exit source: sleeps and retries, from 1 ms up to 100 ms,
// with the waits the scheduler's timers give (so Timeout and cancellation
// apply, and the message names `call`).
void poll_exit(ProcessState& st, const char* call) {
  auto delay = std::chrono::nanoseconds(1ms);
  while (!reap_nohang(st)) {
    const std::int64_t deadline = detail::now_ns() + delay.count();
    detail::leave_wait(detail::park(deadline), deadline, call);
    delay = std::min<std::chrono::nanoseconds>(delay * 2, 100ms);
  }
}

// Parks until st's child has exited and reaps it. `any_error_polls`: fall
// back to polling whatever stops the poller from watching the child (the
// reaper must not give up); otherwise only for ENOSYS and EPERM.
void wait_exit(ProcessState& st, const char* call, bool any_error_polls) {
  if (reap_nohang(st)) return;
  Fiber* f = detail::enter_wait(call);
  Scheduler& s = *f->sched;
  IoSlot& slot = s.acquire_source_slot();
  struct ReleaseSlot {
    Scheduler& s;
    IoSlot& slot;
    ~ReleaseSlot() { s.release_source_slot(slot); }
  } release_slot{s, slot};
  try {
    s.with_poller([&](platform::Poller& p) { p.add_process(st.pid, slot); });
  } catch (const std::system_error& e) {
    // ENOSYS: pidfd_open needs Linux 5.3. EPERM: seccomp profiles older than
    // the call deny it that way.
    const bool unsupported = e.code().category() == std::system_category() &&
                             (e.code().value() == ENOSYS || e.code().value() == EPERM);
    if (!unsupported && !any_error_polls) throw;
    poll_exit(st, call);
    return;
  }
  struct Unwatch {
    Scheduler& s;
    pid_t pid;
    ~Unwatch() {
      s.with_poller([&](platform::Poller& p) { p.remove_process(pid); });
    }
  } unwatch{s, st.pid};
  // A wake is only a hint (an older edge, or another fiber reaped through
  // try_wait meanwhile): the status decides.
  while (!reap_nohang(st))
    detail::wait_slot(f, slot, false, call, detail::SlotName{"pid", st.pid});
}

// -------------------------------------------------------------- reaper

// Process-wide, created on first use and never destroyed: its thread may
// still be using it while the process exits.
Queue<std::unique_ptr<ProcessState>>& reaper_queue() {
  static Queue<std::unique_ptr<ProcessState>>* queue = [] {
    auto* q = new Queue<std::unique_ptr<ProcessState>>();
    // The thread inherits a full mask: a process-directed signal must go to
    // the application's threads, never to this one.
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    std::thread thread([q] {
      spindle::run(RunOptions{.name = "spindle-reaper"}, [q] {
        for (;;) {
          spawn(SpawnOptions{.name = "spindle-reap"},
                [st = q->get()] {
                  try {
                    wait_exit(*st, "spindle reaper", true);
                  } catch (const std::system_error&) {
                    // ECHILD: someone else reaped the child, which is all
                    // that was needed.
                  }
                })
              .detach();
        }
      });
    });
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    thread.detach();
    return q;
  }();
  return *queue;
}

// ----------------------------------------------------------- spawning

void check_spawn_call(int err, const char* call, const std::string& command) {
  if (err != 0) throw_system_error(err, fmt::format("{}(\"{}\")", call, command));
}

// Owns an fd the child inherits through dup2; never registered with the
// scheduler, so a plain close.
class ChildFd {
 public:
  ChildFd() = default;
  ChildFd(const ChildFd&) = delete;
  ChildFd& operator=(const ChildFd&) = delete;
  ~ChildFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  void reset(int fd) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int get() const noexcept { return fd_; }

 private:
  int fd_ = -1;
};

// Moves fd above 2, so that the dup2 actions onto 0, 1 and 2 cannot
// overwrite one pipe end with another (when the parent runs with a standard
// fd closed, pipe2 hands those numbers out).
int above_stdio(int fd, const std::string& command) {
  if (fd > 2) return fd;
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  const int err = errno;
  ::close(fd);
  if (moved < 0) throw_system_error(err, fmt::format("fcntl(F_DUPFD_CLOEXEC, fd={}) for \"{}\"", fd, command));
  return moved;
}

// A pipe whose child end is blocking (as programs expect of their standard
// streams) and whose parent end is non-blocking; both close-on-exec.
// `child_reads`: the child end is the read end (stdin).
void make_pipe(bool child_reads, ChildFd& child_end, int& parent_end, const std::string& command) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) < 0) throw_system_error(errno, fmt::format("pipe2(O_CLOEXEC) for \"{}\"", command));
  int r = fds[0], w = fds[1];
  try {
    r = above_stdio(r, command);
  } catch (...) {
    ::close(w);
    throw;
  }
  try {
    w = above_stdio(w, command);
  } catch (...) {
    ::close(r);
    throw;
  }
  child_end.reset(child_reads ? r : w);
  parent_end = child_reads ? w : r;
}

class FileActions {
 public:
  explicit FileActions(const std::string& command) : command_(command) {
    check_spawn_call(::posix_spawn_file_actions_init(&fa_), "posix_spawn_file_actions_init", command_);
  }
  ~FileActions() { ::posix_spawn_file_actions_destroy(&fa_); }
  FileActions(const FileActions&) = delete;
  FileActions& operator=(const FileActions&) = delete;

  void dup2(int fd, int to) {
    check_spawn_call(::posix_spawn_file_actions_adddup2(&fa_, fd, to), "posix_spawn_file_actions_adddup2", command_);
  }
  void open_null(int to) {
    check_spawn_call(
        ::posix_spawn_file_actions_addopen(&fa_, to, "/dev/null", to == 0 ? O_RDONLY : O_WRONLY, 0),
        "posix_spawn_file_actions_addopen", command_);
  }
  void chdir(const std::string& dir) {
    check_spawn_call(::posix_spawn_file_actions_addchdir_np(&fa_, dir.c_str()), "posix_spawn_file_actions_addchdir_np",
                     command_);
  }
  // Closes every fd from 3 up in the child: fds that other code opened
  // without O_CLOEXEC do not leak into it.
  void close_from_3() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    check_spawn_call(::posix_spawn_file_actions_addclosefrom_np(&fa_, 3), "posix_spawn_file_actions_addclosefrom_np",
                     command_);
#endif
  }
  const posix_spawn_file_actions_t* get() const noexcept { return &fa_; }

 private:
  posix_spawn_file_actions_t fa_;
  const std::string& command_;
};

class SpawnAttr {
 public:
  explicit SpawnAttr(const std::string& command) : command_(command) {
    check_spawn_call(::posix_spawnattr_init(&attr_), "posix_spawnattr_init", command_);
  }
  ~SpawnAttr() { ::posix_spawnattr_destroy(&attr_); }
  SpawnAttr(const SpawnAttr&) = delete;
  SpawnAttr& operator=(const SpawnAttr&) = delete;

  // The child's signal mask and default dispositions (see process.hpp).
  void signals() {
    sigset_t mask, defaults;
    ::pthread_sigmask(SIG_BLOCK, nullptr, &mask);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    detail::child_signal_setup(mask, defaults);
    check_spawn_call(::posix_spawnattr_setsigmask(&attr_, &mask), "posix_spawnattr_setsigmask", command_);
    check_spawn_call(::posix_spawnattr_setsigdefault(&attr_, &defaults), "posix_spawnattr_setsigdefault", command_);
    check_spawn_call(::posix_spawnattr_setflags(&attr_, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF),
                     "posix_spawnattr_setflags", command_);
  }
  const posix_spawnattr_t* get() const noexcept { return &attr_; }

 private:
  posix_spawnattr_t attr_;
  const std::string& command_;
};

std::string_view env_name(std::string_view entry) { return entry.substr(0, entry.find('=')); }

// The child's environment as "NAME=value" strings (see ProcessOptions::env).
std::vector<std::string> child_environment(const ProcessOptions& o) {
  std::vector<std::string> env;
  auto overridden_after = [&](std::string_view name, std::size_t from) {
    for (std::size_t i = from; i < o.env.size(); ++i)
      if (o.env[i].first == name) return true;
    return false;
  };
  if (o.inherit_env) {
    for (char** e = environ; e && *e; ++e) {
      if (!overridden_after(env_name(*e), 0)) env.emplace_back(*e);
    }
  }
  // A name given twice: the last one wins.
  for (std::size_t i = 0; i < o.env.size(); ++i) {
    if (!overridden_after(o.env[i].first, i + 1)) env.push_back(o.env[i].first + "=" + o.env[i].second);
  }
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Reads r to EOF into `into`, then closes it.
void read_to_end(net::PipeReader& r, std::string& into) {
  constexpr std::size_t kChunk = 64 * 1024;
  for (;;) {
    const std::size_t old = into.size();
    into.resize(old + kChunk);
    const std::size_t n = r.read_some(std::span<char>(into.data() + old, kChunk));
    into.resize(old + n);
    if (n == 0) break;
  }
  r.close();
}

}  // namespace

// ----------------------------------------------------------- ExitStatus

bool ExitStatus::exited() const noexcept { return WIFEXITED(raw_); }
int ExitStatus::code() const noexcept { return WIFEXITED(raw_) ? WEXITSTATUS(raw_) : -1; }
int ExitStatus::signal() const noexcept { return WIFSIGNALED(raw_) ? WTERMSIG(raw_) : 0; }
bool ExitStatus::core_dumped() const noexcept { return WIFSIGNALED(raw_) && WCOREDUMP(raw_); }

std::string ExitStatus::to_string() const {
  if (exited()) return fmt::format("exit code {}", code());
  const char* name = signal_name(signal());
  return fmt::format("killed by signal {}{}{}{}", signal(), name ? " (" : "", name ? name : "", name ? ")" : "") +
         (core_dumped() ? ", core dumped" : "");
}

// -------------------------------------------------------------- Process

Process::Process() noexcept = default;
Process::Process(std::unique_ptr<detail::ProcessState> state) noexcept : state_(std::move(state)) {}
Process::Process(Process&& other) noexcept = default;

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    Process old(std::move(*this));
    state_ = std::move(other.state_);
  }
  return *this;
}

Process::~Process() {
  if (!state_) return;
  ProcessState& st = *state_;
  SPINDLE_ASSERT(!st.wait_lock.locked(), fmt::format("Process \"{}\" destroyed while a fiber waits for it", st.command));
  // The parent's pipe ends close here, on the thread whose scheduler knows
  // them, before the state may move to the reaper's thread.
  st.in.reset();
  st.out.reset();
  st.err.reset();
  if (st.raw_status) return;
  if (st.kill_on_destroy) ::kill(st.pid, SIGKILL);
  int status = 0;
  const pid_t r = platform::retry_eintr([&] { return ::waitpid(st.pid, &status, WNOHANG); });
  if (r != 0) return;  // reaped now, or (ECHILD) by someone else
  try {
    reaper_queue().put_nowait(std::move(state_));
  } catch (...) {
    // Out of memory or threads: the child stays a zombie until this process
    // exits, which beats throwing from a destructor.
  }
}

detail::ProcessState& Process::state(const char* call) const {
  if (!state_) throw std::logic_error(fmt::format("{}: no process (default-constructed or moved from)", call));
  return *state_;
}

Process Process::spawn(std::vector<std::string> argv, ProcessOptions options) {
  if (argv.empty()) throw std::invalid_argument("spindle::Process::spawn: empty argv");
  if (options.in == Stdio::to_stdout || options.out == Stdio::to_stdout)
    throw std::invalid_argument("spindle::Process::spawn: Stdio::to_stdout is for stderr only");
  auto st = std::make_unique<ProcessState>();
  st->command = quote_command(argv);
  st->kill_on_destroy = options.kill_on_destroy;
  const std::string& command = st->command;

  FileActions actions(command);
  ChildFd child_in, child_out, child_err;
  int parent_end = -1;
  if (options.in == Stdio::pipe) {
    make_pipe(true, child_in, parent_end, command);
    st->in = net::PipeWriter::from_fd(parent_end);
    actions.dup2(child_in.get(), 0);
  } else if (options.in == Stdio::null) {
    actions.open_null(0);
  }
  if (options.out == Stdio::pipe) {
    make_pipe(false, child_out, parent_end, command);
    st->out = net::PipeReader::from_fd(parent_end);
    actions.dup2(child_out.get(), 1);
  } else if (options.out == Stdio::null) {
    actions.open_null(1);
  }
  if (options.err == Stdio::pipe) {
    make_pipe(false, child_err, parent_end, command);
    st->err = net::PipeReader::from_fd(parent_end);
    actions.dup2(child_err.get(), 2);
  } else if (options.err == Stdio::null) {
    actions.open_null(2);
  } else if (options.err == Stdio::to_stdout) {
    actions.dup2(1, 2);
  }
  if (!options.cwd.empty()) actions.chdir(options.cwd);
  actions.close_from_3();

  SpawnAttr attr(command);
  attr.signals();

  std::vector<char*> args = c_strings(argv);
  std::vector<std::string> env_strings;
  std::vector<char*> env;
  char* const* envp = environ;
  if (!options.inherit_env || !options.env.empty()) {
    env_strings = child_environment(options);
    env = c_strings(env_strings);
    envp = env.data();
  }

  pid_t pid = -1;
  // Returns the error, errno untouched; exec failures in the child included.
  const int err = ::posix_spawnp(&pid, args[0], actions.get(), attr.get(), args.data(), envp);
  if (err != 0) {
    if (options.cwd.empty()) throw_system_error(err, fmt::format("posix_spawn(\"{}\")", command));
    throw_system_error(err, fmt::format("posix_spawn(\"{}\", cwd=\"{}\")", command, options.cwd));
  }
  st->pid = pid;
  return Process(std::move(st));
}

pid_t Process::pid() const noexcept { return state_ ? state_->pid : -1; }

const std::string& Process::command() const noexcept {
  static const std::string none;
  return state_ ? state_->command : none;
}

ExitStatus Process::wait() {
  constexpr const char* kCall = "spindle::Process::wait";
  ProcessState& st = state(kCall);
  if (!reap_nohang(st)) {
    // Outside a fiber, or with a cancellation or Timeout already due, this
    // throws naming wait() rather than the lock.
    detail::enter_wait(kCall);
    std::scoped_lock lock(st.wait_lock);
    wait_exit(st, kCall, false);
  }
  return ExitStatus::from_wait_status(*st.raw_status);
}

std::optional<ExitStatus> Process::try_wait() {
  ProcessState& st = state("spindle::Process::try_wait");
  if (!reap_nohang(st)) return std::nullopt;
  return ExitStatus::from_wait_status(*st.raw_status);
}

std::optional<ExitStatus> Process::status() const noexcept {
  if (!state_ || !state_->raw_status) return std::nullopt;
  return ExitStatus::from_wait_status(*state_->raw_status);
}

void Process::send_signal(int signo) {
  ProcessState& st = state("spindle::Process::send_signal");
  // Until it is reaped the pid stays ours, even as a zombie (kill(2) on a
  // zombie succeeds and does nothing); after that it may be anyone's.
  if (st.raw_status) return;
  if (::kill(st.pid, signo) < 0)
    throw_system_error(errno, fmt::format("kill(pid={}, signal={}) for \"{}\"", st.pid, signo, st.command));
}

ProcessOutput Process::communicate(std::string input) {
  constexpr const char* kCall = "spindle::Process::communicate";
  ProcessState& st = state(kCall);
  if (!input.empty() && !st.in)
    throw std::logic_error(fmt::format("{}: input for \"{}\", whose stdin is not Stdio::pipe", kCall, st.command));
  if (!input.empty() && !st.in->is_open())
    throw std::logic_error(fmt::format("{}: input for \"{}\", whose stdin is closed already", kCall, st.command));
  std::string out, err;
  {
    // Writing and reading at once: a child that fills its stdout pipe
    // before it has read all its input would otherwise deadlock with us.
    TaskGroup group;
    if (st.in && st.in->is_open()) {
      group.spawn([&] {
        try {
          st.in->write_all(input);
        } catch (const std::system_error& e) {
          // The child exited or closed its stdin without reading it all.
          if (e.code() != std::errc::broken_pipe) throw;
        }
        st.in->close();
      });
    }
    if (st.out && st.out->is_open()) group.spawn([&] { read_to_end(*st.out, out); });
    if (st.err && st.err->is_open()) group.spawn([&] { read_to_end(*st.err, err); });
    group.join();
  }
  return ProcessOutput{.status = wait(), .out = std::move(out), .err = std::move(err)};
}

net::PipeWriter& Process::stdin_pipe() {
  ProcessState& st = state("spindle::Process::stdin_pipe");
  if (!st.in) throw std::logic_error(fmt::format("spindle::Process::stdin_pipe: stdin of \"{}\" is not a pipe", st.command));
  return *st.in;
}

net::PipeReader& Process::stdout_pipe() {
  ProcessState& st = state("spindle::Process::stdout_pipe");
  if (!st.out)
    throw std::logic_error(fmt::format("spindle::Process::stdout_pipe: stdout of \"{}\" is not a pipe", st.command));
  return *st.out;
}

net::PipeReader& Process::stderr_pipe() {
  ProcessState& st = state("spindle::Process::stderr_pipe");
  if (!st.err)
    throw std::logic_error(fmt::format("spindle::Process::stderr_pipe: stderr of \"{}\" is not a pipe", st.command));
  return *st.err;
}

}  // namespace spindle
