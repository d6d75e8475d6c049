"""Curves across load points: each arm's CPU per 1,000 requests and latency against the rate,
and the paired change between arms as a curve with a band (issue 23).

A sweep is the set of blocks that differ only in their load point: one flood size and one
placement, two or more rates. Per arm and metric, a **level curve** has one point per rate: the
Hodges-Lehmann estimate of the arm's per-round values (on log scale, shown as a ratio-scale
value) with its exact signed-rank interval over rounds. A level interval is *not* paired: it
carries the round-to-round drift every arm shares, so two arms' level bands may overlap where
their paired change is clear. The **change curve** of arm B against arm A is, per rate, the HL
shift of the paired log-ratios ln(B_r / A_r) with its exact interval (stats.exact_ci): the same
estimator and interval as the report's verdict table, one load point at a time.

The band is labelled with its kind. `pointwise`: each rate's interval has (at least) the stated
confidence on its own; the chance that all of them cover the true curve at once is lower.
`simultaneous`: each rate's interval is at (1 - confidence) / K for K rates (Bonferroni), so the
whole curve is covered with at least the stated confidence; it needs more rounds (7 for 3 rates
at 95 %).

Comparisons: every arm against the baseline (the experiment's first arm), and every arm against
`no-mesh` when the run has that arm (the floor: what the mesh costs at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from meshlab.analysis.loading.metrics import BY_KEY, Metric
from meshlab.analysis.loading.pairing import PairSet, build_pairs, log_ratios
from meshlab.analysis.loading.run import Run, Trial
from meshlab.analysis.statistics import stats
from meshlab.analysis.statistics.floor import FLOOR_METRICS

NO_MESH = "no-mesh"
Band = Literal["pointwise", "simultaneous"]
BANDS: tuple[str, ...] = ("pointwise", "simultaneous")
# CPU-s per 1,000 requests per component (and their sum, and the node), then latency
CPU_METRICS = (
    "cpu_node_total", "cpu_sidecars", "cpu_client_sidecar", "cpu_server_sidecar", "cpu_app",
    "cpu_k6",
)  # fmt: skip
LATENCY_METRICS = ("latency_p50", "latency_p99")
METRICS = (*CPU_METRICS, *LATENCY_METRICS)


@dataclass(frozen=True)
class LevelPoint:
    """One arm's value of one metric at one load point (metric units, e.g. ms)."""

    load_point: str
    rate: float  # offered, req/s
    achieved_rate: float | None  # median over the arm's valid rounds, req/s
    n: int  # valid rounds with a value
    estimate: float | None  # exp(HL of the log values)
    ci: tuple[float, float] | None  # exact interval over rounds (unpaired), metric units
    confidence: float | None  # the interval's achieved confidence


@dataclass(frozen=True)
class ChangePoint:
    """The paired change of one arm against another at one load point (log units)."""

    load_point: str
    rate: float
    n: int  # paired rounds with a value for both arms
    estimate: float | None  # HL shift of ln(B/A)
    ci: tuple[float, float] | None
    confidence: float | None

    @property
    def percent(self) -> float | None:
        return None if self.estimate is None else 100 * math.expm1(self.estimate)

    @property
    def ci_percent(self) -> tuple[float, float] | None:
        if self.ci is None:
            return None
        return 100 * math.expm1(self.ci[0]), 100 * math.expm1(self.ci[1])


@dataclass(frozen=True)
class LevelCurve:
    arm: str
    metric: Metric
    points: tuple[LevelPoint, ...]


@dataclass(frozen=True)
class ChangeCurve:
    arm: str
    baseline: str
    metric: Metric
    points: tuple[ChangePoint, ...]


