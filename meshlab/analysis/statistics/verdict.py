"""Plain-words verdict lines: 'ebpf has 4.1 % lower p50 latency (95 % CI 2.9-5.3 %)'.

Every interval is named with its own level (`level`: "95 %", or "96 %" for the primary family of
an adaptive run), never a fixed "95 %".

Words say what was measured and no more: a lower percentile is "lower latency", not "faster";
CPU per request is "less CPU per request", not "cheaper"."""

from __future__ import annotations

import math

from meshlab.analysis.loading.metrics import Metric
from meshlab.analysis.statistics.fmt import DASH, pct

MAX_ROUNDS_ADVICE = 10_000  # beyond this, "more rounds" is not useful advice


def _magnitude(estimate: float, ci95: tuple[float, float], level: str) -> tuple[bool, float, str]:
    """(lower?, size of the change in %, same-direction CI text)."""
    lower = estimate < 0
    if lower:  # report the reduction 1 - B/A, bounds in increasing order
        mag, lo, hi = -pct(estimate), -pct(ci95[1]), -pct(ci95[0])
    else:
        mag, lo, hi = pct(estimate), pct(ci95[0]), pct(ci95[1])
    return lower, mag, f"({level} CI {lo:.1f}{DASH}{hi:.1f} %)"


def _change(metric: Metric, arm: str, mag: float, lower: bool, verb: str = "has") -> str:
    words = metric.direction_words(lower)
    if metric.family == "latency":
        return f"{arm} {verb} {mag:.1f} % {words} {metric.phrase}"
    uses = "uses" if verb == "has" else "seems to use"
    return f"{arm} {uses} {mag:.1f} % {words} {metric.phrase}"


def difference(
    metric: Metric, arm: str, estimate: float, ci95: tuple[float, float], level: str
) -> str:
    """A claimed difference, in the direction of the estimate, with a same-direction CI."""
    lower, mag, ci = _magnitude(estimate, ci95, level)
    return f"{_change(metric, arm, mag, lower)} {ci}"


def no_difference(metric: Metric, margin_pct: float, ci95: tuple[float, float], level: str) -> str:
    return (
        f"no difference within ±{margin_pct:g} % in {metric.phrase} "
        f"({level} CI {pct(ci95[0]):+.1f} to {pct(ci95[1]):+.1f} %)"
    )


def inconclusive(metric: Metric, more_rounds: float) -> str:
    return f"inconclusive in {metric.phrase}: {_more(more_rounds)}"


def held_back_by_holm(
    metric: Metric,
    arm: str,
    estimate: float,
    ci95: tuple[float, float],
    family: str,
    more: float,
    level: str,
) -> str:
    """Significant on its own, not after the multiplicity correction: say both."""
    lower, mag, ci = _magnitude(estimate, ci95, level)
    seen = _change(metric, arm, mag, lower, verb="seems to have")
    return (
        f"inconclusive in {metric.phrase}: {seen} {ci}, not significant after Holm correction "
        f"within the {family} family; {_more(more)}"
    )


def _more(more_rounds: float) -> str:
    if not math.isfinite(more_rounds) or more_rounds > MAX_ROUNDS_ADVICE:
        return "the noise is too large to settle this with more rounds"
    if more_rounds <= 0:
        # the rounds so far already had 80 % power at this estimate and spread, yet did not
        # settle it: a forecast from them would be a guess
        return (
            "more rounds needed, how many this run cannot forecast (at its spread, its rounds "
            "should already have settled a change of this size)"
        )
    n = math.ceil(more_rounds)
    return f"about {n} more round{'s' if n != 1 else ''} needed"


def not_enough_rounds(metric: Metric, n: int, needed: int) -> str:
    return (
        f"not enough rounds for {metric.phrase}: {n} valid pair{'s' if n != 1 else ''}, "
        f"at least {needed} needed before any CI"
    )
