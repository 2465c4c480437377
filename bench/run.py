#!/usr/bin/env python3
"""Run spindle's benchmark suite and report it.

    python3 bench/run.py BUILD_DIR [--full] [--json FILE] [--svg DIR]

Runs every bench binary Meson built (BUILD_DIR/bench/<scenario>_<impl>),
collects their RESULT lines, measures instructions per switch and per spawn
under valgrind --tool=callgrind, and prints one table. The default short
mode takes under two minutes; --full runs longer with more repetitions.
Standard library only. See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import html
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

# Scenario order, and within each the order binaries run in. The reference
# runs first and spindle right after it, so the two figures compared are
# measured as close together in time as the suite allows.
KNOWN = {
    "switch": ["switch_raw_fcontext", "switch_spindle", "switch_context_fiber",
               "switch_coroutine", "switch_boost_fiber", "switch_ucontext",
               "switch_threads", "switch_go"],
    "spawn": ["spawn_spindle", "spawn_boost_fiber", "spawn_threads", "spawn_go"],
    "memory": ["memory_spindle", "memory_boost_fiber", "memory_go"],
    "sync": ["sync_spindle", "sync_boost_fiber"],
    "echo": ["echo_load"],
    "wake": ["wake_spindle", "wake_threads", "wake_go"],
    "timer": ["timer_spindle", "timer_asio", "timer_go"],
    "hooks": ["hooks_rw_spindle", "hooks_clients"],
}
# Servers that a load client starts and stops itself (they run until
# SIGTERM): never run directly.
SERVERS = {"echo_epoll", "echo_spindle", "echo_go", "http_go"}
GO_BINARIES = [b for bins in KNOWN.values() for b in bins if b.endswith("_go")]

# Binaries measured under callgrind, and the operation count N of the
# smaller run (the larger is 2N). Per-op instructions = (Ir(2N) - Ir(N)) / N.
CALLGRIND = {
    "switch_raw_fcontext": 100_000,
    "switch_spindle": 100_000,
    "switch_boost_fiber": 100_000,
    "switch_context_fiber": 100_000,
    "switch_coroutine": 100_000,
    "switch_ucontext": 100_000,
    "spawn_spindle": 10_000,
    "spawn_boost_fiber": 10_000,
    "spawn_threads": 1_000,
    "hooks_rw_spindle": 2_000,
}

# What each section measures, for the JSON "metric" field and chart titles.
METRICS = {
    "switch": "time per switch",
    "spawn": "time per spawn+join",
    "memory": "resident memory per parked fiber",
    "switch_paired": "time per switch, spindle and raw jump_fcontext alternated",
    "switch_callgrind": "instructions per switch",
    "spawn_callgrind": "instructions per spawn+join",
    "sync": "time per operation of a synchronization primitive",
    "echo": "TCP echo round trips per second",
    "echo_p50": "TCP echo median latency",
    "echo_p99": "TCP echo 99th percentile latency",
    "echo_cpu": "TCP echo server CPU time per round trip",
    "http": "HTTP requests per second (wrk, keep-alive GET /)",
    "http_cpu": "HTTP server CPU time per request",
    "http_p99": "HTTP 99th percentile latency (wrk)",
    "wake": "time per fd wake-up round trip",
    "timer": "time per timer operation",
    "timer_rate": "timer add+cancels or expirations per second",
    "hooks": "time per 1-byte write+read through libspindle_hooks and without",
    "hooks_callgrind": "instructions per 1-byte write+read (user space)",
    "hooks_clients": "seconds for a batch of libpq/hiredis/libcurl calls, sequential vs fibers",
}
# Sections where a larger figure is better (the charts say which way).
HIGHER_IS_BETTER = {"echo", "http", "timer_rate"}

# Ratio column: each result against this reference in the same section.
REFERENCE = {
    "switch": "raw_fcontext",
    "switch_callgrind": "raw_fcontext",
    "switch_paired": "raw_fcontext",
    "spawn": "spindle_batch",
    "spawn_callgrind": "spindle_batch",
    "wake": "spindle_pipe",
    "hooks": "direct_libc",
    "hooks_callgrind": "direct_libc",
}


@dataclass
class Result:
    scenario: str
    implementation: str
    metric: str
    unit: str
    median: float
    min: float
    max: float
    repetitions: int
    note: str
    binary: str = ""


@dataclass
class Run:
    results: list[Result] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)
    peers: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # section, name, why
    failures: list[tuple[str, str]] = field(default_factory=list)      # binary, why
    notices: list[str] = field(default_factory=list)
    machine_load: str = ""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Finding and running binaries

def find_bench_dir(build_dir: str) -> str:
    for candidate in (os.path.join(build_dir, "bench"), build_dir):
        if os.path.isfile(os.path.join(candidate, "switch_raw_fcontext")):
            return candidate
    sys.exit(f"run.py: no bench binaries under {build_dir} (expected "
             f"{build_dir}/bench/switch_raw_fcontext); build with -Dbench=true and ninja first")


def discover(bench_dir: str) -> list[str]:
    """Known binaries in suite order, then any other <scenario>_<impl>."""
    present = {name for name in os.listdir(bench_dir)
               if re.fullmatch(r"[a-z0-9]+_[a-z0-9_]+", name) and name not in SERVERS
               and os.path.isfile(os.path.join(bench_dir, name))
               and os.access(os.path.join(bench_dir, name), os.X_OK)}
    ordered = [b for bins in KNOWN.values() for b in bins if b in present]
    extra = sorted(present - set(ordered))
    return ordered + extra


def parse_note(note: str) -> dict[str, str]:
    return dict(tok.split("=", 1) for tok in note.split() if "=" in tok)


def parse_output(text: str, binary: str, run: Run) -> None:
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "RESULT" and len(parts) >= 7:
            section, name, median, lo, hi, unit = parts[1:7]
            note = parts[7] if len(parts) > 7 else ""
            reps = int(parse_note(note).get("reps", "1"))
            run.results.append(Result(section, name, METRICS.get(section, section), unit,
                                      float(median), float(lo), float(hi), reps, note, binary))
        elif parts[0] == "MACHINE" and not run.machine:
            run.machine = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        elif parts[0] == "PEER" and len(parts) >= 3:
            run.peers[parts[1]] = " ".join(parts[2:])
        elif parts[0] == "SKIPPED" and len(parts) >= 4:
            run.skipped.append((parts[1], parts[2], parts[3]))


def run_binary(path: str, args: list[str], timeout: float, run: Run) -> None:
    name = os.path.basename(path)
    start = time.monotonic()
    try:
        proc = subprocess.run([path, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        parse_output(out, name, run)
        run.failures.append((name, f"timed out after {timeout:.0f} s"))
        log(f"  {name}: TIMEOUT")
        return
    parse_output(proc.stdout, name, run)
    took = time.monotonic() - start
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        why = f"exit status {proc.returncode}" if proc.returncode > 0 else f"signal {-proc.returncode}"
        run.failures.append((name, why + (": " + " | ".join(tail) if tail else "")))
        log(f"  {name}: FAILED ({why}) after {took:.1f} s")
    else:
        log(f"  {name}: {took:.1f} s")


def add_timer_rates(run: Run) -> None:
    """The timer add+cancel and expiration figures again, per second.

    The issue asks for timers per second; the benches report ns per timer,
    like every other time. Millions per second are 1e3 / (ns per op), a
    decreasing function, so the median of the rates is the rate of the median
    (the repetition count is odd) and min and max swap: the derived rows are
    exact, not estimates. The Event waits are left out: a wait is not a timer.
    """
    for r in [x for x in run.results if x.scenario == "timer" and x.unit in ("ns/timer", "ns/expiry")]:
        if min(r.median, r.min, r.max) <= 0:
            continue
        run.results.append(Result("timer_rate", r.implementation, METRICS["timer_rate"], "M/s",
                                  1e3 / r.median, 1e3 / r.max, 1e3 / r.min, r.repetitions,
                                  f"{r.note} derived=1e3/median({r.unit})", r.binary))


# ---------------------------------------------------------------------------
# Callgrind

def callgrind_total(path: str) -> int:
    with open(path, encoding="utf-8", errors="replace") as f:
        totals = None
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
            if line.startswith("totals:"):
                totals = int(line.split()[1])
    if totals is None:
        raise ValueError(f"no summary/totals line in {path}")
    return totals


def callgrind_ir(binary: str, case: str, n: int, workdir: str) -> int:
    out = os.path.join(workdir, f"{os.path.basename(binary)}.{case}.{n}.out")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           binary, "--callgrind", "--iterations", str(n), "--only", case]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"valgrind exit {proc.returncode}: {tail}")
    return callgrind_total(out)


def run_callgrind(bench_dir: str, binaries: list[str], jobs: int, run: Run) -> None:
    if not shutil.which("valgrind"):
        run.notices.append("valgrind not found: no instruction counts (apt-get install valgrind)")
        return
    work = []
    for b in binaries:
        if b not in CALLGRIND:
            continue
        path = os.path.join(bench_dir, b)
        listing = subprocess.run([path, "--list"], capture_output=True, text=True, timeout=60)
        cases = [l.split("\t")[1] for l in listing.stdout.splitlines() if l.startswith("CASE\t")]
        work += [(b, path, case, CALLGRIND[b]) for case in cases]
    if not work:
        return
    log(f"callgrind: {len(work)} cases, N and 2N each, {jobs} at a time")
    section_of = {b: b.split("_", 1)[0] + "_callgrind" for b in CALLGRIND}
    unit_of = {"switch_callgrind": "instr/switch", "spawn_callgrind": "instr/fiber",
               "hooks_callgrind": "instr/op"}

    with tempfile.TemporaryDirectory(prefix="spindle-callgrind-") as tmp:
        def one(item):
            b, path, case, n = item
            small = callgrind_ir(path, case, n, tmp)
            large = callgrind_ir(path, case, 2 * n, tmp)
            return item, small, large

        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(one, item) for item in work]
            for fut in futures:
                try:
                    (b, _, case, n), small, large = fut.result()
                except Exception as e:  # report and go on with the rest
                    run.failures.append(("callgrind", str(e)))
                    continue
                per_op = (large - small) / n
                section = section_of[b]
                run.results.append(Result(section, case, METRICS[section], unit_of[section],
                                          per_op, per_op, per_op, 1,
                                          f"reps=1 N={n} Ir(N)={small} Ir(2N)={large}", b))
                log(f"  {b} {case}: {per_op:.1f} {unit_of[section]}")


# ---------------------------------------------------------------------------
# HTTP: wrk against examples/http_server and bench/http_go

HTTP_CONNECTIONS = 64


class ServerProcess:
    """A server that prints "listening on HOST:PORT" and runs until SIGTERM."""

    def __init__(self, cmd: list[str]):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.port: int | None = None
        self.ready = threading.Event()
        # A reader thread keeps the pipe drained, so the server never blocks
        # on its own output while it is being measured.
        threading.Thread(target=self._pump, daemon=True).start()
        self.ready.wait(15)
        if self.port is None:
            self.stop()
            raise RuntimeError(f"{cmd[-1] if cmd else '?'} printed no 'listening on' line: "
                               + " | ".join(self.lines[-3:]))

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = re.match(r"listening on [0-9.]+:(\d+)", line)
            if m and self.port is None:
                self.port = int(m.group(1))
                self.ready.set()
        self.ready.set()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far (/proc/PID/stat)."""
        with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def wrk_duration_ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def run_wrk(port: int, seconds: int, client_cpu: int | None) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{HTTP_CONNECTIONS}", f"-d{seconds}s", "--latency",
           f"http://127.0.0.1:{port}/"]
    if client_cpu is not None:
        cmd = ["taskset", "-c", str(client_cpu)] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    out = proc.stdout
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if proc.returncode != 0 or not rate or not count:
        raise RuntimeError(f"wrk failed (status {proc.returncode}): "
                           + " | ".join((out + proc.stderr).strip().splitlines()[-3:]))
    # wrk counts an answer with another status, or a socket error, as a
    # request like any other: a server that fails fast must not win.
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if bad or (errors and any(int(x) for x in errors.groups())):
        raise RuntimeError("wrk saw errors: " + (bad.group(0) if bad else errors.group(0)))
    result = {"rate": float(rate.group(1)), "requests": float(count.group(1))}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.MULTILINE)
        if m:
            result[f"p{pct}"] = wrk_duration_ms(m.group(1))
    return result