@dataclass
class Sweep:
    """Every curve of one (flood, placement) across its load points."""

    flood: str
    placement: str
    load_points: list[tuple[str, float]]  # (name, offered rate), by rate
    band: Band
    confidence: float  # the nominal level of the whole band (pointwise: of each point)
    point_alpha: float  # the level each point's interval is computed at
    levels: list[LevelCurve] = field(default_factory=list)
    changes: list[ChangeCurve] = field(default_factory=list)

    @property
    def band_label(self) -> str:
        """How a figure or table names the band."""
        pct = f"{100 * self.confidence:g} %"
        if self.band == "pointwise":
            return f"pointwise {pct} intervals (each load point on its own)"
        return f"simultaneous {pct} band (Bonferroni over {len(self.load_points)} load points)"

    def level(self, arm: str, metric: str) -> LevelCurve | None:
        return next((c for c in self.levels if c.arm == arm and c.metric.key == metric), None)

    def change(self, arm: str, baseline: str, metric: str) -> ChangeCurve | None:
        return next(
            (
                c
                for c in self.changes
                if (c.arm, c.baseline, c.metric.key) == (arm, baseline, metric)
            ),
            None,
        )

    def to_dict(self) -> dict[str, Any]:
        def pair(ci: tuple[float, float] | None) -> list[float] | None:
            return None if ci is None else [ci[0], ci[1]]

        return {
            "flood": self.flood,
            "placement": self.placement,
            "load_points": [{"name": n, "rate": r} for n, r in self.load_points],
            "band": {
                "kind": self.band,
                "confidence": self.confidence,
                "point_alpha": self.point_alpha,
                "label": self.band_label,
                "method": "exact signed-rank interval of the Hodges-Lehmann estimate, per load "
                "point; changes: paired log-ratios per round; levels: log values over rounds "
                "(unpaired)",
            },
            "levels": [
                {
                    "arm": c.arm,
                    "metric": c.metric.key,
                    "unit": c.metric.unit,
                    "points": [
                        {
                            "load_point": p.load_point,
                            "rate": p.rate,
                            "achieved_rate": p.achieved_rate,
                            "n": p.n,
                            "estimate": p.estimate,
                            "ci": pair(p.ci),
                            "confidence": p.confidence,
                        }
                        for p in c.points
                    ],
                }
                for c in self.levels
            ],
            "changes": [
                {
                    "arm": c.arm,
                    "baseline": c.baseline,
                    "metric": c.metric.key,
                    "points": [
                        {
                            "load_point": p.load_point,
                            "rate": p.rate,
                            "n": p.n,
                            "estimate_log": p.estimate,
                            "ci_log": pair(p.ci),
                            "estimate_percent": p.percent,
                            "ci_percent": pair(p.ci_percent),
                            "confidence": p.confidence,
                        }
                        for p in c.points
                    ],
                }
                for c in self.changes
            ],
        }


def default_comparisons(run: Run) -> list[tuple[str, str]]:
    """(arm, against): every arm vs the baseline, and every arm vs no-mesh when it ran."""
    out = [(arm, run.baseline) for arm in run.arms[1:]]
    if NO_MESH in run.arms and run.baseline != NO_MESH:
        out += [(arm, NO_MESH) for arm in run.arms if arm != NO_MESH]
    seen: set[tuple[str, str]] = set()
    return [c for c in out if not (c in seen or seen.add(c))]  # type: ignore[func-returns-value]


def _hl_interval(values: np.ndarray, alpha: float) -> tuple[float | None, tuple | None, float]:
    """(HL estimate, exact interval, achieved confidence) of one series; None where too few."""
    if values.size == 0:
        return None, None, math.nan
    estimate = float(stats.hodges_lehmann(values[None, :])[0])
    ci, confidence = stats.exact_ci(values[None, :], alpha)
    if not np.isfinite(ci).all():
        return estimate, None, math.nan
    return estimate, (float(ci[0, 0]), float(ci[0, 1])), confidence


