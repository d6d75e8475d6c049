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

from meshlab.analysis.loading.run import Trial, block_title
from meshlab.analysis.report import sections
from meshlab.analysis.report.figures import Figure_, blocks
from meshlab.analysis.report.thesis import SpreadRow
from meshlab.analysis.statistics import fmt, stats
from meshlab.analysis.statistics.reproduce import Sibling
from meshlab.analysis.statistics.results import PRIMARY, Analysis, Comparison, MetricResult
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
    loader = jinja2.PackageLoader("meshlab.analysis.report", "templates")
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
    css = resources.files("meshlab.analysis.report").joinpath("templates/report.css").read_text()
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
        "host_speed": [sections.host_speed(c) for c in a.comparisons if c.host is not None],
        "timing": sections.timing(a),
        "paths": sections.paths(a),
        "floor": sections.floor(a),
        "saturation": sections.saturation(a),
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
    for block in blocks(a.run):
        for arm in a.run.arms:
            ts = [t for t in a.run.valid_trials() if t.block == block and t.arm == arm]
            if ts:
                out.append((block_title(block), arm, ts))
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
