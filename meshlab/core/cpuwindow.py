"""CPU figures over one measured window, from cumulative counter samples (procstat rows).

Every figure of a trial covers the same window: k6's first to last measured request start.
Samplers tick every 0.2 s on their own clock, so each counter is interpolated linearly at the
window's two instants instead of taking the nearest samples (which made the CPU span 15, 15.3,
16 or 16.3 s of a 15 s scenario, depending on microseconds of jitter).

Node CPU comes from precise counters only (meshlab.core.procstat explains why): per CPU,
busy = elapsed - idle - iowait - steal. The tick-sampled busy modes are kept only as proportions
(what kind of work: user, system, softirq, ...) and as a diagnostic of their own bias. The
independent per-CPU task time, where the host has one, checks the busy figure from below.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from meshlab.core.procstat import BUSY_MODES, USER_HZ

Row = dict[str, Any]


def _series(rows: Sequence[Row], value: Callable[[Row], float]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for r in sorted(rows, key=lambda r: float(r["t"])):
        t = float(r["t"])
        if out and t <= out[-1][0]:
            continue  # a duplicate timestamp adds nothing to interpolate with
        out.append((t, float(value(r))))
    return out


def at(series: Sequence[tuple[float, float]], t: float) -> float | None:
    """The cumulative counter at instant t, linear between the samples around it; None if the
    samples do not reach t on both sides (a figure is never extrapolated)."""
    if not series or t < series[0][0] or t > series[-1][0]:
        return None
    i = bisect_left([s[0] for s in series], t)
    if series[i][0] == t:
        return series[i][1]
    (t0, v0), (t1, v1) = series[i - 1], series[i]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def covers(rows: Sequence[Row], start: float, end: float) -> bool:
    ts = [float(r["t"]) for r in rows]
    return bool(ts) and min(ts) <= start and max(ts) >= end


def delta(series: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    a, b = at(series, start), at(series, end)
    return None if a is None or b is None else b - a


def seconds_grid(start: float, end: float) -> list[float]:
    """start, start+1, ... and end: the 1 s intervals of the window (the last may be shorter;
    one under 0.5 s is merged into the one before, so no rate rests on a sliver)."""
    n = math.floor(end - start)
    grid = [start + k for k in range(n + 1)]
    if end - grid[-1] < 0.5 and len(grid) > 1:
        grid[-1] = end
    elif grid[-1] < end:
        grid.append(end)
    return grid


def rates(series: Sequence[tuple[float, float]], start: float, end: float) -> list[float]:
    """The counter's rate in each 1 s interval of the window (units per second); [] when the
    samples do not cover it."""
    grid = seconds_grid(start, end)
    values = [at(series, t) for t in grid]
    if len(grid) < 2 or any(v is None for v in values):
        return []
    return [
        (values[i] - values[i - 1]) / (grid[i] - grid[i - 1])  # type: ignore[operator]
        for i in range(1, len(grid))
    ]


def max_rate(series: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    """The highest per-second rate over the window's 1 s intervals."""
    return max(rates(series, start, end), default=None)


@dataclass(frozen=True)
class CpuAccount:
    """One CPU over the window, in seconds."""

    elapsed: float
    idle: float
    iowait: float
    steal: float
    task: float | None  # independent: tasks' exec runtime on this CPU (None: no source)
    ticks: dict[str, float]  # tick-sampled busy modes: proportions and bias only

    @property
    def busy(self) -> float:
        """Non-idle, non-stolen time: the precise figure every node CPU number uses."""
        return self.elapsed - self.idle - self.iowait - self.steal

    @property
    def ticks_busy(self) -> float:
        return sum(self.ticks.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "elapsed": round(self.elapsed, 6),
            "busy": round(self.busy, 6),
            "idle": round(self.idle, 6),
            "iowait": round(self.iowait, 6),
            "steal": round(self.steal, 6),
            "task": None if self.task is None else round(self.task, 6),
            "ticks": {k: round(v, 4) for k, v in self.ticks.items()},
        }


def _tick_counter(cpu: str, mode: str) -> Callable[[Row], float]:
    return lambda r: r["cpus"][cpu][mode] / USER_HZ


def _task_counter(cpu: str) -> Callable[[Row], float]:
    return lambda r: r["task_ns"][cpu] / 1e9


