"""Paired statistics for a loaded run: one MetricResult per pair set and metric.

Multiplicity: the experiment's primary family (`experiment.analysis.primary`, default p50
latency, node CPU and sidecar CPU per request) answers its question: Holm-corrected within
that family only. Every other metric is exploratory, Holm-corrected within its own family and
labelled so. An adaptive run (`experiment.stop`) judges its primary family at every look at
spec.ADAPTIVE_ALPHA (96 % intervals, labelled so): its stop rule reads widths only, and the
calibration measured that this keeps the family's false positives under 5 % however often it
looks.

Outliers: a round whose paired log-ratio is far from the others on a primary metric (a modified
z-score that pure noise exceeds in 1 of 20 runs of this family and this many rounds) is
flagged; the verdicts are recomputed without such rounds and the report says whether they hold.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import replace

import numpy as np

from meshlab.analysis.loading.metrics import METRICS, Metric
from meshlab.analysis.loading.pairing import PairSet, build_pairs, log_ratios, positive
from meshlab.analysis.loading.run import Run, Trial
from meshlab.analysis.statistics import stats, verdict
from meshlab.analysis.statistics.floor import floor
from meshlab.analysis.statistics.host_speed import deciding, host_speed, probe_log_ratios
from meshlab.analysis.statistics.results import (
    EXPLORATORY,
    PRIMARY,
    Analysis,
    Comparison,
    Gates,
    MetricResult,
)
from meshlab.record.spec import look_alpha


def primary_alpha(run: Run) -> tuple[float, list[int]]:
    """The primary family's level at every look, and the looks (one look: 0.05)."""
    looks = run.manifest.experiment.looks()
    return look_alpha(len(looks)), looks


def analyse(run: Run, resamples: int = stats.RESAMPLES, keep_boot: bool = False) -> Analysis:
    alpha, looks = primary_alpha(run)
    comparisons = []
    for ps in build_pairs(run):
        results = pairset_results(run, ps, alpha, resamples, keep_boot)
        comparison = _with_outliers(run, ps, results, alpha)
        comparison.host = host_speed(ps, run.primary, run.margin_percent, alpha)
        comparisons.append(comparison)
    costs, recovered = floor(run)
    return Analysis(run, comparisons, _gates(run), alpha, looks, costs, recovered)


def _rng(run: Run, ps: PairSet) -> np.random.Generator:
    # Seeded by the run directory's name too: two runs of one spec (same seed, `--repeat`)
    # must not draw the same resamples, or compare's "independent" bootstraps are not.
    return np.random.default_rng(
        [run.seed % 2**32, zlib.crc32(ps.key.encode()), zlib.crc32(run.path.name.encode())]
    )


def _metrics(run: Run, ps: PairSet) -> list[Metric]:
    # Duet partners share one node and one window: their node totals are the same number, so
    # comparing them says nothing (the per-component CPUs still differ and are compared).
    shared = {"cpu_node_total"} if run.experiment.get("design") == "duet" else set()
    found = []
    for m in METRICS:
        if m.key in shared:
            continue
        # metrics absent from every trial (e.g. no sidecar access logs in a schema-1 run) are
        # left out
        values = [m.value(t) for t in (*ps.a, *ps.b)]
        if ps.n == 0 or any(v is not None for v in values) or m.key in run.primary:
            found.append(m)
    return found


def pairset_results(
    run: Run, ps: PairSet, alpha: float, resamples: int = stats.RESAMPLES, keep_boot: bool = False
) -> list[MetricResult]:
    """Every metric of one pair set, judged within its family."""
    margin = math.log1p(run.margin_percent / 100)
    rng = _rng(run, ps)
    decide = run.manifest.experiment.analysis.host_speed == "decide"
    x = probe_log_ratios(ps) if decide else None
    results = []
    for m in _metrics(run, ps):
        primary = m.key in run.primary
        level = alpha if primary else stats.ALPHA
        row = log_ratios(ps, m)
        d = row[np.isfinite(row)][None, :]  # rounds lacking this metric drop out of it only
        adjusted = deciding(row, x) if primary and x is not None else None
        st = stats.paired_stats(
            d if adjusted is None else adjusted, margin, rng, resamples, keep_boot, level
        )
        result = _result(run, ps, m, PRIMARY if primary else EXPLORATORY, level, st)
        result.host_adjusted = adjusted is not None
        results.append(result)
    _adjust_and_judge(run, ps.arm, results, margin)
    return results


def _result(
    run: Run, ps: PairSet, m: Metric, family: str, alpha: float, st: stats.PairedStats
) -> MetricResult:
    has_ci = st.n >= stats.MIN_ROUNDS and bool(np.isfinite(st.ci95).all())
    a_vals = np.array(
        [positive(m.value(t)) for t in run.valid_trials() if _cell(t, ps, ps.baseline)]
    )
    b_vals = np.array([positive(m.value(t)) for t in run.valid_trials() if _cell(t, ps, ps.arm)])
    rho = math.nan
    if ps.n >= 3:
        la = np.log([positive(m.value(t)) for t in ps.a])
        lb = np.log([positive(m.value(t)) for t in ps.b])
        ok = np.isfinite(la) & np.isfinite(lb)
        if ok.sum() >= 3 and la[ok].std() > 0 and lb[ok].std() > 0:
            rho = float(np.corrcoef(la[ok], lb[ok])[0, 1])
    return MetricResult(
        metric=m,
        family=family,
        n=st.n,
        estimate=float(st.estimate[0]),
        ci95=(float(st.ci95[0, 0]), float(st.ci95[0, 1])) if has_ci else None,
        ci90=(float(st.ci90[0, 0]), float(st.ci90[0, 1])) if has_ci else None,
        confidence95=st.confidence95 if has_ci else None,
        alpha=alpha,
        wilcoxon_p=float(st.wilcoxon_p[0]) if has_ci else None,
        p_adjusted=None,
        family_size=0,
        tost_p=float(st.tost_p[0]) if has_ci else None,
        sd=float(st.sd[0]),
        mde=float(st.mde[0]),
        cov_a=stats.cov_percent(a_vals),
        cov_b=stats.cov_percent(b_vals),
        rho=rho,
        boot=st.boot[0] if st.boot is not None else None,
    )


