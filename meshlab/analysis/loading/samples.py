"""Per-second CPU busy and steal from a trial's proc-stat.jsonl, for the report's timeline.

The same definitions as every node CPU figure (meshlab.core.cpuwindow): busy is elapsed minus
idle, iowait and steal (ns-accounted), never the tick-sampled busy columns; counters are
interpolated at whole seconds, whatever the sampling interval (0.2 s on the testbed)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meshlab.core import cpuwindow
from meshlab.core.procstat import read_jsonl


@dataclass(frozen=True)
class Timeline:
    t: np.ndarray  # unix seconds at the end of each 1 s interval
    steal: np.ndarray  # worst single CPU of any host, percent
    busy: np.ndarray  # busiest host's all-CPU busy share, percent


def read_proc_stat(path: Path) -> Timeline | None:
    """None when the file is missing or holds less than one second of usable samples."""
    if not path.is_file():
        return None
    try:
        rows = read_jsonl(path)  # a torn last line of an unfinished trial is skipped
    except (OSError, ValueError):
        return None
    by_host: dict[str, list[dict]] = {}
    for r in rows:
        if isinstance(r, dict) and "t" in r and "cpus" in r and "host" in r:
            by_host.setdefault(str(r["host"]), []).append(r)
    series = [s for s in (_host_series(v) for v in by_host.values()) if s is not None]
    if not series:
        return None
    t = series[0][0]  # hosts on the first host's whole seconds
    steal = np.max([np.interp(t, s[0], s[1]) for s in series], axis=0)
    busy = np.max([np.interp(t, s[0], s[2]) for s in series], axis=0)
    return Timeline(t, steal, busy)


def _host_series(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    rows.sort(key=lambda r: r["t"])
    first, last = math.ceil(rows[0]["t"]), math.floor(rows[-1]["t"])
    if last - first < 1:
        return None
    ends, steal, busy = [], [], []
    for a in range(first, last):
        accounts = cpuwindow.cpu_accounts(rows, float(a), float(a + 1))
        if not accounts:
            continue
        ends.append(a + 1.0)
        steal.append(100 * max(acc.steal / acc.elapsed for acc in accounts.values()))
        total = sum(acc.elapsed for acc in accounts.values())
        busy.append(100 * sum(max(acc.busy, 0.0) for acc in accounts.values()) / total)
    if not ends:
        return None
    return np.array(ends), np.array(steal), np.array(busy)