def threads_pinned(pid: int, cpu: int) -> bool:
    """Whether every thread of process pid may run on exactly that CPU."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        return all(os.sched_getaffinity(tid) == {cpu} for tid in tids)
    except (OSError, ValueError):
        return False


def run_http(build_dir: str, bench_dir: str, full: bool, run: Run) -> None:
    """wrk -t1 -c64 against the spindle example server and Go net/http.

    The servers run side by side for the whole section and take turns, one
    wrk run each per repetition, so that drift in the machine's load hits
    both alike. Each figure is the median over the repetitions; the server's
    CPU time per request is measured too, because on two CPUs a one-thread
    wrk may be what limits the rate."""
    if not shutil.which("wrk"):
        run.notices.append("wrk not found: no HTTP figures (apt-get install wrk)")
        return
    servers = []
    spindle_server = os.path.join(os.path.abspath(build_dir), "examples", "http_server")
    if os.access(spindle_server, os.X_OK):
        servers.append(("spindle", [spindle_server, "--port", "0", "--max-connections", "100000"],
                        "http_server"))
    else:
        run.notices.append(f"{spindle_server} not built (libhttp-parser-dev missing?): "
                           f"no spindle HTTP figure")
    go_server = os.path.join(bench_dir, "http_go")
    if os.access(go_server, os.X_OK):
        servers.append(("go", [go_server, "-port", "0"], "http_go"))
    else:
        run.notices.append("http_go not built (Go not installed, or the build not reconfigured): "
                           "no Go net/http figure")
    if not servers:
        return

    # Server on the last CPU the process may use, wrk on the one before, as
    # the other single-threaded benches pin (CPU 0 takes the interrupts).
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) >= 2 and shutil.which("taskset"):
        server_cpu, client_cpu, pin = allowed[-1], allowed[-2], f"cpu{allowed[-1]}"
    else:
        server_cpu = client_cpu = None
        pin = "no(one-cpu)" if len(allowed) < 2 else "no(taskset-missing)"
    reps, seconds = (7, 10) if full else (3, 2)
    log(f"http: wrk -t1 -c{HTTP_CONNECTIONS} -d{seconds}s, {reps} repetitions, servers: "
        f"{', '.join(s[0] for s in servers)}")

    started: list[tuple[str, ServerProcess, str]] = []
    samples: dict[str, list[dict[str, float]]] = {}
    pins: dict[str, str] = {}
    try:
        for impl, cmd, binary in servers:
            if server_cpu is not None:
                cmd = ["taskset", "-c", str(server_cpu)] + cmd
            try:
                started.append((impl, ServerProcess(cmd), binary))
            except (OSError, RuntimeError) as e:
                run.failures.append((binary, str(e)))
        for impl, server, binary in started:
            run_wrk(server.port, 1, client_cpu)  # warm-up: connections, caches, Go's heap
            samples[impl] = []
            # After the warm-up, when Go has started its threads: every
            # thread of the server must read back the one CPU.
            if server_cpu is not None and not threads_pinned(server.proc.pid, server_cpu):
                pins[impl] = "no(mask-not-applied)"
        for _ in range(reps):
            for impl, server, binary in started:
                cpu0 = server.cpu_seconds()
                sample = run_wrk(server.port, seconds, client_cpu)
                sample["cpu_us"] = (server.cpu_seconds() - cpu0) * 1e6 / max(sample["requests"], 1)
                samples[impl].append(sample)
                log(f"  {impl}: {sample['rate']:,.0f} req/s, {sample['cpu_us']:.2f} us CPU/request")
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        run.failures.append(("http", str(e)))
    finally:
        for impl, server, binary in started:
            status = server.stop()
            if status != 0:
                run.failures.append((binary, f"exit status {status} after SIGTERM"))

    binaries = {impl: binary for impl, _, binary in started}
    for impl, got in samples.items():
        if len(got) != reps:
            continue
        client = f" client=cpu{client_cpu}" if client_cpu is not None else ""
        note = f"reps={reps} pin={pins.get(impl, pin)}{client} wrk=-t1/-c{HTTP_CONNECTIONS}/-d{seconds}s"
        for section, key, unit in (("http", "rate", "req/s"), ("http_cpu", "cpu_us", "us/request"),
                                   ("http_p99", "p99", "ms")):
            values = sorted(s[key] for s in got if key in s)
            if not values:
                continue
            median = values[len(values) // 2]
            run.results.append(Result(section, f"{impl}_c{HTTP_CONNECTIONS}", METRICS[section], unit,
                                      median, values[0], values[-1], len(values), note,
                                      binaries[impl]))


# ---------------------------------------------------------------------------
# Report

def fmt_num(x: float) -> str:
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.1f}"
    return f"{x:.2f}"


def reference_for(r: Result, by_key: dict[tuple[str, str], Result]) -> Result | None:
    if r.scenario == "memory":
        # Memory: against spindle's default at the same fiber count.
        count = r.implementation.rsplit("_", 1)[-1]
        return by_key.get(("memory", f"spindle_{count}"))
    if r.scenario == "sync":
        # Sync: each case against spindle's figure for the same case.
        case = r.implementation.removeprefix("spindle_").removeprefix("boost_fiber_")
        return by_key.get(("sync", f"spindle_{case}"))
    if r.scenario in ("timer", "timer_rate"):
        # Timers: each peer against spindle's public-API figure for the same
        # case (the Event-wait batch for add+cancel; the heap alone when that
        # did not run); the Event waits with a deadline against the same
        # waits without one.
        case = re.sub(r"^(spindle_heap_|spindle_wait_|spindle_|asio_|go_)", "", r.implementation)
        if case.startswith("event_wait"):
            return by_key.get((r.scenario, "spindle_event_wait"))
        return (by_key.get((r.scenario, f"spindle_{case}"))
                or by_key.get((r.scenario, f"spindle_wait_{case}"))
                or by_key.get((r.scenario, f"spindle_heap_{case}")))
    if r.scenario.startswith("http"):
        # HTTP: against Go's net/http at the same connection count.
        conns = r.implementation.rsplit("_", 1)[-1]
        return by_key.get((r.scenario, f"go_{conns}"))
    if r.scenario.startswith("echo"):
        # Echo: against the plain C epoll server at the same connection count.
        conns = r.implementation.rsplit("_", 1)[-1]
        return by_key.get((r.scenario, f"epoll_{conns}"))
    ref = REFERENCE.get(r.scenario)
    return by_key.get((r.scenario, ref)) if ref else None


def section_order(name: str) -> tuple[int, str]:
    order = ["switch", "switch_paired", "switch_callgrind", "spawn", "spawn_callgrind", "memory",
             "echo", "echo_p50", "echo_p99", "echo_cpu", "http", "http_cpu", "http_p99"]
    return (order.index(name) if name in order else len(order), name)


def is_spindle(section: str, implementation: str) -> bool:
    """Whether a row is spindle's own, to highlight it in a chart."""
    if section.startswith("hooks"):
        # The hooks rows are named after the path, not the runtime: every
        # row that runs on spindle's fibers (or through its hooks) is ours.
        return implementation.startswith(("hooked", "fiber")) or "_fibers" in implementation
    return implementation.startswith("spindle")


