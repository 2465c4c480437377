/*
 * Test controls of the Linux kqueue emulation (tests/kqueue_emu). Not part
 * of any kqueue API: only tests include this, to reach behaviours that real
 * kernels show but the emulation's default (FreeBSD on Linux) does not.
 */
#ifndef SPINDLE_TESTS_KQUEUE_EMU_KQUEUE_EMU_H
#define SPINDLE_TESTS_KQUEUE_EMU_KQUEUE_EMU_H

#include <sys/event.h>

#ifdef __cplusplus
extern "C" {
#endif

/* With `on` non-zero, EV_ADD of EVFILT_PROC fails with ESRCH for a process
 * that has exited but is not yet reaped, as macOS may do; FreeBSD (the
 * default, `on` zero) attaches and reports the exit at once. Process-wide;
 * returns the previous setting. */
int kqueue_emu_set_zombie_esrch(int on);

/* Queues a copy of `ev` on kqueue `kq`: the next kevent() call on it that
 * collects events returns it verbatim, ahead of real events, and a kevent()
 * blocked on `kq` returns. For results the emulation cannot produce itself
 * (EV_EOF with a socket error in fflags, EV_ERROR in the eventlist). Returns
 * 0, or -1 with errno EBADF when `kq` is not a kqueue. */
int kqueue_emu_inject(int kq, const struct kevent* ev);

#ifdef __cplusplus
}
#endif

#endif /* SPINDLE_TESTS_KQUEUE_EMU_KQUEUE_EMU_H */
