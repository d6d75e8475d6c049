"""Reading schema-1 trials (meshlab up to ab37225) as schema 2, re-derived from their raw files.

Schema 1 summed node CPU from /proc/stat's tick-sampled busy columns (biased by -21 % .. +15 %
per trial on a NO_HZ_IDLE kernel, with a sign that followed the arm) over a window that was
neither k6's measured one nor of constant length. A schema-1 trial dir still holds the raw
samples, so its figures are computed again with today's definitions:

- window: k6's first to last measured request start when the raw CSV is kept (source "k6
  iteration starts"), else the planned one it used (source "planned");
- CPU: every component and node_total over that window, counters interpolated at its edges,
  node busy from the idle complement; steal likewise;
- load generator: the schedule lag when the raw CSV is kept;
- status, gates and reasons stay as judged then (a trial is never re-judged silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshlab.core import cpuwindow
from meshlab.errors import MeshlabError
from meshlab.k6.results import read_measured
from meshlab.k6.schedule import schedule_lag


def trial_from_v1(
    doc: dict[str, Any],
    raw: Path | None,
    stat: list[dict[str, Any]],
    cgroups: list[dict[str, Any]],
) -> dict[str, Any]:
    """The schema-2 document of a schema-1 `doc`, from its kept raw files: k6's CSV (`raw`,
    None when it was not kept) and its samples (the run directory reads them: rundir.py)."""
    out = {k: v for k, v in doc.items() if k not in ("window", "cpu", "steal", "schema_version")}
    out["schema_version"] = 2
    window = doc.get("window") or {}
    planned = float(window.get("start", 0.0))
    start, end = planned, float(window.get("end", 0.0))
    requests = int((doc.get("summary") or {}).get("requests") or 0)
    source, lag = "planned", None
    if raw is not None:
        try:
            measured = read_measured(raw)
        except MeshlabError:
            measured = None
        if measured is not None and measured.starts_s.size >= 2:
            start, end = float(measured.starts_s[0]), float(measured.starts_s[-1])
            requests, source = int(measured.starts_s.size), "k6 iteration starts"
            lag = schedule_lag(measured.starts_s, float(doc["load_point"]["rate"]))
    out["window"] = {
        "start": start,
        "end": end,
        "requests": requests,
        "planned_start": planned,
        "source": source,
    }
    cpu, accounts, task_source = cpuwindow.trial_cpu(stat, cgroups, start, end, requests)
    out["cpu"] = cpu
    out["node"] = (
        {
            "task_source": task_source,
            "hosts": {h: {c: a.as_dict() for c, a in cpus.items()} for h, cpus in accounts.items()},
        }
        if accounts
        else None
    )
    mean, worst = cpuwindow.steal_percent(stat, start, end)
    out["steal"] = {"mean_percent": round(mean, 4), "max_percent": round(worst, 4)}
    out["load_generator"] = {"env": {}, "schedule_lag": lag}
    out["sidecar_latency_ms"] = {}
    return out
