"""What the report says, as data: the context that templates/report.html.j2 (one self-contained
file: inline CSS, figures as base64 PNG) and templates/summary.md.j2 render.

Every number here is one the analysis computed; this module only picks and formats them."""

from __future__ import annotations

import base64
import statistics
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2

from meshlab.analysis import fmt, stats, timing
from meshlab.analysis.analyse import PRIMARY, Analysis, Comparison, MetricResult
from meshlab.analysis.figures import Figure_, cells
from meshlab.analysis.fmt import pct
from meshlab.analysis.metrics import BY_KEY
from meshlab.analysis.path_table import path_rows
from meshlab.analysis.reproduce import Sibling
from meshlab.analysis.run import Trial, cell_title
from meshlab.analysis.thesis import SpreadRow
from meshlab.record.format import COMPONENTS, HOUSEKEEPING

SCOPE = (
    "The intervals describe round-to-round noise within this run, on this host. Whether the "
    "next run, or a rerun in a quieter cloud, agrees is a separate question: see "
    "Reproducibility below, and meshlab compare."
)


@dataclass(frozen=True)
class Notice:
    kind: str  # "" or "bad"
    title: str
    text: str
    items: tuple[str, ...] = ()


def _env() -> jinja2.Environment:
    loader = jinja2.PackageLoader("meshlab.analysis", "templates")
    env = jinja2.Environment(
        loader=loader,
        autoescape=jinja2.select_autoescape(["html.j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        pct=fmt.signed_pct, ci=fmt.ci_pct, p=fmt.p_value, mde=fmt.mde_pct, percent=fmt.percent,
        ms=fmt.ms, number=fmt.number,
    )  # fmt: skip
    return env


def render_html(ctx: dict[str, Any]) -> str:
    css = resources.files("meshlab.analysis").joinpath("templates/report.css").read_text()
    return _env().get_template("report.html.j2").render(css=css, **ctx)


def render_md(ctx: dict[str, Any]) -> str:
    return _env().get_template("summary.md.j2").render(**ctx)


def context(
    analysis: Analysis,
    figures: list[Figure_],
    thesis_rows: list[SpreadRow],
    thesis_source: str,
    notes: list[str],
    siblings: list[Sibling],
) -> dict[str, Any]:
    a, run = analysis, analysis.run
    return {
        "run": run,
        "a": a,
        "design": run.experiment.get("design") or "?",
        "description": run.experiment.get("description") or "",
        "notices": _notices(a, notes),
        "scope": SCOPE,
        "sequential": len(a.looks) > 1,
        "comparisons": [_comparison(c) for c in a.comparisons],
        "host_speed": [_host_speed(c) for c in a.comparisons if c.host is not None],
        "timing": _timing(a),
        "paths": _paths(a),
        "floor": _floor(a),
        "saturation": _saturation(a),
        "tails": _tails(a),
        "cpu_rows": _cpu_rows(a),
        "stopping": _stopping(a),
        "siblings": siblings,
        "reproduced": _reproduced(siblings),
        "gates": a.gates,
        "figures": [_figure(f) for f in figures if f.name != "thesis_spread"],
        "thesis_figures": [_figure(f) for f in figures if f.name == "thesis_spread"],
        "thesis_rows": thesis_rows,
        "thesis_source": thesis_source,
        "provenance": _provenance(a),
        "min_rounds": stats.MIN_ROUNDS,
    }


def _notices(a: Analysis, notes: list[str]) -> list[Notice]:
    run = a.run
    out = []
    if run.partial:
        out.append(
            Notice("", "Partial run.", "This report covers what is complete.", tuple(run.notes))
        )
    if a.environment_unfit:
        out.append(
            Notice(
                "bad",
                "Environment unfit.",
                (
                    f"The run ended {run.manifest.outcome}."
                    if run.manifest.outcome
                    else "The run spent its noise budget before its plan was done."
                )
                + f" {a.gates.rejected} trials were rejected by the noise gates: treat every "
                "number below as suspect.",
            )
        )
    if _is_aa(a):
        out.append(
            Notice(
                "",
                "A/A calibration.",
                "Both arms use the same dataplane, so any claimed difference below is a false "
                "positive.",
            )
        )
    planned = sorted({t.trial_id for t in run.trials if t.window_source == "planned"})
    if planned:
        out.append(
            Notice(
                "",
                "Recorded by an older meshlab.",
                f"{len(planned)} trial(s) (schema 1) kept no raw k6 CSV to cut the measured "
                "window from: their CPU covers the window they planned, which starts about "
                "0.2 s before k6's measured scenario. Their CPU figures were re-derived from "
                "their raw samples with the precise counters.",
            )
        )
    if notes:
        out.append(Notice("", "Notes.", "", tuple(notes)))
    return out


def _is_aa(a: Analysis) -> bool:
    planes: dict[str, set[str]] = {}
    for t in a.run.trials:
        planes.setdefault(t.arm, set()).add(t.dataplane)
    return len(planes) > 1 and len({frozenset(v) for v in planes.values()}) == 1


def _row(r: MetricResult) -> dict[str, Any]:
    return {
        "r": r,
        "label": r.metric.label,
        "family": r.family,
        "kind": r.kind,
        "level": r.level,
        "confidence": f"{100 * r.confidence95:.1f} %" if r.confidence95 else "—",
        "p_used": fmt.p_value(r.p_adjusted)
        + (f" (Holm, {r.family_size})" if r.p_adjusted is not None else ""),
    }


def _comparison(c: Comparison) -> dict[str, Any]:
    ps = c.pairs
    return {
        "title": ps.title,
        "pairs": ps,
        "primary": [_row(r) for r in c.results if r.family == PRIMARY],
        "exploratory": [_row(r) for r in c.results if r.family != PRIMARY],
        "outliers": [_outlier(c, rnd) for rnd in c.outliers],
        "outlier_z": c.outlier_z,
        "robust": c.robust,
        "without": [r.text for r in c.without_outliers],
    }


def _host_speed(c: Comparison) -> dict[str, Any]:
    """One comparison's primaries raw and host-speed adjusted (analysis/host_speed.py)."""
    h = c.host
    assert h is not None

    def cell(j: Any) -> str:
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
                "raw": cell(row.raw),
                "adjusted": cell(row.adjusted),
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


def _paths(a: Analysis) -> list[dict[str, Any]]:
    """The path table: per block, arm and hop, what carried it (analysis/path_table.py)."""
    out = []
    for row in path_rows(a.run):
        out.append(
            {
                "where": cell_title(row.cell),
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


def _floor(a: Analysis) -> dict[str, Any] | None:
    """Each mesh arm over no-mesh, and what each eBPF arm recovers (analysis/floor.py)."""
    if not a.floor_costs:
        return None

    def ci(v: tuple[float, float] | None, scale: Any) -> str:
        return "—" if v is None else f"[{scale(v[0]):+.1f}, {scale(v[1]):+.1f}]"

    return {
        "costs": [
            {
                "where": cell_title(c.cell),
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
                "where": cell_title(r.cell),
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


def _saturation(a: Analysis) -> dict[str, Any] | None:
    """Each arm's saturation point, the rates it tried and why each failed, and what the eBPF
    arms carry more than the baseline at the same limits (experiment/saturation.py)."""
    exp = a.run.manifest.experiment
    if exp.saturation is None:
        return None
    from meshlab.experiment import saturation_plan

    done = {t.plan_index: t.record for t in a.run.trials}
    search = saturation_plan.replay(exp, a.run.plan, done)
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


def _timing(a: Analysis) -> dict[str, Any] | None:
    """Where the trial loop's wall time went (analysis/timing.py), from the trials' records."""
    records = [t.record for t in a.run.trials if t.record is not None]
    if not records or all(r.timeline is None for r in records):
        return None
    wall, share = timing.measuring_share(a.run.manifest, records)
    found = timing.gaps(records, timing.segment_starts(a.run.manifest))

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


def _outlier(c: Comparison, rnd: int) -> dict[str, Any]:
    i = c.pairs.rounds.index(rnd)
    trials = [c.pairs.a[i], c.pairs.b[i]]
    return {"round": rnd, "trials": [_diagnostics(t) for t in trials]}


def _diagnostics(t: Trial) -> dict[str, str]:
    """What else happened in a trial: the load generator, the harness, the unexplained CPU."""
    lag = t.schedule_lag
    node = t.cpu_value("node_total", "cpu_seconds")
    cgroups = t.cgroups_seconds()
    house = sum(t.cpu_value(n, "cpu_seconds") or 0.0 for n in HOUSEKEEPING)
    return {
        "trial": t.trial_id,
        "arm": t.arm,
        "p50": fmt.ms(t.latency.get("p50")),
        "p99": fmt.ms(t.latency.get("p99")),
        "lag": f"{fmt.ms(lag.get('p99_ms'))} / {fmt.ms(lag.get('max_ms'))} ms" if lag else "—",
        "stalls": str(lag.get("stalls_over_5ms", "—")) if lag else "—",
        "housekeeping": f"{house:.3f} CPU-s",
        "outside": f"{node - cgroups:.3f} CPU-s" if node is not None else "—",
        "steal": fmt.percent(t.steal_max, 2),
    }


def _median(values: list[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def _by_cell_and_arm(a: Analysis) -> list[tuple[str, str, list[Trial]]]:
    out = []
    for cell in cells(a.run):
        for arm in a.run.arms:
            ts = [t for t in a.run.valid_trials() if t.cell == cell and t.arm == arm]
            if ts:
                out.append((cell_title(cell), arm, ts))
    return out


def _tails(a: Analysis) -> list[dict[str, Any]]:
    """k6's latency beside each sidecar's own, medians over the valid trials: a tail that k6
    sees and the sidecars do not is the load generator's or the client side's, not the mesh's."""
    rows = []
    for where, arm, ts in _by_cell_and_arm(a):

        def lat(source: str, q: str, ts: list[Trial] = ts) -> float | None:
            if source == "k6":
                return _median([t.latency.get(q) for t in ts])
            return _median([t.sidecar.get(source, {}).get(q) for t in ts])

        rows.append(
            {
                "where": where,
                "arm": arm,
                "k6": (lat("k6", "p50"), lat("k6", "p99"), lat("k6", "p999")),
                "client": (lat("client", "p50"), lat("client", "p99"), lat("client", "p999")),
                "server": (lat("server", "p50"), lat("server", "p99"), lat("server", "p999")),
                "lag_p99": _median([t.schedule_lag.get("p99_ms") for t in ts]),
                "lag_max": max((t.schedule_lag.get("max_ms", 0.0) for t in ts), default=None),
                "stalls": _median([t.schedule_lag.get("stalls_over_5ms") for t in ts]),
                "trials": len(ts),
            }
        )
    return rows


def _cpu_rows(a: Analysis) -> list[dict[str, Any]]:
    """Where the node's CPU went, per 1000 requests (medians over valid trials)."""
    rows = []
    for where, arm, ts in _by_cell_and_arm(a):

        def per1000(t: Trial, seconds: float | None) -> float | None:
            return None if seconds is None or not t.requests else 1000 * seconds / t.requests

        def cgroups(t: Trial, names: tuple[str, ...]) -> float | None:
            parts = [t.cpu_value(n, "cpu_seconds") for n in names]
            return None if any(p is None for p in parts) else sum(parts)  # type: ignore[arg-type]

        node = _median([t.cpu_value("node_total", "per_1000_requests") for t in ts])
        mesh = _median([per1000(t, cgroups(t, COMPONENTS)) for t in ts])
        house = _median([per1000(t, cgroups(t, HOUSEKEEPING)) for t in ts])

        def outside(t: Trial) -> float | None:
            node_s = t.cpu_value("node_total", "cpu_seconds")
            all_cg = sum(
                float(f.get("cpu_seconds") or 0) for n, f in t.cpu.items() if n != "node_total"
            )
            return None if node_s is None else per1000(t, node_s - all_cg)

        def kernel_share(t: Trial) -> float | None:
            ns = t.node_seconds
            if not ns or ns.get("task") is None or not ns.get("busy"):
                return None
            return 100 * (ns["busy"] - ns["task"]) / ns["busy"]  # type: ignore[operator]

        def tick_bias(t: Trial) -> float | None:
            ns = t.node_seconds
            return 100 * (ns["ticks"] / ns["busy"] - 1) if ns and ns.get("busy") else None  # type: ignore[operator]

        rows.append(
            {
                "where": where,
                "arm": arm,
                "node": node,
                "components": mesh,
                "housekeeping": house,
                "outside": _median([outside(t) for t in ts]),
                "kernel_share": _median([kernel_share(t) for t in ts]),
                "tick_bias": _median([tick_bias(t) for t in ts]),
            }
        )
    return rows


def _stopping(a: Analysis) -> list[str]:
    m = a.run.manifest
    exp = m.experiment
    if exp.stop is None:
        return []
    level = fmt.level(a.alpha_primary)
    lines = [
        f"Adaptive design: looks at rounds {', '.join(map(str, a.looks))}; the run stops once "
        f"every primary metric's {level} CI half-width is at most "
        f"±{exp.stop.half_width_percent:g} %. Every look judges the primary family at alpha "
        f"{a.alpha_primary:g} ({level} intervals): the stop rule reads widths only, and at this "
        "level the calibration kept the family's false positives under 5 % however many looks "
        "(docs/methodology.md)."
    ]
    for block, state in sorted(m.stopping.items()):
        lines.append(f"{block}: {state.reason}")
    return lines


def _reproduced(siblings: list[Sibling]) -> list[dict[str, Any]]:
    """Per comparison and primary metric: the spread of the estimates over the runs."""
    by_key: dict[tuple[str, str], list[float]] = {}
    for s in siblings:
        for key, value in s.estimates.items():
            by_key.setdefault(key, []).append(value)
    out = []
    for (comparison, metric), values in sorted(by_key.items()):
        if len(values) >= 2:
            out.append(
                {
                    "comparison": comparison,
                    "metric": metric,
                    "runs": len(values),
                    "low": min(values),
                    "high": max(values),
                    "spread_pp": max(values) - min(values),
                }
            )
    return out


def _figure(f: Figure_) -> dict[str, str]:
    return {
        "name": f.name,
        "title": f.title,
        "caption": f.caption,
        "data": base64.b64encode(f.png).decode("ascii"),
    }


def _provenance(a: Analysis) -> list[tuple[str, str]]:
    m = a.run.manifest

    def kv(d: object) -> str:
        if not isinstance(d, dict):
            return str(d)
        return ", ".join(
            f"{k} ({kv(v)})" if isinstance(v, dict) else f"{k} {v}" for k, v in d.items()
        )

    rows = [
        ("experiment", a.run.experiment_id),
        ("run directory", str(a.run.path)),
        ("spec hash", a.run.spec_hash or "—"),
        ("seed", str(a.run.seed)),
        ("git", f"{m.git.sha}{' (dirty)' if m.git.dirty else ''}"),
        ("started / finished", f"{m.started_at} / {m.finished_at or '—'}"),
        ("versions", kv(m.versions)),
        ("host", kv(m.host)),
        ("pinning", kv(m.pinning)),
    ]
    if m.images:
        images = ", ".join(f"{k} {i.image}:{i.tag} {i.digest}" for k, i in m.images.items())
        rows.append(("images", images))
    return rows
