"""Per-second CPU busy and steal from a trial's proc-stat.jsonl (cumulative /proc/stat ticks)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_IDLE = ("idle", "iowait")
_NOT_TOTAL = ("guest", "guest_nice")  # already counted in user/nice by the kernel


@dataclass(frozen=True)
class Timeline:
    t: np.ndarray  # unix seconds at the end of each 1 s interval
    steal: np.ndarray  # worst single CPU of any host, percent
    busy: np.ndarray  # busiest host's all-CPU non-idle share, percent


def read_proc_stat(path: Path) -> Timeline | None:
    """None when the file is missing or holds fewer than two usable samples."""
    if not path.is_file():
        return None
    by_host: dict[str, list[tuple[float, dict]]] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                by_host.setdefault(str(rec["host"]), []).append((float(rec["t"]), rec["cpus"]))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line of an unfinished trial; raw files stay untouched
    series = [s for s in (_host_series(v) for v in by_host.values()) if s is not None]
    if not series:
        return None
    # align hosts on the first host's clock (samplers tick together, once per second)
    t = series[0][0]
    steal = np.max([np.interp(t, s[0], s[1]) for s in series], axis=0)
    busy = np.max([np.interp(t, s[0], s[2]) for s in series], axis=0)
    return Timeline(t, steal, busy)


def _host_series(samples: list[tuple[float, dict]]) -> tuple[np.ndarray, ...] | None:
    samples.sort(key=lambda s: s[0])
    cpus = sorted({c for _, cp in samples for c in cp if c != "cpu"})
    if len(samples) < 2 or not cpus:
        return None
    modes = sorted({m for _, cp in samples for v in cp.values() for m in v})
    ticks = np.array(
        [[[cp.get(c, {}).get(m, 0) for m in modes] for c in [*cpus, "cpu"]] for _, cp in samples],
        dtype=np.float64,
    )
    delta = np.diff(ticks, axis=0)  # (T-1, cpus+1, modes)
    total_idx = [i for i, m in enumerate(modes) if m not in _NOT_TOTAL]
    idle_idx = [i for i, m in enumerate(modes) if m in _IDLE]
    total = delta[:, :, total_idx].sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        steal_pct = (
            100 * delta[:, :-1, modes.index("steal")] / total[:, :-1]
            if ("steal" in modes)
            else np.zeros_like(total[:, :-1])
        )
        busy_pct = 100 * (total[:, -1] - delta[:, -1, idle_idx].sum(axis=1)) / total[:, -1]
    t = np.array([s[0] for s in samples[1:]])
    return t, np.nan_to_num(steal_pct).max(axis=1), np.nan_to_num(busy_pct)
