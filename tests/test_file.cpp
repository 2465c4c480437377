// spindle::read_file / write_file / append_file: round trips, error texts,
// and the fiber's scheduler staying responsive.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

#include <spindle/spindle.hpp>

using namespace std::chrono_literals;

namespace {

// A fresh directory under TMPDIR, removed with everything in it.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "spindle-file-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("file: write_file then read_file gives the same bytes back") {
  TempDir dir;
  spindle::run([&] {
    const auto p = dir.path / "data.bin";
    std::string data;
    for (int i = 0; i < 300'000; ++i) data.push_back(static_cast<char>(i * 7 + i / 256));
    data[1000] = '\0';  // binary, with NULs
    spindle::write_file(p, data);
    CHECK(std::filesystem::file_size(p) == data.size());
    CHECK(spindle::read_file(p) == data);
    // write_file truncates what was there.
    spindle::write_file(p, "short");
    CHECK(spindle::read_file(p) == "short");
    // Empty files read as empty strings.
    spindle::write_file(p, "");
    CHECK(spindle::read_file(p).empty());
  });
}

TEST_CASE("file: append_file creates the file and then appends") {
  TempDir dir;
  spindle::run([&] {
    const auto p = dir.path / "log.txt";
    spindle::append_file(p, "one\n");
    spindle::append_file(p, "two\n");
    CHECK(spindle::read_file(p) == "one\ntwo\n");
  });
}

TEST_CASE("file: files whose size stat does not report are read to the end") {
  spindle::run([] {
    // /proc files report size 0 but have content.
    const std::string status = spindle::read_file("/proc/self/status");
    CHECK(contains(status, "Pid:"));
  });
}

TEST_CASE("file: a missing file gives an error naming open and the path") {
  TempDir dir;
  spindle::run([&] {
    const auto p = dir.path / "no-such-file";
    try {
      spindle::read_file(p);
      FAIL("read_file of a missing file returned");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::no_such_file_or_directory);
      CHECK(std::string(e.what()) == fmt::format("open(\"{}\"): No such file or directory", p.string()));
    }
    // Writing into a missing directory fails the same way.
    try {
      spindle::write_file(dir.path / "missing-dir" / "f", "x");
      FAIL("write_file into a missing directory returned");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::no_such_file_or_directory);
      CHECK(contains(e.what(), "open(\""));
      CHECK(contains(e.what(), "missing-dir"));
    }
  });
}

TEST_CASE("file: reading a directory is an error naming the path") {
  TempDir dir;
  spindle::run([&] {
    try {
      spindle::read_file(dir.path);
      FAIL("read_file of a directory returned");
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::is_a_directory);
      CHECK(contains(e.what(), dir.path.string()));
    }
  });
}

TEST_CASE("file: outside a fiber the calls throw std::logic_error") {
  CHECK_THROWS_AS(spindle::read_file("/proc/self/status"), std::logic_error);
}

TEST_CASE("file: other fibers run while a file call is in flight") {
  TempDir dir;
  spindle::run([&] {
    const auto p = dir.path / "big";
    const std::string data(8 << 20, 'z');
    int ticks = 0;
    bool done = false;
    auto ticker = spindle::spawn([&] {
      while (!done) {
        ++ticks;
        spindle::this_fiber::yield();
      }
    });
    spindle::write_file(p, data);
    const std::string back = spindle::read_file(p);
    done = true;
    ticker.join();
    CHECK(back.size() == data.size());
    // The ticker ran while the calling fiber was parked on the pool.
    CHECK(ticks > 0);
  });
}
