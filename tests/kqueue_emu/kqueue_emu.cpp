// The kqueue emulation: FreeBSD's kqueue()/kevent() semantics on Linux, for
// tests only. What is and is not modelled is listed at the top of
// include/sys/event.h; this file explains how.
//
// One emulated kqueue is one epoll instance (the descriptor kqueue() returns)
// plus, per kqueue, an eventfd that ends a blocked kevent() when another
// thread triggers an EVFILT_USER knote, a signalfd for the watched signals,
// and one pidfd per EVFILT_PROC knote. Every registered fd is added to epoll
// once, edge-triggered for both directions, whichever of its filters exist.
//
// Knotes follow kern_event.c closely, because the point of the emulation is
// to behave like the kernel the backend will meet:
//   - A kernel event (an epoll report, a signal, a trigger) only marks a
//     knote active and queues it. kevent() evaluates each queued knote again
//     when it collects it (kqueue_scan calls f_event), and drops it from the
//     queue if its condition no longer holds.
//   - Registering (EV_ADD, EV_ENABLE) evaluates the filter at once, so a
//     fresh socket is reported writable by its first kevent().
//   - After a knote is returned: EV_ONESHOT deletes it; EV_CLEAR (and
//     EV_DISPATCH) take it off the queue until new activity; otherwise it
//     goes back to the tail of the queue (level-triggered). A marker knote
//     stops the scan where the queue ended when the scan began, so one call
//     returns each knote at most once.
//
// Locking: one mutex per kqueue guards all its state; the registry of
// kqueues has its own mutex, never held together with a kqueue's. kevent()
// blocks every signal for its whole duration, and waits in epoll_pwait2 with
// the caller's mask: a signal handler that calls kevent() (the backend's
// wake() does) can then never interrupt a thread holding a kqueue's mutex.
//
// "Closed": kqueue drops an fd's knotes at close(2), which Linux cannot tell
// us. Each fd's entry remembers the file's device and inode, and the fd is
// checked against them whenever the emulation is about to report, register
// or delete one of its knotes; a mismatch or EBADF means the descriptor was
// closed, and its knotes are dropped then, so nobody can observe the delay.
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/event.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kqueue_emu.h"

namespace {

// ------------------------------------------------------------ knotes

struct Knote {
  // ident, filter, udata as registered; flags as registered minus the
  // action bits, plus EV_EOF when the filter sets it; fflags and data as
  // the filter computed them (what kevent() returns).
  struct kevent kev {};
  unsigned int sfflags = 0;  // the fflags the caller asked for
  std::int64_t sdata = 0;    // the data the caller passed (EVFILT_USER)
  bool disabled = false;     // EV_DISABLE
  bool active = false;       // KN_ACTIVE: the filter fired
  bool queued = false;       // KN_QUEUED: on the kqueue's queue
  Knote* prev = nullptr;
  Knote* next = nullptr;

  bool triggered = false;          // EVFILT_USER: NOTE_TRIGGER seen
  std::int64_t count = 0;          // EVFILT_SIGNAL: deliveries since returned
  bool unblock_on_delete = false;  // EVFILT_SIGNAL: the add blocked it
  int pidfd = -1;                  // EVFILT_PROC
  std::uint32_t gen = 0;           // EVFILT_PROC: part of the epoll token
  bool exited = false;             // EVFILT_PROC
};

enum class FdKind : std::uint8_t { socket, pipe, other };

// One registered descriptor and its (at most two) knotes.
struct FdEntry {
  dev_t dev = 0;
  ino_t ino = 0;
  FdKind kind = FdKind::other;
  std::uint32_t gen = 0;  // part of the epoll token: stale reports are ignored
  std::unique_ptr<Knote> read;
  std::unique_ptr<Knote> write;
};

// The epoll user data: what reported, and for fds and processes the number
// and a generation, so that a report from a registration the emulation has
// since forgotten (a file kept alive by a dup) is recognised and ignored.
enum class Source : std::uint64_t { wake = 0, signals = 1, fd = 2, proc = 3 };
constexpr int kSourceShift = 62;
constexpr std::uint64_t kGenMask = (std::uint64_t{1} << 30) - 1;

std::uint64_t token(Source s, std::uint32_t gen = 0, std::uint32_t number = 0) {
  return (static_cast<std::uint64_t>(s) << kSourceShift) | ((gen & kGenMask) << 32) | number;
}
Source token_source(std::uint64_t t) { return static_cast<Source>(t >> kSourceShift); }
std::uint32_t token_gen(std::uint64_t t) { return static_cast<std::uint32_t>((t >> 32) & kGenMask); }
std::uint32_t token_number(std::uint64_t t) { return static_cast<std::uint32_t>(t); }

struct Kq {
  std::mutex mu;
  // Below: guarded by mu, except the descriptors, which are set before the
  // kqueue is published and only cleared in a fork child.
  int epfd = -1;  // what kqueue() returned; the caller closes it
  int wakefd = -1;
  int sigfd = -1;
  std::atomic<bool> dead{false};  // fork child: the kqueue was not inherited
  sigset_t watched{};             // signals with a knote
  std::uint32_t next_gen = 1;
  std::unordered_map<int, FdEntry> fds;
  std::unordered_map<std::uintptr_t, std::unique_ptr<Knote>> users;
  std::map<int, std::unique_ptr<Knote>> signals;
  std::unordered_map<pid_t, std::unique_ptr<Knote>> procs;
  Knote* head = nullptr;
  Knote* tail = nullptr;
  std::deque<struct kevent> injected;

