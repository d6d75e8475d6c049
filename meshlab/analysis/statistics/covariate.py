"""Adjusting paired log-ratios by a host-speed covariate (regression adjustment, CUPED-style).

Per round r, d_r = ln(B_r/A_r) of a metric and x_r = ln(probe_B/probe_A) of a host-speed probe
measured in the same two trials (a fixed-work probe on each CPU around the window). Issue 19
found the host's speed behind most of the trial-to-trial spread, so d_r - β·x_r is far less
noisy than d_r. Which form is valid:

- d_adj = d - β·x, with E[x] = 0 *by construction*: the probe's expectation is the same under both
  arms, so the mean of d - β·x is the arm's effect θ for any fixed β. This is the form used.
- d - β·(x - x̄) with the sample mean x̄ (textbook CUPED) is not: in a one-sample paired design
  Σ(x - x̄) = 0, so its mean is exactly d̄ (no gain at all), yet its rounds scatter like the
  residuals; the exact interval built on them then claims a precision the estimate lacks.
  CUPED's x̄ works between two independent groups, where it estimates the probe's common mean;
  here that mean is known, 0.
- β from the same rounds over-fits: the adjusted rounds scatter less than the estimate varies.
  Each round therefore uses the slope fitted on the *other* rounds (cross-fitting, leave one
  out), with an intercept so that the slope does not depend on θ: the adjusted rounds shift with
  θ as the raw ones do, and the exact HL interval and Wilcoxon test of stats.py apply unchanged.

Measured (`meshlab bench calibration --only covariate`, docs/methodology.md): with a probe
correlated ~0.9 with the noise, cross-fitting kept coverage >= 95.2 % and family false positives
at 2.3-4.5 %, except 5.5 % at 8 quiet rounds, and halved the intervals; one in-sample slope gave
up to 9.2 % and 92.3 %; textbook CUPED 23-48 % and 60-69 %. A probe that carries part of the arm's
effect (k6's own CPU: 3.4 % lower under ebpf, its hop is bypassed too) biases every adjusted
effect by -β·ln(0.966): false positives 10-94 %, coverage 6-84 %. adjust() reports the probe's
own shift between the arms with the exact test, but that test has little power when the host is
noisy: arm-independence must come from the probe's design. Adjusted figures may decide a
verdict only where the calibration, simulated and on real A/A runs, keeps the family's false
positives <= 5 % and coverage >= 94 % (docs/methodology.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from meshlab.analysis.statistics import stats

MIN_ROUNDS = 4  # a leave-one-out slope needs 3 other rounds


@dataclass(frozen=True)
class Adjusted:
    d: np.ndarray  # (k, n) adjusted log-ratios d_r - β_(-r)·x_r
    beta: np.ndarray  # (k,) the slope over all rounds (each round used the one without it)
    r: np.ndarray  # (k,) correlation of d and x over the rounds
    covariate_shift: float  # HL estimate of x: 0 for an arm-independent probe
    covariate_p: float  # exact Wilcoxon p that x is centred on 0 (small: the probe moves)


def _slopes(d: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope of d (..., k, n) on x (..., 1, n) with an intercept: over all rounds
    (..., k, 1) and leaving each round out (..., k, n). A probe that did not vary gives slope 0
    (no adjustment)."""
    n = d.shape[-1]
    sx, sxx = x.sum(-1, keepdims=True), (x * x).sum(-1, keepdims=True)
    sd, sxd = d.sum(-1, keepdims=True), (d * x).sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        full = (sxd - sx * sd / n) / (sxx - sx * sx / n)
        m = n - 1
        ox, oxx = sx - x, sxx - x * x
        loo = ((sxd - x * d) - ox * (sd - d) / m) / (oxx - ox * ox / m)
    clean = {"nan": 0.0, "posinf": 0.0, "neginf": 0.0}
    return np.nan_to_num(full, **clean), np.nan_to_num(loo, **clean)


