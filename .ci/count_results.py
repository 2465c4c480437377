#!/usr/bin/env python3
"""Count test results of one `meson test` run, or sum several counts.

    count_results.py BUILD_DIR [--label L] [--meson-rc N] [--stage-failed WHAT]
    count_results.py --sum COUNTS.json [COUNTS.json ...] [--label L]

The first form reads BUILD_DIR/meson-logs/testlog.json (one JSON object per
line, written by meson 1.0: "name", "result", "returncode", "command",
"stdout" and, when non-empty and not merged, "stderr"), prints the tally,
writes it to BUILD_DIR/ci-counts.json and ends with the line
"[L: ]N passed, N failed". It exits 1 when anything failed.

How a meson test counts:
  * doctest binary (its output has a "[doctest] test cases: ..." summary):
    its passed/failed test-case numbers. If meson still says the test went
    wrong (crash, timeout, leak found at exit, non-zero exit) but the summary
    says 0 failed, 1 more failed.
  * doctest binary without a summary (its output mentions "[doctest]", or
    it failed and the executable is named test_*): it crashed or hung
    before the end: 1 failed, named as such.
  * any other test (an example run as a test, a script): 1 passed when meson
    says OK or EXPECTEDFAIL, 1 failed when it says FAIL, TIMEOUT, ERROR,
    INTERRUPT or UNEXPECTEDPASS; SKIP counts as neither (listed as skipped).
  * a should_fail test that failed as expected (EXPECTEDFAIL): 1 passed,
    whatever its doctest summary says.
  * --stage-failed WHAT (configure or build failed, no tests ran): 1 failed.
  * missing or empty testlog.json: 1 failed (no tests ran).
  * --meson-rc N with N != 0 while nothing above failed: 1 failed.

The second form adds up ci-counts.json files (a missing one counts as 1
failed) and ends with the plain line "N passed, N failed".

Python 3 standard library only.
"""

import argparse
import json
import glob
import os
import re
import sys

SUMMARY_RE = re.compile(
    r"\[doctest\] test cases:\s*(\d+)\s*\|\s*(\d+)\s+passed\s*\|"
    r"\s*(\d+)\s+failed\s*(?:\|\s*(\d+)\s+skipped)?")
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

OK_RESULTS = {"OK", "EXPECTEDFAIL"}
SKIP_RESULTS = {"SKIP"}


def say(line=""):
    print(line, flush=True)


def describe(entry):
    res = entry.get("result", "?")
    rc = entry.get("returncode")
    if isinstance(rc, int) and rc < 0:
        how = f"killed by signal {-rc}"
    elif isinstance(rc, int) and rc != 0:
        how = f"exit status {rc}"
    else:
        how = None
    return f"{res} ({how})" if how else res


def exe_name(entry):
    cmd = entry.get("command") or []
    return os.path.basename(str(cmd[0])) if cmd else ""


def count_entry(entry):
    """Returns (passed, failed, skipped, note or None)."""
    name = entry.get("name", "?")
    res = entry.get("result", "?")
    text = "\n".join(str(entry.get(k) or "")
                     for k in ("stdout", "stdo", "stderr", "stde"))
    text = ANSI_RE.sub("", text)
    matches = SUMMARY_RE.findall(text)

    if res in SKIP_RESULTS:
        return 0, 0, 1, f"{name}: skipped"
    if res == "EXPECTEDFAIL":
        return 1, 0, 0, None

    if matches:
        _total, passed, failed, _skipped = (int(x or 0) for x in matches[-1])
        if res in OK_RESULTS:
            if failed:
                return passed, failed, 0, (
                    f"{name}: {failed} doctest case(s) failed")
            return passed, 0, 0, None
        if failed:
            return passed, failed, 0, (
                f"{name}: {describe(entry)}, {failed} doctest case(s) failed")
        return passed, 1, 0, (
            f"{name}: {describe(entry)} although doctest reported 0 failed "
            f"(crash at exit, leak, timeout?)")

    if "[doctest]" in text:
        # A doctest binary that did not get to its summary.
        return 0, 1, 0, (
            f"{name}: {describe(entry)}, printed no doctest summary "
            f"(crashed, hung or was killed)")

    if res in OK_RESULTS:
        return 1, 0, 0, None
    if exe_name(entry).startswith("test_"):
        # Most likely a doctest binary that died before printing anything
        # (output is block-buffered into meson's pipe).
        return 0, 1, 0, (
            f"{name}: {describe(entry)}, printed no doctest summary")
    return 0, 1, 0, f"{name}: {describe(entry)}"


