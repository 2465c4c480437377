// libspindle_hooks: what a hooked read/write costs on an fd that is ready,
// against the same calls without the hooks. One operation is a 1-byte
// write followed by a 1-byte read on a Unix socketpair (so the read always
// finds its byte: no call parks).
//
//   direct_syscall      syscall(SYS_write) + syscall(SYS_read): the kernel
//                       calls the hooks themselves make
//   direct_libc         glibc's own write and read, found with
//                       dlsym(RTLD_NEXT): what an unhooked program calls
//   hooked_thread       write and read through the hooks outside fibers (a
//                       plain thread): pass-through
//   hooked_fiber        through the hooks on a fiber, on a blocking socket
//                       the hooks made non-blocking: the path every ported
//                       library takes when its fd is ready
//   hooked_fiber_nonblock  on a fiber, a socket the application made
//                       non-blocking (SOCK_NONBLOCK): passed through
//   fiber_pingpong      two fibers answer each other over a socketpair
//                       with blocking read/write: every read parks and the
//                       scheduler's poller wakes it (ns per message)
#include "bench.hpp"

#include <dlfcn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <spindle/spindle.hpp>

#include <cstdint>
#include <stdexcept>

namespace {

using ReadFn = ssize_t (*)(int, void*, size_t);
using WriteFn = ssize_t (*)(int, const void*, size_t);

struct Pair {
  int a = -1, b = -1;
  explicit Pair(int type) {
    int sv[2];
    if (::socketpair(AF_UNIX, type, 0, sv) != 0) throw std::runtime_error("socketpair failed");
    a = sv[0];
    b = sv[1];
  }
  ~Pair() {
    ::close(a);
    ::close(b);
  }
};

template <class Write, class Read>
void write_read(std::uint64_t n, int w, int r, Write write, Read read) {
  char c = 'x';
  for (std::uint64_t i = 0; i < n; ++i) {
    if (write(w, &c, 1) != 1 || read(r, &c, 1) != 1) throw std::runtime_error("write/read failed");
  }
  bench::do_not_optimize(c);
}

}  // namespace

int main(int argc, char** argv) {
  bench::Runner runner("hooks", argc, argv);
  auto pin = bench::pin_current_thread(bench::primary_cpu());
  const std::string note = pin.note() + " op=write1+read1";

  auto sys_write = [](int fd, const void* p, size_t n) {
    return static_cast<ssize_t>(::syscall(SYS_write, fd, p, n));
  };
  auto sys_read = [](int fd, void* p, size_t n) {
    return static_cast<ssize_t>(::syscall(SYS_read, fd, p, n));
  };
  auto hooked_write = [](int fd, const void* p, size_t n) { return ::write(fd, p, n); };
  auto hooked_read = [](int fd, void* p, size_t n) { return ::read(fd, p, n); };

  if (runner.wants("direct_syscall")) {
    Pair p(SOCK_STREAM);
    runner.time("direct_syscall", {.unit = "ns/op", .note = note},
                [&](std::uint64_t n) { write_read(n, p.a, p.b, sys_write, sys_read); });
  }
  if (runner.wants("direct_libc")) {
    auto libc_write = reinterpret_cast<WriteFn>(::dlsym(RTLD_NEXT, "write"));
    auto libc_read = reinterpret_cast<ReadFn>(::dlsym(RTLD_NEXT, "read"));
    if (!libc_write || !libc_read) {
      runner.skipped("direct_libc", "dlsym(RTLD_NEXT) found no libc read/write (static link?)");
    } else {
      Pair p(SOCK_STREAM);
      runner.time("direct_libc", {.unit = "ns/op", .note = note},
                  [&](std::uint64_t n) { write_read(n, p.a, p.b, libc_write, libc_read); });
    }
  }
  if (runner.wants("hooked_thread")) {
    Pair p(SOCK_STREAM);
    runner.time("hooked_thread", {.unit = "ns/op", .note = note},
                [&](std::uint64_t n) { write_read(n, p.a, p.b, hooked_write, hooked_read); });
  }
  spindle::run([&] {
    if (runner.wants("hooked_fiber")) {
      Pair p(SOCK_STREAM);
      runner.time("hooked_fiber", {.unit = "ns/op", .note = note},
                  [&](std::uint64_t n) { write_read(n, p.a, p.b, hooked_write, hooked_read); });
    }
    if (runner.wants("hooked_fiber_nonblock")) {
      Pair p(SOCK_STREAM | SOCK_NONBLOCK);
      runner.time("hooked_fiber_nonblock", {.unit = "ns/op", .note = note},
                  [&](std::uint64_t n) { write_read(n, p.a, p.b, hooked_write, hooked_read); });
    }
    if (runner.wants("fiber_pingpong")) {
      runner.time("fiber_pingpong", {.unit = "ns/msg", .granularity = 2, .note = pin.note()},
                  [&](std::uint64_t n) {
                    Pair p(SOCK_STREAM);
                    auto echo = spindle::spawn([&] {
                      char c;
                      for (std::uint64_t i = 0; i < n / 2; ++i) {
                        if (::read(p.b, &c, 1) != 1 || ::write(p.b, &c, 1) != 1)
                          throw std::runtime_error("echo failed");
                      }
                    });
                    char c = 'x';
                    for (std::uint64_t i = 0; i < n / 2; ++i) {
                      if (::write(p.a, &c, 1) != 1 || ::read(p.a, &c, 1) != 1)
                        throw std::runtime_error("ping failed");
                    }
                    echo.join();
                  });
    }
  });
  return runner.finish();
}
