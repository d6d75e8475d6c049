"""Report sections built from the analysis and the trials' own records: the host's speed taken
out, which path each hop took, the no-mesh floor, each arm's saturation point, and where the
run's time went. Each returns what its template section renders (or None: not shown)."""

from __future__ import annotations

import statistics
from typing import Any

from meshlab.analysis.loading import timing as time_spent
from meshlab.analysis.loading.metrics import BY_KEY
from meshlab.analysis.loading.run import block_title
from meshlab.analysis.report.path_table import path_rows
from meshlab.analysis.statistics import fmt
from meshlab.analysis.statistics.fmt import pct
from meshlab.analysis.statistics.results import Analysis, Comparison


def host_speed(c: Comparison) -> dict[str, Any]:
    """One comparison's primaries raw and host-speed adjusted (analysis/host_speed.py)."""
    h = c.host
    assert h is not None

    def judged(j: Any) -> str:
        change = f"{pct(j.estimate):+.1f} %"
        if j.ci is None:
            return f"{change} ({j.verdict})"
        return (
            f"{change} [{pct(j.ci[0]):+.1f}, {pct(j.ci[1]):+.1f}] "
            f"±{j.half_width_percent:.1f} pp, {j.verdict}"
        )

    return {
        "title": c.pairs.title,
        "n": h.n,
        "rows": [
            {
                "metric": BY_KEY[row.label].phrase,
                "raw": judged(row.raw),
                "adjusted": judged(row.adjusted),
                "beta": row.beta,
                "r": row.r,
                "r_k6": h.k6_r.get(row.label),
            }
            for row in h.rows
        ],
        "probe_shift": pct(h.probe.covariate_shift),
        "probe_p": h.probe.covariate_p,
        "k6_shift": None if h.k6_shift is None else pct(h.k6_shift),
        "k6_p": h.k6_p,
    }


def paths(a: Analysis) -> list[dict[str, Any]]:
    """The path table: per block, arm and hop, what carried it (analysis/path_table.py)."""
    out = []
    for row in path_rows(a.run):
        out.append(
            {
                "where": block_title(row.block),
                "arm": row.arm,
                "hop": row.hop,
                "expected": row.expected,
                "found": ", ".join(f"{c} {fmt.TIMES}{n}" for c, n in sorted(row.carriers.items())),
                "ok": row.as_expected,
                "trials": row.trials,
                "connections": row.connections_per_1000,
                "messages": row.messages_per_request,
            }
        )
    return out


def floor(a: Analysis) -> dict[str, Any] | None:
    """Each mesh arm over no-mesh, and what each eBPF arm recovers (analysis/floor.py)."""
    if not a.floor_costs:
        return None

    def ci(v: tuple[float, float] | None, scale: Any) -> str:
        return "—" if v is None else f"[{scale(v[0]):+.1f}, {scale(v[1]):+.1f}]"

    return {
        "costs": [
            {
                "where": block_title(c.block),
                "arm": c.arm,
                "metric": c.metric.phrase,
                "n": c.n,
                "cost": f"{pct(c.estimate):+.1f} %" if c.n else "—",
                "ci": ci(c.ci, pct),
            }
            for c in a.floor_costs
        ],
        "recovered": [
            {
                "where": block_title(r.block),
                "arm": r.arm,
                "via": r.via,
                "metric": r.metric.phrase,
                "n": r.n,
                "share": "—" if r.n == 0 else f"{100 * r.share:.0f} %",
                "ci": ci(r.ci, lambda v: 100 * v).replace("[+", "[").replace(", +", ", "),
            }
            for r in a.recovered
        ],
    }


def saturation(a: Analysis) -> dict[str, Any] | None:
    """Each arm's saturation point, the rates it tried and why each failed, and what the eBPF
    arms carry more than the baseline at the same limits (experiment/saturation.py)."""
    exp = a.run.manifest.experiment
    if exp.saturation is None:
        return None
    from meshlab.analysis.statistics import saturation as search_steps

    done = {t.plan_index: t.record for t in a.run.trials}
    search = search_steps.replay(exp, a.run.plan, done)
    results = search.result()
    base = a.run.baseline
    gains = []
    for arm in a.run.arms:
        g = search.gain(arm, base) if arm != base else None
        if g is not None:
            gains.append({"arm": arm, "estimate": g[0], "low": g[1], "high": g[2]})
    return {
        "p99_ms": exp.saturation.p99_ms,
        "arms": [r.to_dict() for r in results.values()],
        "gains": gains,
        "baseline": base,
        "done": search.done,
    }


def timing(a: Analysis) -> dict[str, Any] | None:
    """Where the trial loop's wall time went (analysis/timing.py), from the trials' records."""
    records = [t.record for t in a.run.trials if t.record is not None]
    if not records or all(r.timeline is None for r in records):
        return None
    wall, share = time_spent.measuring_share(a.run.manifest, records)
    found = time_spent.gaps(records, time_spent.segment_starts(a.run.manifest))

    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    return {
        "wall_min": wall / 60,
        "share": share,
        "gaps": len(found),
        "gap": median([g.seconds for g in found]),
        "parts": [
            (name, median([getattr(g, key) for g in found]))
            for name, key in (
                ("judging and recording the previous trial", "judge_s"),
                ("quiet-host check (and any wait)", "quiet_wait_s"),
                ("arm switch", "arm_s"),
                ("rule check at a block's start", "settle_s"),
                ("host-speed probe, before and after", "probe_s"),
                ("k6 start-up and warm-up", "launch_s"),
            )
        ],
    }
