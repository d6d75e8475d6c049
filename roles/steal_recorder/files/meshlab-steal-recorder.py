#!/usr/bin/python3
"""Append one /proc/stat sample per second as a JSON line (results/README.md `proc-stat.jsonl`).

Line format: {"t": unix_seconds_float, "host": str, "cpus": {"cpu": {...}, "cpu0": {...}, ...}}
with cumulative USER_HZ ticks exactly as /proc/stat reports them. Installed on every cloud VM by
the steal_recorder role as a systemd service; the experiment engine cuts each trial's window out
of the file by `t`. Standard library only (runs with Debian's python3).
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from pathlib import Path

FIELDS = (
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
)


def parse_proc_stat(text: str) -> dict[str, dict[str, int]]:
    """Return {"cpu": {...}, "cpu0": {...}} for every cpu line of /proc/stat."""
    cpus: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *values = line.split()
        # Old kernels print fewer columns; missing ones are 0, as proc(5) documents.
        numbers = [int(v) for v in values[: len(FIELDS)]]
        numbers += [0] * (len(FIELDS) - len(numbers))
        cpus[name] = dict(zip(FIELDS, numbers, strict=True))
    return cpus


def sample_line(t: float, host: str, stat_text: str) -> str:
    return json.dumps(
        {"t": round(t, 6), "host": host, "cpus": parse_proc_stat(stat_text)}, separators=(",", ":")
    )


def rotate_if_large(path: Path, max_bytes: int) -> None:
    """Keep one previous file: the engine fetches after every trial, so two files cover it."""
    try:
        if path.stat().st_size >= max_bytes:
            path.replace(path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass


def run(output: Path, host: str, interval: float, max_bytes: int, count: int | None = None) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    proc_stat = Path("/proc/stat")
    written = 0
    # Sleep to the next multiple of the interval so samples of different hosts line up.
    next_t = (int(time.time() / interval) + 1) * interval
    while count is None or written < count:
        time.sleep(max(0.0, next_t - time.time()))
        line = sample_line(time.time(), host, proc_stat.read_text())
        rotate_if_large(output, max_bytes)
        with output.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        written += 1
        next_t += interval
        if next_t < time.time():  # suspended or starved: skip missed ticks rather than burst
            next_t = (int(time.time() / interval) + 1) * interval


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--host", default=socket.gethostname())
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--max-bytes", type=int, default=256 * 1024 * 1024)
    parser.add_argument("--count", type=int, default=None, help="stop after N samples (tests)")
    args = parser.parse_args(argv)
    run(args.output, args.host, args.interval, args.max_bytes, args.count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
