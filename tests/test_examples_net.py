#!/usr/bin/env python3
"""Checks the network examples by talking to them over loopback.

    test_examples_net.py echo BINARY        examples/echo_server
    test_examples_net.py chat BINARY        examples/chat_server
    test_examples_net.py http BINARY        examples/http_server
    test_examples_net.py http_fetch BINARY  examples/http_fetch (http_server beside it)

Each server check starts the server with --port 0, reads "listening on
HOST:PORT" from its output, connects real clients, and checks what they
receive and how the server stops on SIGTERM (and SIGINT). The http_fetch
check runs the client example against a server of its own that holds every
answer until all the example's requests have arrived.
Every wait has a deadline, so a broken program fails the test instead of
hanging it. Standard library only.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

DEADLINE = 10.0  # seconds for any single expected event


class Failure(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failure(what)


class Server:
    """The example process; its stdout lines are collected by a thread."""

    def __init__(self, binary: str, args: list[str]):
        self.proc = subprocess.Popen([binary, "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        line = self.expect(r"^listening on ")
        m = re.match(r"listening on ([0-9.]+):(\d+)", line)
        check(m is not None, f"bad listening line: {line!r}")
        self.port = int(m.group(2))

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, pattern: str, timeout: float = DEADLINE) -> str:
        """Waits for an output line matching pattern (earlier lines are kept in the log)."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise Failure(f"server printed nothing matching {pattern!r} within {timeout} s")
            if line is None:
                raise Failure(f"server exited before printing {pattern!r}")
            self.log.append(line)
            print(f"  server| {line}")
            if re.search(pattern, line):
                return line

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"server still running {timeout} s after it should have exited")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def recv_exact(s: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        check(chunk != b"", f"EOF after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True


def wait_until(cond, what: str, timeout: float = DEADLINE) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise Failure(f"timed out waiting for {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------------------
# echo_server

def test_echo(binary: str) -> None:
    server = Server(binary, ["--grace", "1.5"])
    try:
        a, b, c = server.connect(), server.connect(), server.connect()
        # Small messages interleaved across connections, each echoed whole.
        for i in range(50):
            for s, tag in ((a, b"a"), (b, b"b"), (c, b"c")):
                msg = tag * (i + 1) + b"\n"
                s.sendall(msg)
                check(recv_exact(s, len(msg)) == msg, f"echo of message {i} differs")
        # A large message, sent while a thread reads the echo back: neither
        # side may wait for the other to finish first.
        blob = os.urandom(1 << 20)
        got = bytearray()

        def drain():
            got.extend(recv_exact(a, len(blob)))

        t = threading.Thread(target=drain)
        t.start()
        a.sendall(blob)
        t.join(DEADLINE)
        check(not t.is_alive() and bytes(got) == blob, "1 MiB echo incomplete or different")
        print("  echo: 150 small messages and 1 MiB echoed")

        # SIGTERM: new clients are refused, open connections keep working.
        server.stop()
        server.expect(r"stopped accepting; waiting up to 1\.5 s for 3 open connection")
        wait_until(lambda: refused(server.port), "the listener to close")
        b.sendall(b"still there?\n")
        check(recv_exact(b, 13) == b"still there?\n", "open connection stopped echoing after SIGTERM")
        print("  echo: after SIGTERM new connections are refused, open ones still echo")

        # Two clients leave on their own; the third never does and is cut
        # off when the grace period ends.
        start = time.monotonic()
        a.close()
        b.close()
        c.settimeout(DEADLINE)
        check(c.recv(1) == b"", "the last connection was not closed by the server")
        took = time.monotonic() - start
        check(took >= 1.0, f"closed after {took:.2f} s, before the 1.5 s grace period")
        check(server.wait(DEADLINE) == 0, "exit status not 0")
        server.expect(r"^stopped$")
        print(f"  echo: the lingering client was closed after {took:.2f} s; exit status 0")

        # A second run: when every client leaves, the server stops at once.
        server2 = Server(binary, ["--grace", "30"])
        try:
            d = server2.connect()
            d.sendall(b"x")
            check(recv_exact(d, 1) == b"x", "echo failed")
            server2.stop(signal.SIGINT)
            server2.expect(r"SIGINT: stopped accepting")
            start = time.monotonic()
            d.close()
            check(server2.wait(DEADLINE) == 0, "exit status not 0")
            took = time.monotonic() - start
            check(took < 5, f"took {took:.2f} s to stop after the last client left")
            print(f"  echo: SIGINT, last client leaves, exit after {took:.2f} s")
        finally:
            server2.kill()
    finally:
        server.kill()


# ---------------------------------------------------------------------------
# chat_server

class ChatClient:
    """A client whose received lines a thread collects."""

    def __init__(self, server: Server, read: bool = True):
        self.sock = server.connect()
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.eof = threading.Event()
        self.seen: list[str] = []  # every line expect() has taken
        if read:
            threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        buf = b""
        self.sock.settimeout(None)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                *done, buf = buf.split(b"\n")
                for line in done:
                    self.lines.put(line.decode())
        except OSError:
            pass
        self.eof.set()
        self.lines.put(None)

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def expect(self, pattern: str, timeout: float = DEADLINE) -> str:
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(end - time.monotonic(), 0.01))
            except queue.Empty:
                raise Failure(f"client got nothing matching {pattern!r} within {timeout} s")
            if line is None:
                raise Failure(f"client reached EOF before {pattern!r}")
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def quiet(self, seconds: float) -> list[str]:
        """The lines that arrive within `seconds` (expected: none)."""
        got = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            if line is not None:
                got.append(line)
        return got


def test_chat(binary: str) -> None:
    server = Server(binary, ["--outbox", "16", "--grace", "2"])
    try:
        alice = ChatClient(server)
        alice.expect(r"^\* welcome, you are user1$")
        bob = ChatClient(server)
        bob.expect(r"^\* welcome, you are user2$")
        alice.expect(r"^\* user2 joined$")
        carol = ChatClient(server)
        carol.expect(r"^\* welcome, you are user3$")
        alice.expect(r"^\* user3 joined$")
        bob.expect(r"^\* user3 joined$")

        # A line goes to everyone else, not back to its sender.
        alice.send("hello, world")
        bob.expect(r"^user1: hello, world$")
        carol.expect(r"^user1: hello, world$")
        carol.sock.sendall(b"crlf line\r\n")
        alice.expect(r"^user3: crlf line$")
        bob.expect(r"^user3: crlf line$")
        stray = alice.quiet(0.2)
        check(not any(l.startswith("user1:") for l in stray), f"alice got her own line back: {stray}")
        print("  chat: lines reach every other client, not the sender")

        # Order is kept: 500 lines from bob arrive at alice and carol in order.
        for i in range(500):
            bob.send(f"line {i}")
        for who in (alice, carol):
            for i in range(500):
                who.expect(rf"^user2: line {i}$")
        print("  chat: 500 lines arrive in order")

        # An over-long line ends that client's connection; the others hear it left.
        dave = ChatClient(server)
        dave.expect(r"^\* welcome, you are user4$")
        dave.sock.sendall(b"x" * 5000 + b"\n")
        wait_until(dave.eof.is_set, "the over-long line to close the connection")
        server.expect(r"user4 disconnected: line longer than 1024 bytes")
        alice.expect(r"^\* user4 left$")
        print("  chat: a line over 1024 bytes disconnects its sender")

        # A client that stops reading: once its socket buffers and its
        # outbox of 16 lines are full, it is disconnected, while the clients
        # that read get every line.
        slow = ChatClient(server, read=False)
        alice.expect(r"^\* user5 joined$")
        payload = "y" * 1000
        sent = 0
        kicked = False
        while sent < 20000 and not kicked:
            for _ in range(100):
                carol.send(f"{sent} {payload}")
                sent += 1
            try:
                server.expect(r"user5 disconnected: too slow", timeout=0.01)
                kicked = True
            except Failure:
                pass
        if not kicked:
            server.expect(r"user5 disconnected: too slow")
        print(f"  chat: the client that stopped reading was disconnected after {sent} lines")
        for who in (alice, bob):
            for i in range(sent):
                who.expect(rf"^user3: {i} y+$")
            if "* user5 left" not in who.seen:
                who.expect(r"^\* user5 left$")
        print(f"  chat: the reading clients got all {sent} lines in order, and heard user5 left")
        # The slow client's connection ends after the buffered bytes.
        slow.sock.settimeout(DEADLINE)
        while slow.sock.recv(65536):
            pass
        print("  chat: the slow client reads EOF after what was buffered")

        # SIGTERM: everyone is told, connections close, exit status 0.
        server.stop()
        for who in (alice, bob, carol):
            who.expect(r"^\* server shutting down$")
            wait_until(who.eof.is_set, "the connection to close after the goodbye")
        check(server.wait(DEADLINE) == 0, "exit status not 0")
        server.expect(r"^stopped$")
        print("  chat: SIGTERM says goodbye to every client, exit status 0")
    finally:
        server.kill()


# ---------------------------------------------------------------------------
# http_server

class HttpConn:
    """One client connection; reads responses as the server frames them."""

    def __init__(self, server: Server):
        self.sock = server.connect()
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, what: str) -> None:
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise Failure(f"no {what} within {DEADLINE} s")
        check(chunk != b"", f"EOF before {what} (had {self.buf!r})")
        self.buf += chunk

    def head(self) -> tuple[int, dict[str, str]]:
        """The next status line and header block: (status, lower-cased headers)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill("a complete header block")
        block, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *fields = block.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.1 (\d{3}) ", status_line)
        check(m is not None, f"bad status line {status_line!r}")
        headers = {}
        for field in fields:
            name, _, value = field.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(m.group(1)), headers

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next final response, its body read by Content-Length."""
        status, headers = self.head()
        check("content-length" in headers, f"response {status} without Content-Length: {headers}")
        n = int(headers["content-length"])
        while len(self.buf) < n:
            self._fill(f"the {n}-byte body of a {status} response")
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def expect_eof(self) -> None:
        try:
            rest = self.sock.recv(65536)
        except socket.timeout:
            raise Failure(f"the server did not close the connection within {DEADLINE} s")
        check(self.buf == b"" and rest == b"", f"bytes after the last response: {self.buf + rest!r}")


def continue_request(conn: HttpConn, head: str) -> None:
    """Sends a request head with "Expect: 100-continue" and waits for the
    server's "100 Continue". The server sends it once it has parsed the
    header block, so from then on the request is in flight (being received)
    and a stop must let it finish; without this handshake a signal could
    overtake a request the server has not read yet, and an unread request
    on an idle connection is rightly dropped."""
    conn.send(head.encode() + b"Expect: 100-continue\r\n\r\n")
    status, _ = conn.head()
    check(status == 100, f"expected 100 Continue, got {status}")


def test_http(binary: str) -> None:
    server = Server(binary, ["--grace", "30"])
    try:
        # An idle keep-alive connection: answered once, now between requests.
        idle = HttpConn(server)
        idle.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        status, _, body = idle.response()
        check(status == 200 and body == b"Hello, World!\n", f"GET / gave {status} {body!r}")

        # A handler that parks: /delay?ms=2000. The request carries a one-byte
        # body only so that its 100 Continue can say the server has it.
        delayed = HttpConn(server)
        continue_request(delayed, "GET /delay?ms=2000 HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\n")
        delayed.send(b"x")
        delay_sent = time.monotonic()

        # A chunked body still arriving: the first chunk now, the rest after the signal.
        upload = HttpConn(server)
        continue_request(upload, "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-test\r\n"
                                 "Transfer-Encoding: chunked\r\n")
        chunks = [b"first chunk, before SIGTERM;", b" second;", b" third;", b" last, " + b"z" * 3000]
        upload.send(b"%x\r\n%s\r\n" % (len(chunks[0]), chunks[0]))
        time.sleep(0.2)  # the delayed request is most likely in its handler's sleep by now

        server.stop()
        server.expect(r"^TERM: stopping; 3 connection\(s\) open$")
        term_seen = time.monotonic()
        check_still_waiting(delayed, "the /delay request in flight when SIGTERM was handled")
        check_still_waiting(upload, "the upload in flight when SIGTERM was handled")
        wait_until(lambda: refused(server.port), "the listener to close")
        idle.expect_eof()
        print("  http: after SIGTERM new connections are refused and the idle connection is closed")

        # The upload's remaining chunks trickle in after the signal.
        for chunk in chunks[1:]:
            time.sleep(0.05)
            upload.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        upload.send(b"0\r\n\r\n")
        status, headers, body = upload.response()
        check(status == 200, f"upload answered {status}")
        check(body == b"".join(chunks), f"echoed body differs: {len(body)} bytes, {body[:60]!r}...")
        check(headers.get("content-type") == "application/x-test", f"content type {headers.get('content-type')!r}")
        check(headers.get("connection", "").lower() == "close", f"no Connection: close after stop: {headers}")
        upload.expect_eof()
        print(f"  http: the chunked upload finished after SIGTERM: {len(body)} bytes echoed, then closed")

        status, headers, body = delayed.response()
        took = time.monotonic() - delay_sent
        check(status == 200 and body == b"waited 2000 ms\n", f"delay answered {status} {body!r}")
        check(took >= 2.0, f"the delayed answer came after {took:.2f} s, before its 2 s")
        check(headers.get("connection", "").lower() == "close", f"no Connection: close after stop: {headers}")
        delayed.expect_eof()
        print(f"  http: the /delay?ms=2000 in flight at SIGTERM was answered whole after {took:.2f} s, then closed")

        check(server.wait(DEADLINE) == 0, "exit status not 0")
        server.expect(r"^stopped: 3 connection\(s\), 3 request\(s\), 0 rejected over the cap, 0 error response\(s\)$")
        print(f"  http: exit status 0, {time.monotonic() - term_seen:.2f} s after SIGTERM was handled")
    finally:
        server.kill()

    # SIGINT stops it the same way: a Content-Length body half sent.
    server = Server(binary, ["--grace", "30"])
    try:
        conn = HttpConn(server)
        payload = bytes(range(256)) * 64
        continue_request(conn, f"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {len(payload)}\r\n")
        conn.send(payload[:1000])
        server.stop(signal.SIGINT)
        server.expect(r"^INT: stopping; 1 connection\(s\) open$")
        conn.send(payload[1000:])
        status, headers, body = conn.response()
        check(status == 200 and body == payload, f"echo after SIGINT: {status}, {len(body)} bytes")
        check(headers.get("connection", "").lower() == "close", f"no Connection: close after stop: {headers}")
        conn.expect_eof()
        check(server.wait(DEADLINE) == 0, "exit status not 0")
        server.expect(r"^stopped: 1 connection\(s\), 1 request\(s\)")
        print(f"  http: SIGINT during a {len(payload)}-byte upload: answered whole, exit status 0")
    finally:
        server.kill()


def check_still_waiting(conn: HttpConn, what: str) -> None:
    """Checks, without waiting, that nothing has arrived on conn: neither an
    answer nor the server's close."""
    conn.sock.setblocking(False)
    try:
        got = conn.sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return
    finally:
        conn.sock.settimeout(DEADLINE)
    check(got != b"", f"the server closed {what}")
    raise Failure(f"{what} was answered already")


# ---------------------------------------------------------------------------
# http_fetch

class GatheringServer:
    """An HTTP server for http_fetch that answers /delay?ms=N after N ms, but
    starts no answer until `expected` requests have arrived. A client that
    fetches concurrently gets its answers as from http_server; one that
    waits for an answer before sending the next request never completes
    the set, and each request it sends is answered only when the wait
    gives up (gave_up is then set)."""

    def __init__(self, expected: int):
        self.expected = expected
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cond = threading.Condition()
        self.arrived: list[tuple[float, str]] = []  # (time, request target)
        self.answered: list[float] = []             # when each answer was sent
        self.gave_up = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(DEADLINE)
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            target = buf.split(b" ", 2)[1].decode()
            with self.cond:
                self.arrived.append((time.monotonic(), target))
                self.cond.notify_all()
                if not self.cond.wait_for(lambda: len(self.arrived) >= self.expected, timeout=DEADLINE):
                    self.gave_up = True
            m = re.search(r"[?&]ms=(\d+)", target)
            ms = int(m.group(1)) if m else 0
            time.sleep(ms / 1000)
            body = f"waited {ms} ms\n".encode()
            with self.cond:
                self.answered.append(time.monotonic())
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(body), body))

    def close(self) -> None:
        self.listener.close()