def cpu_accounts(stat_rows: Sequence[Row], start: float, end: float) -> dict[str, CpuAccount]:
    """Per-CPU accounts of one host over [start, end]; {} when the samples do not cover it."""
    if not covers(stat_rows, start, end):
        return {}
    cpus = sorted(c for c in stat_rows[0]["cpus"] if c != "cpu")
    with_task = all("task_ns" in r for r in stat_rows)
    out = {}
    for cpu in cpus:
        d = {m: delta(_series(stat_rows, _tick_counter(cpu, m)), start, end) or 0.0
             for m in ("idle", "iowait", "steal", *BUSY_MODES)}  # fmt: skip
        task = delta(_series(stat_rows, _task_counter(cpu)), start, end) if with_task else None
        out[cpu] = CpuAccount(
            elapsed=end - start,
            idle=d["idle"],
            iowait=d["iowait"],
            steal=d["steal"],
            task=task,
            ticks={m: d[m] for m in BUSY_MODES},
        )
    return out


def steal_percent(stat_rows: Sequence[Row], start: float, end: float) -> tuple[float, float]:
    """(mean, max) of the worst CPU of any host: its steal share over the window, and in its
    worst 1 s interval, percent."""
    mean, worst = 0.0, 0.0
    for rows in _by_host(stat_rows).values():
        if not covers(rows, start, end) or end <= start:
            continue
        for cpu in (c for c in rows[0]["cpus"] if c != "cpu"):
            series = _series(rows, _tick_counter(cpu, "steal"))
            mean = max(mean, 100.0 * (delta(series, start, end) or 0.0) / (end - start))
            worst = max(worst, 100.0 * max(rates(series, start, end), default=0.0))
    return mean, worst


def _by_host(rows: Sequence[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(str(r["host"]), []).append(r)
    return out


def _usage_series(rows: Sequence[Row]) -> list[tuple[float, float]]:
    return _series(rows, lambda r: r["usage_usec"] / 1e6)


def trial_cpu(
    stat_rows: Sequence[Row], cgroup_rows: Sequence[Row], start: float, end: float, requests: int
) -> tuple[dict[str, dict[str, float | None]], dict[str, dict[str, CpuAccount]], str]:
    """Every CPU figure of one trial over [start, end]: ({component or node_total: {cpu_seconds,
    per_1000_requests, max_percent}}, {host: {cpu: account}}, task time source).

    A component is absent when its samples do not cover the window; node_total sums the busy
    time of every host whose samples do (max_percent: of one CPU, like top, up to 100 x cores).
    """

    def figure(seconds: float, peak: float | None) -> dict[str, float | None]:
        return {
            "cpu_seconds": round(seconds, 6),
            "per_1000_requests": round(1000 * seconds / requests, 6) if requests else None,
            "max_percent": None if peak is None else round(100 * peak, 2),
        }

    cpu: dict[str, dict[str, float | None]] = {}
    for name in sorted({r["component"] for r in cgroup_rows}):
        series = _usage_series([r for r in cgroup_rows if r["component"] == name])
        seconds = delta(series, start, end)
        if seconds is not None:
            cpu[name] = figure(seconds, max_rate(series, start, end))
    accounts: dict[str, dict[str, CpuAccount]] = {}
    sources = set()
    busy = 0.0
    peak = 0.0
    for host, rows in sorted(_by_host(stat_rows).items()):
        host_accounts = cpu_accounts(rows, start, end)
        if not host_accounts:
            continue
        accounts[host] = host_accounts
        sources |= {str(r.get("task_source", "")) for r in rows}
        busy += sum(a.busy for a in host_accounts.values())
        # busy per second of the whole host: elapsed x CPUs minus its idle, iowait and steal
        not_busy = _series(
            rows, lambda r: sum(r["cpus"]["cpu"][m] for m in ("idle", "iowait", "steal")) / USER_HZ
        )
        least_idle = min(rates(not_busy, start, end), default=None)
        if least_idle is not None:
            peak = max(peak, len(host_accounts) - least_idle)  # the busiest second, in CPUs
    if accounts:
        cpu["node_total"] = figure(busy, peak)
    return cpu, accounts, ",".join(sorted(s for s in sources if s))
