// Shared bits of the seed ports: a --scale flag that shortens every delay
// (so tests can run the examples in a fraction of the time) and a stopwatch
// that prints like the Python originals.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <string_view>

namespace example {

inline double scale = 1.0;

// Accepts `--scale X` (X > 0); anything else is an error.
inline void parse_args(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--scale" && i + 1 < argc) {
      scale = std::strtod(argv[++i], nullptr);
      if (scale > 0) continue;
    }
    fmt::print(stderr, "usage: {} [--scale X]   (X > 0 multiplies every delay)\n", argv[0]);
    std::exit(2);
  }
}

// A delay of `seconds` in the seed, scaled.
inline std::chrono::nanoseconds seconds(double s) {
  return std::chrono::nanoseconds(static_cast<long long>(s * scale * 1e9));
}

class Stopwatch {
 public:
  double elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace example