def print_table(run: Run) -> None:
    by_key = {(r.scenario, r.implementation): r for r in run.results}
    headers = ["scenario", "implementation", "median", "min", "max", "unit", "ratio", "pinning"]
    rows = []
    # A section whose every row was skipped still gets its SKIPPED lines.
    sections = {r.scenario for r in run.results} | {sec for sec, _, _ in run.skipped}
    for section in sorted(sections, key=section_order):
        for r in (x for x in run.results if x.scenario == section):
            ref = reference_for(r, by_key)
            ratio = ""
            if ref and ref.median > 0:
                x = r.median / ref.median
                ratio = f"{x:.0f}x" if x >= 100 else f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"
                ratio += f" {ref.implementation}"
            fields = parse_note(r.note)
            pin = fields.get("pin", "")
            if "partner_pin" in fields:  # the other side of a two-thread case
                pin += f", partner {fields['partner_pin']}"
            rows.append([section, r.implementation, fmt_num(r.median), fmt_num(r.min),
                         fmt_num(r.max), r.unit, ratio, pin])
        for sec, name, why in run.skipped:
            if sec == section:
                rows.append([section, name, "-", "-", "-", "", "skipped: " + why, ""])
    widths = [max(len(str(row[i])) for row in rows + [headers]) for i in range(len(headers))]
    right = {2, 3, 4}

    def line(cells):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    print(line(headers))
    print(line(["-" * w for w in widths]))
    prev = None
    for row in rows:
        if prev is not None and row[0] != prev:
            print()
        prev = row[0]
        print(line(row))


