// A bounded producer/consumer pipeline: a plain std::thread (which does not
// run spindle) produces work items and feeds them to fibers through a
// bounded Queue. While the queue is full the producer thread blocks; each
// put that finds a fiber waiting wakes it through its scheduler's poller.
// Three worker fibers "process" each item (a short sleep stands in for an
// I/O call) and pass the result on through a second queue to a collector.
//
//   producer thread --Queue(8)--> 3 worker fibers --Queue--> collector fiber
//
// 200 items of 10 ms each take about 0.67 s with three workers.
#include <spindle/spindle.hpp>

#include <thread>
#include <vector>

#include "example.hpp"

int main(int argc, char** argv) {
  example::parse_args(argc, argv);
  example::Stopwatch clock;
  constexpr long kItems = 200;
  spindle::Queue<long> work(8);
  long total = 0;

  spindle::run([&] {
    // Started inside run(), so that the queue's first put may already wake
    // a parked worker; it blocks itself whenever the workers fall behind.
    std::thread producer([&] {
      for (long i = 1; i <= kItems; ++i) work.put(i);
      work.shutdown();  // no more work: the workers drain the queue and stop
    });

    spindle::Queue<long> results;
    std::vector<spindle::Task<void>> workers;
    for (int w = 0; w < 3; ++w)
      workers.push_back(spindle::spawn([&] {
        try {
          for (;;) {
            long item = work.get();
            spindle::this_fiber::sleep_for(example::seconds(0.01));
            results.put(item * item);
          }
        } catch (const spindle::QueueShutDown&) {
        }
      }));
    auto collector = spindle::spawn([&] {
      for (long n = 0; n < kItems; ++n) total += results.get();
    });

    collector.join();
    for (auto& w : workers) w.join();
    producer.join();
  });
  fmt::print("Sum of the squares of 1..{} = {}\n", kItems, total);
  fmt::print("pipeline executed in {:.2f} seconds.\n", clock.elapsed());
}
