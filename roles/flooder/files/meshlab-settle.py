#!/usr/bin/python3
"""Wait until this node's iptables rule count is stable and kube-proxy's CPU is idle.

The thesis lost 25 minutes of measurements to kube-proxy still rewriting ~100k rules after the
flood was created. This gate samples once per second: the count of `iptables-save` lines (all
tables) and the CPU time of every process named kube-proxy (utime+stime from /proc/<pid>/stat).
It returns when, over the last --stable-seconds, the count did not change and kube-proxy used less
than --cpu-idle-percent of one CPU, or when --timeout expires. Prints one JSON object with the
fields of trial.json's `settle` (seconds, cpu_busy_percent, rules_stable, timed_out) plus the
rule count; --output also writes it. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path


def count_rules() -> int:
    out = subprocess.run(["iptables-save"], check=True, capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def process_ticks(name: str = "kube-proxy", proc: Path = Path("/proc")) -> int:
    """Sum of utime+stime (clock ticks) of every process whose comm is `name`."""
    total = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != name:
                continue
            stat = (entry / "stat").read_text()
        except OSError:  # the process went away between listing and reading
            continue
        # comm may contain spaces; fields after the closing parenthesis are fixed.
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of proc(5))
    return total


def settle(
    sample_rules: Callable[[], int],
    sample_ticks: Callable[[], int],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    stable_seconds: int,
    cpu_idle_percent: float,
    timeout_s: float,
    clk_tck: int,
    interval_s: float = 1.0,
) -> dict[str, object]:
    start = clock()
    window: deque[tuple[float, int, int]] = deque(maxlen=stable_seconds + 1)
    while True:
        now = clock()
        window.append((now, sample_rules(), sample_ticks()))
        busy = 0.0
        stable = False
        if len(window) == window.maxlen:
            t0, rules0, ticks0 = window[0]
            t1, _, ticks1 = window[-1]
            stable = all(r == rules0 for _, r, _ in window)
            busy = 100.0 * (ticks1 - ticks0) / clk_tck / max(t1 - t0, 1e-9)
            if stable and busy < cpu_idle_percent:
                return _result(now - start, busy, True, False, window[-1][1])
        if now - start >= timeout_s:
            return _result(now - start, busy, stable, True, window[-1][1])
        sleep(interval_s)


def _result(
    seconds: float, busy: float, stable: bool, timed_out: bool, rules: int
) -> dict[str, object]:
    return {
        "seconds": round(seconds, 3),
        "cpu_busy_percent": round(busy, 3),
        "rules_stable": stable,
        "timed_out": timed_out,
        "rules": rules,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stable-seconds", type=int, default=10)
    parser.add_argument("--cpu-idle-percent", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    result = settle(
        count_rules,
        process_ticks,
        time.monotonic,
        time.sleep,
        args.stable_seconds,
        args.cpu_idle_percent,
        args.timeout,
        os.sysconf("SC_CLK_TCK"),
    )
    result["host"] = os.uname().nodename
    result["finished_at"] = time.time()
    text = json.dumps(result, sort_keys=True)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.output)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
