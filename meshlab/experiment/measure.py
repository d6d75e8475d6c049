"""Trial metrics from the raw files: CPU per component and node, steal, and the gates."""

from __future__ import annotations

import os
from itertools import pairwise
from typing import Any

from meshlab.experiment.samplers import busy_and_total, steal_percent

USER_HZ = os.sysconf("SC_CLK_TCK")


def _in_window(rows: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    """The samples bracketing the window: last at/before start .. first at/after end."""
    rows = sorted(rows, key=lambda r: r["t"])
    before = [r for r in rows if r["t"] <= start]
    after = [r for r in rows if r["t"] >= end]
    first = before[-1] if before else rows[0]
    last = after[0] if after else rows[-1]
    return [r for r in rows if first["t"] <= r["t"] <= last["t"]]


def component_cpu(
    cgroup_rows: list[dict[str, Any]], start: float, end: float, requests: int
) -> dict[str, dict[str, float]]:
    out = {}
    for name in sorted({r["component"] for r in cgroup_rows}):
        rows = _in_window([r for r in cgroup_rows if r["component"] == name], start, end)
        if len(rows) < 2:
            continue
        seconds = (rows[-1]["usage_usec"] - rows[0]["usage_usec"]) / 1e6
        peaks = [
            100.0 * (b["usage_usec"] - a["usage_usec"]) / 1e6 / (b["t"] - a["t"])
            for a, b in pairwise(rows)
            if b["t"] > a["t"]
        ]
        out[name] = {
            "cpu_seconds": round(seconds, 6),
            "per_1000_requests": round(1000 * seconds / requests, 6) if requests else None,
            "max_percent": round(max(peaks), 2) if peaks else None,
        }
    return out


def node_cpu_and_steal(
    stat_rows: list[dict[str, Any]], start: float, end: float, requests: int
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """node_total CPU (all CPUs, non-idle) and steal: the worst CPU of any host."""
    node: dict[str, dict[str, float]] = {}
    steal_mean, steal_max, busy_secs, peak = 0.0, 0.0, 0.0, 0.0
    for host in sorted({r["host"] for r in stat_rows}):
        rows = _in_window([r for r in stat_rows if r["host"] == host], start, end)
        if len(rows) < 2:
            continue
        first, last = rows[0]["cpus"], rows[-1]["cpus"]
        busy, _ = busy_and_total(first["cpu"], last["cpu"])
        busy_secs += busy / USER_HZ
        for a, b in pairwise(rows):
            dt = b["t"] - a["t"]
            if dt > 0:
                peak = max(
                    peak,
                    100.0 * busy_and_total(a["cpus"]["cpu"], b["cpus"]["cpu"])[0] / USER_HZ / dt,
                )
        for cpu in (c for c in first if c != "cpu"):
            per_interval = [
                steal_percent(a["cpus"][cpu], b["cpus"][cpu]) for a, b in pairwise(rows)
            ]
            if per_interval:
                steal_mean = max(steal_mean, sum(per_interval) / len(per_interval))
                steal_max = max(steal_max, max(per_interval))
    node["node_total"] = {
        "cpu_seconds": round(busy_secs, 6),
        "per_1000_requests": round(1000 * busy_secs / requests, 6) if requests else None,
        "max_percent": round(peak, 2),
    }
    return node, {"mean_percent": round(steal_mean, 4), "max_percent": round(steal_max, 4)}


def evaluate_gates(
    *,
    rate: int,
    achieved: float,
    dropped: int,
    failed: int,
    steal: dict[str, float],
    gates: Any,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Gate values, limits and verdicts; one human sentence per failed gate."""
    rate_error = 100.0 * abs(achieved - rate) / rate
    table = {
        "dropped_iterations": {"value": dropped, "limit": 0},
        "achieved_rate_error": {
            "value": round(rate_error, 3),
            "limit": gates.rate_tolerance_percent,
        },
        "failed_requests": {"value": failed, "limit": 0},
        "steal_mean_percent": {"value": steal["mean_percent"], "limit": gates.steal_mean_percent},
        "steal_max_percent": {"value": steal["max_percent"], "limit": gates.steal_max_percent},
    }
    reasons = []
    for name, g in table.items():
        g["pass"] = g["value"] <= g["limit"]
        if not g["pass"]:
            reasons.append(f"{name} {g['value']} exceeds {g['limit']}")
    return table, reasons