def print_machine(run: Run, mode: str) -> None:
    m = run.machine
    if m:
        print(f"machine: {m.get('cpu', '?')}, {m.get('cores', '?')} CPUs "
              f"({m.get('allowed_cpus', '?')} allowed), hypervisor={m.get('hypervisor', '?')}, "
              f"{m.get('kernel', '?')}")
        print(f"build:   {m.get('compiler', '?')}, {m.get('flags', '?')}; "
              f"Boost {m.get('boost', '?')}, glibc {m.get('glibc', '?')}")
    peers = ", ".join(f"{k} {v}" for k, v in run.peers.items())
    load = f"; load average {run.machine_load} at start" if run.machine_load else ""
    print(f"peers:   {peers or 'none besides the C++ ones'}; mode: {mode}{load}")


def check_targets(run: Run) -> list[str]:
    """The targets of issues 2 and 7, as the suite measured them."""
    by_key = {(r.scenario, r.implementation): r.median for r in run.results}
    lines = []

    def check(label: str, value: float | None, ok: bool | None, shown: str) -> None:
        if value is None:
            lines.append(f"  {label}: not measured")
        else:
            lines.append(f"  {label}: {shown} -> {'met' if ok else 'MISSED'}")

    raw = by_key.get(("switch", "raw_fcontext"))
    yld = by_key.get(("switch", "spindle_pingpong"))
    # The ratio is judged on the alternated measurement when there is one
    # (switch_paired: both sides met the same phases of the host's load).
    p_raw = by_key.get(("switch_paired", "raw_fcontext"))
    p_yld = by_key.get(("switch_paired", "spindle_pingpong"))
    if p_raw and p_yld:
        ref, mine, how = p_raw, p_yld, "alternated"
    else:
        ref, mine, how = raw, yld, "separate runs"
    if ref and mine:
        r = mine / ref
        check("yield <= 1.2x raw jump_fcontext (issue 7)", r, r <= 1.2, f"{r:.2f}x, {how}")
        check("yield <= 1.5x raw jump_fcontext (issue 2)", r, r <= 1.5, f"{r:.2f}x, {how}")
    else:
        check("yield vs raw jump_fcontext", None, None, "")
    # The same yield figure for every target below: a disturbance of the
    # host during the separate case (once seen: 10 ns for one case, 5.6 for
    # the cases around it) then moves no target that the alternated figure
    # does not see.
    for peer in ("boost_fiber", "go_gosched"):
        p = by_key.get(("switch", peer))
        if mine and p:
            check(f"yield >= 10x faster than {peer}", p, p / mine >= 10, f"{p / mine:.1f}x faster, {how}")
        elif mine:
            lines.append(f"  yield >= 10x faster than {peer}: {peer} not measured")
    cg_raw = by_key.get(("switch_callgrind", "raw_fcontext"))
    cg_yld = by_key.get(("switch_callgrind", "spindle_pingpong"))
    if cg_raw and cg_yld:
        lines.append(f"  (instructions: yield {cg_yld:.0f} vs raw jump {cg_raw:.0f} = "
                     f"{cg_yld / cg_raw:.2f}x)")
    # The least a switch behind a call costs with this engine (raw_pingpong.hpp):
    # what part of the distance to the raw jump is the engine's, what spindle's.
    floor = by_key.get(("switch", "raw_ontop_call"))
    if floor and raw and mine:
        lines.append(f"  (engine floor for a yield behind a call: raw_ontop_call {floor:.2f} ns = "
                     f"{floor / raw:.2f}x raw jump; spindle's yield = {mine / floor:.2f}x that floor)")
    spawn = by_key.get(("spawn", "spindle_batch"))
    if spawn is not None:
        check("spawn+join <= 100 ns (issue 7)", spawn, spawn <= 100, f"{spawn:.0f} ns")
        check("spawn+join <= 150 ns (issue 2)", spawn, spawn <= 150, f"{spawn:.0f} ns")
    else:
        check("spawn+join", None, None, "")
    mem = by_key.get(("memory", "spindle_1M"))
    check("<= 8 KiB per parked fiber at 1M, default stack", mem,
          mem is not None and mem <= 8, f"{mem:.2f} KiB" if mem is not None else "")
    for label in ("1M", "100k"):
        small = by_key.get(("memory", f"spindle_small_{label}"))
        if small is not None:
            check(f"<= 2.7 KiB per parked fiber at {label}, small stack (kSmallStackSize)", small,
                  small <= 2.7, f"{small:.2f} KiB")
            break
    sync = {name.removeprefix("spindle_"): value for (section, name), value in by_key.items()
            if section == "sync" and name.startswith("spindle_")}
    for case, mine in sync.items():
        peer = by_key.get(("sync", f"boost_fiber_{case}"))
        if peer is not None and mine > 0:
            check(f"sync {case} >= 3x faster than boost_fiber (issue 3)", peer, peer / mine >= 3,
                  f"{peer / mine:.1f}x faster")
    lock = sync.get("lock_uncontended")
    if lock is not None:
        check("uncontended lock+unlock <= 5 ns (issue 3)", lock, lock <= 5, f"{lock:.2f} ns")
    for conns in ("c64", "c1000"):
        mine = by_key.get(("echo", f"spindle_{conns}"))
        if mine is None:
            continue
        epoll = by_key.get(("echo", f"epoll_{conns}"))
        go = by_key.get(("echo", f"go_{conns}"))
        if epoll:
            check(f"echo {conns}: spindle >= 0.97x the epoll server (issue 4)", mine,
                  mine >= 0.97 * epoll, f"{mine / epoll:.2f}x")
        if go:
            check(f"echo {conns}: spindle >= 1.35x Go (issue 4)", mine, mine >= 1.35 * go,
                  f"{mine / go:.2f}x")
        else:
            lines.append(f"  echo {conns}: spindle >= 1.35x Go (issue 4): Go not measured")
        cpu = by_key.get(("echo_cpu", f"spindle_{conns}"))
        cpu_epoll = by_key.get(("echo_cpu", f"epoll_{conns}"))
        if cpu is not None and cpu_epoll:
            check(f"echo {conns}: server CPU per round trip <= the epoll server's (issue 4)", cpu,
                  cpu <= cpu_epoll, f"{cpu:.2f} vs {cpu_epoll:.2f} us")
        # The same server on small stacks: not what the targets are judged
        # on, but it shows how much of a gap is per-connection memory.
        small = by_key.get(("echo", f"spindle_small_{conns}"))
        cpu_small = by_key.get(("echo_cpu", f"spindle_small_{conns}"))
        if small is not None and epoll and cpu_small is not None and cpu_epoll:
            lines.append(f"  (echo {conns} on small stacks: spindle_small {small / epoll:.2f}x the epoll "
                         f"server, CPU {cpu_small:.2f} vs {cpu_epoll:.2f} us per round trip)")
    mine, go = by_key.get(("http", "spindle_c64")), by_key.get(("http", "go_c64"))
    if mine is not None and go:
        check("http c64: spindle >= Go net/http requests/s (issue 4)", mine, mine >= go,
              f"{mine / go:.2f}x")
        cpu, cpu_go = by_key.get(("http_cpu", "spindle_c64")), by_key.get(("http_cpu", "go_c64"))
        if cpu is not None and cpu_go:
            lines.append(f"  (http c64 server CPU per request: spindle {cpu:.2f} us, Go {cpu_go:.2f} us)")
    elif mine is not None:
        lines.append("  http c64: spindle >= Go net/http (issue 4): Go not measured")
    return lines


