"""Synthetic raw files of one trial (k6 output, /proc/stat and cgroup samples), as the netns
runner and the cloud nodes write them, for the engine's judge/prepare/ingest tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from meshlab.core.procstat import FIELDS as PROC_STAT_FIELDS

K6_HEADER = (
    "metric_name,timestamp,metric_value,check,error,error_code,expected_response,group,method,"
    "name,proto,scenario,service,status,subproto,tls_version,url,extra_tags,metadata"
)
T0 = 1_795_600_000.0  # k6 launch (unix seconds)
COMPONENTS = ("client_sidecar", "server_sidecar", "app", "k6")


def write_k6(
    tdir: Path,
    *,
    rate: int,
    duration_s: int,
    dropped: int = 0,
    failed: int = 0,
    warmup_s: float = 5,
    stall: tuple[int, float] | None = None,
) -> None:
    """k6-raw.csv.gz with rate*duration measured requests started on schedule from
    T0 + warmup_s (and a warm-up row) + k6-summary.json. stall=(i, ms): request i and the ones
    due during the next `ms` start late, all at once (k6 stalled, then caught up)."""
    requests = rate * duration_s
    rows = [K6_HEADER]
    rows.append(
        "http_req_duration,1795600000000000,9.000000,,,,true,,GET,http://x/get,HTTP/1.1,warmup,,200,,,http://x/get,,"
    )
    first = T0 + warmup_s
    late_until = None if stall is None else first + stall[0] / rate + stall[1] / 1000
    for i in range(requests):
        ms = 0.25 + (i % 100) / 1000  # 0.250 .. 0.349 ms
        start = first + i / rate
        if late_until is not None and start < late_until and i >= stall[0]:
            start = late_until
        end_us = round((start + ms / 1000) * 1e6)
        rows.append(
            f"http_req_duration,{end_us},{ms:.6f},,,,true,,GET,http://x/get,HTTP/1.1,"
            "measure,,200,,,http://x/get,,"
        )
        rows.append(f"iteration_duration,{end_us},{ms + 0.01:.6f},,,,,,,,,measure,,,,,,,")
    with gzip.open(tdir / "k6-raw.csv.gz", "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    summary = {
        "metrics": {
            "http_reqs{scenario:measure}": {"count": requests, "rate": float(rate)},
            "dropped_iterations{scenario:measure}": {"count": dropped},
            "http_req_failed{scenario:measure}": {"passes": failed, "fails": requests - failed},
            "iterations{scenario:measure}": {"count": requests},
        }
    }
    (tdir / "k6-summary.json").write_text(json.dumps(summary))


def proc_stat_rows(
    host: str,
    seconds: int,
    *,
    start: float = T0,
    cpus: int = 4,
    steal_spike_at: int | None = None,
    steal_ticks: int = 30,
) -> list[dict[str, Any]]:
    """Cumulative /proc/stat samples, one per second; 100 ticks per CPU per second, 20 busy.

    With steal_spike_at=i, cpu1 has `steal_ticks` ticks of steal in second i (a 1 s spike)."""
    acc = {f"cpu{c}": dict.fromkeys(PROC_STAT_FIELDS, 0) for c in range(cpus)}
    rows = []
    for s in range(seconds + 1):
        if s > 0:
            for name, ticks in acc.items():
                steal = steal_ticks if (s == steal_spike_at and name == "cpu1") else 0
                ticks["user"] += 20
                ticks["idle"] += 80 - steal
                ticks["steal"] += steal
        total = {f: sum(t[f] for t in acc.values()) for f in PROC_STAT_FIELDS}
        rows.append(
            {
                "t": start + s,
                "host": host,
                "cpus": {"cpu": total, **{n: dict(t) for n, t in acc.items()}},
            }
        )
    return rows


def cgroup_rows(
    host: str, components: tuple[str, ...], seconds: int, *, start: float = T0, per_s: float = 0.1
) -> list[dict[str, Any]]:
    """Cumulative cpu.stat samples: each component uses `per_s` CPU-s per second."""
    return [
        {
            "t": start + s,
            "host": host,
            "component": name,
            "usage_usec": round(1e6 * per_s * s),
            "user_usec": round(0.6e6 * per_s * s),
            "system_usec": round(0.4e6 * per_s * s),
        }
        for s in range(seconds + 1)
        for name in components
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
