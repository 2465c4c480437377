// The seeds' wait_for example: a fetch that needs 15 s, given 10 s.
// Prints "Fetching data timed out" after about 10 s.
#include <spindle/spindle.hpp>

#include "example.hpp"

std::string fetch_data() {
  spindle::this_fiber::sleep_for(example::seconds(15));
  return "Data fetched";
}

int main(int argc, char** argv) {
  example::parse_args(argc, argv);
  example::Stopwatch clock;
  spindle::run([] {
    try {
      auto result = spindle::wait_for(fetch_data, example::seconds(10));
      fmt::print("{}\n", result);
    } catch (const spindle::TimeoutError&) {
      fmt::print("Fetching data timed out\n");
    }
  });
  fmt::print("timeout executed in {:.2f} seconds.\n", clock.elapsed());
}
