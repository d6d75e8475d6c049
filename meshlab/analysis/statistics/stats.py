"""Vectorised statistics core for paired log-ratios.

Every function takes `d`, a (k, n) array: k independent series (metrics, or simulations) of n
paired log-ratios d_r = ln(B_r / A_r), one per round. Working on k rows at once keeps the
report fast and lets the calibration run thousands of simulated experiments in one call.

Choices (argued in docs/methodology.md):
- location: one-sample Hodges-Lehmann estimator (median of the Walsh averages);
- interval: the exact, distribution-free confidence interval of the HL shift: order statistics
  of the Walsh averages at the signed-rank test's critical value (Hollander & Wolfe,
  Nonparametric Statistical Methods, 3rd ed. §3.3), with its achieved confidence (it is
  discrete: at n = 8 the "95 %" interval is a 96.1 % one);
- test: exact Wilcoxon signed-rank (signed_rank.py: exact with ties and zeros, per row),
  equivalence by two one-sided signed-rank tests;
- MDE and rounds needed: the decision rule's own power (power.py), Holm and the exact test's
  discreteness included.
The paired bootstrap of rounds survives only where two runs are compared (compare.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import stats as sps

from meshlab.analysis.statistics import power as _power
from meshlab.analysis.statistics.signed_rank import critical_value, signed_rank_cdf, signed_rank_p

MIN_ROUNDS = 6  # below this no 95 % signed-rank test or interval exists (2/2^5 > 0.05)
ALPHA = 0.05
POWER = 0.8
RESAMPLES = 10_000
OUTLIER_RATE = 0.05  # quiet runs in which some round of the family is flagged (outlier_rounds)
OUTLIER_SEED = 19
_OUTLIER_RUNS = 20_000
_CHUNK_CELLS = 4_000_000  # bootstrap weights processed per chunk (memory bound ~32 MB)


@dataclass(frozen=True)
class PairedStats:
    """Per-row results; every array has length k (intervals: shape (k, 2)). Log units."""

    n: int
    estimate: np.ndarray
    ci95: np.ndarray
    ci90: np.ndarray
    confidence95: float  # achieved confidence of the exact interval (nan: none exists)
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


def exact_ci(d: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """The exact (1 - alpha) interval of the HL shift per row: [W_(c+1), W_(M-c)] of the sorted
    Walsh averages, c the critical value; and its achieved confidence 1 - 2 P(T ≤ c).
    NaN rows (and confidence) when n is too small for the level."""
    d = np.atleast_2d(np.asarray(d, dtype=np.float64))
    k, n = d.shape
    c = critical_value(n, alpha) if n else None
    if c is None:
        return np.full((k, 2), np.nan), math.nan
    i, j = np.triu_indices(n)
    walsh = np.sort((d[:, i] + d[:, j]) / 2.0, axis=1)
    m = walsh.shape[1]
    return np.column_stack([walsh[:, c], walsh[:, m - 1 - c]]), 1.0 - 2.0 * float(
        signed_rank_cdf(n)[c]
    )


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
    """Hesterberg's expanded percentile level: z = √(n/(n-1))·t_{1-alpha/2, n-1} replaces z
    (used for the bootstrap intervals of compare.py)."""
    if n < 2:
        return alpha
    z = math.sqrt(n / (n - 1)) * sps.t.ppf(1 - alpha / 2, n - 1)
    return float(2 * sps.norm.sf(z))


def percentile_ci(boot: np.ndarray, alpha: float, n: int) -> np.ndarray:
    """Expanded-percentile (1-alpha) interval per row of bootstrap replicates: shape (k, 2)."""
    a = expanded_alpha(alpha, n)
    return np.quantile(boot, [a / 2, 1 - a / 2], axis=1).T


def wilcoxon_p(d: np.ndarray, alternative: str = "two-sided") -> np.ndarray:
    """Signed-rank p per row, exact with ties and zeros (signed_rank.py); rows of all zeros
    get p = 1."""
    return signed_rank_p(d, alternative)


def tost_p(d: np.ndarray, margin: float) -> np.ndarray:
    """Equivalence p (two one-sided signed-rank tests) that |shift| < margin (log units)."""
    above_lower = wilcoxon_p(np.asarray(d) + margin, alternative="greater")
    below_upper = wilcoxon_p(np.asarray(d) - margin, alternative="less")
    return np.maximum(above_lower, below_upper)


def mde(
    sd: np.ndarray, n: int, alpha: float = ALPHA, power: float = POWER, tests: int = 1
) -> np.ndarray:
    """Minimal detectable effect (log units): the smallest shift the decision rule (exact
    interval, exact test, Holm over `tests`) claims in `power` of runs of n rounds at noise sd
    (power.py: the rule's own power, not a normal formula). inf where no test exists."""
    if n < 2:
        return np.full_like(np.asarray(sd, dtype=np.float64), np.nan)
    sd = np.asarray(sd, dtype=np.float64)
    factor = _power.mde_sd(n, alpha, tests, power)
    if not math.isfinite(factor):  # no test at this level: nothing is detectable, even at sd 0
        return np.full_like(sd, math.inf)
    return factor * sd


def rounds_needed(
    estimate: float,
    sd: float,
    margin: float,
    alpha: float = ALPHA,
    power: float = POWER,
    tests: int = 1,
) -> float:
    """Rounds at which the decision rule settles the question in `power` of runs: a claimed
    difference of size `estimate` (Holm over `tests`) or, inside the margin, equivalence (the
    interval inside ±margin). The smaller; inf if neither can be reached (power.py)."""
    return _power.rounds_needed(estimate, sd, margin, alpha, tests, power)


def min_rounds_exact(tests: int = 1, alpha: float = ALPHA) -> int:
    """Fewest rounds at which the exact signed-rank test can reach alpha/tests at all
    (its smallest two-sided p is 2/2^n): 6 for one test, 7 for a Holm family of 3."""
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
    rng: np.random.Generator | None = None,
    resamples: int = RESAMPLES,
    keep_boot: bool = False,
    alpha: float = ALPHA,
) -> PairedStats:
    """Everything per row of d (k, n). With n < MIN_ROUNDS intervals and p-values are NaN.
    `alpha` is the level the intervals are at (a sequential design spends less per look);
    `rng` is needed only for keep_boot (compare.py's bootstrap replicates)."""
    d = np.atleast_2d(np.asarray(d, dtype=np.float64))
    k, n = d.shape
    nan2 = np.full((k, 2), np.nan)
    nan1 = np.full(k, np.nan)
    sd = d.std(axis=1, ddof=1) if n > 1 else nan1.copy()
    estimate = hodges_lehmann(d) if n else nan1.copy()
    if n < MIN_ROUNDS:
        return PairedStats(
            n, estimate, nan2, nan2.copy(), math.nan, nan1, nan1.copy(), sd, mde(sd, n, alpha)
        )
    ci95, confidence = exact_ci(d, alpha)
    ci90, _ = exact_ci(d, 2 * alpha)
    boot = bootstrap_hl(d, rng or np.random.default_rng(0), resamples) if keep_boot else None
    return PairedStats(
        n=n,
        estimate=estimate,
        ci95=ci95,
        ci90=ci90,
        confidence95=confidence,
        wilcoxon_p=wilcoxon_p(d),
        tost_p=tost_p(d, margin),
        sd=sd,
        mde=mde(sd, n, alpha),
        boot=boot,
    )