def _level_point(trials: list[Trial], metric: Metric, lp: str, rate: float, alpha: float):
    values = [metric.value(t) for t in trials]
    logs = np.log([v for v in values if v is not None and v > 0])
    estimate, ci, confidence = _hl_interval(np.asarray(logs, dtype=np.float64), alpha)
    achieved = [t.achieved_rate for t in trials if t.achieved_rate is not None]
    return LevelPoint(
        load_point=lp,
        rate=rate,
        achieved_rate=float(np.median(achieved)) if achieved else None,
        n=int(logs.size),
        estimate=None if estimate is None else math.exp(estimate),
        ci=None if ci is None else (math.exp(ci[0]), math.exp(ci[1])),
        confidence=None if ci is None else confidence,
    )


def _change_point(ps: PairSet | None, metric: Metric, lp: str, rate: float, alpha: float):
    d = log_ratios(ps, metric) if ps is not None else np.empty(0)
    d = d[np.isfinite(d)]
    estimate, ci, confidence = _hl_interval(d, alpha)
    return ChangePoint(lp, rate, int(d.size), estimate, ci, None if ci is None else confidence)


def _pairs_against(run: Run, reference: str) -> dict[tuple[str, tuple[str, str, str]], PairSet]:
    """Pair sets of every other arm against `reference`, by (arm, block): the report's pairing
    (pairing.build_pairs), with `reference` in the baseline's place."""
    others = [a for a in run.arms if a != reference]
    as_baseline = replace(run, arms=[reference, *others])
    return {(ps.arm, ps.block): ps for ps in build_pairs(as_baseline)}


def sweep(
    run: Run,
    flood: str,
    placement: str,
    *,
    metrics: tuple[str, ...] = METRICS,
    band: Band = "pointwise",
    confidence: float = 1 - stats.ALPHA,
    comparisons: list[tuple[str, str]] | None = None,
) -> Sweep:
    """Every level and change curve of one flood size and placement, over the run's load
    points that have at least one valid trial there (by rate)."""
    if band not in BANDS:
        raise ValueError(f"band must be one of {', '.join(BANDS)}, not {band!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    # the saturation search's load points are not on the curve: they are its own comparison
    swept = set(run.load_points())
    valid = [
        t for t in run.valid_trials()
        if (t.flood, t.placement) == (flood, placement) and t.load_point in swept
    ]  # fmt: skip
    rates: dict[str, float] = {}
    for t in valid:
        rates.setdefault(t.load_point, t.rate)
    lps = sorted(rates.items(), key=lambda x: (x[1], x[0]))
    alpha = 1 - confidence
    point_alpha = alpha / max(1, len(lps)) if band == "simultaneous" else alpha
    out = Sweep(flood, placement, lps, band, confidence, point_alpha)
    chosen = [BY_KEY[m] for m in metrics]
    for arm in run.arms:
        for m in chosen:
            points = tuple(
                _level_point(
                    [t for t in valid if t.arm == arm and t.load_point == lp], m, lp, rate,
                    point_alpha,
                )
                for lp, rate in lps
            )  # fmt: skip
            if any(p.n for p in points):
                out.levels.append(LevelCurve(arm, m, points))
    pairs: dict[str, dict] = {}
    for arm, ref in comparisons if comparisons is not None else default_comparisons(run):
        if ref not in pairs:
            pairs[ref] = _pairs_against(run, ref)
        for m in chosen:
            if NO_MESH in (arm, ref) and m.key not in FLOOR_METRICS:
                continue  # the floor's sidecars idle: a change against them is no cost (floor.py)
            points = tuple(
                _change_point(
                    pairs[ref].get((arm, (lp, flood, placement))), m, lp, rate, point_alpha
                )
                for lp, rate in lps
            )
            if any(p.n for p in points):
                out.changes.append(ChangeCurve(arm, ref, m, points))
    return out


def sweeps(run: Run, **kwargs: Any) -> list[Sweep]:
    """One Sweep per (flood, placement) that has valid trials at two or more load points."""
    out = []
    for placement in run.placements():
        for flood in run.floods():
            s = sweep(run, flood, placement, **kwargs)
            if len(s.load_points) >= 2:
                out.append(s)
    return out
