#!/usr/bin/env python3
"""Runs an example program and checks what it prints and how long it took.

  check_example.py BINARY [--arg A ...] [--expect TEXT ...]
                   [--time REGEX MIN MAX ...]

--expect: TEXT must appear in the output (in the given order).
--time:   REGEX (one group: a number of seconds) must match the output and
          the number must lie in [MIN, MAX]. Timings are "not early, and not
          absurdly late": MIN is the scaled seed timing, MAX is generous.
"""
import re
import subprocess
import sys


def main(argv):
    binary, args, expects, times = argv[1], [], [], []
    i = 2
    while i < len(argv):
        if argv[i] == "--arg":
            args.append(argv[i + 1]); i += 2
        elif argv[i] == "--expect":
            expects.append(argv[i + 1]); i += 2
        elif argv[i] == "--time":
            times.append((argv[i + 1], float(argv[i + 2]), float(argv[i + 3]))); i += 4
        else:
            print(f"check_example: unknown argument {argv[i]}"); return 2
    proc = subprocess.run([binary] + args, capture_output=True, text=True, timeout=120)
    out = proc.stdout
    print(out, end="")
    if proc.returncode != 0:
        print(f"FAIL: exit status {proc.returncode}\n{proc.stderr}"); return 1
    pos = 0
    for text in expects:
        found = out.find(text, pos)
        if found < 0:
            print(f"FAIL: expected {text!r} (in order) in the output"); return 1
        pos = found + len(text)
    for regex, lo, hi in times:
        m = re.search(regex, out)
        if not m:
            print(f"FAIL: no match for {regex!r}"); return 1
        t = float(m.group(1))
        if not lo <= t <= hi:
            print(f"FAIL: {regex!r} gave {t}, expected between {lo} and {hi}"); return 1
    print("check_example: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
