// bench.hpp — the one harness every bench/<scenario>_<impl>.cpp uses.
//
// A bench binary covers one scenario for one implementation and may hold
// several cases (spindle's switch bench has a two-fiber ping-pong and a ring
// of 1,000 fibers). For each case the harness warms up, calibrates the
// operation count until one repetition lasts at least the minimum run length,
// runs N repetitions and prints one line per result:
//
//   RESULT <section> <name> <median> <min> <max> <unit> <note>
//
// tab-separated, figures per operation. The note is space-separated
// key=value tokens, always starting with reps=N; run.py reads it. Before the
// first result the binary prints, once:
//
//   MACHINE cpu=... cores=... kernel=... compiler=... flags=... boost=... glibc=...
//
// so a saved log says what it was measured on. A case that cannot run here
// prints "SKIPPED <section> <name> <why>" instead of a result. Memory cases
// report a value per fresh child process rather than a time (Runner::memory).
//
// Flags every bench binary accepts:
//   --full             more repetitions and a longer minimum run length
//   --repetitions N    override the repetition count
//   --min-time-ms X    override the minimum run length of one repetition
//   --iterations N     fixed operation count, no calibration
//   --callgrind        run each selected case once with --iterations
//                      operations and print nothing but a CALLGRIND line;
//                      run.py runs it twice (N and 2N) under
//                      valgrind --tool=callgrind and reports the difference
//   --only NAME        run only the named case
//   --list             print the case names, one "CASE <name>" line each
#pragma once

#include <fmt/core.h>

#include <boost/version.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <gnu/libc-version.h>
#include <sched.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define SPINDLE_BENCH_HAVE_VALGRIND 1
#else
#define SPINDLE_BENCH_HAVE_VALGRIND 0
#endif

// Meson passes the build's compiler flags as a string; a scratch build
// without Meson says so instead of guessing.
#ifndef SPINDLE_BENCH_FLAGS
#define SPINDLE_BENCH_FLAGS "unknown (not built by meson)"
#endif