  Kq() { sigemptyset(&watched); }
  ~Kq() {
    if (wakefd >= 0) ::close(wakefd);
    if (sigfd >= 0) ::close(sigfd);
    for (auto& [pid, kn] : procs) ::close(kn->pidfd);
  }
};

// --------------------------------------------------------- the queue

void enqueue(Kq& kq, Knote& kn) {
  kn.queued = true;
  kn.next = nullptr;
  kn.prev = kq.tail;
  if (kq.tail != nullptr) {
    kq.tail->next = &kn;
  } else {
    kq.head = &kn;
  }
  kq.tail = &kn;
}

void unqueue(Kq& kq, Knote& kn) {
  if (!kn.queued) return;
  if (kn.prev != nullptr) {
    kn.prev->next = kn.next;
  } else {
    kq.head = kn.next;
  }
  if (kn.next != nullptr) {
    kn.next->prev = kn.prev;
  } else {
    kq.tail = kn.prev;
  }
  kn.prev = kn.next = nullptr;
  kn.queued = false;
}

// KNOTE_ACTIVATE: queued unless disabled. Returns whether it was queued now.
bool activate(Kq& kq, Knote& kn) {
  kn.active = true;
  if (kn.disabled || kn.queued) return false;
  enqueue(kq, kn);
  return true;
}

// Ends a kevent() blocked in another thread (EVFILT_USER, injected events).
void poke(const Kq& kq) {
  const std::uint64_t one = 1;
  // EAGAIN: the counter is saturated, so the eventfd is readable anyway.
  while (::write(kq.wakefd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

// --------------------------------------------------------- fd filters

bool same_file(int fd, const FdEntry& e) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && st.st_dev == e.dev && st.st_ino == e.ino;
}

// The fd was closed since it was registered: its knotes went with it.
void forget_fd(Kq& kq, int fd) {
  auto it = kq.fds.find(fd);
  if (it == kq.fds.end()) return;
  if (it->second.read) unqueue(kq, *it->second.read);
  if (it->second.write) unqueue(kq, *it->second.write);
  // No EPOLL_CTL_DEL: the number may name another file now. If the old file
  // is still open elsewhere, its registration lingers with a generation
  // nobody matches, until that file is closed.
  kq.fds.erase(it);
}

std::int64_t write_space(int fd, FdKind kind) {
  if (kind == FdKind::pipe) {
    const int size = ::fcntl(fd, F_GETPIPE_SZ);
    int used = 0;
    if (size < 0 || ::ioctl(fd, FIONREAD, &used) != 0) return 0;
    return std::max(0, size - used);
  }
  if (kind == FdKind::socket) {
    int size = 0;
    socklen_t len = sizeof size;
    int used = 0;
    if (::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &len) != 0 || ::ioctl(fd, SIOCOUTQ, &used) != 0)
      return 0;
    return std::max(0, size - used);
  }
  return 0;
}

// filt_soread / filt_sowrite / filt_piperead / filt_pipewrite, from what
// poll(2) and the FIONREAD family say. Sets data and EV_EOF; fflags stays 0
// (see the header: a socket's error cannot be read without clearing it).
bool fd_filter(Knote& kn, const FdEntry& e) {
  const int fd = static_cast<int>(kn.kev.ident);
  pollfd p{fd, POLLIN | POLLOUT | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) < 0) return false;
  const short r = p.revents;
  kn.kev.fflags = 0;
  if (kn.kev.filter == EVFILT_READ) {
    int avail = 0;
    // FIONREAD fails on listening sockets and on fds without a byte count
    // (eventfd, signalfd): count 1 for "something to read".
    if (::ioctl(fd, FIONREAD, &avail) != 0) avail = (r & POLLIN) != 0 ? 1 : 0;
    kn.kev.data = avail;
    if ((r & (POLLRDHUP | POLLHUP)) != 0) {
      kn.kev.flags |= EV_EOF;
      return true;
    }
    kn.kev.flags &= ~EV_EOF;
    return (r & (POLLIN | POLLERR)) != 0;
  }
  // A Linux pipe's write end says POLLERR once no reader is left; a socket
  // says POLLHUP once both directions are shut (peer closed or reset).
  const bool eof = e.kind == FdKind::pipe ? (r & POLLERR) != 0 : (r & POLLHUP) != 0;
  if (eof) {
    kn.kev.flags |= EV_EOF;
    kn.kev.data = e.kind == FdKind::pipe ? 0 : write_space(fd, e.kind);
    return true;
  }
  kn.kev.flags &= ~EV_EOF;
  kn.kev.data = write_space(fd, e.kind);
  return (r & (POLLOUT | POLLERR)) != 0;
}

// FreeBSD's pipe_kqfilter refuses EVFILT_WRITE when the other end is gone.
bool pipe_peer_closed(int fd) {
  const int mode = ::fcntl(fd, F_GETFL) & O_ACCMODE;
  pollfd p{fd, 0, 0};
  if (::poll(&p, 1, 0) < 0) return false;
  if (mode == O_RDONLY) return (p.revents & POLLHUP) != 0;
  if (mode == O_WRONLY) return (p.revents & POLLERR) != 0;
  return false;  // a FIFO opened read-write is its own peer
}

// ------------------------------------------------------ registration

// Flags a knote keeps from its first EV_ADD (kern_event.c ignores later
// changes to them).
unsigned short kept_flags(unsigned short flags) {
  return static_cast<unsigned short>(flags & ~(EV_ADD | EV_DELETE | EV_ENABLE | EV_DISABLE));
}

std::unique_ptr<Knote> new_knote(const struct kevent& kev) {
  auto kn = std::make_unique<Knote>();
  kn->kev = kev;
  kn->kev.flags = kept_flags(kev.flags);
  kn->kev.fflags = 0;
  kn->kev.data = 0;
  kn->sfflags = kev.fflags;
  kn->sdata = kev.data;
  kn->disabled = (kev.flags & EV_DISABLE) != 0;
  return kn;
}

// The part of kqueue_register that follows a modification of an existing
// knote: enable/disable, then the new udata.
void modify(Knote& kn, const struct kevent& kev) {
  if ((kev.flags & EV_ENABLE) != 0) {
    kn.disabled = false;
  } else if ((kev.flags & EV_DISABLE) != 0) {
    kn.disabled = true;
  }
  kn.kev.udata = kev.udata;
}

// done_ev_add: evaluate unless disabled, queue if active.
bool settle(Kq& kq, Knote& kn, bool event) {
  if (event) kn.active = true;
  if (kn.active && !kn.disabled && !kn.queued) {
    enqueue(kq, kn);
    return true;
  }
  return false;
}

int register_fd(Kq& kq, const struct kevent& kev) {
  if (kev.ident > static_cast<std::uintptr_t>(INT_MAX)) return EBADF;
  const int fd = static_cast<int>(kev.ident);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return EBADF;
  auto it = kq.fds.find(fd);
  if (it != kq.fds.end() && (it->second.dev != st.st_dev || it->second.ino != st.st_ino)) {
    forget_fd(kq, fd);
    it = kq.fds.end();
  }
  std::unique_ptr<Knote>* owner = nullptr;
  if (it != kq.fds.end()) owner = kev.filter == EVFILT_READ ? &it->second.read : &it->second.write;

  if (owner == nullptr || !*owner) {
    if ((kev.flags & EV_ADD) == 0) return ENOENT;
    const FdKind kind = S_ISSOCK(st.st_mode)   ? FdKind::socket
                        : S_ISFIFO(st.st_mode) ? FdKind::pipe
                                               : FdKind::other;
    if (kev.filter == EVFILT_WRITE && kind == FdKind::pipe && pipe_peer_closed(fd)) return EPIPE;
    if (it == kq.fds.end()) {
      FdEntry e;
      e.dev = st.st_dev;
      e.ino = st.st_ino;
      e.kind = kind;
      e.gen = kq.next_gen++;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.u64 = token(Source::fd, e.gen, static_cast<std::uint32_t>(fd));
      if (::epoll_ctl(kq.epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        // EEXIST: this file at this number is still registered from an entry
        // forgotten above (closed, then dup2'd back); take it over.
        if (errno != EEXIST || ::epoll_ctl(kq.epfd, EPOLL_CTL_MOD, fd, &ev) != 0) return errno;
      }
      it = kq.fds.emplace(fd, std::move(e)).first;
    }
    owner = kev.filter == EVFILT_READ ? &it->second.read : &it->second.write;
    *owner = new_knote(kev);
  } else {
    if ((kev.flags & EV_DELETE) != 0) {
      unqueue(kq, **owner);
      owner->reset();
      if (!it->second.read && !it->second.write) {
        ::epoll_ctl(kq.epfd, EPOLL_CTL_DEL, fd, nullptr);
        kq.fds.erase(it);
      }
      return 0;
    }
    modify(**owner, kev);
    (*owner)->sfflags = kev.fflags;
    (*owner)->sdata = kev.data;
  }
  Knote& kn = **owner;
  settle(kq, kn, !kn.disabled && fd_filter(kn, it->second));
  return 0;
}

// filt_userattach and filt_usertouch(EVENT_REGISTER).
int register_user(Kq& kq, const struct kevent& kev) {
  auto it = kq.users.find(kev.ident);
  if (it == kq.users.end()) {
    if ((kev.flags & EV_ADD) == 0) return ENOENT;
    it = kq.users.emplace(kev.ident, new_knote(kev)).first;
    it->second->triggered = (kev.fflags & NOTE_TRIGGER) != 0;
  } else {
    Knote& kn = *it->second;
    if ((kev.flags & EV_DELETE) != 0) {
      unqueue(kq, kn);
      kq.users.erase(it);
      return 0;
    }
    modify(kn, kev);
    if ((kev.fflags & NOTE_TRIGGER) != 0) kn.triggered = true;
    const unsigned int value = kev.fflags & NOTE_FFLAGSMASK;
    switch (kev.fflags & NOTE_FFCTRLMASK) {
      case NOTE_FFAND:
        kn.sfflags &= value;
        break;
      case NOTE_FFOR:
        kn.sfflags |= value;
        break;
      case NOTE_FFCOPY:
        kn.sfflags = value;
        break;
      default:  // NOTE_FFNOP
        break;
    }
    kn.sdata = kev.data;
    if ((kev.flags & EV_CLEAR) != 0) kn.triggered = false;
  }
  Knote& kn = *it->second;
  if (settle(kq, kn, !kn.disabled && kn.triggered)) poke(kq);
  return 0;
}

// The signalfd reads exactly the watched signals; it exists while any does.
int update_signalfd(Kq& kq) {
  const int fd = ::signalfd(kq.sigfd, &kq.watched, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) return errno;
  if (kq.sigfd < 0) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = token(Source::signals);
    if (::epoll_ctl(kq.epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      const int err = errno;
      ::close(fd);
      return err;
    }
    kq.sigfd = fd;
  }
  return 0;
}

// Deletes a signal knote. A delivery still pending in the signalfd reaches
// the thread when kevent() returns its mask, and takes the disposition of
// that moment (the backend's SIG_IGN, which it restores only afterwards).
void drop_signal(Kq& kq, int signo, sigset_t& mask) {
  auto it = kq.signals.find(signo);
  if (it == kq.signals.end()) return;
  unqueue(kq, *it->second);
  if (it->second->unblock_on_delete) sigdelset(&mask, signo);
  kq.signals.erase(it);
  sigdelset(&kq.watched, signo);
  update_signalfd(kq);  // a smaller mask cannot fail where a larger one did not
}

// filt_sigattach: EV_CLEAR is implied. `mask` is the mask the calling thread
// gets back when kevent() returns.
int register_signal(Kq& kq, const struct kevent& kev, sigset_t& mask) {
  if (kev.ident == 0 || kev.ident >= static_cast<std::uintptr_t>(NSIG)) return EINVAL;
  const int signo = static_cast<int>(kev.ident);
  auto it = kq.signals.find(signo);
  if (it == kq.signals.end()) {
    if ((kev.flags & EV_ADD) == 0) return ENOENT;
    auto kn = new_knote(kev);
    kn->kev.flags |= EV_CLEAR;
    sigaddset(&kq.watched, signo);
    if (const int err = update_signalfd(kq); err != 0) {
      sigdelset(&kq.watched, signo);
      return err;
    }
    kn->unblock_on_delete = sigismember(&mask, signo) == 0;
    sigaddset(&mask, signo);
    it = kq.signals.emplace(signo, std::move(kn)).first;
  } else {
    Knote& kn = *it->second;
    if ((kev.flags & EV_DELETE) != 0) {
      drop_signal(kq, signo, mask);
      return 0;
    }
    modify(kn, kev);
    kn.sfflags = kev.fflags;
  }
  Knote& kn = *it->second;
  settle(kq, kn, !kn.disabled && kn.count != 0);
  return 0;
}

std::atomic<bool> zombie_esrch{false};

void proc_exited(Kq& kq, Knote& kn);

// filt_procattach: a zombie attaches and fires at once.
int register_proc(Kq& kq, const struct kevent& kev) {
  const auto pid = static_cast<pid_t>(kev.ident);
  if (pid <= 0 || static_cast<std::uintptr_t>(pid) != kev.ident) return ESRCH;
  auto it = kq.procs.find(pid);
  if (it == kq.procs.end()) {
    if ((kev.flags & EV_ADD) == 0) return ENOENT;
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) return errno;
    ::fcntl(pidfd, F_SETFD, FD_CLOEXEC);
    pollfd p{pidfd, POLLIN, 0};
    const bool exited = ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
    if (exited && zombie_esrch.load()) {
      ::close(pidfd);
      return ESRCH;
    }
    auto kn = new_knote(kev);
    kn->pidfd = pidfd;
    kn->gen = kq.next_gen++;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    ev.data.u64 = token(Source::proc, kn->gen, static_cast<std::uint32_t>(pid));
    if (::epoll_ctl(kq.epfd, EPOLL_CTL_ADD, pidfd, &ev) != 0) {
      const int err = errno;
      ::close(pidfd);
      return err;
    }
    it = kq.procs.emplace(pid, std::move(kn)).first;
    // filt_procattach fires at once for a zombie (queued only if enabled).
    // That may delete the knote (nobody asked for NOTE_EXIT), which is why
    // nothing below touches it again.
    if (exited) {
      proc_exited(kq, *it->second);
      return 0;
    }
  } else {
    Knote& kn = *it->second;
    if ((kev.flags & EV_DELETE) != 0) {
      unqueue(kq, kn);
      ::close(kn.pidfd);  // also leaves the epoll set
      kq.procs.erase(it);
      return 0;
    }
    modify(kn, kev);
    kn.sfflags = kev.fflags;
  }
  Knote& kn = *it->second;
  settle(kq, kn, !kn.disabled && kn.exited);
  return 0;
}

void drop_proc(Kq& kq, pid_t pid) {
  auto it = kq.procs.find(pid);
  if (it == kq.procs.end()) return;
  unqueue(kq, *it->second);
  ::close(it->second->pidfd);
  kq.procs.erase(it);
}

// filt_proc(NOTE_EXIT): EV_EOF | EV_ONESHOT, or dropped unseen when the
// caller did not ask for NOTE_EXIT.
void proc_exited(Kq& kq, Knote& kn) {
  if (kn.exited) return;
  kn.exited = true;
  if ((kn.sfflags & NOTE_EXIT) == 0) {
    drop_proc(kq, static_cast<pid_t>(kn.kev.ident));
    return;
  }
  kn.kev.fflags |= NOTE_EXIT;
  kn.kev.flags |= EV_EOF | EV_ONESHOT;
  activate(kq, kn);
}

// The wait status, as waitpid(2) would give it, without reaping.
std::int64_t exit_status(pid_t pid) {
  siginfo_t si{};
  if (::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid != pid)
    return 0;
  switch (si.si_code) {
    case CLD_EXITED:
      return (si.si_status & 0xff) << 8;
    case CLD_KILLED:
      return si.si_status & 0x7f;
    case CLD_DUMPED:
      return (si.si_status & 0x7f) | 0x80;
    default:
      return 0;
  }
}

int register_change(Kq& kq, const struct kevent& kev, sigset_t& mask) {
  switch (kev.filter) {
    case EVFILT_READ:
    case EVFILT_WRITE:
      return register_fd(kq, kev);
    case EVFILT_USER:
      return register_user(kq, kev);
    case EVFILT_SIGNAL:
      return register_signal(kq, kev, mask);
    case EVFILT_PROC:
      return register_proc(kq, kev);
    default:
      return EINVAL;
  }
}

// ---------------------------------------------------------- collecting

// Turns epoll reports into activations.
void absorb(Kq& kq, const epoll_event* evs, int n) {
  for (int i = 0; i < n; ++i) {
    const std::uint64_t t = evs[i].data.u64;
    switch (token_source(t)) {
      case Source::wake: {
        std::uint64_t count = 0;
        while (::read(kq.wakefd, &count, sizeof count) < 0 && errno == EINTR) {
        }
        break;
      }
      case Source::signals: {
        signalfd_siginfo info[16];
        for (;;) {
          const ssize_t r = ::read(kq.sigfd, info, sizeof info);
          if (r < 0 && errno == EINTR) continue;
          if (r <= 0) break;
          for (std::size_t k = 0; k < static_cast<std::size_t>(r) / sizeof info[0]; ++k) {
            auto it = kq.signals.find(static_cast<int>(info[k].ssi_signo));
            if (it == kq.signals.end()) continue;
            ++it->second->count;
            activate(kq, *it->second);
          }
        }
        break;
      }
      case Source::fd: {
        auto it = kq.fds.find(static_cast<int>(token_number(t)));
        if (it == kq.fds.end() || it->second.gen != token_gen(t)) break;
        const std::uint32_t e = evs[i].events;
        if (it->second.read && (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0)
          activate(kq, *it->second.read);
        if (it->second.write && (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0) activate(kq, *it->second.write);
        break;
      }
      case Source::proc: {
        auto it = kq.procs.find(static_cast<pid_t>(token_number(t)));
        if (it == kq.procs.end() || it->second->gen != token_gen(t)) break;
        proc_exited(kq, *it->second);
        break;
      }
    }
  }
}

constexpr int kEpollBatch = 64;

// Everything the kernel has reported so far, without blocking.
void absorb_pending(Kq& kq) {
  epoll_event evs[kEpollBatch];
  for (;;) {
    const int n = ::epoll_wait(kq.epfd, evs, kEpollBatch, 0);
    if (n > 0) absorb(kq, evs, n);
    if (n < kEpollBatch) return;
  }
}

void delete_knote(Kq& kq, Knote& kn, sigset_t& mask) {
  unqueue(kq, kn);
  switch (kn.kev.filter) {
    case EVFILT_READ:
    case EVFILT_WRITE: {
      const int fd = static_cast<int>(kn.kev.ident);
      auto it = kq.fds.find(fd);
      (kn.kev.filter == EVFILT_READ ? it->second.read : it->second.write).reset();
      if (!it->second.read && !it->second.write) {
        ::epoll_ctl(kq.epfd, EPOLL_CTL_DEL, fd, nullptr);
        kq.fds.erase(it);
      }
      break;
    }
    case EVFILT_USER:
      kq.users.erase(kn.kev.ident);
      break;
    case EVFILT_PROC:
      drop_proc(kq, static_cast<pid_t>(kn.kev.ident));
      break;
    case EVFILT_SIGNAL:
      drop_signal(kq, static_cast<int>(kn.kev.ident), mask);
      break;
    default:
      break;
  }
}

// kqueue_scan: collects up to `max` events from the queue.
int scan(Kq& kq, struct kevent* out, int max, sigset_t& mask) {
  int n = 0;
  while (!kq.injected.empty() && n < max) {
    out[n++] = kq.injected.front();
    kq.injected.pop_front();
  }
  Knote marker;
  enqueue(kq, marker);
  while (n < max) {
    Knote* kn = kq.head;
    if (kn == &marker) break;
    unqueue(kq, *kn);
    if (kn->disabled) continue;  // stays active: enabling queues it again
    const bool oneshot = (kn->kev.flags & EV_ONESHOT) != 0;
    bool fire = false;
    switch (kn->kev.filter) {
      case EVFILT_READ:
      case EVFILT_WRITE: {
        const int fd = static_cast<int>(kn->kev.ident);
        const FdEntry& e = kq.fds.at(fd);
        if (!same_file(fd, e)) {
          forget_fd(kq, fd);
          continue;
        }
        fire = fd_filter(*kn, e) || oneshot;
        break;
      }
      case EVFILT_USER:
        fire = kn->triggered || oneshot;
        kn->kev.fflags = kn->sfflags;
        kn->kev.data = kn->sdata;
        break;
      case EVFILT_SIGNAL:
        fire = kn->count != 0;
        kn->kev.data = kn->count;
        break;
      case EVFILT_PROC:
        fire = kn->exited;
        kn->kev.data = exit_status(static_cast<pid_t>(kn->kev.ident));
        break;
      default:
        break;
    }
    if (!fire) {
      kn->active = false;
      continue;
    }
    out[n++] = kn->kev;
    if (oneshot) {
      delete_knote(kq, *kn, mask);
    } else if ((kn->kev.flags & (EV_CLEAR | EV_DISPATCH)) != 0) {
      if ((kn->kev.flags & EV_CLEAR) != 0) {
        kn->triggered = false;
        kn->count = 0;
      }
      if ((kn->kev.flags & EV_DISPATCH) != 0) kn->disabled = true;
      kn->active = false;
    } else {
      enqueue(kq, *kn);
    }
  }
  unqueue(kq, marker);
  return n;
}

using Clock = std::chrono::steady_clock;

// One blocking wait on the epoll set with the caller's signal mask, so that
// signals interrupt it (EINTR) exactly as they would interrupt kevent().
int wait_epoll(Kq& kq, epoll_event* evs, const Clock::duration* remaining, const sigset_t& mask) {
  static std::atomic<bool> have_pwait2{true};
  if (have_pwait2.load(std::memory_order_relaxed)) {
    timespec ts{};
    if (remaining != nullptr) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(*remaining).count();
      ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
      ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    }
    const int n = ::epoll_pwait2(kq.epfd, evs, kEpollBatch, remaining != nullptr ? &ts : nullptr, &mask);
    if (n >= 0 || (errno != ENOSYS && errno != EPERM)) return n;
    have_pwait2.store(false, std::memory_order_relaxed);
  }
  int ms = -1;
  if (remaining != nullptr) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(*remaining).count();
    const auto up = ns / 1'000'000 + (ns % 1'000'000 != 0 ? 1 : 0);
    ms = up > INT_MAX ? INT_MAX : static_cast<int>(up);
  }
  return ::epoll_pwait(kq.epfd, evs, kEpollBatch, ms, &mask);
}

int collect(Kq& kq, std::unique_lock<std::mutex>& lock, struct kevent* out, int max, const timespec* timeout,
            sigset_t& mask) {
  const bool forever = timeout == nullptr;
  Clock::time_point deadline{};
  if (!forever) {
    const auto span = std::chrono::seconds(timeout->tv_sec) + std::chrono::nanoseconds(timeout->tv_nsec);
    const auto now = Clock::now();
    deadline = span > Clock::time_point::max() - now
                   ? Clock::time_point::max()
                   : now + std::chrono::duration_cast<Clock::duration>(span);
  }
  for (;;) {
    absorb_pending(kq);
    if (const int n = scan(kq, out, max, mask); n > 0) return n;
    Clock::duration remaining{};
    if (!forever) {
      const auto now = Clock::now();
      if (now >= deadline) return 0;
      remaining = deadline - now;
    }
    epoll_event evs[kEpollBatch];
    lock.unlock();
    const int n = wait_epoll(kq, evs, forever ? nullptr : &remaining, mask);
    const int err = errno;
    lock.lock();
    if (n < 0) {
      // FreeBSD turns an interrupted sleep into EINTR and never restarts.
      errno = err;
      return -1;
    }
    absorb(kq, evs, n);
  }
}

// ------------------------------------------------------------ registry

struct Registry {
  std::mutex mu;
  std::vector<std::shared_ptr<Kq>> by_fd;  // index: the kqueue's descriptor
};

// Never destroyed: a kevent() on another thread may still run during exit.
Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

std::shared_ptr<Kq> find_kq(int fd) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  if (fd < 0 || static_cast<std::size_t>(fd) >= r.by_fd.size()) return nullptr;
  return r.by_fd[static_cast<std::size_t>(fd)];
}

