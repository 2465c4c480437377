// Whole-file reads and writes that do not block the scheduler's thread.
//
//   std::string config = spindle::read_file("/etc/app.conf");
//   spindle::write_file("/tmp/out.txt", text);
//   spindle::append_file("/var/log/app.log", line);
//
// Regular files are always "ready" to epoll, so their I/O cannot be parked
// on the poller; these calls run open/read/write/close on the blocking pool
// through spindle::run_blocking and inherit its rules: they need a fiber
// (std::logic_error otherwise), they are suspension points, and when the
// fiber is cancelled or a Timeout scope expires mid-call the operation still
// runs to its end before Cancelled or TimeoutError is thrown, so a cancelled
// write_file has either written everything or failed, never stopped halfway
// by the cancellation.
//
// Errors are std::system_error naming the call and the path, e.g.
// `open("/no/such"): No such file or directory`. EINTR is retried.
//
// write_file creates the file (mode 0666 before the umask) or truncates it;
// append_file creates it or appends with O_APPEND. Neither replaces the
// file atomically nor calls fsync: a reader may see a partly written file,
// and a crash may lose the data.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace spindle {

std::string read_file(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, std::string_view data);
void append_file(const std::filesystem::path& path, std::string_view data);

}  // namespace spindle