namespace bench {

using Clock = std::chrono::steady_clock;

// Keeps the optimiser from deleting a computation whose result is unused.
template <class T>
inline void do_not_optimize(T const& value) {
  asm volatile("" : : "r,m"(value) : "memory");
}

inline double elapsed_ns(Clock::time_point start, Clock::time_point stop) {
  return std::chrono::duration<double, std::nano>(stop - start).count();
}

// MXCSR's sticky exception flags. The harness's own arithmetic (calibration,
// medians) raises the inexact flag on the thread, and Boost.Context keeps a
// copy of MXCSR per context: a peer whose contexts were made before that
// arithmetic would load a different MXCSR on every switch, which on Intel
// costs about 55 ns, for the harness's sake, not its own. So every timed run
// starts with the flags clear; the *_fpflags cases raise one on purpose to
// show that cost (bench/README.md, switch).
#if defined(__x86_64__)
inline void clear_fp_flags() {
  unsigned v;
  asm volatile("stmxcsr %0" : "=m"(v));
  v &= ~0x3fu;
  asm volatile("ldmxcsr %0" : : "m"(v));
}
inline void raise_inexact() {
  volatile double one = 1.0, three = 3.0;
  volatile double q = one / three;  // not representable: sets the inexact flag
  (void)q;
}
#else
inline void clear_fp_flags() {}
inline void raise_inexact() {}
#endif

// ---------------------------------------------------------------------------
// Machine description

namespace detail {

// The value of the first "key : value" line of a /proc file starting with
// key, or "" (stdio rather than iostreams, as everywhere in the project).
inline std::string read_first_line_with(const char* path, std::string_view key) {
  std::FILE* f = std::fopen(path, "r");
  if (!f) return {};
  std::string result;
  char* line = nullptr;
  std::size_t cap = 0;
  while (getline(&line, &cap, f) >= 0) {
    std::string_view l(line);
    if (l.substr(0, key.size()) != key) continue;
    auto colon = l.find(':');
    if (colon != std::string_view::npos) {
      auto value = l.substr(colon + 1);
      auto first = value.find_first_not_of(" \t");
      auto last = value.find_last_not_of(" \t\n");
      if (first != std::string_view::npos) result = std::string(value.substr(first, last - first + 1));
    }
    break;
  }
  std::free(line);
  std::fclose(f);
  return result;
}

// Tabs and newlines would break the line format; spaces are kept.
inline std::string sanitize(std::string s) {
  for (char& c : s) {
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

inline std::string compiler_version() {
#if defined(__clang__)
  return fmt::format("clang {}.{}.{}", __clang_major__, __clang_minor__, __clang_patchlevel__);
#elif defined(__GNUC__)
  return fmt::format("gcc {}.{}.{}", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#else
  return "unknown";
#endif
}

}  // namespace detail

inline std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

// The CPUs the process could use when it started, before any pinning
// narrowed the mask. The Runner takes the snapshot first thing.
inline const std::vector<int>& initial_cpus() {
  static const std::vector<int> cpus = allowed_cpus();
  return cpus;
}

inline void print_machine() {
  std::string cpu = detail::read_first_line_with("/proc/cpuinfo", "model name");
  if (cpu.empty()) cpu = "unknown";
  std::string flags = detail::read_first_line_with("/proc/cpuinfo", "flags");
  bool hypervisor = (" " + flags + " ").find(" hypervisor ") != std::string::npos;
  utsname u{};
  std::string kernel = "unknown";
  if (uname(&u) == 0) kernel = fmt::format("{} {} {}", u.sysname, u.release, u.machine);
  fmt::print(
      "MACHINE\tcpu={}\tcores={}\tallowed_cpus={}\thypervisor={}\tkernel={}\tcompiler={}\t"
      "flags={}\tboost={}\tglibc={}\n",
      detail::sanitize(cpu), sysconf(_SC_NPROCESSORS_ONLN), initial_cpus().size(), hypervisor ? "yes" : "no",
      detail::sanitize(kernel), detail::compiler_version(), detail::sanitize(SPINDLE_BENCH_FLAGS),
      BOOST_LIB_VERSION, gnu_get_libc_version());
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------
// Pinning

struct PinResult {
  bool pinned = false;  // affinity set to exactly {cpu} and we run there
  int cpu = -1;
  std::string why;  // empty when pinned

  // The token run.py and the README look for: pin=cpu1 or pin=no(EPERM).
  std::string note() const { return pinned ? fmt::format("pin=cpu{}", cpu) : fmt::format("pin=no({})", why); }
};

// Pins the calling thread to one CPU and checks that it took: the affinity
// mask reads back as exactly that CPU and sched_getcpu() agrees. Containers
// with a restricted cpuset refuse with EINVAL, some sandboxes with EPERM.
inline PinResult pin_current_thread(int cpu) {
  PinResult r;
  r.cpu = cpu;
  if (cpu < 0 || cpu >= CPU_SETSIZE) {
    r.why = "no-such-cpu";
    return r;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    r.why = strerrorname_np(errno) ? strerrorname_np(errno) : "error";
    return r;
  }
  cpu_set_t check;
  CPU_ZERO(&check);
  if (sched_getaffinity(0, sizeof check, &check) != 0 || CPU_COUNT(&check) != 1 || !CPU_ISSET(cpu, &check)) {
    r.why = "mask-not-applied";
    return r;
  }
  if (sched_getcpu() != cpu) {
    r.why = "not-migrated";
    return r;
  }
  r.pinned = true;
  return r;
}

// The CPU a single-threaded bench pins itself to: the last allowed one,
// because on small VMs CPU 0 tends to take the device interrupts.
inline int primary_cpu() {
  const auto& cpus = initial_cpus();
  return cpus.empty() ? 0 : cpus.back();
}

// A second CPU for cross-core cases, or nullopt on a one-CPU machine.
inline std::optional<int> secondary_cpu() {
  const auto& cpus = initial_cpus();
  if (cpus.size() < 2) return std::nullopt;
  return cpus[cpus.size() - 2];
}

// ---------------------------------------------------------------------------
// Memory

// Resident set size in KiB, from /proc/self/statm (second field, in pages).
inline double resident_kib() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return -1;
  unsigned long size = 0, resident = 0;
  int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  if (n != 2) return -1;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / 1024.0;
}

// Runs measure() in a forked child process and returns the number it
// produced, or the reason it produced none (an exception, a signal). Memory
// benches use one fresh process per sample, so stacks pooled or heap grown
// by an earlier sample cannot hide in the next one's baseline. The child
// ends with _exit and never unwinds what it built.
template <class Measure>
inline std::pair<std::optional<double>, std::string> measure_in_child(Measure&& measure) {
  int fds[2];
  if (pipe(fds) != 0) return {std::nullopt, "pipe failed"};
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return {std::nullopt, "fork failed"};
  }
  if (pid == 0) {
    close(fds[0]);
    double value = -1;
    int code = 0;
    try {
      value = measure();
    } catch (const std::exception& e) {
      fmt::print(stderr, "measurement failed: {}\n", e.what());
      code = 3;
    }
    if (code == 0 && write(fds[1], &value, sizeof value) != sizeof value) code = 4;
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(code);
  }
  close(fds[1]);
  double value = 0;
  ssize_t got = read(fds[0], &value, sizeof value);
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) {
    return {std::nullopt, fmt::format("child killed by signal {} ({})", WTERMSIG(status),
                                      sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?")};
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got != sizeof value) {
    return {std::nullopt, fmt::format("child exited with status {}", WEXITSTATUS(status))};
  }
  return {value, {}};
}

// ---------------------------------------------------------------------------
// Statistics

struct Stats {
  double median = 0, min = 0, max = 0;
  int repetitions = 0;
};

inline Stats summarize(std::vector<double> samples) {
  Stats s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  auto n = samples.size();
  s.median = n % 2 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
  s.min = samples.front();
  s.max = samples.back();
  s.repetitions = static_cast<int>(n);
  return s;
}

// ---------------------------------------------------------------------------
// The runner

struct Case {
  std::string_view unit = "ns/op";
  // The body is always asked for a multiple of this many operations (two
  // for a ping-pong, the batch size for a batch).
  std::uint64_t granularity = 1;
  std::string note;  // extra key=value tokens, e.g. PinResult::note()
};

struct Options {
  bool full = false;
  bool callgrind = false;
  bool list = false;
  int repetitions = 7;
  double min_time_ms = 50;
  std::uint64_t iterations = 0;  // 0: calibrate
  std::string only;
};

class Runner {
 public:
  Runner(std::string section, int argc, char** argv) : section_(std::move(section)) {
    initial_cpus();
    parse(argc, argv);
    if (!options_.callgrind && !options_.list) print_machine();
  }

  const Options& options() const { return options_; }
  bool full() const { return options_.full; }
  bool callgrind() const { return options_.callgrind; }

  // True if the case should run. In --list mode it prints the name instead,
  // so a bench lists exactly the cases it would run.
  bool wants(std::string_view name) {
    if (options_.list) {
      fmt::print("CASE\t{}\n", name);
      return false;
    }
    return options_.only.empty() || options_.only == name;
  }

  // wants() for a case that is only ever timed (Runner::paired): --list,
  // which tells run.py what to count under callgrind, leaves it out.
  bool wants_timed(std::string_view name) const {
    return !options_.list && !options_.callgrind && (options_.only.empty() || options_.only == name);
  }

  // Measures a case. body(n) performs n operations (n a multiple of
  // c.granularity) and either returns the nanoseconds it measured itself,
  // to leave set-up out, or returns nothing and is timed whole.
  template <class Body>
  void time(std::string_view name, const Case& c, Body&& body) {
    auto run = timed(body);
    if (options_.callgrind) return callgrind_run(name, c, run);
    const std::uint64_t n = calibrate(c, run);
    std::vector<double> per_op;
    for (int i = 0; i < options_.repetitions; ++i) {
      per_op.push_back(run(n) / static_cast<double>(n));
    }
    report(section_, name, c.unit, summarize(std::move(per_op)), fmt::format("iters={} {}", n, c.note));
  }

  // Measures two cases in alternation, one repetition of each in turn, and
  // reports both under `section` (an own section, so that they do not
  // repeat the figures of the separate runs). On a shared VM the host's load
  // comes in phases of a second or more, which slow the two sides by
  // different factors; run one after the other, a ratio can compare one
  // side's quiet phase with the other's busy one. Alternated, every pair of
  // repetitions met the same conditions. Each note carries pair=<other>.
  template <class BodyA, class BodyB>
  void paired(std::string_view section, std::string_view name_a, const Case& ca, BodyA&& body_a,
              std::string_view name_b, const Case& cb, BodyB&& body_b) {
    auto run_a = timed(body_a);
    auto run_b = timed(body_b);
    const std::uint64_t na = calibrate(ca, run_a);
    const std::uint64_t nb = calibrate(cb, run_b);
    std::vector<double> a, b;
    for (int i = 0; i < options_.repetitions; ++i) {
      a.push_back(run_a(na) / static_cast<double>(na));
      b.push_back(run_b(nb) / static_cast<double>(nb));
    }
    report(section, name_a, ca.unit, summarize(std::move(a)),
           fmt::format("iters={} pair={} {}", na, name_b, ca.note));
    report(section, name_b, cb.unit, summarize(std::move(b)),
           fmt::format("iters={} pair={} {}", nb, name_a, cb.note));
  }

  // Reports a figure that is not a time (memory), one sample per repetition.
  void value(std::string_view name, std::string_view unit, std::vector<double> samples,
             std::string_view note = {}) {
    report(name, unit, summarize(std::move(samples)), std::string(note));
  }

  // Memory cases, one per fiber count, named <impl>_<label>. Each sample
  // is a fresh child process running per_fiber_kib(count), which parks
  // `count` fibers and returns the growth of the resident set divided by
  // count. The figure barely moves between samples, so short mode takes 3
  // samples at 10k and 1 above; --full takes 5 and 3.
  template <class Measure>
  void memory(std::string_view impl, Measure&& per_fiber_kib, std::string_view note = {},
              std::vector<std::uint64_t> counts = {10'000, 100'000, 1'000'000}) {
    for (std::uint64_t count : counts) {
      auto name = fmt::format("{}_{}", impl, count_label(count));
      if (!wants(name)) continue;
      int reps = options_.full ? (count <= 10'000 ? 5 : 3) : (count <= 10'000 ? 3 : 1);
      std::vector<double> samples;
      std::string failure;
      for (int i = 0; i < reps && failure.empty(); ++i) {
        auto [kib, why] = measure_in_child([&] { return per_fiber_kib(count); });
        if (kib) {
          samples.push_back(*kib);
        } else {
          failure = why;
        }
      }
      if (!failure.empty()) {
        skipped(name, fmt::format("count={}: {}", count, failure));
      } else {
        value(name, "KiB/fiber", std::move(samples), fmt::format("count={} {}", count, note));
      }
    }
  }

  // 10000 -> "10k", 1000000 -> "1M".
  static std::string count_label(std::uint64_t count) {
    if (count % 1'000'000 == 0) return fmt::format("{}M", count / 1'000'000);
    if (count % 1'000 == 0) return fmt::format("{}k", count / 1'000);
    return fmt::format("{}", count);
  }

  // A case that could not run here (no second CPU, allocation refused):
  // reported so the table says why the row is missing.
  void skipped(std::string_view name, std::string_view why) {
    fmt::print("SKIPPED\t{}\t{}\t{}\n", section_, name, detail::sanitize(std::string(why)));
    std::fflush(stdout);
  }

  int finish() { return 0; }

 private:
  // body as a function of n returning nanoseconds, FP flags cleared first.
  template <class Body>
  static auto timed(Body& body) {
    return [&body](std::uint64_t n) -> double {
      clear_fp_flags();
      if constexpr (std::is_void_v<std::invoke_result_t<Body&, std::uint64_t>>) {
        auto start = Clock::now();
        body(n);
        return elapsed_ns(start, Clock::now());
      } else {
        return static_cast<double>(body(n));
      }
    };
  }

  std::uint64_t rounded(const Case& c, std::uint64_t n) const {
    auto g = std::max<std::uint64_t>(1, c.granularity);
    return std::max(g, (n + g - 1) / g * g);
  }

  template <class Run>
  void callgrind_run(std::string_view name, const Case& c, Run& run) {
    auto n = rounded(c, options_.iterations ? options_.iterations : 1000);
    run(n);
    fmt::print("CALLGRIND\t{}\t{}\t{}\n", section_, name, n);
    std::fflush(stdout);
  }

  // The operation count of the timed runs. Calibration doubles as warm-up:
  // grow n until one run is long enough, then aim 20% over the minimum so
  // noise does not push it under; one more run at that size is discarded.
  template <class Run>
  std::uint64_t calibrate(const Case& c, Run& run) {
    if (options_.iterations) {
      auto n = rounded(c, options_.iterations);
      run(n);  // warm-up
      return n;
    }
    double min_ns = options_.min_time_ms * 1e6;
    std::uint64_t n = rounded(c, 1);
    for (;;) {
      double t = run(n);
      if (t >= min_ns) break;
      double factor = t > 0 ? min_ns * 1.2 / t : 10.0;
      factor = std::clamp(factor, 2.0, 10.0);
      n = rounded(c, static_cast<std::uint64_t>(static_cast<double>(n) * factor));
    }
    run(n);
    return n;
  }

  void report(std::string_view name, std::string_view unit, const Stats& s, const std::string& note) {
    report(section_, name, unit, s, note);
  }
  void report(std::string_view section, std::string_view name, std::string_view unit, const Stats& s,
              const std::string& note) {
    std::string full_note = fmt::format("reps={} {}", s.repetitions, note);
    while (!full_note.empty() && full_note.back() == ' ') full_note.pop_back();
    fmt::print("RESULT\t{}\t{}\t{:.3f}\t{:.3f}\t{:.3f}\t{}\t{}\n", section, name, s.median, s.min, s.max,
               unit, detail::sanitize(full_note));
    std::fflush(stdout);
  }

  void parse(int argc, char** argv) {
    bool reps_given = false, time_given = false;
    for (int i = 1; i < argc; ++i) {
      std::string_view a = argv[i];
      auto next = [&]() -> std::string_view {
        if (i + 1 >= argc) usage(argv[0], fmt::format("{} needs a value", a));
        return argv[++i];
      };
      if (a == "--full") {
        options_.full = true;
      } else if (a == "--callgrind") {
        options_.callgrind = true;
      } else if (a == "--list") {
        options_.list = true;
      } else if (a == "--repetitions") {
        options_.repetitions = std::max(1, std::atoi(std::string(next()).c_str()));
        reps_given = true;
      } else if (a == "--min-time-ms") {
        options_.min_time_ms = std::atof(std::string(next()).c_str());
        time_given = true;
      } else if (a == "--iterations") {
        options_.iterations = std::strtoull(std::string(next()).c_str(), nullptr, 10);
      } else if (a == "--only") {
        options_.only = std::string(next());
      } else if (a == "--help" || a == "-h") {
        usage(argv[0], {});
      } else {
        usage(argv[0], fmt::format("unknown argument {}", a));
      }
    }
    if (options_.full) {
      if (!reps_given) options_.repetitions = 21;
      if (!time_given) options_.min_time_ms = 200;
    }
  }

  [[noreturn]] static void usage(const char* argv0, std::string_view error) {
    if (!error.empty()) fmt::print(stderr, "{}: {}\n", argv0, error);
    fmt::print(stderr,
               "usage: {} [--full] [--repetitions N] [--min-time-ms X] [--iterations N]\n"
               "          [--callgrind] [--only NAME] [--list]\n",
               argv0);
    std::exit(error.empty() ? 0 : 2);
  }

  std::string section_;
  Options options_;
};

}  // namespace bench
