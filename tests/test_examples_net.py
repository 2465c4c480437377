#!/usr/bin/env python3
"""Checks the network examples by talking to them over loopback.

    test_examples_net.py echo BINARY     examples/echo_server
    test_examples_net.py chat BINARY     examples/chat_server

Each check starts the server with --port 0, reads "listening on HOST:PORT"
from its output, connects real clients, and checks what they receive and
how the server stops on SIGTERM. Every wait has a deadline, so a broken
server fails the test instead of hanging it. Standard library only.
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


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("echo", "chat"):
        print(__doc__)
        return 2
    try:
        {"echo": test_echo, "chat": test_chat}[argv[1]](argv[2])
    except Failure as e:
        print(f"FAIL: {e}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
