// Runs four commands at once with spindle::Process, each on its own fiber,
// and collects what they print under a Timeout of 1 s per command: one
// prints after 0.6 s, one at once, one writes to stderr and fails after
// 0.8 s, and one would sleep 5 s, so its Timeout fires and it is killed.
// Run one after another they would take at least 2.4 s; together they take
// about 1 s, the Timeout of the slowest.
#include <spindle/process.hpp>
#include <spindle/spindle.hpp>

#include <string>
#include <vector>

#include "example.hpp"

namespace {

struct Command {
  std::string label;
  std::vector<std::string> argv;
};

// A delay of `seconds` in the seed, scaled, as sleep(1) takes it.
std::string sleep_arg(double seconds) { return fmt::format("{:.3f}", seconds * example::scale); }

// " stdout: "a"" for non-empty output, with the trailing newline dropped.
std::string show(const char* name, std::string text) {
  if (text.empty()) return "";
  if (text.back() == '\n') text.pop_back();
  return fmt::format("; {}: \"{}\"", name, text);
}

std::string run_one(const Command& c) {
  auto p = spindle::Process::spawn(
      c.argv, {.in = spindle::Stdio::null, .out = spindle::Stdio::pipe, .err = spindle::Stdio::pipe});
  const auto limit = example::seconds(1.0);
  try {
    spindle::Timeout t(limit);
    auto r = p.communicate();
    return fmt::format("[{}] {}: {}{}{}", c.label, p.command(), r.status.to_string(), show("stdout", r.out),
                       show("stderr", r.err));
  } catch (const spindle::TimeoutError&) {
    // The Timeout leaves the child running; it is ours to stop and reap.
    p.kill();
    return fmt::format("[{}] {}: timed out after {:.2f} s; {}", c.label, p.command(),
                       std::chrono::duration<double>(limit).count(), p.wait().to_string());
  }
}

}  // namespace

int main(int argc, char** argv) {
  example::parse_args(argc, argv);
  const std::vector<Command> commands = {
      {"a", {"sh", "-c", fmt::format("sleep {}; echo a", sleep_arg(0.6))}},
      {"uname", {"uname", "-s"}},
      {"fail", {"sh", "-c", fmt::format("sleep {}; echo b >&2; exit 3", sleep_arg(0.8))}},
      {"slow", {"sleep", sleep_arg(5.0)}},
  };
  example::Stopwatch clock;
  spindle::run([&] {
    std::vector<spindle::Task<std::string>> tasks;
    for (const Command& c : commands) tasks.push_back(spindle::spawn(run_one, c));
    for (const std::string& line : spindle::gather(tasks)) fmt::print("{}\n", line);
  });
  fmt::print("run_commands executed in {:.2f} seconds.\n", clock.elapsed());
}
