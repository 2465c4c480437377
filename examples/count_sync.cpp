// count_sync.py from the seeds: the same three counts, one after another,
// with a blocking sleep. About 3 s: the comparison point for count.
#include <thread>

#include "example.hpp"

void count() {
  fmt::print("One\n");
  std::this_thread::sleep_for(example::seconds(1));
  fmt::print("Two\n");
}

int main(int argc, char** argv) {
  example::parse_args(argc, argv);
  example::Stopwatch clock;
  for (int i = 0; i < 3; ++i) count();
  fmt::print("count_sync executed in {:.2f} seconds.\n", clock.elapsed());
}
