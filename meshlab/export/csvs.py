"""`--format csv`: one CSV per block (one row per trial, valid and rejected), and the paired
comparisons of every block in comparisons.csv: for people who read results in a spreadsheet.

Column names follow derived/trials.csv (`latency_<q>_ms`, `cpu_s_per_1000_<component>`).
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from meshlab.analysis.loading.run import Block, Run, Trial
from meshlab.analysis.statistics.results import Analysis
from meshlab.record.format import CPU_FIGURES, LATENCY_KEYS, iso_of

COMPARISONS = "comparisons.csv"
_HEADER = [
    "trial_id", "plan_index", "arm", "dataplane", "round", "attempt", "pair", "status", "paired",
    "rejection_reasons", "load_point", "rate", "connection_mode", "flood", "placement",
    "flood_rules", "started_at", "window_start", "window_end", "requests", "achieved_rate",
    *[f"latency_{q}_ms" for q in LATENCY_KEYS],
    *[f"cpu_s_per_1000_{c}" for c in CPU_FIGURES],
    *[f"cpu_seconds_{c}" for c in CPU_FIGURES],
    *[f"max_cpu_percent_{c}" for c in CPU_FIGURES],
    "steal_mean_percent", "steal_max_percent", "schedule_lag_p99_ms", "schedule_lag_max_ms",
    "server_sidecar_p50_ms", "server_sidecar_p99_ms",
]  # fmt: skip


def block_file(block: Block) -> str:
    return ".".join(block) + ".csv"


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)  # every digit: a spreadsheet rounds
    return v


def _render(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def _row(t: Trial, paired: bool) -> list[Any]:
    return [
        t.trial_id, t.plan_index, t.arm, t.dataplane, t.round, t.attempt, t.pair, t.status,
        paired, "; ".join(t.rejection_reasons), t.load_point, t.rate, t.connection_mode, t.flood,
        t.placement, t.flood_rules,
        iso_of(t.started_at) if t.started_at is not None else None,
        t.window[0] if t.window else None, t.window[1] if t.window else None,
        t.requests, t.achieved_rate,
        *[t.latency.get(q) for q in LATENCY_KEYS],
        *[t.cpu_value(c, "per_1000_requests") for c in CPU_FIGURES],
        *[t.cpu_value(c, "cpu_seconds") for c in CPU_FIGURES],
        *[t.cpu_value(c, "max_percent") for c in CPU_FIGURES],
        t.steal_mean, t.steal_max,
        t.schedule_lag.get("p99_ms"), t.schedule_lag.get("max_ms"),
        t.sidecar.get("server", {}).get("p50"), t.sidecar.get("server", {}).get("p99"),
    ]  # fmt: skip


def block_csvs(run: Run, analysis: Analysis) -> dict[str, str]:
    """file name -> CSV text, one per block that has trials."""
    paired = {
        t.trial_id for c in analysis.comparisons for t in (*c.pairs.a, *c.pairs.b)
    }  # a trial that entered any paired comparison
    out = {}
    for block in run.blocks():
        trials = [t for t in run.trials if t.block == block]
        if trials:
            rows = [_HEADER] + [_row(t, t.trial_id in paired) for t in trials]
            out[block_file(block)] = _render(rows)
    return out


def comparisons_csv(analysis: Analysis) -> str:
    rows: list[list[Any]] = [
        [
            "arm", "baseline", "load_point", "flood", "placement", "rounds_paired", "metric",
            "family", "estimate_percent", "ci95_low_percent", "ci95_high_percent",
            "ci95_confidence", "wilcoxon_p", "p_adjusted", "tost_p", "mde_percent", "verdict",
            "verdict_text",
        ]
    ]  # fmt: skip
    for c in analysis.comparisons:
        ps = c.pairs
        for r in c.results:
            d = r.to_dict()
            ci = d["ci95_percent"] or [None, None]
            rows.append(
                [
                    ps.arm, ps.baseline, ps.load_point, ps.flood, ps.placement, ps.n, d["metric"],
                    d["family"], d["estimate_percent"], ci[0], ci[1], d["ci95_confidence"],
                    d["wilcoxon_p"], d["p_adjusted"], d["tost_p"], d["mde_percent"], d["verdict"],
                    d["verdict_text"],
                ]
            )  # fmt: skip
    return _render(rows)
