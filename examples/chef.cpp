// The chef of the seeds: "the chef takes one order and starts working on it,
// but while the water is boiling or something is frying, they quickly pick
// up the second order and get started with that as well".
//
// Orders arrive in a Queue; three cook fibers take them. Preparing a dish
// needs only a cook; cooking it needs one of the stove's two burners (a
// Semaphore). At closing time an Event tells the doorman to stop taking
// orders (Queue::shutdown): later orders are turned away, the cooks finish
// what is queued and go home. Each order takes 1.5 s of work; the five
// accepted orders are done after about 3.5 s instead of the 7.5 s one cook
// would need.
#include <spindle/spindle.hpp>

#include <array>
#include <string>

#include "example.hpp"

namespace {

struct Order {
  int number;
  std::string dish;
};

example::Stopwatch stopwatch;

// Seed seconds since the start, for the log.
double at() { return stopwatch.elapsed() / example::scale; }

// Holds a burner for as long as the dish is on the stove.
class Burner {
 public:
  explicit Burner(spindle::Semaphore& stove) : stove_(stove) { stove_.acquire(); }
  ~Burner() { stove_.release(); }
  Burner(const Burner&) = delete;
  Burner& operator=(const Burner&) = delete;

 private:
  spindle::Semaphore& stove_;
};

void cook(const std::string& name, spindle::Queue<Order>& orders, spindle::Semaphore& stove, int& served) {
  for (;;) {
    Order order;
    try {
      order = orders.get();
    } catch (const spindle::QueueShutDown&) {
      fmt::print("[{:.2f}] {} goes home\n", at(), name);
      return;
    }
    fmt::print("[{:.2f}] {} starts order {} ({})\n", at(), name, order.number, order.dish);
    spindle::this_fiber::sleep_for(example::seconds(0.5));  // chopping: no burner needed
    {
      Burner burner(stove);  // parks while both burners are taken
      fmt::print("[{:.2f}] {} puts order {} on a burner\n", at(), name, order.number);
      spindle::this_fiber::sleep_for(example::seconds(1.0));  // the water boils, others work meanwhile
    }
    fmt::print("[{:.2f}] {} serves order {} ({})\n", at(), name, order.number, order.dish);
    ++served;
    orders.task_done();
  }
}

}  // namespace

int main(int argc, char** argv) {
  example::parse_args(argc, argv);
  stopwatch = example::Stopwatch();
  int served = 0;
  spindle::run([&] {
    spindle::Queue<Order> orders(2);  // the order rail holds two tickets
    spindle::Semaphore stove(2);      // two burners
    spindle::Event closing;

    std::array<spindle::Task<void>, 3> cooks = {
        spindle::spawn(cook, std::string("Ann"), std::ref(orders), std::ref(stove), std::ref(served)),
        spindle::spawn(cook, std::string("Bob"), std::ref(orders), std::ref(stove), std::ref(served)),
        spindle::spawn(cook, std::string("Cid"), std::ref(orders), std::ref(stove), std::ref(served)),
    };

    auto doorman = spindle::spawn([&] {
      closing.wait();
      fmt::print("[{:.2f}] Closing time: no more orders\n", at());
      orders.shutdown();  // the cooks still finish what is on the rail
    });
    // Absolute times, so that a loaded machine delays events without
    // reordering them: order 5 always comes before closing, order 6 after.
    const auto opening = spindle::now();
    auto closing_time = spindle::spawn([&] {
      spindle::this_fiber::sleep_until(opening + example::seconds(2.0));
      closing.set();
    });

    const std::array<const char*, 8> menu = {"spaghetti", "risotto", "soup",     "omelette",
                                             "stir-fry",  "curry",   "pancakes", "stew"};
    for (int n = 1; n <= static_cast<int>(menu.size()); ++n) {
      Order order{n, menu[n - 1]};
      try {
        orders.put(order);
        fmt::print("[{:.2f}] Order {} ({}) placed\n", at(), n, order.dish);
      } catch (const spindle::QueueShutDown&) {
        fmt::print("[{:.2f}] Order {} ({}) turned away: the kitchen is closed\n", at(), n, order.dish);
        break;
      }
      spindle::this_fiber::sleep_until(opening + example::seconds(0.45 * n));
    }

    orders.join();  // every accepted order served
    for (auto& c : cooks) c.join();
    doorman.join();
    closing_time.join();
  });
  fmt::print("Served {} orders\n", served);
  fmt::print("chef executed in {:.2f} seconds.\n", stopwatch.elapsed());
}
