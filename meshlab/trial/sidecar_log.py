"""The sidecars' own view of each request: their Envoy access logs (the local_sidecar role
writes `<start unix s> <µs downstream first byte in -> last byte out> <status>` per request;
client sidecar: outbound, server sidecar: inbound).

k6 measures from its side; a sidecar measures only the mesh below it. When k6's p99 moves and
the server sidecar's does not, the tail is above the server: the client side or k6 itself.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

LOGS = {"client": "outbound", "server": "inbound"}  # sidecar -> access log of its pod


def parse(text: str) -> np.ndarray:
    """(n, 2) array of (start unix seconds, duration ms); lines that do not parse are skipped
    (a log cut mid-line by the read)."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            rows.append((float(parts[0]), float(parts[1]) / 1000.0))
        except ValueError:
            continue
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


def summarize(rows: np.ndarray, start: float, end: float) -> dict[str, float | int] | None:
    """Percentiles (ms) of the requests that started at the sidecar within the window; None
    when there are none. The window's last request reaches a sidecar a little after k6 starts
    it, so the end is taken 10 ms late."""
    inside = rows[(rows[:, 0] >= start) & (rows[:, 0] <= end + 0.010), 1]
    if inside.size == 0:
        return None
    p50, p90, p99, p999 = np.percentile(inside, [50, 90, 99, 99.9])
    return {
        "count": int(inside.size),
        "p50": round(float(p50), 4),
        "p90": round(float(p90), 4),
        "p99": round(float(p99), 4),
        "p999": round(float(p999), 4),
        "max": round(float(inside.max()), 4),
    }


def read_kept(path: Path) -> np.ndarray:
    """A trial's kept copy (envoy-<sidecar>.log.gz)."""
    with gzip.open(path, "rt") as fh:
        return parse(fh.read())
