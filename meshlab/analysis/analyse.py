"""Paired statistics for a loaded run: one MetricResult per pair set and metric.

Multiplicity: the experiment's primary metric (`experiment.analysis.primary_metric`, default
latency_p50) is tested at alpha = 0.05 as declared; the other metrics of the same pair set form a
secondary family whose signed-rank p-values are Holm-adjusted before any verdict.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meshlab.analysis import stats, verdict
from meshlab.analysis.metrics import METRICS, Metric
from meshlab.analysis.pairing import PairSet, build_pairs
from meshlab.analysis.run import Run


@dataclass
class MetricResult:
    metric: Metric
    n: int
    estimate: float  # log units, B vs A
    ci95: tuple[float, float] | None
    ci90: tuple[float, float] | None
    wilcoxon_p: float | None
    p_adjusted: float | None
    p_rule: str  # "primary" or "Holm"
    tost_p: float | None
    sd: float
    mde: float
    cov_a: float
    cov_b: float
    rho: float
    kind: str = ""  # faster/slower/cheaper/costlier, equivalent, inconclusive, not-enough-rounds
    text: str = ""
    equivalent: bool = False
    differs: bool = False
    boot: np.ndarray | None = field(default=None, repr=False)

    @property
    def reported_mde(self) -> float | None:
        """The MDE, once there are enough rounds for its spread estimate to mean anything."""
        return self.mde if self.ci95 is not None else None

    def to_dict(self) -> dict[str, Any]:
        def p(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else round(100 * math.expm1(x), 4)

        return {
            "metric": self.metric.key,
            "label": self.metric.label,
            "n": self.n,
            "estimate_log": _num(self.estimate),
            "estimate_percent": p(self.estimate),
            "ci95_percent": [p(v) for v in self.ci95] if self.ci95 else None,
            "ci90_percent": [p(v) for v in self.ci90] if self.ci90 else None,
            "wilcoxon_p": _num(self.wilcoxon_p),
            "p_adjusted": _num(self.p_adjusted),
            "p_rule": self.p_rule,
            "tost_p": _num(self.tost_p),
            "equivalent": self.equivalent,
            "differs": self.differs,
            "mde_percent": p(self.reported_mde),
            "sd_log": _num(self.sd),
            "cov_percent": {"baseline": _num(self.cov_a), "arm": _num(self.cov_b)},
            "rho": _num(self.rho),
            "verdict": self.kind,
            "verdict_text": self.text,
        }


@dataclass
class Comparison:
    pairs: PairSet
    results: list[MetricResult]

    def result(self, key: str) -> MetricResult | None:
        return next((r for r in self.results if r.metric.key == key), None)


@dataclass
class Gates:
    recorded: int
    valid: int
    rejected: int
    by_arm: dict[str, dict[str, int]]
    failed_gates: dict[str, int]
    rejected_trials: list[dict[str, Any]]
    steal_valid_median: float | None
    steal_valid_max: float | None
    steal_all_max: float | None

    @property
    def rejection_share(self) -> float:
        return self.rejected / self.recorded if self.recorded else 0.0


@dataclass
class Analysis:
    run: Run
    comparisons: list[Comparison]
    gates: Gates
    resamples: int

    @property
    def environment_unfit(self) -> bool:
        return (
            self.run.status == "environment-unfit"
            or self.gates.rejection_share > self.run.max_rejected_share
        )

    def to_dict(self) -> dict[str, Any]:
        run = self.run
        return {
            "schema_version": 1,
            "run": {
                "path": str(run.path),
                "experiment": run.experiment_id,
                "run_id": run.run_id,
                "status": run.status,
                "partial": run.partial,
                "notes": run.notes,
                "spec_hash": run.spec_hash,
            },
            "baseline": run.baseline,
            "arms": run.arms,
            "margin_percent": run.margin_percent,
            "primary_metric": run.primary_metric,
            "min_rounds": stats.MIN_ROUNDS,
            "bootstrap": {
                "resamples": self.resamples,
                "seed": run.seed,
                "estimator": "Hodges-Lehmann of paired log-ratios",
                "interval": "expanded percentile (Hesterberg 2015), rounds resampled",
            },
            "environment_unfit": self.environment_unfit,
            "comparisons": [
                {
                    "arm": c.pairs.arm,
                    "baseline": c.pairs.baseline,
                    "load_point": c.pairs.load_point,
                    "flood": c.pairs.flood,
                    "rounds_paired": c.pairs.n,
                    "rounds_dropped": len(c.pairs.dropped),
                    "dropped": [{"round": r, "why": why} for r, why in c.pairs.dropped],
                    "duplicate_valid_trials": c.pairs.duplicates,
                    "metrics": [r.to_dict() for r in c.results],
                }
                for c in self.comparisons
            ],
            "gates": {
                "trials_recorded": self.gates.recorded,
                "trials_valid": self.gates.valid,
                "trials_rejected": self.gates.rejected,
                "rejection_share": round(self.gates.rejection_share, 4),
                "by_arm": self.gates.by_arm,
                "failed_gates": self.gates.failed_gates,
                "rejected_trials": self.gates.rejected_trials,
                "steal_percent": {
                    "valid_median_of_means": _num(self.gates.steal_valid_median),
                    "valid_max": _num(self.gates.steal_valid_max),
                    "all_max": _num(self.gates.steal_all_max),
                },
            },
        }


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def analyse(run: Run, resamples: int = stats.RESAMPLES, keep_boot: bool = False) -> Analysis:
    comparisons = [
        Comparison(ps, _pairset_results(run, ps, resamples, keep_boot)) for ps in build_pairs(run)
    ]
    return Analysis(run, comparisons, _gates(run), resamples)


def log_ratios(ps: PairSet, metric: Metric) -> np.ndarray:
    """d_r = ln(B_r / A_r) per paired round; NaN where either value is missing or not > 0."""
    a = np.array([_pos(metric.value(t)) for t in ps.a], dtype=np.float64)
    b = np.array([_pos(metric.value(t)) for t in ps.b], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(b / a)


def _pos(x: float | None) -> float:
    return x if x is not None and x > 0 else math.nan


def _rng(run: Run, ps: PairSet) -> np.random.Generator:
    return np.random.default_rng([run.seed % 2**32, zlib.crc32(ps.key.encode())])


def _pairset_results(run: Run, ps: PairSet, resamples: int, keep_boot: bool) -> list[MetricResult]:
    margin = math.log1p(run.margin_percent / 100)
    # Duet partners share one node and one window: their node totals are the same number, so
    # comparing them says nothing (the per-component CPUs still differ and are compared).
    shared = {"cpu_node_total"} if run.experiment.get("design") == "duet" else set()
    candidates = [m for m in METRICS if m.key not in shared]
    rows = {m.key: log_ratios(ps, m) for m in candidates}
    # metrics absent from every trial (e.g. no k6 cgroup on a cluster) are left out
    metrics = [m for m in candidates if np.isfinite(rows[m.key]).any() or ps.n == 0]
    complete = [m for m in metrics if np.isfinite(rows[m.key]).all()]
    partial = [m for m in metrics if m not in complete]
    computed: dict[str, tuple[stats.PairedStats, int, np.ndarray]] = {}
    rng = _rng(run, ps)
    if complete:
        d = np.vstack([rows[m.key] for m in complete]) if ps.n else np.empty((len(complete), 0))
        ps_stats = stats.paired_stats(d, margin, rng, resamples, keep_boot)
        for i, m in enumerate(complete):
            computed[m.key] = (ps_stats, i, d[i])
    for m in partial:  # rounds lacking this metric drop out of this metric only
        d = rows[m.key][np.isfinite(rows[m.key])][None, :]
        computed[m.key] = (stats.paired_stats(d, margin, rng, resamples, keep_boot), 0, d[0])

    results = [_result(run, ps, m, *computed[m.key]) for m in metrics]
    _adjust_and_judge(run, ps.arm, results, margin)
    return results


def _result(
    run: Run, ps: PairSet, m: Metric, st: stats.PairedStats, i: int, d: np.ndarray
) -> MetricResult:
    has_ci = st.n >= stats.MIN_ROUNDS
    a_vals = np.array([_pos(m.value(t)) for t in run.valid_trials() if _cell(t, ps, ps.baseline)])
    b_vals = np.array([_pos(m.value(t)) for t in run.valid_trials() if _cell(t, ps, ps.arm)])
    rho = math.nan
    if ps.n >= 3:
        la = np.log([_pos(m.value(t)) for t in ps.a])
        lb = np.log([_pos(m.value(t)) for t in ps.b])
        ok = np.isfinite(la) & np.isfinite(lb)
        if ok.sum() >= 3 and la[ok].std() > 0 and lb[ok].std() > 0:
            rho = float(np.corrcoef(la[ok], lb[ok])[0, 1])
    return MetricResult(
        metric=m,
        n=st.n,
        estimate=float(st.estimate[i]),
        ci95=(float(st.ci95[i, 0]), float(st.ci95[i, 1])) if has_ci else None,
        ci90=(float(st.ci90[i, 0]), float(st.ci90[i, 1])) if has_ci else None,
        wilcoxon_p=float(st.wilcoxon_p[i]) if has_ci else None,
        p_adjusted=None,
        p_rule="primary" if m.key == run.primary_metric else "Holm",
        tost_p=float(st.tost_p[i]) if has_ci else None,
        sd=float(st.sd[i]),
        mde=float(st.mde[i]),
        cov_a=stats.cov_percent(a_vals),
        cov_b=stats.cov_percent(b_vals),
        rho=rho,
        boot=st.boot[i] if st.boot is not None else None,
    )


def _cell(t: Any, ps: PairSet, arm: str) -> bool:
    return t.arm == arm and t.load_point == ps.load_point and t.flood == ps.flood


def _adjust_and_judge(run: Run, arm: str, results: list[MetricResult], margin: float) -> None:
    secondary = [r for r in results if r.p_rule == "Holm" and r.wilcoxon_p is not None]
    if secondary:
        adjusted = stats.holm(np.array([r.wilcoxon_p for r in secondary]))
        for r, p in zip(secondary, adjusted, strict=True):
            r.p_adjusted = float(p)
    for r in results:
        if r.p_rule == "primary":
            r.p_adjusted = r.wilcoxon_p
        _judge(run, arm, r, margin, 1 if r.p_rule == "primary" else len(secondary))


def _judge(run: Run, arm: str, r: MetricResult, margin: float, family: int) -> None:
    m = r.metric
    if r.ci95 is None or r.ci90 is None or r.p_adjusted is None or r.tost_p is None:
        r.kind = "not-enough-rounds"
        r.text = verdict.not_enough_rounds(m, r.n, stats.MIN_ROUNDS)
        return
    r.differs = bool(stats.differs(np.array([r.ci95]), np.array([r.p_adjusted]))[0])
    r.equivalent = bool(stats.equivalent(np.array([r.ci90]), np.array([r.tost_p]), margin)[0])
    if r.differs:
        r.kind = m.direction_words(r.estimate < 0)
        r.text = verdict.difference(m, arm, r.estimate, r.ci95)
        if r.equivalent:
            r.text += f", inside the ±{run.margin_percent:g} % margin"
    elif r.equivalent:
        r.kind = "equivalent"
        r.text = verdict.no_difference(m, run.margin_percent, r.ci90)
    else:
        r.kind = "inconclusive"
        # more rounds: enough for the effect (or equivalence) and for the exact test to be able
        # to reach its Holm-adjusted level at all
        need = max(stats.rounds_needed(r.estimate, r.sd, margin), stats.min_rounds_exact(family))
        excludes_zero = r.ci95[0] > 0 or r.ci95[1] < 0
        if excludes_zero and r.wilcoxon_p is not None and r.wilcoxon_p < stats.ALPHA:
            r.text = verdict.held_back_by_holm(m, arm, r.estimate, r.ci95, family, need - r.n)
        else:
            r.text = verdict.inconclusive(m, need - r.n)


def _gates(run: Run) -> Gates:
    by_arm: dict[str, dict[str, int]] = {}
    failed: dict[str, int] = {}
    rejected = []
    for t in run.trials:
        counts = by_arm.setdefault(t.arm, {"valid": 0, "rejected": 0})
        counts["valid" if t.valid else "rejected"] += 1
        if not t.valid:
            for g in t.failed_gates or ("unspecified",):
                failed[g] = failed.get(g, 0) + 1
            rejected.append(
                {
                    "trial_id": t.trial_id,
                    "arm": t.arm,
                    "round": t.round,
                    "load_point": t.load_point,
                    "flood": t.flood,
                    "reasons": list(t.rejection_reasons) or ["no reason recorded"],
                }
            )
    steal_valid = [t.steal_mean for t in run.valid_trials() if t.steal_mean is not None]
    steal_valid_max = [t.steal_max for t in run.valid_trials() if t.steal_max is not None]
    steal_all_max = [t.steal_max for t in run.trials if t.steal_max is not None]
    valid = sum(1 for t in run.trials if t.valid)
    return Gates(
        recorded=len(run.trials),
        valid=valid,
        rejected=len(run.trials) - valid,
        by_arm=by_arm,
        failed_gates=failed,
        rejected_trials=rejected,
        steal_valid_median=float(np.median(steal_valid)) if steal_valid else None,
        steal_valid_max=max(steal_valid_max) if steal_valid_max else None,
        steal_all_max=max(steal_all_max) if steal_all_max else None,
    )
