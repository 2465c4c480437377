#!/usr/bin/env python3
"""Start real servers on loopback, run a command against them, stop them.

    servers.py [--postgres] [--redis] [--http BINARY] -- COMMAND [ARG...]

For the tests (and the benchmark) of libspindle_hooks with unmodified
client libraries. Every server gets a temporary directory and a free
loopback port, and is stopped (and its directory removed) when the command
ends, fails, or this script is interrupted (SIGINT, SIGTERM: meson test's
timeout). The command sees:

  SPINDLE_PG_CONNINFO   libpq conninfo: "host=127.0.0.1 port=N user=postgres
                        dbname=postgres sslmode=disable gssencmode=disable"
                        (the server has neither, so the client need not ask)
  SPINDLE_REDIS_PORT    redis-server's port on 127.0.0.1
  SPINDLE_HTTP_PORT     the HTTP example server's port on 127.0.0.1

A server that cannot be found or started is a failure (exit status 1),
never a skip.

PostgreSQL 15: initdb into the temporary directory (trust authentication,
fsync off), then `postgres` itself as a child process listening on
127.0.0.1 and on a Unix socket in the directory. PostgreSQL refuses to run
as root, so as root both run as the `postgres` system user (created by
Debian's postgresql package); otherwise as the calling user. The binaries
are looked up on PATH, then in /usr/lib/postgresql/<version>/bin.

redis-server: --save '' --appendonly no, so nothing is written to disk;
--hz 100, so blocking commands time out within 10 ms of their timeout
(the default 10 Hz rounds a 0.2 s BLPOP up to 0.3 s).

HTTP: BINARY is examples/http_server, started with --port 0; the port is
read from its "listening on 127.0.0.1:PORT" line.

Python 3 standard library only.
"""

import argparse
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class Failure(Exception):
    pass


class Interrupted(Exception):
    pass


def say(msg):
    print(f"servers.py: {msg}", file=sys.stderr, flush=True)


def free_port():
    # A port the kernel just handed out and released; a server that still
    # loses the race to another process is retried with a new port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(name, extra_globs=()):
    found = shutil.which(name)
    if found:
        return found
    candidates = []
    for pattern in extra_globs:
        candidates.extend(glob.glob(pattern))

    def version(path):
        m = re.search(r"/(\d+)/bin/", path)
        return int(m.group(1)) if m else 0

    candidates.sort(key=version, reverse=True)
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    raise Failure(f"{name} not found (on PATH or in {', '.join(extra_globs) or 'no other place'})")


