"""The primary family beside its host-speed adjustment (issue 19): each round's log-ratios
adjusted by how much faster or slower the host was in one trial than in the other, read from
the fixed-work probe every trial runs just before and after its window (trial.json
`host_probe`, core/hostprobe.py).

The probe is arm-independent by construction (it runs outside the pods' cgroups, with no load
running), so its paired log-ratio has expectation 0 in both arms and analysis/covariate.py's
cross-fitted adjustment keeps the interval honest. k6's own CPU per request, the figure issue 19
found correlated with p50 at r = 0.99, is shown beside it as the covariate NOT used: its hop is
bypassed by the eBPF arm too, so it carries part of the arm's effect (its shift between the
arms is printed, with its exact test).

Which figure decides the verdicts is the experiment's `analysis.host_speed` (docs/methodology.md):
`report` (the default) shows the adjusted figures beside the raw ones; `decide` lets them decide
from `MIN_DECIDING_ROUNDS` paired rounds, where the calibration keeps the family's false positives
<= 5 % and coverage >= 94 % (at 8 quiet rounds it measured 5.5 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from meshlab.analysis.loading.metrics import BY_KEY
from meshlab.analysis.loading.pairing import PairSet, log_ratios
from meshlab.analysis.statistics import covariate, stats

MIN_DECIDING_ROUNDS = 12


@dataclass(frozen=True)
class HostSpeed:
    n: int  # rounds whose both trials have a probe and every primary metric
    rows: list[covariate.SideBySide]  # one per primary metric
    probe: covariate.Adjusted
    k6_shift: float | None  # HL of k6's CPU per request log-ratio: ebpf's bypass shows here
    k6_p: float | None
    k6_r: dict[str, float]  # correlation of each primary's log-ratio with k6's

    def to_dict(self) -> dict[str, object]:
        def judged(j: covariate.Judged) -> dict[str, object]:
            return {
                "estimate_percent": round(100 * math.expm1(j.estimate), 4),
                "ci_percent": None
                if j.ci is None
                else [round(100 * math.expm1(v), 4) for v in j.ci],
                "half_width_percent": j.half_width_percent,
                "verdict": j.verdict,
            }

        return {
            "n": self.n,
            "probe_shift_percent": round(100 * math.expm1(self.probe.covariate_shift), 4),
            "probe_shift_p": self.probe.covariate_p,
            "k6_cpu_shift_percent": None
            if self.k6_shift is None
            else round(100 * math.expm1(self.k6_shift), 4),
            "k6_cpu_shift_p": self.k6_p,
            "metrics": {
                row.label: {
                    "raw": judged(row.raw),
                    "adjusted": judged(row.adjusted),
                    "beta": round(row.beta, 4),
                    "r_probe": round(row.r, 4),
                    "r_k6_cpu": self.k6_r.get(row.label),
                }
                for row in self.rows
            },
        }


def probe_log_ratios(ps: PairSet) -> np.ndarray:
    """x_r = ln(probe_B / probe_A) per paired round; NaN where a trial has no probe."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(np.array([_probe(b) for b in ps.b]) / np.array([_probe(a) for a in ps.a]))


def deciding(d: np.ndarray, x: np.ndarray) -> np.ndarray | None:
    """The rounds of one primary metric as `decide` judges them: adjusted by the probe when
    at least MIN_DECIDING_ROUNDS rounds carry both; None (judge raw) otherwise."""
    keep = np.isfinite(d) & np.isfinite(x)
    if keep.sum() < MIN_DECIDING_ROUNDS:
        return None
    return covariate.adjust(d[keep][None, :], x[keep]).d


def _probe(t: object) -> float:
    value = getattr(t, "host_probe_s", None)
    return value if value is not None and value > 0 else math.nan


def host_speed(
    ps: PairSet, primary: list[str], margin_percent: float, alpha: float
) -> HostSpeed | None:
    """The side-by-side of one comparison, or None when too few rounds carry a probe."""
    metrics = [BY_KEY[k] for k in primary if k in BY_KEY]
    if not metrics or ps.n < covariate.MIN_ROUNDS:
        return None
    d = np.vstack([log_ratios(ps, m) for m in metrics])
    x = probe_log_ratios(ps)
    k6 = log_ratios(ps, BY_KEY["cpu_k6"])
    keep = np.isfinite(d).all(axis=0) & np.isfinite(x)
    if keep.sum() < covariate.MIN_ROUNDS:
        return None
    rows, adj = covariate.raw_and_adjusted(
        d[:, keep], x[keep], margin_percent, tuple(m.key for m in metrics), alpha
    )
    k6_ok = keep & np.isfinite(k6)
    k6_shift = k6_p = None
    k6_r: dict[str, float] = {}
    if k6_ok.sum() >= stats.MIN_ROUNDS:
        k6_shift = float(stats.hodges_lehmann(k6[k6_ok])[0])
        k6_p = float(stats.wilcoxon_p(k6[k6_ok])[0])
        for m, row in zip(metrics, d, strict=True):
            if np.std(row[k6_ok]) > 0 and np.std(k6[k6_ok]) > 0:
                k6_r[m.key] = round(float(np.corrcoef(row[k6_ok], k6[k6_ok])[0, 1]), 4)
    return HostSpeed(int(keep.sum()), rows, adj, k6_shift, k6_p, k6_r)