def differs(ci95: np.ndarray, p: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """A difference is claimed only when the test rejects and the CI (at alpha) excludes 0."""
    ci95 = np.atleast_2d(ci95)
    excludes = (ci95[:, 0] > 0) | (ci95[:, 1] < 0)
    return excludes & (np.asarray(p) < alpha)


def equivalent(
    ci95: np.ndarray, p_tost: np.ndarray, margin: float, alpha: float = ALPHA
) -> np.ndarray:
    """Equivalence is claimed when TOST rejects and the CI (at alpha) lies inside ±margin:
    a verdict of "no difference" never stands beside an interval that leaves the margin."""
    ci95 = np.atleast_2d(ci95)
    inside = (ci95[:, 0] > -margin) & (ci95[:, 1] < margin)
    return inside & (np.asarray(p_tost) < alpha)


def cov_percent(values: np.ndarray) -> float:
    """Coefficient of variation (sample sd / mean) in percent; NaN for fewer than 2 values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2 or v.mean() == 0:
        return math.nan
    return float(100 * v.std(ddof=1) / abs(v.mean()))


@cache
def outlier_threshold(n: int, family: int = 1, rate: float = OUTLIER_RATE) -> float:
    """The modified z-score that pure normal noise exceeds, somewhere in a family of `family`
    metrics over n rounds, in `rate` of runs (seeded simulation, independent metrics: the most
    flags). Issue 19: a fixed 5 flagged 4.5 % of quiet 8-round runs per metric but 13 % per
    family of three, and 18 % at 6 rounds; a threshold per size keeps "1 in 20 runs" true."""
    if n < 3:
        return math.inf
    rng = np.random.default_rng([OUTLIER_SEED, n, family])
    z = np.abs(_modified_z(rng.standard_normal((_OUTLIER_RUNS * family, n))))
    worst = np.max(z.reshape(_OUTLIER_RUNS, family * n), axis=1)
    return float(np.quantile(worst, 1.0 - rate))


def _modified_z(d: np.ndarray) -> np.ndarray:
    median = np.nanmedian if np.isnan(d).any() else np.median  # a missing metric is NaN
    med = median(d, axis=1, keepdims=True)
    mad = 1.4826 * median(np.abs(d - med), axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(d - med) / mad
    # MAD 0 (half the rounds identical): no spread to measure a distance against
    return np.where(mad > 0, np.nan_to_num(z, nan=0.0, posinf=0.0), 0.0)


def outlier_rounds(d: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Rounds whose paired log-ratio is far from the others, per row: a modified z-score
    |d - median| / (1.4826·MAD) (Iglewicz & Hoaglin's statistic) beyond `threshold`; by default
    the one pure noise exceeds in 1 of 20 runs of these rows (the family) and rounds
    (outlier_threshold). A boolean (k, n) mask; rows whose MAD is 0 flag nothing."""
    d = np.atleast_2d(np.asarray(d, dtype=np.float64))
    if threshold is None:
        threshold = outlier_threshold(d.shape[1], d.shape[0])
    return _modified_z(d) > threshold
