"""Vectorised statistics core for paired log-ratios.

Every function takes `d`, a (k, n) array: k independent series (metrics, or simulations) of n
paired log-ratios d_r = ln(B_r / A_r), one per round. Working on k rows at once keeps the
report fast and lets the calibration tests run 100 simulated experiments in one call.

Choices (argued in docs/methodology.md):
- location: one-sample Hodges-Lehmann estimator (median of Walsh averages);
- interval: paired bootstrap over rounds of the HL estimate, "expanded percentile" interval
  (Hesterberg 2015), which corrects the percentile interval's known narrowness at small n;
- test: exact Wilcoxon signed-rank (scipy), equivalence by two one-sided signed-rank tests;
- MDE: (z_{1-alpha/2} + z_{1-β}) · sd(d) / √n, the normal approximation of methodology §7.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

MIN_ROUNDS = 6  # below this no 95 % signed-rank test or median CI exists (2/2^5 > 0.05)
ALPHA = 0.05
POWER = 0.8
RESAMPLES = 10_000
_CHUNK_CELLS = 4_000_000  # bootstrap weights processed per chunk (memory bound ~32 MB)


@dataclass(frozen=True)
class PairedStats:
    """Per-row results; every array has length k (intervals: shape (k, 2)). Log units."""

    n: int
    estimate: np.ndarray
    ci95: np.ndarray
    ci90: np.ndarray
    wilcoxon_p: np.ndarray
    tost_p: np.ndarray
    sd: np.ndarray
    mde: np.ndarray
    boot: np.ndarray | None = None  # (k, resamples) bootstrap replicates, when asked for


def hodges_lehmann(d: np.ndarray) -> np.ndarray:
    """One-sample HL estimator per row: the median of the Walsh averages (d_i + d_j)/2, i ≤ j."""
    d = np.atleast_2d(np.asarray(d, dtype=np.float64))
    i, j = np.triu_indices(d.shape[1])
    return np.median((d[:, i] + d[:, j]) / 2.0, axis=1)


def bootstrap_hl(d: np.ndarray, rng: np.random.Generator, resamples: int = RESAMPLES) -> np.ndarray:
    """HL estimates of `resamples` paired-bootstrap resamples of the rounds: shape (k, resamples).

    A resample is a multiset of rounds with counts c; its Walsh averages are the original
    ones, each (i < j) repeated c_i·c_j times and each (i = i) c_i(c_i+1)/2 times, always
    n(n+1)/2 in total. So the resampled HL is a weighted median over the *fixed*, once-sorted
    Walsh averages — no per-resample sort. All rows share the same resampled rounds, which is
    what pairing across metrics means.
    """
    d = np.atleast_2d(np.asarray(d, dtype=np.float64))
    k, n = d.shape
    i, j = np.triu_indices(n)
    diag = i == j
    walsh = (d[:, i] + d[:, j]) / 2.0
    order = np.argsort(walsh, axis=1)
    walsh_sorted = np.take_along_axis(walsh, order, axis=1)
    total = n * (n + 1) // 2
    lo_pos, hi_pos = (total - 1) // 2, total // 2
    out = np.empty((k, resamples))
    step = max(1, _CHUNK_CELLS // max(1, len(i)))
    for start in range(0, resamples, step):
        b = min(step, resamples - start)
        idx = rng.integers(0, n, size=(b, n))
        counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n)
        counts = counts.reshape(b, n).astype(np.int32)
        weights = counts[:, i] * counts[:, j]
        weights[:, diag] = (counts * (counts + 1) // 2)[:, i[diag]]
        for row in range(k):
            cum = np.cumsum(weights[:, order[row]], axis=1)
            lo = (cum <= lo_pos).sum(axis=1)
            hi = (cum <= hi_pos).sum(axis=1)
            out[row, start : start + b] = (walsh_sorted[row, lo] + walsh_sorted[row, hi]) / 2.0
    return out


def expanded_alpha(alpha: float, n: int) -> float:
    """Hesterberg's expanded percentile level: z = √(n/(n-1))·t_{1-alpha/2, n-1} replaces z."""
    if n < 2:
        return alpha
    z = math.sqrt(n / (n - 1)) * sps.t.ppf(1 - alpha / 2, n - 1)
    return float(2 * sps.norm.sf(z))


def percentile_ci(boot: np.ndarray, alpha: float, n: int) -> np.ndarray:
    """Expanded-percentile (1-alpha) interval per row of bootstrap replicates: shape (k, 2)."""
    a = expanded_alpha(alpha, n)
    return np.quantile(boot, [a / 2, 1 - a / 2], axis=1).T