def read_log(path):
    entries, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                bad += 1
    return entries, bad


def line_for(label, passed, failed):
    core = f"{passed} passed, {failed} failed"
    return f"{label}: {core}" if label else core


def count_build(args):
    build = args.build_dir
    log = os.path.join(build, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        # `meson test --wrapper W` names its log testlog-W.json instead.
        wrapped = sorted(glob.glob(os.path.join(build, "meson-logs", "testlog-*.json")))
        if len(wrapped) == 1:
            log = wrapped[0]
    passed = failed = skipped = 0
    failures, skips = [], []
    tag = f"[{args.label}] " if args.label else ""

    if args.stage_failed:
        failed += 1
        failures.append(f"{args.stage_failed} failed in {build}; no tests ran")
    elif not os.path.exists(log):
        failed += 1
        failures.append(f"{log} missing: no tests ran")
    else:
        entries, bad = read_log(log)
        if bad:
            failed += 1
            failures.append(f"{log}: {bad} unreadable line(s)")
        if not entries:
            failed += 1
            failures.append(f"{log} is empty: no tests ran")
        for entry in entries:
            p, f, s, note = count_entry(entry)
            passed, failed, skipped = passed + p, failed + f, skipped + s
            if f and note:
                failures.append(note)
            elif s and note:
                skips.append(note)
            say(f"{tag}{entry.get('name', '?')}: {entry.get('result', '?')}"
                f" -> {p} passed, {f} failed" + (", skipped" if s else ""))
        if args.meson_rc and not failed:
            failed += 1
            failures.append(
                f"meson test exited {args.meson_rc} but no test failed")

    for note in skips:
        say(f"{tag}SKIPPED {note}")
    for note in failures:
        say(f"{tag}FAILED {note}")

    counts = {"label": args.label, "build_dir": build, "passed": passed,
              "failed": failed, "skipped": skipped, "failures": failures}
    try:
        os.makedirs(build, exist_ok=True)
        with open(os.path.join(build, "ci-counts.json"), "w") as f:
            json.dump(counts, f, indent=1)
    except OSError as e:
        say(f"{tag}warning: cannot write counts file: {e}")
    say(line_for(args.label, passed, failed))
    return 1 if failed else 0


def sum_counts(args):
    passed = failed = 0
    for path in args.sum:
        try:
            with open(path) as f:
                c = json.load(f)
            passed += int(c.get("passed", 0))
            failed += int(c.get("failed", 0))
            for note in c.get("failures", []):
                say(f"FAILED [{c.get('label') or path}] {note}")
        except (OSError, ValueError) as e:
            failed += 1
            say(f"FAILED {path}: no counts ({e.__class__.__name__}: {e})")
    say(line_for(args.label, passed, failed))
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build_dir", nargs="?")
    ap.add_argument("--label", default="")
    ap.add_argument("--meson-rc", type=int, default=0)
    ap.add_argument("--stage-failed", default="")
    ap.add_argument("--sum", nargs="+", metavar="COUNTS_JSON")
    args = ap.parse_args()
    if args.sum:
        return sum_counts(args)
    if not args.build_dir:
        ap.error("BUILD_DIR or --sum is required")
    return count_build(args)


if __name__ == "__main__":
    sys.exit(main())
