/*
 * kqueue emulation for Linux: TEST-ONLY. Never installed, never linked into
 * libspindle. It exists so that platform/poller_kqueue.cpp, which is written
 * for FreeBSD and macOS, can be compiled and exercised on Linux CI with
 * `meson setup -Dpoller=kqueue`. This header stands in for <sys/event.h>; its
 * implementation (tests/kqueue_emu/kqueue_emu.cpp) sits on epoll, eventfd,
 * signalfd, pidfd and waitid.
 *
 * The reference is FreeBSD's kqueue(2) manual page and kern_event.c (FreeBSD
 * 13/14). Constants and struct kevent use FreeBSD's values and layout.
 *
 * MODELLED (each has a case in tests/test_kqueue_emu.cpp):
 *   - kqueue(); kevent() applying the changelist in order, then collecting
 *     events. Knotes keyed by (ident, filter): EV_ADD creates or modifies
 *     (udata, fflags and data are replaced; flags such as EV_CLEAR stay those
 *     of the first add), EV_DELETE, EV_ENABLE, EV_DISABLE (a disabled knote
 *     is never returned; enabling it re-evaluates the filter), EV_ONESHOT,
 *     EV_CLEAR, EV_DISPATCH, EV_RECEIPT.
 *   - Filter evaluation as in kern_event.c: a knote is evaluated when it is
 *     registered and again when it is collected, so readiness that went away
 *     before the call (data read meanwhile) is not reported. Without EV_CLEAR
 *     a knote stays queued while its condition holds (level); with EV_CLEAR
 *     it is reported again only after new activity (edge). A call returns
 *     each knote at most once, and knotes left over when the eventlist is
 *     full come first in the next call.
 *   - Changelist errors: with room in the eventlist an entry comes back with
 *     flags = EV_ERROR and the errno in data, and kevent() returns at once
 *     with the number of such entries (EV_RECEIPT forces one, data 0, for
 *     every change); without room, kevent() returns -1 with errno at the
 *     first failing change and the later changes are not applied. Errors:
 *     EBADF (fd not open), ENOENT (no such knote), EINVAL (unknown filter,
 *     bad signal number, bad timeout, negative counts), ESRCH (no such
 *     process), EPIPE (EVFILT_WRITE on a pipe whose other end is closed).
 *   - EVFILT_READ / EVFILT_WRITE on sockets, pipes and other pollable fds.
 *     data: bytes readable (FIONREAD) / space left in the send buffer or the
 *     pipe. EV_EOF when the peer shut its writing side or closed (read), or
 *     when the other side can no longer receive (write); the pending byte
 *     count is still in data. close(2) on the fd removes its knotes: no event
 *     is ever returned for a closed fd, EV_DELETE then fails with EBADF, or
 *     ENOENT once the number has been reused.
 *   - EVFILT_USER: EV_ADD, NOTE_TRIGGER, NOTE_FFNOP/FFAND/FFOR/FFCOPY on the
 *     24 user flags; with EV_CLEAR the trigger is reset when it is returned.
 *     A trigger from another thread, or from a signal handler, ends a
 *     kevent() blocked in another thread.
 *   - EVFILT_SIGNAL: counts deliveries in data, reset when returned (EV_CLEAR
 *     is implied), counts signals whose disposition is SIG_IGN; SIGCHLD set
 *     to SIG_IGN is not recorded (Linux then does not generate it at all).
 *   - EVFILT_PROC with NOTE_EXIT: reported once with EV_EOF, data = the wait
 *     status (as waitpid(2) gives it), then the knote is gone (EV_ONESHOT is
 *     implied). A process that has already exited but is not yet reaped (a
 *     zombie) attaches and fires at once, as on FreeBSD. Nothing is reaped.
 *   - Timeouts: NULL blocks, {0, 0} polls, otherwise nanoseconds, never
 *     returning early. A signal ends a blocked kevent() with EINTR (FreeBSD
 *     never restarts kevent).
 *   - fork(2): the kqueue is not inherited; in the child its descriptor is
 *     closed and kevent() on it fails with EBADF.
 *
 * NOT MODELLED, or different from real kernels (where hardware may disagree):
 *   - fflags of EV_EOF: FreeBSD puts the socket's pending error there (e.g.
 *     ECONNRESET). Linux has no way to read a socket's error without clearing
 *     it (getsockopt SO_ERROR and every recv clear sk_err), and clearing it
 *     would hide the error from the caller's next recv/connect. So fflags is
 *     always 0 here, and the error stays for the caller to meet.
 *     kqueue_emu_inject() can hand a backend such an event for its tests.
 *   - Standard (non real-time) signals: Linux merges pending instances of one
 *     signal, so several deliveries between two kevent() calls may count as
 *     one here; FreeBSD counts every attempt. Real-time signals count
 *     exactly. The emulation blocks a watched signal in the thread that added
 *     the knote (restored when it is deleted from that thread) and reads it
 *     from a signalfd: a signal another thread takes, one sent to another
 *     thread with pthread_kill, or one flushed by a later sigaction(SIG_IGN)
 *     before the next kevent() is not seen; a handler does not run while
 *     the signal is watched (on FreeBSD both the handler and the filter see
 *     it). SIGKILL and SIGSTOP attach but are never reported.
 *   - EVFILT_PROC: only NOTE_EXIT is ever reported (NOTE_FORK, NOTE_EXEC,
 *     NOTE_TRACK are accepted and ignored). The status is read at collection
 *     time with waitid(WNOWAIT), so it is 0 for a process that is not our
 *     child or that someone reaped before the kevent() call (FreeBSD keeps
 *     it in the knote). macOS returns data only with NOTE_EXITSTATUS, and may
 *     refuse a zombie with ESRCH: kqueue_emu_set_zombie_esrch() switches
 *     that behaviour on.
 *   - Pipes are one-way on Linux; FreeBSD pipes are two-way, so EVFILT_WRITE
 *     on a pipe's read end reports writable there and never here.
 *   - New activity (what re-arms an EV_CLEAR knote) is what Linux reports as
 *     an edge. Reading from a pipe that was not full gives its writer no new
 *     EVFILT_WRITE edge here (Linux wakes pipe writers only when the pipe was
 *     full); FreeBSD gives one on every read.
 *   - Write readiness uses Linux's threshold (POLLOUT), not FreeBSD's send
 *     low-water mark; NOTE_LOWAT is ignored. EVFILT_READ on a listening
 *     socket reports data 1 rather than the backlog length, on UDP the size
 *     of the next datagram rather than the whole buffer.
 *   - Regular files and directories fail EV_ADD with EPERM (what epoll
 *     says), where FreeBSD attaches its vnode filters. EVFILT_VNODE, TIMER,
 *     AIO, PROCDESC, EMPTY, EV_KEEPUDATA and EV_FORCEONESHOT are not
 *     provided.
 *   - "Closed" is recognised by the fd's inode: an fd closed and its number
 *     reused by another descriptor of the SAME file (dup2) keeps its knotes
 *     here. The emulation's own descriptors for a kqueue (eventfd, signalfd)
 *     are released when the next kqueue() call finds the kqueue closed.
 *   - struct kevent is FreeBSD 12+'s (with ext[4]); macOS has no ext and an
 *     intptr_t data; NetBSD's udata is intptr_t on older releases.
 */
