// spindle::read_file / write_file / append_file (spindle/file.hpp): plain
// POSIX calls, run on the blocking pool.
#include <spindle/file.hpp>

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include <spindle/blocking.hpp>

#include "platform/syscall.hpp"

namespace spindle {

namespace {

[[noreturn]] void throw_file_error(int err, const char* call, const std::filesystem::path& path) {
  platform::throw_system_error(err, fmt::format("{}(\"{}\")", call, path.native()));
}

// Owns an open descriptor; closes it on the error paths. The success paths
// close explicitly, because close() can report a failed write (NFS, quotas).
class File {
 public:
  File(const std::filesystem::path& path, int flags) : path_(path) {
    fd_ = platform::retry_eintr([&] { return ::open(path.c_str(), flags | O_CLOEXEC, 0666); });
    if (fd_ < 0) throw_file_error(errno, "open", path_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }

  int fd() const noexcept { return fd_; }

  // A close interrupted by a signal has still released the descriptor
  // (Linux close(2)), so it is not retried.
  void close() {
    const int r = ::close(std::exchange(fd_, -1));
    if (r < 0 && errno != EINTR) throw_file_error(errno, "close", path_);
  }

  [[noreturn]] void fail(const char* call) const { throw_file_error(errno, call, path_); }

 private:
  const std::filesystem::path& path_;
  int fd_ = -1;
};

std::string read_all(const std::filesystem::path& path) {
  File file(path, O_RDONLY);
  struct stat st {};
  if (::fstat(file.fd(), &st) < 0) file.fail("fstat");
  if (S_ISDIR(st.st_mode)) throw_file_error(EISDIR, "read", path);
  // The size is only a hint: files under /proc report 0, and a file may grow
  // while we read it. Read until end of file either way.
  std::string data(S_ISREG(st.st_mode) && st.st_size > 0 ? static_cast<std::size_t>(st.st_size) + 1 : 16384, '\0');
  std::size_t used = 0;
  for (;;) {
    if (used == data.size()) data.resize(2 * data.size());
    const ssize_t n =
        platform::retry_eintr([&] { return ::read(file.fd(), data.data() + used, data.size() - used); });
    if (n < 0) file.fail("read");
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  data.resize(used);
  file.close();
  return data;
}

void write_all(const std::filesystem::path& path, std::string_view data, int flags) {
  File file(path, O_WRONLY | O_CREAT | flags);
  while (!data.empty()) {
    const ssize_t n = platform::retry_eintr([&] { return ::write(file.fd(), data.data(), data.size()); });
    if (n < 0) file.fail("write");
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  file.close();
}

}  // namespace

std::string read_file(const std::filesystem::path& path) { return run_blocking(read_all, path); }

void write_file(const std::filesystem::path& path, std::string_view data) {
  run_blocking(write_all, path, data, O_TRUNC);
}

void append_file(const std::filesystem::path& path, std::string_view data) {
  run_blocking(write_all, path, data, O_APPEND);
}

}  // namespace spindle