def wilcoxon_p(d: np.ndarray, alternative: str = "two-sided") -> np.ndarray:
    """Signed-rank p per row (exact for n ≤ 50 without ties); rows of all zeros get p = 1."""
    d = np.atleast_2d(np.asarray(d, dtype=np.float64))
    p = np.ones(d.shape[0])
    live = np.any(d != 0, axis=1)
    if live.any():
        res = sps.wilcoxon(d[live], axis=1, alternative=alternative, zero_method="wilcox")
        p[live] = np.nan_to_num(np.asarray(res.pvalue, dtype=np.float64), nan=1.0)
    return p


def tost_p(d: np.ndarray, margin: float) -> np.ndarray:
    """Equivalence p (two one-sided signed-rank tests) that |shift| < margin (log units)."""
    above_lower = wilcoxon_p(np.asarray(d) + margin, alternative="greater")
    below_upper = wilcoxon_p(np.asarray(d) - margin, alternative="less")
    return np.maximum(above_lower, below_upper)


def mde(sd: np.ndarray, n: int, alpha: float = ALPHA, power: float = POWER) -> np.ndarray:
    """Minimal detectable effect (log units) for a paired design with n rounds."""
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    return z * np.asarray(sd) / math.sqrt(max(n, 1))


def rounds_needed(
    estimate: float, sd: float, margin: float, alpha: float = ALPHA, power: float = POWER
) -> float:
    """Rounds needed to settle a question: either detect `estimate` or show equivalence.

    Normal approximations: detection n = ((z_{1-alpha/2}+z_{1-β})·sd/|θ|)²; equivalence with a
    true shift θ inside the margin n = ((z_{1-alpha}+z_{1-β})·sd/(m-|θ|))². Returns the smaller
    (inf if neither can be reached, e.g. sd = 0 with θ = 0 exactly at the margin).
    """
    if sd <= 0:
        return 0.0
    needs = []
    if estimate != 0:
        z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
        needs.append((z * sd / abs(estimate)) ** 2)
    if abs(estimate) < margin:
        z = sps.norm.ppf(1 - alpha) + sps.norm.ppf(power)
        needs.append((z * sd / (margin - abs(estimate))) ** 2)
    return min(needs) if needs else math.inf


def min_rounds_exact(tests: int = 1, alpha: float = ALPHA) -> int:
    """Fewest rounds at which the exact signed-rank test can reach alpha/tests at all
    (its smallest two-sided p is 2/2^n): 6 for one test, 9 for a Holm family of 9."""
    return math.ceil(math.log2(2 * max(tests, 1) / alpha))


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (monotone, capped at 1)."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def paired_stats(
    d: np.ndarray,
    margin: float,
    rng: np.random.Generator,
    resamples: int = RESAMPLES,
    keep_boot: bool = False,
) -> PairedStats:
    """Everything per row of d (k, n). With n < MIN_ROUNDS intervals and p-values are NaN."""
    d = np.atleast_2d(np.asarray(d, dtype=np.float64))
    k, n = d.shape
    nan2 = np.full((k, 2), np.nan)
    nan1 = np.full(k, np.nan)
    sd = d.std(axis=1, ddof=1) if n > 1 else nan1.copy()
    estimate = hodges_lehmann(d) if n else nan1.copy()
    if n < MIN_ROUNDS:
        return PairedStats(n, estimate, nan2, nan2.copy(), nan1, nan1.copy(), sd, mde(sd, n))
    boot = bootstrap_hl(d, rng, resamples)
    return PairedStats(
        n=n,
        estimate=estimate,
        ci95=percentile_ci(boot, ALPHA, n),
        ci90=percentile_ci(boot, 2 * ALPHA, n),
        wilcoxon_p=wilcoxon_p(d),
        tost_p=tost_p(d, margin),
        sd=sd,
        mde=mde(sd, n),
        boot=boot if keep_boot else None,
    )


def differs(ci95: np.ndarray, p: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """A difference is claimed only when the test rejects and the 95 % CI excludes 0."""
    ci95 = np.atleast_2d(ci95)
    excludes = (ci95[:, 0] > 0) | (ci95[:, 1] < 0)
    return excludes & (np.asarray(p) < alpha)


def equivalent(
    ci90: np.ndarray, p_tost: np.ndarray, margin: float, alpha: float = ALPHA
) -> np.ndarray:
    """Equivalence is claimed when the 90 % CI lies inside ±margin and TOST rejects."""
    ci90 = np.atleast_2d(ci90)
    inside = (ci90[:, 0] > -margin) & (ci90[:, 1] < margin)
    return inside & (np.asarray(p_tost) < alpha)


def cov_percent(values: np.ndarray) -> float:
    """Coefficient of variation (sample sd / mean) in percent; NaN for fewer than 2 values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2 or v.mean() == 0:
        return math.nan
    return float(100 * v.std(ddof=1) / abs(v.mean()))