// Whether kq's descriptor still names its epoll instance: the caller may
// have closed it and the number been reused. Our eventfd is registered only
// there, and EPOLL_CTL_MOD with its own settings succeeds only where it is
// registered (elsewhere: EBADF, EINVAL for a non-epoll fd, ENOENT).
bool still_ours(const Kq& kq) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = token(Source::wake);
  return ::epoll_ctl(kq.epfd, EPOLL_CTL_MOD, kq.wakefd, &ev) == 0;
}

// kqueue(2): "The queue is not inherited by a child created with fork(2)."
void atfork_prepare() { registry().mu.lock(); }
void atfork_parent() { registry().mu.unlock(); }
void atfork_child() {
  Registry& r = registry();
  // Another thread of the parent may have held a kqueue's mutex at the fork:
  // the child never destroys or locks them, it only closes what it inherited.
  static auto* abandoned = new std::vector<std::shared_ptr<Kq>>();
  for (auto& kq : r.by_fd) {
    if (!kq) continue;
    kq->dead = true;
    // A kqueue closed in the parent may have left its number to another
    // file, which the child must keep.
    if (still_ours(*kq)) ::close(kq->epfd);
    ::close(kq->wakefd);
    if (kq->sigfd >= 0) ::close(kq->sigfd);
    kq->epfd = kq->wakefd = kq->sigfd = -1;
    abandoned->push_back(std::move(kq));
  }
  r.by_fd.clear();
  r.mu.unlock();
}

