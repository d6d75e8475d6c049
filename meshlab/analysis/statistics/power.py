"""MDE and rounds needed, computed from the decision rule itself.

A difference is claimed when the exact interval at alpha excludes 0 and the Holm-adjusted
exact Wilcoxon p is below alpha (analyse.py). With the family's other members showing no change,
Holm's first step asks p < alpha/k, and the exact test is discrete (at 8 rounds its smallest p
is 2/256). Normal formulas ignore both: at their "MDE" the rule detected in 52-63 % of runs
inside a family of 3, not 80 % (issue 19). So the power here is the rule's own, on seeded
standard-normal rounds, through one identity: for continuous data the signed-rank statistic
counts the positive Walsh averages, so the rule rejects a shift δ (in sd units) exactly when
δ > -W_(c+1)(z), c the critical value at alpha/k and W_(c+1) the (c+1)-th smallest Walsh average
of the noise z. Per simulated noise sample that gives the smallest δ it detects; the MDE is the
`power` quantile of those. Equivalence (the interval inside ±margin, which implies TOST at alpha)
is read off the same order statistics. Normal noise is the cautious shape: the signed-rank test
loses more to the normal than to heavier tails (its efficiency against the t-test is 0.955 there,
above 1 for t(4)), so with the host's heavier-tailed rounds the power is at least the one stated.

Beyond SIM_MAX_ROUNDS rounds, where the test is no longer coarse, the large-sample forms are used:
the HL estimator's variance π·sd²/(3n) with normal quantiles.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from scipy import stats as sps

from meshlab.analysis.statistics.signed_rank import critical_value

SIMULATIONS = 4000  # noise samples per round count: ±0.7 pp on a power of 80 %
SIM_MAX_ROUNDS = 60
_SEED = 19_2026
_CHUNK = 500


@cache
def _bounds(n: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Per seeded standard-normal sample of n rounds: its (c+1)-th smallest and (c+1)-th largest
    Walsh averages, the exact interval's ends at critical value c."""
    z = np.random.default_rng([_SEED, n]).standard_normal((SIMULATIONS, n), dtype=np.float32)
    i, j = np.triu_indices(n)
    m = len(i)
    lo, hi = np.empty(SIMULATIONS), np.empty(SIMULATIONS)
    for start in range(0, SIMULATIONS, _CHUNK):
        walsh = (z[start : start + _CHUNK, i] + z[start : start + _CHUNK, j]) * np.float32(0.5)
        part = np.partition(walsh, (c, m - 1 - c), axis=1)
        lo[start : start + _CHUNK] = part[:, c]
        hi[start : start + _CHUNK] = part[:, m - 1 - c]
    return lo, hi


@cache
def _thresholds(n: int, test_alpha: float) -> np.ndarray | None:
    """Sorted per-sample smallest detectable shift (sd units) at a two-sided test level, or None
    when no exact test at that level exists with n rounds."""
    c = critical_value(n, test_alpha)
    if c is None:
        return None
    return np.sort(-_bounds(n, c)[0])


def detect_power(effect_sd: float, n: int, alpha: float, tests: int = 1) -> float:
    """Share of runs of n rounds in which the rule claims a shift of `effect_sd` sds (in its
    direction), the family's other tests - 1 members showing no change."""
    if n > SIM_MAX_ROUNDS:
        se = math.sqrt(math.pi / (3 * n))
        return float(sps.norm.sf(sps.norm.isf(alpha / (2 * tests)) - abs(effect_sd) / se))
    t = _thresholds(n, alpha / max(tests, 1))
    if t is None:
        return 0.0
    return float(np.searchsorted(t, abs(effect_sd), side="left") / t.size)


def equivalence_power(effect_sd: float, margin_sd: float, n: int, alpha: float) -> float:
    """Share of runs of n rounds in which the interval at alpha lies inside ±margin (the rule's
    equivalence; TOST at alpha then rejects too), for a true shift of `effect_sd` sds."""
    if n > SIM_MAX_ROUNDS:
        se = math.sqrt(math.pi / (3 * n))
        z = sps.norm.isf(alpha / 2)
        p = sps.norm.cdf((margin_sd - effect_sd) / se - z) - sps.norm.cdf(
            (-margin_sd - effect_sd) / se + z
        )
        return float(max(p, 0.0))
    c = critical_value(n, alpha)
    if c is None:
        return 0.0
    lo, hi = _bounds(n, c)
    return float(np.mean((effect_sd + lo > -margin_sd) & (effect_sd + hi < margin_sd)))


