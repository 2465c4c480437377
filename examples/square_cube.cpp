// The seeds' create_task example: two tasks started together, each
// awaited for its result. The square takes 1 s and the cube 2 s; together
// they take about 2 s.
#include <spindle/spindle.hpp>

#include "example.hpp"

long calculate_square(long number) {
  fmt::print("The task started to calculate the square of {}\n", number);
  spindle::this_fiber::sleep_for(example::seconds(1));
  fmt::print("The task to calculate the square of {} ended.\n", number);
  return number * number;
}

long calculate_cube(long number) {
  fmt::print("The task started to calculate the cube of {}\n", number);
  spindle::this_fiber::sleep_for(example::seconds(2));
  fmt::print("The task to calculate the cube of {} ended.\n", number);
  return number * number * number;
}

int main(int argc, char** argv) {
  example::parse_args(argc, argv);
  example::Stopwatch clock;
  spindle::run([] {
    auto task1 = spindle::spawn(calculate_square, 5);
    auto task2 = spindle::spawn(calculate_cube, 3);
    long result1 = task1.join();
    long result2 = task2.join();
    fmt::print("The square result is: {}\n", result1);
    fmt::print("The cube result is: {}\n", result2);
  });
  fmt::print("square_cube executed in {:.2f} seconds.\n", clock.elapsed());
}