// Blocks every signal for the scope; `caller` is the mask the thread gets
// back (signal watches add to it).
class BlockSignals {
 public:
  BlockSignals() {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, &caller_);
  }
  ~BlockSignals() { ::pthread_sigmask(SIG_SETMASK, &caller_, nullptr); }
  BlockSignals(const BlockSignals&) = delete;
  BlockSignals& operator=(const BlockSignals&) = delete;
  sigset_t& caller() { return caller_; }

 private:
  sigset_t caller_{};
};

}  // namespace

extern "C" int kqueue(void) {
  static std::once_flag once;
  std::call_once(once, [] { ::pthread_atfork(atfork_prepare, atfork_parent, atfork_child); });
  BlockSignals block;
  auto kq = std::make_shared<Kq>();
  // Not close-on-exec, like kqueue() itself (FreeBSD 14 adds kqueuex()).
  kq->epfd = ::epoll_create1(0);
  if (kq->epfd < 0) return -1;
  kq->wakefd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;  // level: a poke is seen until absorb() reads it
  ev.data.u64 = token(Source::wake);
  if (kq->wakefd < 0 || ::epoll_ctl(kq->epfd, EPOLL_CTL_ADD, kq->wakefd, &ev) != 0) {
    const int err = errno;
    ::close(kq->epfd);
    errno = err;
    return -1;
  }
  const int fd = kq->epfd;
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  // Kqueues whose descriptor was closed (the number may be free, reused by
  // another file, or this new kqueue's) are gone; release what the
  // emulation holds for them.
  for (std::size_t i = 0; i < r.by_fd.size(); ++i) {
    if (r.by_fd[i] && (static_cast<int>(i) == fd || !still_ours(*r.by_fd[i]))) r.by_fd[i].reset();
  }
  if (static_cast<std::size_t>(fd) >= r.by_fd.size()) r.by_fd.resize(static_cast<std::size_t>(fd) + 1);
  r.by_fd[static_cast<std::size_t>(fd)] = std::move(kq);
  return fd;
}

