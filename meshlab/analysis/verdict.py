"""Plain-words verdict lines: '<arm> is 4.1 % faster at p50 (95 % CI 2.9-5.3 %)'."""

from __future__ import annotations

import math

from meshlab.analysis.fmt import DASH, pct
from meshlab.analysis.metrics import Metric

MAX_ROUNDS_ADVICE = 10_000  # beyond this, "more rounds" is not useful advice


def _magnitude(estimate: float, ci95: tuple[float, float]) -> tuple[bool, float, str]:
    """(lower?, size of the change in %, same-direction CI text)."""
    lower = estimate < 0
    if lower:  # report the reduction 1 - B/A, bounds in increasing order
        mag, lo, hi = -pct(estimate), -pct(ci95[1]), -pct(ci95[0])
    else:
        mag, lo, hi = pct(estimate), pct(ci95[0]), pct(ci95[1])
    return lower, mag, f"(95 % CI {lo:.1f}{DASH}{hi:.1f} %)"


def difference(metric: Metric, arm: str, estimate: float, ci95: tuple[float, float]) -> str:
    """A claimed difference, in the direction of the estimate, with a same-direction CI."""
    lower, mag, ci = _magnitude(estimate, ci95)
    if metric.family == "latency":
        return f"{arm} is {mag:.1f} % {metric.direction_words(lower)} {metric.phrase} {ci}"
    more_less = "less" if lower else "more"
    return f"{arm} uses {mag:.1f} % {more_less} CPU per request, {metric.label[4:]} {ci}"


def no_difference(metric: Metric, margin_pct: float, ci90: tuple[float, float]) -> str:
    return (
        f"no difference within ±{margin_pct:g} % {metric.phrase} "
        f"(90 % CI {pct(ci90[0]):+.1f} to {pct(ci90[1]):+.1f} %)"
    )


def inconclusive(metric: Metric, more_rounds: float) -> str:
    return f"inconclusive {metric.phrase}: {_more(more_rounds)}"


def held_back_by_holm(
    metric: Metric, arm: str, estimate: float, ci95: tuple[float, float], family: int, more: float
) -> str:
    """Significant on its own, not after the multiplicity correction: say both."""
    lower, mag, ci = _magnitude(estimate, ci95)
    if metric.family == "latency":
        seen = f"{arm} looks {mag:.1f} % {metric.direction_words(lower)} {ci}"
    else:
        seen = f"{arm} seems to use {mag:.1f} % {'less' if lower else 'more'} {ci}"
    return (
        f"inconclusive {metric.phrase}: {seen}, not significant after Holm correction over "
        f"{family} secondary metrics; {_more(more)}"
    )


def _more(more_rounds: float) -> str:
    if not math.isfinite(more_rounds) or more_rounds > MAX_ROUNDS_ADVICE:
        return "the noise is too large to settle this with more rounds"
    n = max(1, math.ceil(more_rounds))
    return f"about {n} more round{'s' if n != 1 else ''} needed"


def not_enough_rounds(metric: Metric, n: int, needed: int) -> str:
    return (
        f"not enough rounds {metric.phrase}: {n} valid pair{'s' if n != 1 else ''}, "
        f"at least {needed} needed before any CI"
    )
