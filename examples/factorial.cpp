// The seeds' factorial pair. Task A computes 3! and task B 4!, sleeping one
// second per step. First with a blocking sleep (::nanosleep): the thread
// stalls, nothing interleaves, and the run takes the sum of all steps,
// about 5 s. Then with this_fiber::sleep_for: the steps overlap and the run
// takes as long as the longest task, about 3 s.
#include <time.h>

#include <spindle/spindle.hpp>

#include "example.hpp"

using Sleep = void (*)();

void blocking_sleep() {
  fmt::print("SLEEP (blocking the thread)\n");
  auto ns = example::seconds(1).count();
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  while (::nanosleep(&ts, &ts) != 0) {
  }
}

void fiber_sleep() {
  fmt::print("SLEEP (parking the fiber)\n");
  spindle::this_fiber::sleep_for(example::seconds(1));
}

void factorial(std::string name, int number, Sleep custom_sleep) {
  long f = 1;
  for (int i = 2; i <= number; ++i) {
    fmt::print("Task {}: Compute factorial({})\n", name, i);
    custom_sleep();
    f *= i;
  }
  fmt::print("Task {}: factorial({}) is {}\n\n", name, number, f);
}

void run_pair(const char* title, Sleep custom_sleep) {
  fmt::print("--- {} ---\n", title);
  example::Stopwatch clock;
  spindle::run([custom_sleep] {
    spindle::gather(spindle::spawn(factorial, "A", 3, custom_sleep),
                    spindle::spawn(factorial, "B", 4, custom_sleep));
  });
  fmt::print("Total time ({}): {:.2f}\n\n", title, clock.elapsed());
}

int main(int argc, char** argv) {
  example::parse_args(argc, argv);
  run_pair("blocking sleep", blocking_sleep);
  run_pair("fiber sleep", fiber_sleep);
}