def settle_power(effect_sd: float, margin_sd: float, n: int, alpha: float, tests: int) -> float:
    """Share of runs of n rounds the rule settles: it claims the change (Holm over `tests`) or
    shows equivalence (interval inside ±margin), whichever comes; the two read the same noise
    samples, so a run that does both counts once. Beyond SIM_MAX_ROUNDS, the larger of the two
    (a lower bound)."""
    theta = abs(effect_sd)
    if n > SIM_MAX_ROUNDS:
        return max(
            detect_power(theta, n, alpha, tests), equivalence_power(theta, margin_sd, n, alpha)
        )
    c = critical_value(n, alpha)
    if c is None:
        return 0.0
    lo, hi = _bounds(n, c)
    settled = (theta + lo > -margin_sd) & (theta + hi < margin_sd)
    c_test = critical_value(n, alpha / max(tests, 1))
    if c_test is not None:
        settled |= theta > -_bounds(n, c_test)[0]
    return float(settled.mean())


def mde_sd(n: int, alpha: float, tests: int = 1, power: float = 0.8) -> float:
    """The smallest shift, in sds of d, that the rule claims in `power` of the runs of n
    rounds (inf when no test exists at this level)."""
    if n > SIM_MAX_ROUNDS:
        return (sps.norm.isf(alpha / (2 * tests)) + sps.norm.ppf(power)) * math.sqrt(
            math.pi / (3 * n)
        )
    t = _thresholds(n, alpha / max(tests, 1))
    if t is None:
        return math.inf
    return float(t[min(t.size - 1, math.ceil(power * t.size) - 1)]) + 1e-12


def _smallest_n(ok, guess: float, floor: int = 2) -> float:
    """The smallest round count at which ok(n) holds. Up to SIM_MAX_ROUNDS it walks from the
    large-sample guess (the coarse exact test often needs a few more than that says); beyond,
    where ok follows the large-sample forms and rises with n, it bisects."""
    if not math.isfinite(guess):
        return math.inf
    if guess <= 1.5 * SIM_MAX_ROUNDS:
        n = min(max(floor, math.ceil(guess)), SIM_MAX_ROUNDS)
        if ok(n):
            while n > floor and ok(n - 1):
                n -= 1
            return float(n)
        while n < SIM_MAX_ROUNDS:
            n += 1
            if ok(n):
                return float(n)
    lo, hi = SIM_MAX_ROUNDS, max(SIM_MAX_ROUNDS + 1, math.ceil(guess))
    while not ok(hi):
        lo, hi = hi, 2 * hi
        if hi > 10**9:
            return math.inf
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return float(hi)


def rounds_needed(
    estimate: float,
    sd: float,
    margin: float,
    alpha: float,
    tests: int = 1,
    power: float = 0.8,
) -> float:
    """Rounds at which the rule settles the question in `power` of the runs, if the truth is
    `estimate` and the noise `sd` (log units): a claimed difference (Holm over `tests`) or,
    when the estimate lies inside the margin, either that or equivalence; inf when neither can
    be reached."""
    if not (math.isfinite(estimate) and math.isfinite(sd)):
        return math.inf
    if sd <= 0:
        return 0.0
    theta, m = abs(estimate) / sd, margin / sd
    z_power = sps.norm.ppf(power)
    guesses = [math.inf]
    if theta > 0:
        z = sps.norm.isf(alpha / (2 * tests))
        guesses.append(((z + z_power) / theta) ** 2 * math.pi / 3)
    if theta < m:
        z = sps.norm.isf(alpha / 2)
        guesses.append(((z + z_power) / (m - theta)) ** 2 * math.pi / 3)
        return _smallest_n(lambda n: settle_power(theta, m, n, alpha, tests) >= power, min(guesses))
    return _smallest_n(lambda n: detect_power(theta, n, alpha, tests) >= power, min(guesses))