# ---------------------------------------------------------------------------
# SVG

def svg_chart(section: str, results: list[Result], machine: str) -> str:
    results = sorted(results, key=lambda r: r.median)
    # A section that mixes units (sync: ns/op, ns/item; timer: ns/timer,
    # ns/wait, ns/expiry) names them all in the title and labels each bar
    # with its own.
    units = sorted({r.unit for r in results})
    unit = ", ".join(units)
    mixed = len(units) > 1
    label_w, bar_w, row_h, top, right_pad = 230, 520, 26, 58, 90
    if mixed:
        right_pad += 70
    height = top + row_h * len(results) + 40
    width = label_w + bar_w + right_pad
    lo = min(min(r.min for r in results), min(r.median for r in results))
    hi = max(r.max for r in results)
    log_scale = lo > 0 and hi / lo > 50

    if log_scale:
        x0 = 10 ** math.floor(math.log10(lo))
        x1 = 10 ** math.ceil(math.log10(hi))

        def xpos(v: float) -> float:
            v = max(v, x0)
            return label_w + bar_w * (math.log10(v) - math.log10(x0)) / (math.log10(x1) - math.log10(x0))

        ticks = [10 ** e for e in range(int(math.log10(x0)), int(math.log10(x1)) + 1)]
    else:
        x0 = 0.0
        step = 10 ** math.floor(math.log10(hi)) if hi > 0 else 1
        while hi / step < 4:
            step /= 2
        x1 = math.ceil(hi / step) * step or 1

        def xpos(v: float) -> float:
            return label_w + bar_w * (v - x0) / (x1 - x0)

        ticks = [i * step for i in range(int(round(x1 / step)) + 1)]

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="20" font-size="15" font-weight="bold">'
           f'{html.escape(section)}: {html.escape(METRICS.get(section, section))} ({html.escape(unit)}, '
           f'{"log scale, " if log_scale else ""}'
           f'{"higher" if section in HIGHER_IS_BETTER else "lower"} is better)</text>',
           f'<text x="10" y="38" fill="#555" font-size="11">{html.escape(machine)}; '
           f'bar = median, whisker = min to max</text>']
    axis_y = top + row_h * len(results) + 4
    for t in ticks:
        x = xpos(t)
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle" fill="#555">'
                   f'{f"{int(t):,}" if t == int(t) else f"{t:g}"}</text>')
    for i, r in enumerate(results):
        y = top + i * row_h
        spindle = is_spindle(section, r.implementation)
        colour = "#e8710a" if spindle else "#8c9bab"
        weight = ' font-weight="bold"' if spindle else ""
        out.append(f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end"{weight}>'
                   f'{html.escape(r.implementation)}</text>')
        xb = xpos(r.median)
        out.append(f'<rect x="{label_w}" y="{y + 4}" width="{max(xb - label_w, 1):.1f}" '
                   f'height="{row_h - 8}" fill="{colour}"/>')
        if r.max > r.min:
            xa, xz, ym = xpos(r.min), xpos(r.max), y + row_h / 2
            out.append(f'<line x1="{xa:.1f}" y1="{ym:.1f}" x2="{xz:.1f}" y2="{ym:.1f}" stroke="#222"/>')
            for xe in (xa, xz):
                out.append(f'<line x1="{xe:.1f}" y1="{ym - 5:.1f}" x2="{xe:.1f}" y2="{ym + 5:.1f}" stroke="#222"/>')
        out.append(f'<text x="{max(xb, xpos(r.max)) + 6:.1f}" y="{y + row_h / 2 + 4:.1f}"{weight}>'
                   f'{fmt_num(r.median)}{" " + html.escape(r.unit) if mixed else ""}</text>')
    out.append(f'<line x1="{label_w}" y1="{top - 4}" x2="{label_w}" y2="{axis_y}" stroke="#333"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_svgs(run: Run, directory: str) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    m = run.machine
    machine = f"{m.get('cpu', '?')}, {m.get('cores', '?')} CPUs, {m.get('compiler', '?')}"
    written = []
    for section in sorted({r.scenario for r in run.results}, key=section_order):
        path = os.path.join(directory, f"{section}.svg")
        with open(path, "w", encoding="utf-8") as f:
            f.write(svg_chart(section, [r for r in run.results if r.scenario == section], machine))
        written.append(path)
    return written


# ---------------------------------------------------------------------------

def report(run: Run, mode: str, elapsed: float | None, args: argparse.Namespace) -> None:
    print()
    print_machine(run, mode)
    print()
    print_table(run)
    print()
    print("targets:")
    for line in check_targets(run):
        print(line)
    for n in run.notices:
        print(f"note: {n}")
    for b, why in run.failures:
        print(f"FAILED: {b}: {why}")
    if elapsed is not None:
        print(f"({len(run.results)} results in {elapsed:.0f} s)")

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"mode": mode, "machine": run.machine, "load_average": run.machine_load,
                       "peers": run.peers,
                       "notices": run.notices,
                       "skipped": [dict(scenario=s, implementation=n, why=w) for s, n, w in run.skipped],
                       "failures": [dict(binary=b, why=w) for b, w in run.failures],
                       "results": [asdict(r) for r in run.results]}, f, indent=2)
            f.write("\n")
        print(f"json: {args.json}")
    if args.svg:
        for path in write_svgs(run, args.svg):
            print(f"svg:  {path}")


