"""The signed-rank statistic's exact null distribution and p-values, one row at a time.

Rows are independent series of paired log-ratios (metrics, or simulations). Zeros are dropped
(Wilcoxon's convention, scipy's `zero_method="wilcox"`); tied |d| share their mid-rank. The p of a
row is exact for its own data: the permutation distribution of T+ over the 2^n sign patterns of
its own (mid-)ranks, not the tie-free table and not a normal approximation. Integer-µs Envoy
durations tie and give zero ratios in real runs; scipy's `auto` then switches to a normal
approximation without continuity correction from n = 14 on (anti-conservative), and decides that
for a whole batch at once, so one tied row changed every row's p. Here each row is its own.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from scipy import stats as sps

EXACT_MAX = 200  # rounds up to which the permutation distribution is enumerated (by counting)


@cache
def signed_rank_cdf(n: int) -> np.ndarray:
    """P(T ≤ t), t = 0 .. n(n+1)/2, of the tie-free signed-rank statistic under the null (the
    number of subsets of {1..n} with rank sum t, over 2^n)."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return np.cumsum(counts) / 2.0**n


def critical_value(n: int, alpha: float) -> int | None:
    """The largest c with P(T ≤ c) ≤ alpha/2 (two-sided signed-rank test at level alpha), or
    None when even c = 0 is too likely (too few rounds for this level)."""
    if n < 1:
        return None
    cdf = signed_rank_cdf(n)
    ok = np.flatnonzero(cdf <= alpha / 2 + 1e-12)
    return int(ok[-1]) if ok.size else None


@cache
def _tied_cdf(doubled_ranks: tuple[int, ...]) -> np.ndarray:
    """P(2·T+ ≤ t) for t = 0 .. sum, given the doubled mid-ranks (integers): each rank enters
    with sign + or - with probability 1/2, independently."""
    counts = np.zeros(sum(doubled_ranks) + 1)
    counts[0] = 1.0
    for r in doubled_ranks:
        counts[r:] = counts[r:] + counts[:-r].copy()
    return np.cumsum(counts) / 2.0 ** len(doubled_ranks)


def _from_cdf(cdf: np.ndarray, t: int, alternative: str) -> float:
    below = float(cdf[t])
    above = 1.0 - float(cdf[t - 1]) if t > 0 else 1.0
    if alternative == "greater":
        return above
    if alternative == "less":
        return below
    return min(1.0, 2.0 * min(below, above))


def _normal(ranks: np.ndarray, t_plus: float, alternative: str) -> float:
    """Beyond EXACT_MAX rounds: normal approximation with the tie correction of the variance
    and a continuity correction (both missing from scipy's `auto` fallback)."""
    mean = ranks.sum() / 2.0
    sd = math.sqrt((ranks**2).sum() / 4.0)
    if sd == 0:
        return 1.0
    greater = sps.norm.sf((t_plus - mean - 0.5) / sd)
    less = sps.norm.cdf((t_plus - mean + 0.5) / sd)
    if alternative == "greater":
        return float(greater)
    if alternative == "less":
        return float(less)
    return float(min(1.0, 2.0 * min(greater, less)))


def _row_p(row: np.ndarray, alternative: str) -> float:
    x = row[row != 0]
    if x.size == 0:
        return 1.0
    ranks = sps.rankdata(np.abs(x))  # mid-ranks: multiples of 1/2
    doubled = np.rint(2 * ranks).astype(np.int64)
    t2 = int(doubled[x > 0].sum())
    if x.size > EXACT_MAX:
        return _normal(ranks, t2 / 2.0, alternative)
    return _from_cdf(_tied_cdf(tuple(sorted(doubled.tolist()))), t2, alternative)


def signed_rank_p(d: np.ndarray, alternative: str = "two-sided") -> np.ndarray:
    """Exact signed-rank p per row of d (k, n); a row of zeros gets p = 1.

    Rows without zeros or ties (every simulated row, most real ones) share the tie-free table in
    one vectorised step; every other row is enumerated on its own mid-ranks."""
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be two-sided, greater or less, not {alternative!r}")
    d = np.atleast_2d(np.asarray(d, dtype=np.float64))
    k, n = d.shape
    p = np.ones(k)
    if n == 0:
        return p
    mags = np.sort(np.abs(d), axis=1)
    plain = np.all(d != 0, axis=1) & np.all(np.diff(mags, axis=1) > 0, axis=1)
    if n > EXACT_MAX:
        plain[:] = False
    if plain.any():
        rows = d[plain]
        ranks = sps.rankdata(np.abs(rows), axis=1).astype(np.int64)
        t_plus = (ranks * (rows > 0)).sum(axis=1)
        cdf = signed_rank_cdf(n)
        below = cdf[t_plus]
        above = np.where(t_plus > 0, 1.0 - cdf[np.maximum(t_plus - 1, 0)], 1.0)
        if alternative == "greater":
            p[plain] = above
        elif alternative == "less":
            p[plain] = below
        else:
            p[plain] = np.minimum(1.0, 2.0 * np.minimum(below, above))
    for i in np.flatnonzero(~plain):
        p[i] = _row_p(d[i], alternative)
    return p
