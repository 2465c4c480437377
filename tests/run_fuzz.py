#!/usr/bin/env python3
"""Runs a libFuzzer binary for a bounded time without touching the source tree.

  run_fuzz.py FUZZER SEED_CORPUS_DIR SECONDS [--dict FILE] [--work DIR]
  run_fuzz.py --probe CLANGXX

libFuzzer writes the inputs it finds into the first corpus directory it is
given, so the seed corpus (tests/fuzz_http_corpus, in the source tree) goes
second and a scratch directory in the build tree first; crash reproducers
land in --work (default: a fuzz-<name> directory next to the binary). Exit
status is the fuzzer's: 0 when nothing was found in the time given. The
command is printed first, so a failure can be reproduced from the log.
SPINDLE_FUZZ_SECONDS in the environment overrides SECONDS (longer local
runs; 0 only replays the corpus).

--probe: exits 0 when CLANGXX can compile and link a libFuzzer target with
AddressSanitizer and UBSan. tests/meson.build asks at configure time,
because a clang without its runtime libraries fails only when linking.

Standard library only.
"""
import os
import shutil
import subprocess
import sys
import tempfile

PROBE = """
#include <cstddef>
#include <cstdint>
#include <string>
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return static_cast<int>(std::string(reinterpret_cast<const char*>(data), size).size() * 0);
}
"""


def probe(clangxx: str) -> int:
    with tempfile.TemporaryDirectory(prefix="spindle-fuzz-probe-") as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w", encoding="utf-8") as f:
            f.write(PROBE)
        try:
            proc = subprocess.run([clangxx, "-std=c++20", "-fsanitize=fuzzer,address,undefined",
                                   src, "-o", os.path.join(tmp, "probe")],
                                  capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"cannot run {clangxx}: {e}")
            return 1
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            print(lines[-1] if lines else f"{clangxx} failed with status {proc.returncode}")
            return 1
    print("ok")
    return 0


def run(fuzzer: str, seeds: str, seconds: int, dict_file: str | None, work: str | None) -> int:
    seconds = int(os.environ.get("SPINDLE_FUZZ_SECONDS", seconds))
    work = os.path.abspath(work or os.path.join(os.path.dirname(fuzzer),
                                                "fuzz-" + os.path.basename(fuzzer)))
    corpus = os.path.join(work, "corpus")
    # A fresh scratch corpus each run: the time goes to exploring from the
    # seeds, and the build tree does not grow from run to run.
    shutil.rmtree(corpus, ignore_errors=True)
    os.makedirs(corpus)
    budget = "-runs=0" if seconds == 0 else f"-max_total_time={seconds}"
    cmd = [fuzzer, corpus, seeds, budget, "-timeout=10", "-rss_limit_mb=2048",
           "-print_final_stats=1", f"-artifact_prefix={work}/"]
    if dict_file:
        cmd.append(f"-dict={dict_file}")
    print("run_fuzz:", " ".join(cmd), flush=True)
    # Start-up and the final merge take a few seconds beyond the budget;
    # this limit only catches a fuzzer that ignores -max_total_time.
    proc = subprocess.run(cmd, timeout=seconds * 2 + 60)
    if proc.returncode != 0:
        found = sorted(f for f in os.listdir(work)
                       if f.startswith(("crash-", "leak-", "timeout-", "oom-", "slow-unit-")))
        print(f"run_fuzz: FAIL: exit status {proc.returncode}; reproducers in {work}: {found}")
    else:
        print(f"run_fuzz: ok: nothing found in {seconds} s")
    return proc.returncode


def main(argv: list[str]) -> int:
    args = argv[1:]
    if len(args) == 2 and args[0] == "--probe":
        return probe(args[1])
    dict_file = work = None
    rest = []
    i = 0
    while i < len(args):
        if args[i] == "--dict" and i + 1 < len(args):
            dict_file = os.path.abspath(args[i + 1])
            i += 2
        elif args[i] == "--work" and i + 1 < len(args):
            work = args[i + 1]
            i += 2
        else:
            rest.append(args[i])
            i += 1
    if len(rest) != 3 or not rest[2].isdigit():
        print(__doc__)
        return 2
    return run(os.path.abspath(rest[0]), os.path.abspath(rest[1]), int(rest[2]), dict_file, work)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
