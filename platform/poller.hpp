// The poller seam: the only place the scheduler's thread blocks.
//
// Backends are sibling classes with identical members and no virtuals; this
// header picks one from the build's SPINDLE_POLLER_* macro. Contract, per
// member (caller = the scheduler's own thread unless said otherwise):
//
//   Poller()             creates the kernel object and the wake channel.
//                        Throws std::system_error naming the call.
//   add(fd, slot)        once per fd, before the first wait on it; registers
//                        read and write interest, edge-triggered, carrying
//                        &slot and the low 16 bits of slot.seq. Never blocks.
//                        Throws std::system_error("epoll_ctl(ADD, fd=N)").
//   remove(fd)           before close(fd). Never blocks. Errors for fds the
//                        kernel already forgot (EBADF, ENOENT) are ignored:
//                        the sequence number makes late events harmless.
//   wait(out, timeout)   clears `out`, blocks up to `timeout` (nullopt =
//                        forever, zero = poll), appends one ReadyEvent per
//                        kernel event for a user fd, returns out.size(). A
//                        wake() consumes itself and returns early with no
//                        event for it. EINTR is retried with the remaining
//                        time. Never returns before the timeout unless an
//                        event or a wake arrived. noexcept: an unexpected
//                        kernel error aborts with file:line.
//   wake()               ANY thread, async-signal-safe; bursts coalesce into
//                        one kernel write. A wake sent before wait() starts is
//                        not lost: that wait returns at once.
//   name()               "epoll" or "kqueue".
//
// Event sources that are not fds (signals, child exits). The scheduler hands
// in a slot from its own table of source slots (never freed while it runs,
// sequence-tagged like fd slots); their events come back as `readable`.
//
//   add_signal(signo, slot)   from now on a delivery of signo reports the
//                        slot readable (edge). The backend also stops the
//                        signal's default action while it is watched: epoll
//                        blocks signo in the calling thread and reads it from
//                        a signalfd; kqueue sets SIG_IGN (SIG_DFL for
//                        SIGCHLD, whose default is to discard it anyway and
//                        whose SIG_IGN would make the kernel reap children)
//                        and uses EVFILT_SIGNAL. At most one watch per
//                        signo. Throws
//                        std::system_error naming the call and the signal.
//   take_signal(signo)   deliveries of signo since the last take (coalesced
//                        deliveries count once or more, never zero if one
//                        happened); 0 when none. Never blocks, noexcept:
//                        epoll reads the signalfd, kqueue collects pending
//                        knotes with a zero-timeout kevent.
//   remove_signal(signo) ends the watch and restores the mask or disposition
//                        add_signal changed. Harmless if not watched.
//   add_process(pid, slot)    the slot is reported readable once child pid
//                        has exited, at the next wait if it already has (a
//                        zombie counts). Never reaps: the caller reaps with
//                        waitpid(pid, WNOHANG) after the event, so the exit
//                        status is read in one portable way. Throws
//                        std::system_error("pidfd_open(pid=N)") or
//                        ("kevent(EVFILT_PROC, pid=N)").
//   remove_process(pid)  ends the watch, before or after reaping. Harmless
//                        if not watched.
#pragma once

#if defined(SPINDLE_POLLER_KQUEUE)
#include "platform/poller_kqueue.hpp"
namespace spindle::platform {
using Poller = KqueuePoller;
}
#else
#include "platform/poller_epoll.hpp"
namespace spindle::platform {
using Poller = EpollPoller;
}
#endif
