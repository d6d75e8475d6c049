"""The run's answer in one line: each primary question's change, its interval and its verdict,
per comparison; or why there is no answer. `meshlab run` ends with it, and its exit code says
which of the three outcomes it was (docs/methodology.md)."""

from __future__ import annotations

from dataclasses import dataclass

from meshlab.analysis.statistics.fmt import pct
from meshlab.analysis.statistics.results import Analysis, MetricResult

DECIDED, INCONCLUSIVE, UNFIT = "decided", "inconclusive", "environment-unfit"


@dataclass(frozen=True)
class Answer:
    outcome: str  # DECIDED | INCONCLUSIVE | UNFIT
    line: str


def _verdict(r: MetricResult) -> str:
    if r.differs:
        return r.kind  # lower, higher, less, more
    if r.equivalent:
        return "equivalent"
    return "not enough rounds" if r.kind == "not-enough-rounds" else "inconclusive"


def _one(r: MetricResult) -> str:
    level = f"{100 * (r.confidence95 or 0.95):.0f} %"
    ci = f" [{pct(r.ci95[0]):+.1f}, {pct(r.ci95[1]):+.1f}]" if r.ci95 else ""
    interval = f" ({level} CI{ci})" if r.ci95 else ""
    return f"{r.metric.phrase} {pct(r.estimate):+.1f} %{interval}: {_verdict(r)}"


def answer(a: Analysis, unfit_reason: str | None = None) -> Answer:
    """One sentence per comparison, joined; decided when every primary question of every
    comparison is a claimed difference or a shown equivalence."""
    parts = []
    decided = bool(a.comparisons)
    for c in a.comparisons:
        prims = c.primaries()
        decided = decided and bool(prims) and all(r.differs or r.equivalent for r in prims)
        block = " · ".join(x for x in c.pairs.block if x)
        pairs = f"{c.pairs.n} pairs"
        parts.append(
            f"{c.pairs.arm} vs {c.pairs.baseline} ({block}, {pairs}): "
            + "; ".join(_one(r) for r in prims)
        )
    body = " | ".join(parts) or "no valid pairs"
    if unfit_reason:
        return Answer(UNFIT, f"{unfit_reason}. So far: {body}")
    return Answer(DECIDED if decided else INCONCLUSIVE, body)
