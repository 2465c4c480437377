// The seeds' gather example: three simulated fetches of 2, 5 and 7 s run
// concurrently; all results arrive after about 7 s, in argument order.
#include <spindle/spindle.hpp>

#include "example.hpp"

std::string fetch_data(std::string url, int delay) {
  fmt::print("Starting to fetch data from {}\n", url);
  spindle::this_fiber::sleep_for(example::seconds(delay));
  return fmt::format("Fetched data from {} after {} seconds", url, delay);
}

int main(int argc, char** argv) {
  example::parse_args(argc, argv);
  example::Stopwatch clock;
  spindle::run([] {
    auto results = spindle::gather(spindle::spawn(fetch_data, "https://openai.com", 2),
                                   spindle::spawn(fetch_data, "https://github.com", 5),
                                   spindle::spawn(fetch_data, "https://python.org", 7));
    std::apply([](const auto&... r) { (fmt::print("{}\n", r), ...); }, results);
  });
  fmt::print("fetch_data executed in {:.2f} seconds.\n", clock.elapsed());
}