def adjust_many(d: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Cross-fitted adjusted log-ratios for many runs at once: d (s, k, n), x (s, n)."""
    x = x[:, None, :]
    _, loo = _slopes(d, x)
    return d - loo * x


def adjust(d: np.ndarray, x: np.ndarray) -> Adjusted:
    """Adjust each row of d (k, n) by the covariate x (n,), both paired log-ratios of the same
    rounds. The result's `d` goes into stats.paired_stats like raw log-ratios."""
    d = np.atleast_2d(np.asarray(d, dtype=np.float64))
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.shape[0] != d.shape[1]:
        raise ValueError(f"covariate x has {x.shape[0]} rounds, the log-ratios d have {d.shape[1]}")
    if not (np.isfinite(d).all() and np.isfinite(x).all()):
        raise ValueError("d and x must be finite: drop the rounds that lack either first")
    n = d.shape[1]
    if n < MIN_ROUNDS:
        raise ValueError(f"covariate adjustment needs at least {MIN_ROUNDS} rounds, got {n}")
    full, loo = _slopes(d, x[None, :])
    r = np.array([np.corrcoef(row, x)[0, 1] if row.std() and x.std() else math.nan for row in d])
    return Adjusted(
        d=d - loo * x[None, :],
        beta=full.ravel(),
        r=r,
        covariate_shift=float(stats.hodges_lehmann(x)[0]),
        covariate_p=float(stats.wilcoxon_p(x)[0]),
    )


@dataclass(frozen=True)
class Judged:
    """One metric judged as the report judges it (log units; ci at `alpha`)."""

    estimate: float
    ci: tuple[float, float] | None
    half_width_percent: float | None
    p_adjusted: float | None  # Holm within the family given
    verdict: str  # "lower"/"higher" (claimed), "equivalent", "inconclusive", "too few rounds"


@dataclass(frozen=True)
class SideBySide:
    label: str
    raw: Judged
    adjusted: Judged
    beta: float
    r: float


def _judge_family(d: np.ndarray, margin: float, alpha: float) -> list[Judged]:
    st = stats.paired_stats(d, margin, alpha=alpha)
    if not np.isfinite(st.ci95).all():
        return [Judged(float(e), None, None, None, "too few rounds") for e in st.estimate]
    p_adj = stats.holm(st.wilcoxon_p)
    differs = stats.differs(st.ci95, p_adj, alpha)
    equivalent = stats.equivalent(st.ci95, st.tost_p, margin, alpha)
    out = []
    for i, est in enumerate(st.estimate):
        lo, hi = (float(v) for v in st.ci95[i])
        kind = (
            ("lower" if est < 0 else "higher")
            if differs[i]
            else ("equivalent" if equivalent[i] else "inconclusive")
        )
        half = 100 * (math.expm1(hi) - math.expm1(lo)) / 2
        out.append(Judged(float(est), (lo, hi), half, float(p_adj[i]), kind))
    return out


def raw_and_adjusted(
    d: np.ndarray,
    x: np.ndarray,
    margin_percent: float = 2.0,
    labels: tuple[str, ...] | None = None,
    alpha: float = stats.ALPHA,
) -> tuple[list[SideBySide], Adjusted]:
    """The family's metrics (rows of d), each judged raw and covariate-adjusted with the report's
    rule (exact interval and test, Holm within the family, TOST with the interval inside the
    margin). For reporting side by side; which one decides is the calibration's call."""
    adj = adjust(d, x)
    margin = math.log1p(margin_percent / 100)
    raw = _judge_family(np.atleast_2d(d), margin, alpha)
    adjusted = _judge_family(adj.d, margin, alpha)
    names = labels or tuple(f"metric {i + 1}" for i in range(len(raw)))
    rows = [
        SideBySide(name, a, b, float(beta), float(r))
        for name, a, b, beta, r in zip(names, raw, adjusted, adj.beta, adj.r, strict=True)
    ]
    return rows, adj


def format_side_by_side(rows: list[SideBySide], adj: Adjusted, alpha: float = stats.ALPHA) -> str:
    """A plain-text table: per metric the raw and adjusted change, interval and verdict."""
    level = f"{100 * (1 - alpha):.4g} %"

    def cell(j: Judged) -> str:
        change = f"{100 * math.expm1(j.estimate):+.2f} %"
        if j.ci is None:
            return f"{change} ({j.verdict})"
        lo, hi = (100 * math.expm1(v) for v in j.ci)
        return f"{change} [{lo:+.2f}, {hi:+.2f}] ±{j.half_width_percent:.2f} {j.verdict}"

    lines = [f"metric | raw: change [{level} CI] ±half-width verdict | adjusted: same | beta | r"]
    for row in rows:
        lines.append(
            f"{row.label} | {cell(row.raw)} | {cell(row.adjusted)} | {row.beta:+.2f} | {row.r:+.2f}"
        )
    shift = 100 * math.expm1(adj.covariate_shift)
    lines.append(
        f"covariate: {shift:+.2f} % between the arms (exact p {adj.covariate_p:.3f}); a probe that "
        "moves with the arm biases every adjusted figure"
    )
    return "\n".join(lines)
