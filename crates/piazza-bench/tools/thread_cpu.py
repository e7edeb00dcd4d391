#!/usr/bin/env python3
"""Per-thread CPU and write system calls of a running broker.

Which thread bounds a scenario (the SQLite writer, the flusher, the
checkpointer, the runtime's workers) is what the harness's per-process
figures cannot tell. Run this beside the harness; it finds the broker by
its binary's name, waits, then reads /proc/<pid>/task/*/{stat,io} twice,
`window` seconds apart:

    python3 crates/piazza-bench/tools/thread_cpu.py piazza 8 6 &
    ./target/release/piazza-bench --piazza-bin target/release/piazza \
        --duration-secs 20 create

Arguments: a pattern of the broker's command line (`<pattern> serve` is
looked for), seconds to wait after the broker appears (past the load
phase), seconds to measure. Prints, per thread name (the runtime's
workers summed): user and kernel CPU as a share of one core, `write`
calls per second and MB written per second.
"""

import os
import subprocess
import sys
import time


def broker_pid(pattern):
    while True:
        found = subprocess.run(["pgrep", "-f", pattern + " serve"], capture_output=True, text=True).stdout.split()
        if found:
            return found[0]
        time.sleep(0.2)


def snapshot(pid):
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/task/{tid}/io") as f:
                io = dict(line.split(": ") for line in f.read().splitlines() if line)
        except OSError:
            continue  # the thread ended between listing and reading
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        threads[tid] = (name, int(fields[11]), int(fields[12]), int(io["syscw"]), int(io["wchar"]))
    return threads


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    pattern, delay, window = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    pid = broker_pid(pattern)
    time.sleep(delay)
    before, started = snapshot(pid), time.time()
    time.sleep(window)
    after, elapsed = snapshot(pid), time.time() - started
    ticks = os.sysconf("SC_CLK_TCK")
    totals = {}
    for tid, (name, user, system, calls, written) in after.items():
        if tid not in before:
            continue
        _, user0, system0, calls0, written0 = before[tid]
        key = name if "sqlite" in name else name.rstrip("0123456789-")
        total = totals.setdefault(key, [0, 0, 0, 0])
        for i, delta in enumerate((user - user0, system - system0, calls - calls0, written - written0)):
            total[i] += delta
    for name, (user, system, calls, written) in sorted(totals.items()):
        print(
            f"{name:24s} user {100 * user / ticks / elapsed:5.1f}% kernel {100 * system / ticks / elapsed:5.1f}% "
            f"write calls/s {calls / elapsed:9.0f} MB/s {written / elapsed / 1e6:7.1f}"
        )


if __name__ == "__main__":
    main()
