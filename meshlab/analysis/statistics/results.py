"""What the analysis of a run found, as data: per metric (MetricResult), per comparison of two
arms in one block (Comparison), for the run's gates, and the whole (Analysis, with `to_dict`
for stats.json). statistics/analyse.py computes them; the report only reads them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meshlab.analysis.loading.metrics import Metric
from meshlab.analysis.loading.pairing import PairSet
from meshlab.analysis.loading.run import Run
from meshlab.analysis.statistics import fmt, stats
from meshlab.analysis.statistics.floor import Cost, Recovered
from meshlab.analysis.statistics.fmt import pct
from meshlab.analysis.statistics.host_speed import HostSpeed

PRIMARY, EXPLORATORY = "primary", "exploratory"


@dataclass
class MetricResult:
    metric: Metric
    family: str  # PRIMARY or EXPLORATORY
    n: int
    estimate: float  # log units, B vs A
    ci95: tuple[float, float] | None
    ci90: tuple[float, float] | None
    confidence95: float | None  # the exact interval's achieved confidence
    alpha: float  # the level its interval and test are at (less than 0.05 in sequential runs)
    wilcoxon_p: float | None
    p_adjusted: float | None
    family_size: int
    tost_p: float | None
    sd: float
    mde: float
    cov_a: float
    cov_b: float
    rho: float
    kind: str = ""  # lower/higher/less/more, equivalent, inconclusive, not-enough-rounds
    text: str = ""
    equivalent: bool = False
    differs: bool = False
    host_adjusted: bool = False  # judged on host-speed adjusted rounds (analysis.host_speed)
    boot: np.ndarray | None = field(default=None, repr=False)

    @property
    def reported_mde(self) -> float | None:
        """The MDE, once there are enough rounds for its spread estimate to mean anything."""
        return self.mde if self.ci95 is not None else None

    @property
    def level(self) -> str:
        """The interval's level as every label prints it: "95 %", "96 %" (adaptive primaries)."""
        return fmt.level(self.alpha)

    @property
    def half_width_percent(self) -> float | None:
        """Half the interval's width (at its level), in percentage points of the change."""
        if self.ci95 is None:
            return None
        return (pct(self.ci95[1]) - pct(self.ci95[0])) / 2

    def to_dict(self) -> dict[str, Any]:
        def p(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else round(100 * math.expm1(x), 4)

        return {
            "metric": self.metric.key,
            "label": self.metric.label,
            "family": self.family,
            "n": self.n,
            "estimate_log": _num(self.estimate),
            "estimate_percent": p(self.estimate),
            "ci95_percent": [p(v) for v in self.ci95] if self.ci95 else None,
            "ci90_percent": [p(v) for v in self.ci90] if self.ci90 else None,
            "ci95_confidence": _num(self.confidence95),
            "ci_level": round(1 - self.alpha, 6),  # nominal level of the ci95_* interval
            "alpha": self.alpha,
            "wilcoxon_p": _num(self.wilcoxon_p),
            "p_adjusted": _num(self.p_adjusted),
            "holm_family_size": self.family_size,
            "tost_p": _num(self.tost_p),
            "equivalent": self.equivalent,
            "differs": self.differs,
            "host_adjusted": self.host_adjusted,
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
    outliers: list[int] = field(default_factory=list)  # rounds flagged on a primary metric
    outlier_z: float | None = None  # the modified z-score a round had to exceed (its family's)
    without_outliers: list[MetricResult] = field(default_factory=list)  # primaries, recomputed
    host: HostSpeed | None = None  # the primaries beside their host-speed adjustment

    def result(self, key: str) -> MetricResult | None:
        return next((r for r in self.results if r.metric.key == key), None)

    def primaries(self) -> list[MetricResult]:
        return [r for r in self.results if r.family == PRIMARY]

    @property
    def robust(self) -> bool:
        """Every primary verdict is the same without the flagged rounds."""
        kinds = {r.metric.key: r.kind for r in self.without_outliers}
        return all(kinds.get(r.metric.key, r.kind) == r.kind for r in self.primaries())


@dataclass
class Gates:
    recorded: int
    planned: int  # the plan's own trials, re-runs of rejected ones not counted
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
        """Rejected trials per planned trial: the engine's own measure of an unfit host
        (engine._too_many_rejections), so the report and the run end agree."""
        return self.rejected / self.planned if self.planned else 0.0


@dataclass
class Analysis:
    run: Run
    comparisons: list[Comparison]
    gates: Gates
    alpha_primary: float
    looks: list[int]
    floor_costs: list[Cost] = field(default_factory=list)  # every mesh arm over no-mesh
    recovered: list[Recovered] = field(default_factory=list)  # eBPF's share of the mesh's cost

    @property
    def environment_unfit(self) -> bool:
        """The run ended because its noise budget was spent (docs/methodology.md)."""
        return self.run.status == "environment-unfit"

    def to_dict(self) -> dict[str, Any]:
        run = self.run
        return {
            "schema_version": 2,
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
            "primary": run.primary,
            "alpha_primary": self.alpha_primary,
            "looks": self.looks,
            "min_rounds": stats.MIN_ROUNDS,
            "method": {
                "estimator": "Hodges-Lehmann of paired log-ratios",
                "interval": "exact signed-rank interval (order statistics of Walsh averages)",
                "test": "exact Wilcoxon signed-rank; Holm within the primary family and "
                "within the exploratory family",
                "equivalence": "TOST by signed-rank tests, and the CI (at ci_level) inside the "
                "margin",
                "outliers": "modified z-score of the paired log-ratio (MAD) beyond "
                "outlier_threshold, exceeded in 1 of 20 pure-noise runs of the primary family",
            },
            "environment_unfit": self.environment_unfit,
            "comparisons": [
                {
                    "arm": c.pairs.arm,
                    "baseline": c.pairs.baseline,
                    "load_point": c.pairs.load_point,
                    "flood": c.pairs.flood,
                    "placement": c.pairs.placement,
                    "rounds_paired": c.pairs.n,
                    "rounds_dropped": len(c.pairs.dropped),
                    "dropped": [{"round": r, "why": why} for r, why in c.pairs.dropped],
                    "duplicate_valid_trials": c.pairs.duplicates,
                    "outlier_rounds": c.outliers,
                    "outlier_threshold": _num(c.outlier_z),
                    "verdicts_hold_without_outliers": c.robust,
                    "metrics": [r.to_dict() for r in c.results],
                    "host_speed": c.host.to_dict() if c.host else None,
                }
                for c in self.comparisons
            ],
            "floor": [
                {
                    "arm": c.arm,
                    "block": list(c.block),
                    "metric": c.metric.key,
                    "n": c.n,
                    "cost_percent": _num(pct(c.estimate)) if c.n else None,
                    "ci_percent": [pct(v) for v in c.ci] if c.ci else None,
                }
                for c in self.floor_costs
            ],
            "recovered": [
                {
                    "arm": r.arm,
                    "via": r.via,
                    "block": list(r.block),
                    "metric": r.metric.key,
                    "n": r.n,
                    "share": _num(r.share),
                    "ci": list(r.ci) if r.ci else None,
                }
                for r in self.recovered
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