def report_saved(args: argparse.Namespace) -> int:
    with open(args.load, encoding="utf-8") as f:
        saved = json.load(f)
    run = Run(results=[Result(**r) for r in saved["results"]], machine=saved.get("machine", {}),
              peers=saved.get("peers", {}),
              skipped=[(x["scenario"], x["implementation"], x["why"]) for x in saved.get("skipped", [])],
              failures=[(x["binary"], x["why"]) for x in saved.get("failures", [])],
              notices=saved.get("notices", []), machine_load=saved.get("load_average", ""))
    if args.json and os.path.abspath(args.json) == os.path.abspath(args.load):
        args.json = None
    report(run, saved.get("mode", "?"), None, args)
    return 0


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build_dir", nargs="?", default=os.path.join(here, "..", "build"),
                    help="Meson build directory (default: ../build next to bench/)")
    ap.add_argument("--full", action="store_true", help="long run: more repetitions, longer runs")
    ap.add_argument("--json", metavar="FILE", help="write one record per result to FILE")
    ap.add_argument("--svg", metavar="DIR", help="write one SVG bar chart per scenario to DIR")
    ap.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    ap.add_argument("--only", metavar="REGEX", help="run only binaries whose name matches")
    ap.add_argument("--load", metavar="FILE",
                    help="run nothing: report the results of an earlier --json FILE")
    args = ap.parse_args()

    if args.load:
        return report_saved(args)

    bench_dir = find_bench_dir(args.build_dir)
    binaries = discover(bench_dir)
    if args.only:
        binaries = [b for b in binaries if re.search(args.only, b)]
    mode = "full" if args.full else "short"
    run = Run()

    wanted_go = [b for b in GO_BINARIES if not args.only or re.search(args.only, b)]
    missing_go = [b for b in wanted_go if b not in binaries]
    if missing_go:
        if shutil.which("go"):
            run.notices.append("go is installed but the Go peers were not built; "
                               "reconfigure the build directory (meson setup --reconfigure)")
        else:
            run.notices.append(f"Go is not installed: the Go peers ({', '.join(missing_go)}) are "
                               f"absent (apt-get install golang-go, then reconfigure the build)")

    load = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    run.machine_load = f"{load:.2f}"
    if load > 0.5 * cpus:
        run.notices.append(f"load average was {load:.1f} on {cpus} CPUs when the suite started: "
                           f"the timings are noisy; the callgrind counts are not affected")

    started = time.monotonic()
    log(f"spindle bench, {mode} mode, {len(binaries)} binaries from {bench_dir}")
    for b in binaries:
        run_binary(os.path.join(bench_dir, b), ["--full"] if args.full else [],
                   3600 if args.full else 300, run)
    flags = run.machine.get("flags", "")
    if "optimization=0" in flags or "optimization=g" in flags:
        run.notices.append("this build is not optimised (optimization=0/g): the timings say little; "
                           "use the default debugoptimized or release build")
    if "b_sanitize=" in flags and "b_sanitize=none" not in flags:
        run.notices.append("this is a sanitizer build: every figure is inflated; benchmark a "
                           "build without b_sanitize")
    add_timer_rates(run)
    if not args.only or re.search(args.only, "http_go") or re.search(args.only, "http_server"):
        run_http(args.build_dir, bench_dir, args.full, run)
    if not args.no_callgrind:
        run_callgrind(bench_dir, binaries, max(1, min(os.cpu_count() or 1, 4)), run)
    elapsed = time.monotonic() - started

    report(run, mode, elapsed, args)
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
