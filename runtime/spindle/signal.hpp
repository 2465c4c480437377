// Waiting for POSIX signals from a fiber, like asyncio's loop.add_signal_handler
// but as a blocking call:
//
//   spindle::spawn([&] {
//     int s = spindle::wait_signal({SIGTERM, SIGINT});   // parks this fiber
//     fmt::print("got signal {}, shutting down\n", s);
//     server.stop();
//   });
//
// Returns the number of the signal that arrived. Honours cancellation and
// Timeout scopes, and leaves no watch behind when it ends early.
//
// Broadcast: a delivery wakes EVERY fiber of this thread's scheduler that is
// waiting for that signal when the delivery is read, so several components
// can each wait for SIGTERM and all of them hear it. A fiber waiting for
// several signals returns one; if several of them were delivered together it
// returns the lowest-numbered one, and the others stay pending for another
// waiting fiber or the next wait.
//
// Watching: while at least one fiber waits for a signal, the poller watches
// it and its normal action (default or handler) is suspended: on Linux the
// signal is blocked in the scheduler's thread and read from a signalfd, on
// kqueue systems its disposition is SIG_IGN and EVFILT_SIGNAL reports it.
// A delivery between the start of the watch and the moment the fiber parks
// is not lost: the wait reads what is pending before it parks. A wait that
// ends by Timeout or cancellation first reads what is pending too, and
// returns a delivery it finds (a cancellation then stays pending for the
// fiber's next suspension point). When the last waiter for a signal leaves,
// the watch ends and the thread's mask (or the disposition) is restored as
// it was. From then on the signal takes its normal action again, which also
// applies to one that is delivered but unread at that moment. A server that
// must never die of SIGTERM between two waits should keep a fiber waiting
// for it, or block SIGTERM in every thread itself (pthread_sigmask before
// creating threads): the watch then leaves it blocked, and a delivery
// between waits stays pending until the next wait reads it.
//
// Process-wide nature: signal dispositions and process-directed signals
// (kill(2)) belong to the whole process, and the kernel delivers a
// process-directed signal to any thread that does not block it. So wait for
// a given signal from one scheduler thread only, and block it in every other
// thread for as long as it may be sent (a thread that unblocks it while a
// delivery is pending for the process receives that delivery itself);
// spindle's own background threads block all signals. A signal
// sent with raise(3) or pthread_kill(3) to the scheduler's thread is seen as
// well. SIGKILL and SIGSTOP cannot be waited for, and the synchronous
// signals a fault raises (SIGSEGV, SIGBUS, SIGFPE, SIGILL) should not be.
//
// Child processes (spindle::Process) start with the signal mask the thread
// had before any watch, and with the watched signals at their default
// action.
//
// Errors: an invalid signal number, SIGKILL or SIGSTOP throws
// std::system_error(EINVAL) naming the call and the signal; a failure to set
// up the watch throws std::system_error naming the system call. Outside a
// fiber: std::logic_error.
#pragma once

#include <initializer_list>
#include <span>

#include <signal.h>

namespace spindle {

int wait_signal(std::span<const int> signals);
int wait_signal(std::initializer_list<int> signals);

namespace detail {
// For spindle::Process: the child's signal mask (`mask` in, the calling
// thread's current mask; out, without the signals that only this thread's
// watches block) and the signals it should reset to SIG_DFL (`defaults`,
// added to: the watched ones).
void child_signal_setup(sigset_t& mask, sigset_t& defaults) noexcept;
}  // namespace detail

}  // namespace spindle
