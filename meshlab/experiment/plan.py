"""The seeded plan: which trial runs when. Written to manifest.json before the first trial.

* rmit — every round runs each arm once, in a freshly shuffled order (randomized multiple
  interleaved trials: slow drifts hit both arms alike).
* duet — both arms at the same moment on two pod pairs with disjoint CPUs; which arm gets which
  pair is shuffled per round, so a pair's own bias cancels out.
* sequential — all of arm A, then all of arm B: kept only to show how misleading it is.
Load points and flood sizes form blocks; within a block the design decides the order.
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

    def add(round_: int, arm: str, lp: str, flood: Flood, pair: int = 1) -> None:
        plan.append(
            PlanEntry(index=len(plan), round=round_, arm=arm, load_point=lp, flood=flood, pair=pair)
        )

    for flood in exp.flood_sizes:
        for lp in exp.load_points:
            if exp.design == "sequential":
                for arm in arms:
                    for r in range(1, exp.rounds + 1):
                        add(r, arm, lp.name, flood)
                continue
            for r in range(1, exp.rounds + 1):
                order = arms[:]
                rng.shuffle(order)
                if exp.design == "duet":
                    for pair, arm in enumerate(order, start=1):
                        add(r, arm, lp.name, flood, pair)
                else:
                    for arm in order:
                        add(r, arm, lp.name, flood)
    return plan


def requeue(plan: list[PlanEntry], index: int) -> PlanEntry:
    """Append a new attempt of plan[index]; the plan only ever grows."""
    original = plan[index]
    entry = original.model_copy(update={"index": len(plan), "requeue_of": original.root})
    plan.append(entry)
    return entry


def attempt_of(plan: list[PlanEntry], entry: PlanEntry) -> int:
    """1 for a planned trial, 2 for its first re-queue, and so on."""
    return sum(1 for e in plan[: entry.index + 1] if e.root == entry.root)


def _block(e: PlanEntry) -> tuple[Flood, str, int]:
    return (e.flood, e.load_point, e.round)


def execution_order(plan: list[PlanEntry], design: str) -> list[PlanEntry]:
    """Plan order, except that a re-queued attempt runs at the end of its own round (for
    sequential designs: right after the attempt it replaces). Duet attempts stay adjacent."""
    last_of_round = {_block(e): e.index for e in plan if e.requeue_of is None}

    def key(e: PlanEntry) -> tuple[float, int]:
        if e.requeue_of is None:
            return (e.index, e.index)
        if design == "sequential":
            return (e.requeue_of + 0.5, e.index)
        return (last_of_round[_block(e)] + 0.5, e.index)

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
