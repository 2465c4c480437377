/* echo_epoll.c: the baseline of the echo benchmark. A plain single-threaded
 * epoll echo server in C, written the way a careful C programmer would write
 * one without a framework:
 *
 *   - every socket non-blocking, accept4() and signalfd in the same epoll set;
 *   - level-triggered, so one read() per readable event suffices: if a read
 *     leaves bytes behind, epoll reports the socket again on the next round,
 *     and no read is wasted on EAGAIN;
 *   - what read() returned is written back at once; only when the kernel's
 *     send buffer is full does the rest go to a per-connection buffer, and the
 *     connection then waits for EPOLLOUT instead of EPOLLIN (backpressure:
 *     a client that does not read stops being read);
 *   - TCP_NODELAY on every connection, as the other servers do.
 *
 *   echo_epoll [--port N]      (default 0: the kernel picks a port)
 *
 * Listens on 127.0.0.1 and prints "port=N impl=epoll" on stdout once it
 * accepts connections; stops on SIGTERM or SIGINT (closing every
 * connection) and exits 0. Errors go to stderr with the failing call. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
  kReadBuffer = 16 * 1024,
  kMaxEvents = 512,
};

/* One client. `pending` holds the bytes the kernel refused to take yet; it is
 * empty except while the connection waits for EPOLLOUT. */
struct Conn {
  int fd;
  char* pending;
  size_t pending_off;
  size_t pending_len;
};

/* The listening socket and the signalfd are told apart from connections by
 * these two sentinels in epoll's user data. */
static char listen_tag, signal_tag;

static void die(const char* call) {
  fprintf(stderr, "echo_epoll: %s: %s\n", call, strerror(errno));
  exit(1);
}

static void set_interest(int ep, struct Conn* c, unsigned events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) die("epoll_ctl(MOD)");
}

static void close_conn(struct Conn* c) {
  /* close() removes the fd from the epoll set (no dup()s exist). */
  close(c->fd);
  free(c->pending);
  free(c);
}

/* Sends buf[0..len) and keeps what the kernel refused. Returns 0, or -1 when
 * the connection is dead and has been closed. */
static int send_or_keep(int ep, struct Conn* c, const char* buf, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = send(c->fd, buf + off, len - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      close_conn(c);
      return -1;
    }
  }
  if (off == len) return 0;
  /* Rare: the peer is not reading. Keep the rest and stop reading it until
   * the send buffer drains, so memory stays bounded per connection. */
  size_t rest = len - off;
  c->pending = malloc(rest);
  if (!c->pending) die("malloc");
  memcpy(c->pending, buf + off, rest);
  c->pending_off = 0;
  c->pending_len = rest;
  set_interest(ep, c, EPOLLOUT);
  return 0;
}

static void on_readable(int ep, struct Conn* c, char* buf) {
  ssize_t n;
  do {
    n = read(c->fd, buf, kReadBuffer);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    send_or_keep(ep, c, buf, (size_t)n);
  } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
    close_conn(c); /* EOF or a reset */
  }
}

static void on_writable(int ep, struct Conn* c) {
  while (c->pending_off < c->pending_len) {
    ssize_t n = send(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off, MSG_NOSIGNAL);
    if (n > 0) {
      c->pending_off += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    } else {
      close_conn(c);
      return;
    }
  }
  free(c->pending);
  c->pending = NULL;
  c->pending_off = c->pending_len = 0;
  set_interest(ep, c, EPOLLIN);
}

static void on_acceptable(int ep, int lfd) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      /* EMFILE and friends: leave the rest in the backlog; level-triggered
       * epoll reports the listener again. */
      perror("echo_epoll: accept4");
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct Conn* c = calloc(1, sizeof *c);
    if (!c) die("calloc");
    c->fd = fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl(ADD)");
  }
}

int main(int argc, char** argv) {
  int port = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: %s [--port N]\n", argv[0]);
      return 2;
    }
  }

  /* Signals arrive through a signalfd, so stopping is one more event. */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  if (sigprocmask(SIG_BLOCK, &stop, NULL) != 0) die("sigprocmask");
  int sfd = signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) die("signalfd");

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  int one = 1;
  if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) die("setsockopt(SO_REUSEADDR)");
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr*)&addr, sizeof addr) != 0) die("bind(127.0.0.1)");
  if (listen(lfd, 4096) != 0) die("listen");
  socklen_t len = sizeof addr;
  if (getsockname(lfd, (struct sockaddr*)&addr, &len) != 0) die("getsockname");

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listen_tag};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0) die("epoll_ctl(ADD, listener)");
  ev.data.ptr = &signal_tag;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) != 0) die("epoll_ctl(ADD, signalfd)");

  printf("port=%d impl=epoll\n", ntohs(addr.sin_port));
  fflush(stdout);

  /* One buffer for every read: the bytes go straight back out, so no
   * connection needs its own unless the kernel refuses some of them. */
  static char buf[kReadBuffer];
  struct epoll_event events[kMaxEvents];
  int running = 1;
  while (running) {
    int n = epoll_wait(ep, events, kMaxEvents, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      void* tag = events[i].data.ptr;
      if (tag == &listen_tag) {
        on_acceptable(ep, lfd);
      } else if (tag == &signal_tag) {
        running = 0;
      } else {
        struct Conn* c = tag;
        /* EPOLLERR/EPOLLHUP: the read or send meets the real error. */
        if (c->pending)
          on_writable(ep, c);
        else
          on_readable(ep, c, buf);
      }
    }
  }
  /* Connections still open are closed by exit; the listener goes first so
   * no new client is accepted during the teardown. */
  close(lfd);
  close(ep);
  return 0;
}