def _cell(t: Trial, ps: PairSet, arm: str) -> bool:
    return t.arm == arm and t.block == ps.block


def _adjust_and_judge(run: Run, arm: str, results: list[MetricResult], margin: float) -> None:
    for family in (PRIMARY, EXPLORATORY):
        members = [r for r in results if r.family == family]
        tested = [r for r in members if r.wilcoxon_p is not None]
        if tested:
            adjusted = stats.holm(np.array([r.wilcoxon_p for r in tested]))
            for r, p in zip(tested, adjusted, strict=True):
                r.p_adjusted = float(p)
                # what this family could detect: Holm over the metrics that entered it
                r.mde = float(stats.mde(np.array([r.sd]), r.n, r.alpha, tests=len(tested))[0])
        for r in members:
            # the metrics tested, not declared: one short of rounds has no p, enters no Holm
            r.family_size = len(tested)
            _judge(run, arm, r, margin)


def _judge(run: Run, arm: str, r: MetricResult, margin: float) -> None:
    m = r.metric
    if r.ci95 is None or r.p_adjusted is None or r.tost_p is None:
        r.kind = "not-enough-rounds"
        r.text = verdict.not_enough_rounds(m, r.n, stats.min_rounds_exact(1, r.alpha))
        return
    r.differs = bool(stats.differs(np.array([r.ci95]), np.array([r.p_adjusted]), r.alpha)[0])
    r.equivalent = bool(
        stats.equivalent(np.array([r.ci95]), np.array([r.tost_p]), margin, r.alpha)[0]
    )
    _words(run, arm, r, margin)
    if r.host_adjusted:
        r.text += " (host-speed adjusted)"


def _words(run: Run, arm: str, r: MetricResult, margin: float) -> None:
    """The verdict's kind and sentence, once its tests are done."""
    m = r.metric
    if r.differs:
        r.kind = m.direction_words(r.estimate < 0)
        r.text = verdict.difference(m, arm, r.estimate, r.ci95, r.level)
        if r.equivalent:
            r.text += f", inside the ±{run.margin_percent:g} % margin"
    elif r.equivalent:
        r.kind = "equivalent"
        r.text = verdict.no_difference(m, run.margin_percent, r.ci95, r.level)
    else:
        r.kind = "inconclusive"
        # where the rule itself settles it in 80 % of runs at this estimate and spread
        need = stats.rounds_needed(r.estimate, r.sd, margin, r.alpha, tests=r.family_size)
        excludes_zero = r.ci95[0] > 0 or r.ci95[1] < 0
        if excludes_zero and r.wilcoxon_p is not None and r.wilcoxon_p < r.alpha:
            r.text = verdict.held_back_by_holm(
                m, arm, r.estimate, r.ci95, r.family, need - r.n, r.level
            )
        else:
            r.text = verdict.inconclusive(m, need - r.n)


def _with_outliers(run: Run, ps: PairSet, results: list[MetricResult], alpha: float) -> Comparison:
    """Flag rounds that are outliers on any primary metric; judge the primaries without them."""
    comparison = Comparison(ps, results)
    primaries = [r.metric for r in results if r.family == PRIMARY]
    if ps.n < stats.MIN_ROUNDS or not primaries:
        return comparison
    d = np.vstack([log_ratios(ps, m) for m in primaries])
    comparison.outlier_z = stats.outlier_threshold(d.shape[1], d.shape[0])
    flagged = stats.outlier_rounds(d, comparison.outlier_z).any(axis=0)
    comparison.outliers = [r for r, f in zip(ps.rounds, flagged, strict=True) if f]
    if comparison.outliers:
        keep = [i for i, f in enumerate(flagged) if not f]
        trimmed = replace(
            ps,
            rounds=[ps.rounds[i] for i in keep],
            a=[ps.a[i] for i in keep],
            b=[ps.b[i] for i in keep],
        )
        comparison.without_outliers = [
            r for r in pairset_results(run, trimmed, alpha) if r.family == PRIMARY
        ]
    return comparison


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
                    "placement": t.placement,
                    "reasons": list(t.rejection_reasons) or ["no reason recorded"],
                }
            )
    steal_valid = [t.steal_mean for t in run.valid_trials() if t.steal_mean is not None]
    steal_valid_max = [t.steal_max for t in run.valid_trials() if t.steal_max is not None]
    steal_all_max = [t.steal_max for t in run.trials if t.steal_max is not None]
    valid = sum(1 for t in run.trials if t.valid)
    return Gates(
        recorded=len(run.trials),
        planned=sum(1 for e in run.plan if e.requeue_of is None),
        valid=valid,
        rejected=len(run.trials) - valid,
        by_arm=by_arm,
        failed_gates=failed,
        rejected_trials=rejected,
        steal_valid_median=float(np.median(steal_valid)) if steal_valid else None,
        steal_valid_max=max(steal_valid_max) if steal_valid_max else None,
        steal_all_max=max(steal_all_max) if steal_all_max else None,
    )
