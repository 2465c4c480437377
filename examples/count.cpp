// count_async.py from the seeds: three tasks print "One", sleep one second
// and print "Two". The sleeps overlap, so the whole run takes about 1 s.
#include <spindle/spindle.hpp>

#include "example.hpp"

void count() {
  fmt::print("One\n");
  spindle::this_fiber::sleep_for(example::seconds(1));
  fmt::print("Two\n");
}

int main(int argc, char** argv) {
  example::parse_args(argc, argv);
  example::Stopwatch clock;
  spindle::run([] {
    std::vector<spindle::Task<void>> tasks;
    for (int i = 0; i < 3; ++i) tasks.push_back(spindle::spawn(count));
    spindle::gather(tasks);
  });
  fmt::print("count executed in {:.2f} seconds.\n", clock.elapsed());
}
