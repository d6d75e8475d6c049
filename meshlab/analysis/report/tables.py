"""derived/trials.csv (one row per trial) and derived/pairs.csv (one row per paired round)."""

from __future__ import annotations

import csv
import io
import math

from meshlab.analysis.loading.metrics import METRICS
from meshlab.analysis.loading.pairing import log_ratios
from meshlab.analysis.loading.run import CPU_COMPONENTS, Run, Trial
from meshlab.analysis.statistics.results import Analysis

_LATENCY = ("p50", "p90", "p99", "p999", "mean")


def trials_csv(run: Run) -> str:
    header = [
        "trial_id",
        "plan_index",
        "arm",
        "dataplane",
        "round",
        "attempt",
        "pair",
        "load_point",
        "rate",
        "connection_mode",
        "flood",
        "placement",
        "flood_rules",
        "status",
        "rejection_reasons",
        "started_at",
        "requests",
        "achieved_rate",
        *[f"latency_{q}_ms" for q in _LATENCY],
        *[f"cpu_s_per_1000_{c}" for c in CPU_COMPONENTS],
        "node_max_cpu_percent",
        "steal_mean_percent",
        "steal_max_percent",
    ]
    rows = [header]
    for t in run.trials:
        rows.append(
            [
                t.trial_id,
                t.plan_index,
                t.arm,
                t.dataplane,
                t.round,
                t.attempt,
                t.pair,
                t.load_point,
                t.rate,
                t.connection_mode,
                t.flood,
                t.placement,
                t.flood_rules,
                t.status,
                "; ".join(t.rejection_reasons),
                t.started_at,
                t.requests,
                t.achieved_rate,
                *[t.latency.get(q) for q in _LATENCY],
                *[t.cpu_value(c, "per_1000_requests") for c in CPU_COMPONENTS],
                t.cpu_value("node_total", "max_percent"),
                t.steal_mean,
                t.steal_max,
            ]
        )
    return _csv(rows)


def pairs_csv(analysis: Analysis) -> str:
    keys = [m.key for m in METRICS]
    rows: list[list] = [
        [
            "arm",
            "baseline",
            "load_point",
            "flood",
            "placement",
            "round",
            "baseline_trial",
            "arm_trial",
        ]
        + [f"log_ratio_{k}" for k in keys]
    ]
    for c in analysis.comparisons:
        ps = c.pairs
        ratios = {m.key: log_ratios(ps, m) for m in METRICS}
        for i, r in enumerate(ps.rounds):
            rows.append(
                [
                    ps.arm,
                    ps.baseline,
                    ps.load_point,
                    ps.flood,
                    ps.placement,
                    r,
                    ps.a[i].trial_id,
                    ps.b[i].trial_id,
                ]
                + [ratios[k][i] for k in keys]
            )
    return _csv(rows)


def _csv(rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def _cell(v: object) -> object:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return v


def trial_label(t: Trial) -> str:
    return f"{t.arm} r{t.round}" + (f" a{t.attempt}" if t.attempt > 1 else "")
