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