extern "C" int kevent(int kqfd, const struct kevent* changelist, int nchanges, struct kevent* eventlist,
                      int nevents, const struct timespec* timeout) {
  if (nchanges < 0 || nevents < 0) {
    errno = EINVAL;
    return -1;
  }
  BlockSignals block;
  const std::shared_ptr<Kq> kq = find_kq(kqfd);
  if (!kq || kq->dead) {
    errno = EBADF;
    return -1;
  }
  std::unique_lock lock(kq->mu);
  int nerrors = 0;
  for (int i = 0; i < nchanges; ++i) {
    struct kevent kev = changelist[i];
    if (kev.filter == 0) continue;
    kev.flags &= static_cast<unsigned short>(~EV_SYSFLAGS);
    const int err = register_change(*kq, kev, block.caller());
    if (err != 0 || (kev.flags & EV_RECEIPT) != 0) {
      if (nevents == 0) {
        if (err == 0) return 0;
        errno = err;
        return -1;
      }
      kev.flags = EV_ERROR;
      kev.data = err;
      eventlist[nerrors++] = kev;
      --nevents;
    }
  }
  if (nerrors > 0) return nerrors;
  if (nevents == 0) return 0;
  if (timeout != nullptr &&
      (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1'000'000'000)) {
    errno = EINVAL;
    return -1;
  }
  return collect(*kq, lock, eventlist, nevents, timeout, block.caller());
}

extern "C" int kqueue_emu_set_zombie_esrch(int on) { return zombie_esrch.exchange(on != 0) ? 1 : 0; }

extern "C" int kqueue_emu_inject(int kqfd, const struct kevent* ev) {
  BlockSignals block;
  const std::shared_ptr<Kq> kq = find_kq(kqfd);
  if (!kq || kq->dead) {
    errno = EBADF;
    return -1;
  }
  std::lock_guard lock(kq->mu);
  kq->injected.push_back(*ev);
  poke(*kq);
  return 0;
}