def run_example(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=45)
    except subprocess.TimeoutExpired:
        raise Failure(f"{' '.join(argv)} still running after 45 s")
    for line in proc.stdout.splitlines():
        print(f"  fetch| {line}")
    return proc


def test_http_fetch(binary: str) -> None:
    delays = (200, 500, 700)  # the seed's 2, 5 and 7 s at --scale 0.1

    # The server answers nothing until all three requests are in, so only a
    # client with all three in flight at once gets its answers without the
    # server giving up (no upper bound on any time). How users run it (with
    # its own http_server) is the check_example.py test beside this one.
    server = GatheringServer(len(delays))
    try:
        proc = run_example([binary, "--port", str(server.port), "--scale", "0.1"])
    finally:
        server.close()
    with server.cond:
        arrived, answered, gave_up = list(server.arrived), list(server.answered), server.gave_up
    # First, since a sequential client also ends in its own Timeout.
    check(not gave_up, f"a request waited {DEADLINE} s for the others to arrive (received in all:"
                       f" {[t for _, t in arrived]}): the fetches are not concurrent")
    check(proc.returncode == 0, f"exit status {proc.returncode}; stderr: {proc.stderr.strip()!r}")
    out = proc.stdout
    check(sorted(t for _, t in arrived) == sorted(f"/delay?ms={ms}" for ms in delays),
          f"requests received: {[t for _, t in arrived]}")
    spread = max(a for a, _ in arrived) - min(a for a, _ in arrived)
    check(max(a for a, _ in arrived) <= min(answered), "an answer was sent before the last request arrived")
    for ms in delays:
        url = re.escape(f"http://127.0.0.1:{server.port}/delay?ms={ms}")
        m = re.search(rf"Fetched {url} after ([0-9.]+) s: 200 OK, \"waited {ms} ms\"", out)
        check(m is not None, f"no Fetched line for ms={ms}")
        check(float(m.group(1)) >= ms / 1000, f"ms={ms} fetched after {m.group(1)} s, before its delay")
    print(f"  http_fetch: all {len(delays)} requests were in flight at once (they arrived within"
          f" {spread * 1000:.1f} ms of each other, before any answer was sent)")


def main(argv: list[str]) -> int:
    tests = {"echo": test_echo, "chat": test_chat, "http": test_http, "http_fetch": test_http_fetch}
    if len(argv) != 3 or argv[1] not in tests:
        print(__doc__)
        return 2
    try:
        tests[argv[1]](argv[2])
    except Failure as e:
        print(f"FAIL: {e}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
