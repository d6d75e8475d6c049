"""The seeded plan: which trial runs when. Written to manifest.json before the first trial.

* rmit — every round runs each arm once, in a freshly shuffled order (randomized multiple
  interleaved trials: slow drifts hit both arms alike).
* duet — both arms at the same moment on two pod pairs with disjoint CPUs; which arm gets which
  pair is shuffled per round, so a pair's own bias cancels out.
* abba — two arms in rounds whose order alternates (AB, BA, AB, ...; which comes first is
  seeded): a drift that is linear over two rounds adds to one pair what it takes from the next.
* sequential — all of arm A, then all of arm B: kept only to show how misleading it is.
Placements, flood sizes and load points form blocks; within a block the design decides the
order.
"""

from __future__ import annotations

import random

from meshlab.core.flood import Flood
from meshlab.record.format import PlanEntry
from meshlab.record.spec import Experiment


def make_plan(exp: Experiment) -> list[PlanEntry]:
    rng = random.Random(exp.seed)  # noqa: S311 - a reproducible shuffle, not a secret
    arms = list(exp.arms)
    plan: list[PlanEntry] = []
    for placement in exp.placement:
        for flood in exp.flood_sizes:
            for lp in exp.load_points:
                block = {"load_point": lp.name, "flood": flood, "placement": placement}
                for r, arm, pair in _block_order(exp, arms, rng):
                    plan.append(PlanEntry(index=len(plan), round=r, arm=arm, pair=pair, **block))
    return plan


def _block_order(
    exp: Experiment, arms: list[str], rng: random.Random
) -> list[tuple[int, str, int]]:
    """(round, arm, pod pair) of one block, in the order the design runs them."""
    rounds = range(1, exp.rounds + 1)
    if exp.design == "sequential":
        return [(r, arm, 1) for arm in arms for r in rounds]
    out = []
    first = arms[:]
    for r in rounds:
        order = arms[:]
        rng.shuffle(order)  # the same draws for every design: a seed's rmit plan never moves
        if exp.design == "abba":
            first = order if r == 1 else first
            order = first if r % 2 else first[::-1]
        if exp.design == "duet":
            out += [(r, arm, pair) for pair, arm in enumerate(order, start=1)]
        else:
            out += [(r, arm, 1) for arm in order]
    return out


def requeue(plan: list[PlanEntry], index: int) -> PlanEntry:
    """Append a new attempt of plan[index]; the plan only ever grows."""
    original = plan[index]
    entry = original.model_copy(update={"index": len(plan), "requeue_of": original.root})
    plan.append(entry)
    return entry


def attempt_of(plan: list[PlanEntry], entry: PlanEntry) -> int:
    """1 for a planned trial, 2 for its first re-queue, and so on."""
    return sum(1 for e in plan[: entry.index + 1] if e.root == entry.root)


def _block(e: PlanEntry) -> tuple[str, Flood, str, int]:
    return (e.placement, e.flood, e.load_point, e.round)


def execution_order(plan: list[PlanEntry]) -> list[PlanEntry]:
    """Plan order, except that a re-queued attempt runs right after the attempt it replaces:
    the trial is re-run next to its partner, so a pair stays close in time (a rejection at
    the end of a round used to wait for the whole round, and a storm's drift moved in between).
    A duet's re-queued pair stays together."""

    def key(e: PlanEntry) -> tuple[float, int]:
        return (float(e.index), e.index) if e.requeue_of is None else (e.requeue_of + 0.5, e.index)

    return sorted(plan, key=key)


def next_group(pending: list[PlanEntry], design: str) -> list[PlanEntry]:
    """The trials the next step runs together: the first pending one, plus, for duet, its partner
    (same flood, load point and round, the other pod pair, both originals or both re-queues)."""
    first = pending[0]
    if design != "duet":
        return [first]
    partners = [
        e
        for e in pending[1:]
        if _block(e) == _block(first)
        and e.pair != first.pair
        and (e.requeue_of is None) == (first.requeue_of is None)
    ]
    return [first, *partners[:1]]


def trial_id(entry: PlanEntry, attempt: int) -> str:
    suffix = f"-a{attempt}" if attempt > 1 else ""
    return f"{entry.index:03d}-{entry.arm}-r{entry.round:02d}{suffix}"