#ifndef SPINDLE_TESTS_KQUEUE_EMU_SYS_EVENT_H
#define SPINDLE_TESTS_KQUEUE_EMU_SYS_EVENT_H

#include <stdint.h>
#include <time.h>

#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#define EVFILT_AIO (-3)
#define EVFILT_VNODE (-4)
#define EVFILT_PROC (-5)
#define EVFILT_SIGNAL (-6)
#define EVFILT_TIMER (-7)
#define EVFILT_PROCDESC (-8)
#define EVFILT_FS (-9)
#define EVFILT_LIO (-10)
#define EVFILT_USER (-11)
#define EVFILT_SENDFILE (-12)
#define EVFILT_EMPTY (-13)

/* actions */
#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ENABLE 0x0004
#define EV_DISABLE 0x0008
/* flags */
#define EV_ONESHOT 0x0010
#define EV_CLEAR 0x0020
#define EV_RECEIPT 0x0040
#define EV_DISPATCH 0x0080
#define EV_SYSFLAGS 0xF000
/* returned values */
#define EV_EOF 0x8000
#define EV_ERROR 0x4000

/* EVFILT_USER */
#define NOTE_FFNOP 0x00000000
#define NOTE_FFAND 0x40000000
#define NOTE_FFOR 0x80000000
#define NOTE_FFCOPY 0xc0000000
#define NOTE_FFCTRLMASK 0xc0000000
#define NOTE_FFLAGSMASK 0x00ffffff
#define NOTE_TRIGGER 0x01000000

/* EVFILT_READ / EVFILT_WRITE */
#define NOTE_LOWAT 0x0001

/* EVFILT_PROC */
#define NOTE_EXIT 0x80000000
#define NOTE_FORK 0x40000000
#define NOTE_EXEC 0x20000000
#define NOTE_PCTRLMASK 0xf0000000
#define NOTE_PDATAMASK 0x000fffff
#define NOTE_TRACK 0x00000001

struct kevent {
  uintptr_t ident;     /* identifier for this event */
  short filter;        /* filter for event */
  unsigned short flags; /* action flags for kqueue */
  unsigned int fflags; /* filter flag value */
  int64_t data;        /* filter data value */
  void* udata;         /* opaque user data identifier */
  uint64_t ext[4];     /* extensions */
};

#ifdef __cplusplus
/* FreeBSD's EV_SET assigns a compound literal with designated initializers,
 * which a C++ compiler checks like a braced initializer: an argument that
 * does not fit its field without narrowing (an int fd for the uintptr_t
 * ident, an int expression for the unsigned short flags) fails to compile
 * there. This form keeps that check on Linux. */
typedef struct kevent kqueue_emu_kevent;
#define EV_SET(kevp_, a, b, c, d, e, f)                                                          \
  do {                                                                                           \
    *(kevp_) = kqueue_emu_kevent{                                                                \
        .ident = (a), .filter = (b), .flags = (c), .fflags = (d), .data = (e), .udata = (f), .ext = {0}}; \
  } while (0)
#else
#define EV_SET(kevp_, a, b, c, d, e, f) \
  do {                                  \
    struct kevent* ev_set_kevp_ = (kevp_); \
    ev_set_kevp_->ident = (a);          \
    ev_set_kevp_->filter = (b);         \
    ev_set_kevp_->flags = (c);          \
    ev_set_kevp_->fflags = (d);         \
    ev_set_kevp_->data = (e);           \
    ev_set_kevp_->udata = (f);          \
    ev_set_kevp_->ext[0] = 0;           \
    ev_set_kevp_->ext[1] = 0;           \
    ev_set_kevp_->ext[2] = 0;           \
    ev_set_kevp_->ext[3] = 0;           \
  } while (0)
#endif

#ifdef __cplusplus
extern "C" {
#endif

int kqueue(void);
int kevent(int kq, const struct kevent* changelist, int nchanges, struct kevent* eventlist, int nevents,
           const struct timespec* timeout);

#ifdef __cplusplus
}
#endif

#endif /* SPINDLE_TESTS_KQUEUE_EMU_SYS_EVENT_H */