def tail(path, lines=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


def stop_process(proc, sig, name):
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        say(f"{name} did not stop within {STOP_TIMEOUT:.0f} s; killing it")
        proc.kill()
        proc.wait()


class Postgres:
    def __init__(self, workdir):
        self.workdir = workdir
        self.proc = None
        self.log = os.path.join(workdir, "postgres.log")
        pg_globs = ("/usr/lib/postgresql/*/bin/{}",)
        self.initdb = find_binary("initdb", [g.format("initdb") for g in pg_globs])
        self.postgres = find_binary("postgres", [g.format("postgres") for g in pg_globs])
        self.isready = find_binary("pg_isready", [g.format("pg_isready") for g in pg_globs])
        self.run_as = {}
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise Failure("running as root, and there is no 'postgres' user to run PostgreSQL as "
                              "(install the postgresql package, or run the tests as a non-root user)")
            self.run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
        else:
            self.uid, self.gid = os.geteuid(), os.getegid()

    def start(self):
        data = os.path.join(self.workdir, "pgdata")
        sockdir = os.path.join(self.workdir, "pgsock")
        for d in (data, sockdir):
            os.mkdir(d, 0o700)
            os.chown(d, self.uid, self.gid)
        with open(self.log, "w"):
            pass
        os.chown(self.log, self.uid, self.gid)
        init = subprocess.run(
            [self.initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
             "--no-sync"],
            cwd=self.workdir, capture_output=True, text=True, **self.run_as)
        if init.returncode != 0:
            raise Failure(f"initdb failed ({init.returncode}):\n{init.stdout}{init.stderr}")
        for attempt in range(3):
            port = free_port()
            log = open(self.log, "a")
            self.proc = subprocess.Popen(
                [self.postgres, "-D", data, "-p", str(port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sockdir}",
                 "-c", "max_connections=150", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off"],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                **self.run_as)
            log.close()
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                ready = subprocess.run([self.isready, "-q", "-h", "127.0.0.1", "-p", str(port),
                                        "-U", "postgres", "-t", "2"])
                if ready.returncode == 0:
                    self.port = port
                    conninfo = (f"host=127.0.0.1 port={port} user=postgres dbname=postgres "
                                "sslmode=disable gssencmode=disable")
                    return {"SPINDLE_PG_CONNINFO": conninfo}
                time.sleep(0.1)
            if self.proc.poll() is None:
                break  # running but never ready: not a port clash
            say(f"postgres exited ({self.proc.returncode}) on port {port}, attempt {attempt + 1}")
        self.stop()
        raise Failure(f"PostgreSQL did not start; its log:\n{tail(self.log)}")

    def stop(self):
        # SIGINT: "fast shutdown" (ends the sessions, then the server).
        stop_process(self.proc, signal.SIGINT, "postgres")


class Redis:
    def __init__(self, workdir):
        self.workdir = workdir
        self.proc = None
        self.log = os.path.join(workdir, "redis.log")
        self.binary = find_binary("redis-server", ["/usr/bin/redis-server", "/usr/sbin/redis-server"])

    def ping(self, port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self):
        for attempt in range(3):
            port = free_port()
            log = open(self.log, "a")
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.workdir, "--daemonize", "no",
                 "--maxclients", "1000", "--hz", "100"],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self.ping(port):
                    return {"SPINDLE_REDIS_PORT": str(port)}
                time.sleep(0.05)
            if self.proc.poll() is None:
                break
            say(f"redis-server exited ({self.proc.returncode}) on port {port}, attempt {attempt + 1}")
        self.stop()
        raise Failure(f"redis-server did not start; its log:\n{tail(self.log)}")

    def stop(self):
        stop_process(self.proc, signal.SIGTERM, "redis-server")


class Http:
    def __init__(self, workdir, binary):
        self.workdir = workdir
        self.proc = None
        self.log = os.path.join(workdir, "http.log")
        # Absolute: the server runs in the temporary directory.
        self.binary = os.path.abspath(binary)
        if not os.access(self.binary, os.X_OK):
            raise Failure(f"HTTP server {self.binary} not found or not executable")

    def start(self):
        log = open(self.log, "w")
        # Output to a file, not a pipe: a pipe nobody drains would block it.
        self.proc = subprocess.Popen([self.binary, "--port", "0"], cwd=self.workdir,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            with open(self.log, errors="replace") as f:
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", f.read())
            if m:
                return {"SPINDLE_HTTP_PORT": m.group(1)}
            time.sleep(0.05)
        self.stop()
        raise Failure(f"{self.binary} did not start; its output:\n{tail(self.log)}")

    def stop(self):
        stop_process(self.proc, signal.SIGTERM, "http server")


def main():
    argv = sys.argv[1:]
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    split = argv.index("--")
    ap = argparse.ArgumentParser(usage=__doc__)
    ap.add_argument("--postgres", action="store_true")
    ap.add_argument("--redis", action="store_true")
    ap.add_argument("--http", metavar="BINARY")
    args = ap.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        ap.error("no command after --")

    def interrupted(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)

    workdir = tempfile.mkdtemp(prefix="spindle-servers-")
    # The postgres user must be able to reach its directories inside.
    os.chmod(workdir, 0o755)
    servers = []
    child = None
    try:
        env = dict(os.environ)
        if args.postgres:
            servers.append(Postgres(workdir))
        if args.redis:
            servers.append(Redis(workdir))
        if args.http:
            servers.append(Http(workdir, args.http))
        for s in servers:
            t0 = time.monotonic()
            env.update(s.start())
            say(f"{type(s).__name__.lower()} ready in {time.monotonic() - t0:.1f} s")
        child = subprocess.Popen(command, env=env)
        rc = child.wait()
        return rc if rc >= 0 else 128 - rc
    except (Failure, OSError) as e:
        say(f"FAILED: {e}")
        return 1
    except Interrupted as e:
        say(f"interrupted by {e}; stopping the command and the servers")
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for s in reversed(servers):
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
