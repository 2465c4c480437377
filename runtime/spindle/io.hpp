// Low-level readiness waits, to drive any non-blocking fd from a fiber.
//
//   for (;;) {
//     ssize_t n = ::read(fd, buf, len);               // fd is O_NONBLOCK
//     if (n >= 0 || errno != EAGAIN) break;
//     spindle::wait_readable(fd);                      // parks this fiber
//   }
//
// The first wait on an fd registers it with the poller (edge-triggered,
// both directions, once). A wait may return without the fd being ready (an
// older edge): retry the syscall and wait again on EAGAIN. Waits honour
// cancellation and Timeout scopes and leave no registration behind when they
// end early. One fiber at a time may wait per fd and direction. Call
// forget_fd(fd) before close(fd): fibers waiting on it then get
// std::system_error(EBADF). Errors name the call and the fd.
#pragma once

namespace spindle {

void wait_readable(int fd);
void wait_writable(int fd);
// Stops watching fd (before closing it). Harmless for an fd never waited on.
void forget_fd(int fd) noexcept;

}  // namespace spindle
