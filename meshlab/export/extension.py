"""The meshlab extension of an SMP result: what SMP has no field for (results/README.md, "SMP
export"). SMP's only free-form fields are string maps (`labels`), and PerformanceTestResult's
`details_uri` points at further details: it names this file, `meshlab.json`, beside the result.

It carries every percentile (p99.9 included) aggregated like the SMP ones, the pooled latency
histogram, the node CPU accounts, each round's full trial.json (so nothing meshlab recorded is
lost), which rounds paired with which, and every paired comparison the arm is part of in the
block: estimates, exact Hodges-Lehmann intervals, tests and verdicts, as stats.json has them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meshlab.analysis.loading.run import Run
from meshlab.analysis.statistics.results import Analysis, Comparison
from meshlab.export import smp
from meshlab.export.schema import Schema
from meshlab.record.format import dump

FORMAT = "meshlab-smp-extension"
VERSION = 1
BUCKETS_PER_DECADE = 20  # fixed log-spaced edges: histograms of any two results line up


def histogram(latencies: np.ndarray | None) -> dict[str, Any] | None:
    """Counts of per-request latencies (ms) in fixed buckets [10^(k/20), 10^((k+1)/20)) ms; only
    non-empty buckets are listed (as Fortio's DurationHistogram, which Meshery shows, does)."""
    if latencies is None or latencies.size == 0:
        return None
    values = np.asarray(latencies, dtype=np.float64)
    positive = values[values > 0]
    k = np.floor(BUCKETS_PER_DECADE * np.log10(positive)).astype(np.int64)
    keys, counts = np.unique(k, return_counts=True)
    return {
        "unit": "ms",
        "buckets_per_decade": BUCKETS_PER_DECADE,
        "count": int(values.size),
        "nonpositive": int(values.size - positive.size),
        "buckets": [
            {
                "k": int(key),
                "start_ms": 10 ** (int(key) / BUCKETS_PER_DECADE),
                "end_ms": 10 ** ((int(key) + 1) / BUCKETS_PER_DECADE),
                "count": int(c),
            }
            for key, c in zip(keys.tolist(), counts.tolist(), strict=True)
        ],
    }


def _comparison(c: Comparison, arm: str) -> dict[str, Any]:
    ps = c.pairs
    return {
        "arm": ps.arm,
        "baseline": ps.baseline,
        "role": "arm" if ps.arm == arm else "baseline",
        "rounds_paired": ps.n,
        "pairs": [
            {"round": r, "baseline_trial": a.trial_id, "arm_trial": b.trial_id}
            for r, a, b in zip(ps.rounds, ps.a, ps.b, strict=True)
        ],
        "dropped": [{"round": r, "why": why} for r, why in ps.dropped],
        "duplicate_valid_trials": ps.duplicates,
        "outlier_rounds": c.outliers,
        "verdicts_hold_without_outliers": c.robust,
        "metrics": [r.to_dict() for r in c.results],
        "primary_without_outlier_rounds": [r.to_dict() for r in c.without_outliers],
    }


def extension(
    schema: Schema,
    run: Run,
    analysis: Analysis,
    ab: smp.ArmBlock,
    latencies: np.ndarray | None,
    raw_trials: list[str],
    method: dict[str, str],
) -> dict[str, Any]:
    """The extension document of one arm x block (plain JSON). `latencies`: the per-request
    latencies pooled from the raw k6 files of `raw_trials` (None: none kept); `method`: how the
    statistics were computed (stats.json's `method`)."""
    exp = run.manifest.experiment
    lp = next(x for x in exp.load_points if x.name == ab.block[0])
    comparisons = [
        c
        for c in analysis.comparisons
        if c.pairs.block == ab.block and ab.arm in (c.pairs.arm, c.pairs.baseline)
    ]
    paired = {
        t.trial_id
        for c in comparisons
        for t in (c.pairs.a if c.pairs.baseline == ab.arm else c.pairs.b)
    }
    facts = schema.facts
    hist = histogram(latencies)
    if hist is not None:
        hist["trials"] = raw_trials
    return {
        "format": FORMAT,
        "version": VERSION,
        "smp": {
            "repository": facts["repository"],
            "tag": facts["tag"],
            "commit": facts["commit"],
            "files": smp.FILES,
        },
        "result_id": smp.ids(run, ab)["result"],
        "run": {
            "experiment": run.experiment_id,
            "run_id": run.run_id,
            "spec_hash": run.spec_hash,
            "seed": run.seed,
            "status": run.status,
            "partial": run.partial,
            "notes": run.notes,
            "git": run.manifest.git.model_dump(),
            "testbed": run.manifest.testbed,
            "versions": run.manifest.versions,
            "environment_unfit": analysis.environment_unfit,
        },
        "arm": {
            "name": ab.arm,
            "dataplane": exp.arms[ab.arm].dataplane,
            "description": exp.arms[ab.arm].description,
            "baseline": ab.arm == run.baseline,
        },
        "block": {
            "key": ab.block_key,
            "load_point": lp.model_dump(mode="json"),
            "flood": ab.block[1],
            "placement": ab.block[2],
        },
        "aggregation": smp.AGGREGATION,
        "rounds_valid": [t.round for t in ab.valid],
        "latency_ms": smp.latency_ms(ab.valid),
        "latency_histogram": hist,
        "node_cpu_seconds": smp.node_cpu_seconds(ab),
        "trials": [
            {"paired": t.trial_id in paired, "record": dump(r)}
            for t, r in zip(ab.trials, ab.records, strict=True)
        ],
        "statistics": {
            "baseline": run.baseline,
            "alpha_primary": analysis.alpha_primary,
            "looks": analysis.looks,
            "margin_percent": run.margin_percent,
            "primary": run.primary,
            "method": method,
        },
        "comparisons": [_comparison(c, ab.arm) for c in comparisons],
    }
